//! Small weight curves, each a few lines: how much a client counts (equal or by samples),
//! how staleness discounts an update, and FedRevive's / AFL-DW's beta(staleness).

use serde::{Deserialize, Serialize};

/// How clients are weighted against each other in one aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientWeighting {
    Equal,
    /// By the number of samples in the client's shard.
    Samples,
}

impl ClientWeighting {
    pub fn weight(self, samples: usize) -> f64 {
        match self {
            ClientWeighting::Equal => 1.0,
            ClientWeighting::Samples => samples as f64,
        }
    }
}

/// A multiplier s(tau) in (0, 1] on an update of staleness tau; never increases with tau.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StalenessWeight {
    /// s = 1.
    Constant,
    /// s = 1 / (1 + tau)^a.
    Polynomial { a: f64 },
    /// s = 1 / sqrt(1 + tau).
    Sqrt,
    /// s = 1 / (1 + sqrt(tau)): the NVFlare port's staleness_weight.
    OnePlusSqrt,
    /// s = 1 for tau <= b, else 1 / (a (tau - b) + 1).
    Hinge { a: f64, b: f64 },
}

impl StalenessWeight {
    pub fn weight(self, staleness: u64) -> f64 {
        let tau = staleness as f64;
        match self {
            StalenessWeight::Constant => 1.0,
            StalenessWeight::Polynomial { a } => (1.0 + tau).powf(-a),
            StalenessWeight::Sqrt => (1.0 + tau).sqrt().recip(),
            StalenessWeight::OnePlusSqrt => (1.0 + tau.sqrt()).recip(),
            StalenessWeight::Hinge { a, b } => {
                if tau <= b {
                    1.0
                } else {
                    1.0 / (a * (tau - b) + 1.0)
                }
            }
        }
    }

    pub fn validate(self) -> Result<(), String> {
        match self {
            StalenessWeight::Polynomial { a } if !(a.is_finite() && a >= 0.0) => Err("a must be >= 0".into()),
            StalenessWeight::Hinge { a, b } if !(a.is_finite() && a >= 0.0 && b.is_finite() && b >= 0.0) => {
                Err("a and b must be >= 0".into())
            }
            _ => Ok(()),
        }
    }
}

/// beta(tau) in [0, 1]: the share of a stale update that is replaced (FedRevive) or dropped
/// (AFL-DW). Never decreases with tau. The reference's schedules (FEDREVIVE.md section 8), with
/// f its adaptive_beta_factor; `s_max` is accepted for `factor`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BetaSchedule {
    /// 1 - (1 + cos(pi tau / (2 f))) / 2 up to 2 f, then 1 (the reference's default, f = 75).
    Cosine {
        #[serde(alias = "s_max")]
        factor: f64,
    },
    /// beta for every staleness (the reference's numeric beta).
    Constant { beta: f64 },
    /// min(1, f tau).
    Linear { factor: f64 },
    /// 1 - exp(-f tau).
    Exponential { factor: f64 },
    /// Five levels on base = f K / B: 0 below base/4, 0.25 below base/2, 0.5 below 3 base/4,
    /// 0.75 below base, then 1. `base` is filled in from the config's K and B.
    Stepwise {
        factor: f64,
        #[serde(default)]
        base: f64,
    },
}

impl BetaSchedule {
    pub fn beta(self, staleness: u64) -> f64 {
        let tau = staleness as f64;
        match self {
            BetaSchedule::Cosine { factor } => {
                if tau <= 2.0 * factor {
                    1.0 - 0.5 * (1.0 + (std::f64::consts::PI * tau / (2.0 * factor)).cos())
                } else {
                    1.0
                }
            }
            BetaSchedule::Constant { beta } => beta,
            BetaSchedule::Linear { factor } => (factor * tau).min(1.0),
            BetaSchedule::Exponential { factor } => 1.0 - (-factor * tau).exp(),
            BetaSchedule::Stepwise { base, .. } => {
                let level = [0.25, 0.5, 0.75, 1.0].iter().position(|&q| tau < q * base).unwrap_or(4);
                level as f64 * 0.25
            }
        }
    }

    /// The schedule with what it needs of the config: stepwise's base = f K / B.
    pub fn resolve(self, active_jobs: usize, buffer_size: usize) -> Self {
        match self {
            BetaSchedule::Stepwise { factor, .. } => {
                BetaSchedule::Stepwise { factor, base: factor * active_jobs as f64 / buffer_size as f64 }
            }
            other => other,
        }
    }

