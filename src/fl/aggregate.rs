//! The aggregation every algorithm shares: the pseudo-gradient Delta_t = sum_i c_i d_i in plan
//! order (so that the floats never depend on which worker finished first), handed to the
//! server optimizer (`sgd`: theta <- theta + server_lr Delta_t; see `optimizer`), with
//! c_i = w_i / sum_j w_j * s(tau_i) and d_i the update's delta as the algorithm uses it:
//! theta_i - theta_{v_i}, scaled by 1 - beta(tau_i) for AFL-DW, or FedRevive's blend. A negative
//! server_lr interpolates instead: theta <- (1 - |lr|) theta + |lr| sum_i c'_i (theta_{v_i} + d_i)
//! with c' = c normalised to sum 1, so a blended or down-weighted update pulls towards its base
//! plus that update, not towards the raw client model (FEDREVIVE.md section 8).

use super::optimizer::{ServerOptimizer, Sgd};
use super::weights::{BetaSchedule, ClientWeighting, StalenessWeight};
use crate::params::Weights;

/// One client update as the server sees it.
#[derive(Debug)]
pub struct Update<'a, W = Vec<f32>> {
    /// The update from its base version: theta_i - theta_{v_i}, or a blend that replaces it.
    pub delta: &'a W,
    /// theta_{v_i} + delta (the client's model for a raw update); needed only for
    /// interpolation (server_lr < 0).
    pub model: Option<&'a W>,
    pub staleness: u64,
    pub samples: usize,
}

impl<W> Clone for Update<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W> Copy for Update<'_, W> {}

/// An algorithm's server update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServerRule {
    pub server_lr: f64,
    pub weighting: ClientWeighting,
    pub staleness: StalenessWeight,
    /// AFL-DW: scale each delta by 1 - beta(tau).
    pub down_weight: Option<BetaSchedule>,
}

impl ServerRule {
    /// FedAvg's and FedBuff's rule: equal client weights, no staleness weight or down-weighting.
    pub fn plain(server_lr: f64) -> Self {
        ServerRule {
            server_lr,
            weighting: ClientWeighting::Equal,
            staleness: StalenessWeight::Constant,
            down_weight: None,
        }
    }

    /// Whether updates must carry the client's model (interpolation).
    pub fn needs_models(&self) -> bool {
        self.server_lr < 0.0
    }

    /// The coefficient c_i of each update: client weight times staleness weight.
    pub fn coefficients<W>(&self, updates: &[Update<W>]) -> Vec<f64> {
        let total: f64 = updates.iter().map(|u| self.weighting.weight(u.samples)).sum();
        updates
            .iter()
            .map(|u| {
                let client = if total > 0.0 { self.weighting.weight(u.samples) / total } else { 0.0 };
                client * self.staleness.weight(u.staleness)
            })
            .collect()
    }

    /// AFL-DW's factor on an update's delta, 1 - beta(tau); 1 for every other algorithm.
    pub fn delta_scale(&self, staleness: u64) -> f64 {
        self.down_weight.map_or(1.0, |b| 1.0 - b.beta(staleness))
    }

    /// Applies one aggregation to `theta` in place with plain SGD (stateless).
    pub fn apply<W: Weights>(&self, theta: &mut W, updates: &[Update<W>]) {
        self.apply_with(theta, updates, &mut Sgd);
    }

    /// Applies one aggregation to `theta` in place: the server optimizer's step on the mean
    /// delta, or (server_lr < 0, SGD only) interpolation towards the clients' models.
    pub fn apply_with<W: Weights>(
        &self,
        theta: &mut W,
        updates: &[Update<W>],
        optimizer: &mut dyn ServerOptimizer<W>,
    ) {
        let coefficients = self.coefficients(updates);
        if self.server_lr > 0.0 {
            // Delta_t, the pseudo-gradient: sum_i c_i s_i d_i, summed in plan order.
            let mut mean_delta = theta.zeros_like();
            for (update, &c) in updates.iter().zip(&coefficients) {
                mean_delta.axpy((c * self.delta_scale(update.staleness)) as f32, update.delta);
            }
            optimizer.step(theta, &mean_delta, self.server_lr as f32);
        } else {
            let mix = -self.server_lr;
            let total: f64 = coefficients.iter().sum();
            let mut mean = theta.zeros_like();
            for (update, &c) in updates.iter().zip(&coefficients) {
                let model =
                    update.model.expect("interpolation needs the client models (ServerRule::needs_models)");
                let weight = (c / total) as f32;
                mean.axpy(weight, model);
                // base + scale delta = model - (1 - scale) delta.
                let removed = 1.0 - self.delta_scale(update.staleness);
                if removed != 0.0 {
                    mean.axpy(-weight * removed as f32, update.delta);
                }
            }
            theta.scale(1.0 - mix as f32);
            theta.axpy(mix as f32, &mean);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(server_lr: f64) -> ServerRule {
        ServerRule::plain(server_lr)
    }

    fn vectors(n: usize) -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(-10.0f32..10.0, n)
    }

    proptest! {
        #[test]
        fn one_update_with_server_lr_one_gives_the_clients_model(theta in vectors(16), delta in vectors(16)) {
            let client: Vec<f32> = theta.iter().zip(&delta).map(|(t, d)| t + d).collect();
            let mut server = theta.clone();
            rule(1.0).apply(&mut server, &[Update { delta: &delta, model: None, staleness: 0, samples: 350 }]);
            prop_assert_eq!(server, client);
        }

        #[test]
        fn identical_updates_average_to_themselves(theta in vectors(8), delta in vectors(8), n in 1usize..9) {
            let updates: Vec<Update> = (0..n).map(|_| Update { delta: &delta, model: None, staleness: 3, samples: 10 }).collect();
            let mut many = theta.clone();
            rule(0.7).apply(&mut many, &updates);
            let mut one = theta.clone();
            rule(0.7).apply(&mut one, &updates[..1]);
            for (a, b) in many.iter().zip(&one) {
                prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{} vs {}", a, b);
            }
        }

        #[test]
        fn client_weights_sum_to_one_before_staleness(samples in prop::collection::vec(1usize..1000, 1..10), by_samples in any::<bool>()) {
            let weighting = if by_samples { ClientWeighting::Samples } else { ClientWeighting::Equal };
            let r = ServerRule { weighting, ..rule(1.0) };
            let delta = vec![0.0f32];
            let updates: Vec<Update> = samples.iter().map(|&s| Update { delta: &delta, model: None, staleness: 5, samples: s }).collect();
            let c = r.coefficients(&updates);
            prop_assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            if by_samples {
                let total: usize = samples.iter().sum();
                for (ci, &s) in c.iter().zip(&samples) {
                    prop_assert!((ci - s as f64 / total as f64).abs() < 1e-12);
                }
            }
        }

        #[test]
        fn interpolation_mixes_theta_with_the_mean_client_model(theta in vectors(6), a in vectors(6), b in vectors(6), mix in 0.01f64..1.0) {
            let zero = vec![0.0f32; 6];
            let updates = [
                Update { delta: &zero, model: Some(&a), staleness: 0, samples: 1 },
                Update { delta: &zero, model: Some(&b), staleness: 9, samples: 1 },
            ];
            let mut server = theta.clone();
            rule(-mix).apply(&mut server, &updates);
            for i in 0..6 {
                let expected = (1.0 - mix as f32) * theta[i] + mix as f32 * (0.5 * a[i] + 0.5 * b[i]);
                prop_assert!((server[i] - expected).abs() <= 1e-4 * (1.0 + expected.abs()));
            }
        }
    }

    #[test]
    fn staleness_and_down_weighting_multiply() {
        let r = ServerRule {
            staleness: StalenessWeight::Polynomial { a: 1.0 },
            down_weight: Some(BetaSchedule::Constant { beta: 0.25 }),
            ..rule(1.0)
        };
        let delta = vec![1.0f32];
        let mut theta = vec![0.0f32];
        r.apply(&mut theta, &[Update { delta: &delta, model: None, staleness: 1, samples: 1 }]);
        assert_eq!(theta, [0.5 * 0.75]);
    }

    #[test]
    fn negative_server_lr_pulls_a_down_weighted_update_towards_base_plus_its_share() {
        // base 1, client model 5 (delta 4), beta 0.25: the target is 1 + 0.75 * 4 = 4, not 5.
        let r = ServerRule { down_weight: Some(BetaSchedule::Constant { beta: 0.25 }), ..rule(-0.5) };
        let (delta, model) = (vec![4.0f32], vec![5.0f32]);
        let mut theta = vec![1.0f32];
        r.apply(&mut theta, &[Update { delta: &delta, model: Some(&model), staleness: 3, samples: 1 }]);
        assert_eq!(theta, [0.5 * 1.0 + 0.5 * 4.0]);
    }
}