    pub fn validate(self) -> Result<(), String> {
        match self {
            BetaSchedule::Constant { beta } if !(0.0..=1.0).contains(&beta) => {
                Err("beta must lie in [0, 1]".into())
            }
            BetaSchedule::Cosine { factor }
            | BetaSchedule::Linear { factor }
            | BetaSchedule::Exponential { factor }
            | BetaSchedule::Stepwise { factor, .. }
                if !(factor.is_finite() && factor > 0.0) =>
            {
                Err("factor (the reference's adaptive_beta_factor) must be a positive number".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn staleness_weights() -> Vec<StalenessWeight> {
        vec![
            StalenessWeight::Constant,
            StalenessWeight::Polynomial { a: 0.5 },
            StalenessWeight::Polynomial { a: 2.0 },
            StalenessWeight::Sqrt,
            StalenessWeight::OnePlusSqrt,
            StalenessWeight::Hinge { a: 0.3, b: 4.0 },
        ]
    }

    fn betas() -> Vec<BetaSchedule> {
        vec![
            BetaSchedule::Cosine { factor: 75.0 },
            BetaSchedule::Constant { beta: 0.5 },
            BetaSchedule::Linear { factor: 0.01 },
            BetaSchedule::Exponential { factor: 0.05 },
            BetaSchedule::Stepwise { factor: 0.5, base: 0.0 }.resolve(100, 1),
        ]
    }

    proptest! {
        #[test]
        fn staleness_weights_lie_in_zero_one_and_never_increase(tau in 0u64..100_000) {
            for s in staleness_weights() {
                let (w, next) = (s.weight(tau), s.weight(tau + 1));
                prop_assert!(w > 0.0 && w <= 1.0, "{:?}({}) = {}", s, tau, w);
                prop_assert!(next <= w, "{:?} increases at {}", s, tau);
            }
        }

        #[test]
        fn betas_lie_in_zero_one_and_never_decrease(tau in 0u64..100_000) {
            for b in betas() {
                let (v, next) = (b.beta(tau), b.beta(tau + 1));
                prop_assert!((0.0..=1.0).contains(&v), "{:?}({}) = {}", b, tau, v);
                prop_assert!(next >= v - 1e-12, "{:?} decreases at {}", b, tau);
            }
        }
    }

    #[test]
    fn cosine_beta_has_the_reference_end_points() {
        let b = BetaSchedule::Cosine { factor: 75.0 };
        assert_eq!(b.beta(0), 0.0);
        assert!((b.beta(75) - 0.5).abs() < 1e-12);
        assert!((b.beta(150) - 1.0).abs() < 1e-12);
        assert_eq!(b.beta(10_000), 1.0);
    }

    #[test]
    fn the_other_schedules_follow_the_reference_formulas() {
        let linear = BetaSchedule::Linear { factor: 0.01 };
        assert_eq!(
            (linear.beta(0), linear.beta(50), linear.beta(100), linear.beta(500)),
            (0.0, 0.5, 1.0, 1.0)
        );
        let exponential = BetaSchedule::Exponential { factor: 0.1 };
        assert!((exponential.beta(10) - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        // f = 0.5, K = 100, B = 2: base 25; levels change at 6.25, 12.5, 18.75 and 25.
        let stepwise = BetaSchedule::Stepwise { factor: 0.5, base: 0.0 }.resolve(100, 2);
        assert_eq!(stepwise, BetaSchedule::Stepwise { factor: 0.5, base: 25.0 });
        let levels: Vec<f64> =
            [0, 6, 7, 12, 13, 18, 19, 24, 25, 1000].iter().map(|&t| stepwise.beta(t)).collect();
        assert_eq!(levels, [0.0, 0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0]);
        // The reference's name for cosine's factor is accepted too.
        let cosine: BetaSchedule = toml::from_str("kind = \"cosine\"\ns_max = 75.0").unwrap();
        assert_eq!(cosine, BetaSchedule::Cosine { factor: 75.0 });
    }

    #[test]
    fn staleness_curves_have_their_textbook_values() {
        assert_eq!(StalenessWeight::Polynomial { a: 1.0 }.weight(3), 0.25);
        assert_eq!(StalenessWeight::Sqrt.weight(3), 0.5);
        assert_eq!(StalenessWeight::OnePlusSqrt.weight(0), 1.0);
        assert_eq!(StalenessWeight::OnePlusSqrt.weight(9), 0.25);
        assert_eq!(StalenessWeight::Hinge { a: 0.5, b: 2.0 }.weight(2), 1.0);
        assert_eq!(StalenessWeight::Hinge { a: 0.5, b: 2.0 }.weight(4), 0.5);
        assert_eq!(ClientWeighting::Samples.weight(350), 350.0);
    }
}
