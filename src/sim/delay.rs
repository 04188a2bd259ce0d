//! Client delays (FEDREVIVE.md section 1). For each delay kind (download, train, upload) a
//! client picks once a component of a discrete mixture `(probability, mean, std)`; each later
//! event of that kind draws its duration, in time units, from a distribution around that mean:
//! exponential, constant, uniform U(max(0, mean - std), mean + std), normal clamped at 0
//! (max(0, N(mean, std)), as the NVFlare port draws it), or lognormal with that mean and
//! standard deviation.

use rand::Rng as _;
use rand_distr::{Distribution as _, Exp, LogNormal, Normal};
use serde::{Deserialize, Serialize};

use super::rng::{self, Purpose, Rng};
use super::time::SimDuration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Exponential,
    Constant,
    Uniform,
    Normal,
    LogNormal,
}

impl Distribution {
    pub const NAMES: &'static str = "exponential, constant, uniform, normal, lognormal";
}

/// One mixture component: picked with `probability`; draws centre on `mean` (time units).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub probability: f64,
    pub mean: f64,
    pub std: f64,
}

/// The delay model of one kind, shared by all clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DelaySpec {
    pub distribution: Distribution,
    pub components: Vec<Component>,
}

impl DelaySpec {
    pub fn constant(mean: f64) -> Self {
        DelaySpec {
            distribution: Distribution::Constant,
            components: vec![Component { probability: 1.0, mean, std: 0.0 }],
        }
    }

    /// Picks a component by its probability (the client's profile for this kind).
    pub fn pick(&self, rng: &mut Rng) -> Component {
        let u: f64 = rng.random();
        let mut acc = 0.0;
        for component in &self.components {
            acc += component.probability;
            if u < acc {
                return *component;
            }
        }
        *self.components.last().expect("validated: at least one component")
    }

    /// The mean of a draw, averaged over the mixture (for tests and summaries).
    pub fn expected(&self) -> f64 {
        self.components.iter().map(|c| c.probability * expected_draw(self.distribution, c)).sum()
    }
}

/// Draws one duration in time units; never negative.
pub fn draw(distribution: Distribution, component: &Component, rng: &mut Rng) -> f64 {
    let Component { mean, std, .. } = *component;
    if mean <= 0.0 && distribution != Distribution::Normal {
        return 0.0;
    }
    match distribution {
        Distribution::Constant => mean,
        Distribution::Exponential => Exp::new(1.0 / mean).map_or(mean, |d| d.sample(rng)),
        Distribution::Uniform => {
            let (low, high) = ((mean - std).max(0.0), mean + std);
            if high > low {
                rng.random_range(low..high)
            } else {
                mean
            }
        }
        Distribution::Normal => match Normal::new(mean, std) {
            Ok(normal) if std > 0.0 => normal.sample(rng).max(0.0),
            _ => mean.max(0.0),
        },
        Distribution::LogNormal => {
            let sigma2 = (1.0 + (std / mean).powi(2)).ln();
            LogNormal::new(mean.ln() - sigma2 / 2.0, sigma2.sqrt()).map_or(mean, |d| d.sample(rng))
        }
    }
}

/// The expected value of [`draw`] for a component (the normal's clamp at 0 ignored).
fn expected_draw(distribution: Distribution, c: &Component) -> f64 {
    match distribution {
        Distribution::Uniform => ((c.mean - c.std).max(0.0) + c.mean + c.std) / 2.0,
        _ => c.mean.max(0.0),
    }
}

/// The three delay kinds of a client job, in the order of its event chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayKind {
    Download = 0,
    Train = 1,
    Upload = 2,
}

/// Delay specs for the three kinds, and optionally a device trace that gives each client its
/// means instead of a mixture draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DelayModel {
    pub download: DelaySpec,
    pub train: DelaySpec,
    pub upload: DelaySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<DeviceTrace>,
}

/// Per-client compute-speed and bandwidth factors from a file (columns client, speed,
/// bandwidth; CSV or Parquet): a client's mean training time is the train spec's mean over its
/// mixture divided by its speed, its download and upload means those of their specs divided by
/// its bandwidth (1 is the world's average device). Each event still draws from the spec's
/// distribution around that mean, with the spec's std.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceTrace {
    pub file: String,
    /// (speed, bandwidth) per client.
    #[serde(skip)]
    pub factors: std::sync::Arc<Vec<(f64, f64)>>,
}

impl PartialEq for DeviceTrace {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file && self.factors == other.factors
    }
}

/// A device trace's columns.
pub const TRACE_COLUMNS: [&str; 3] = ["client", "speed", "bandwidth"];

/// The (speed, bandwidth) factors of a device trace's rows ([`TRACE_COLUMNS`]) for
/// `num_clients` clients: every client needs exactly one row, with positive, finite factors.
/// Errors name the row and column (the caller names the file).
pub fn device_factors(trace: Vec<super::trace::Row>, num_clients: usize) -> Result<Vec<(f64, f64)>, String> {
    let mut factors: Vec<Option<(f64, f64)>> = vec![None; num_clients];
    for (row, values) in trace {
        let client = super::trace::client(row, values[0], num_clients)?;
        for (column, value) in [("speed", values[1]), ("bandwidth", values[2])] {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("row {row}, column {column}: '{value}' is not a positive factor"));
            }
        }
        if factors[client].replace((values[1], values[2])).is_some() {
            return Err(format!("row {row}, column client: client {client} has a row already"));
        }
    }
    let missing: Vec<String> =
        factors.iter().enumerate().filter(|(_, f)| f.is_none()).map(|(c, _)| c.to_string()).take(5).collect();
    if !missing.is_empty() {
        let count = factors.iter().filter(|f| f.is_none()).count();
        return Err(format!(
            "{count} of {num_clients} clients have no row (first: {}); a device trace gives every client its factors",
            missing.join(", ")
        ));
    }
    Ok(factors.into_iter().flatten().collect())
}

impl DelayModel {
    fn spec(&self, kind: DelayKind) -> &DelaySpec {
        match kind {
            DelayKind::Download => &self.download,
            DelayKind::Train => &self.train,
            DelayKind::Upload => &self.upload,
        }
    }

    /// FEDREVIVE.md's CIFAR-10 defaults.
    pub fn reference_default() -> Self {
        let c = |probability, mean, std| Component { probability, mean, std };
        DelayModel {
            download: DelaySpec::constant(0.1),
            train: DelaySpec {
                distribution: Distribution::Exponential,
                components: vec![c(0.25, 1.0, 0.0), c(0.5, 1.3, 0.0), c(0.25, 1.6, 0.0)],
            },
            upload: DelaySpec {
                distribution: Distribution::Uniform,
                components: vec![c(0.5, 0.15, 0.02), c(0.5, 0.25, 0.02)],
            },
            trace: None,
        }
    }

    /// The reference's "shifted" (faster) world.
    pub fn reference_shifted() -> Self {
        let c = |probability, mean, std| Component { probability, mean, std };
        DelayModel {
            download: DelaySpec::constant(0.02),
            train: DelaySpec { distribution: Distribution::Exponential, components: vec![c(1.0, 0.1, 0.0)] },
            upload: DelaySpec {
                distribution: Distribution::Uniform,
                components: vec![c(0.5, 0.05, 0.01), c(0.5, 0.10, 0.01)],
            },
            trace: None,
        }
    }

    /// Every client's profile (from the setup seed) and draw streams (from the run seed).
    pub fn clients(&self, setup_seed: u64, run_seed: u64, count: usize) -> Vec<ClientDelays> {
        (0..count as u64)
            .map(|client| {
                let mut profile = rng::stream(setup_seed, Purpose::DelayProfile, client);
                let kinds = [DelayKind::Download, DelayKind::Train, DelayKind::Upload];
                let component = |k: DelayKind| match &self.trace {
                    None => self.spec(k).pick(&mut profile),
                    Some(trace) => {
                        let (speed, bandwidth) = trace.factors[client as usize];
                        let factor = if k == DelayKind::Train { speed } else { bandwidth };
                        let spec = self.spec(k);
                        let std = spec.components.first().map_or(0.0, |c| c.std);
                        Component { probability: 1.0, mean: spec.expected() / factor, std }
                    }
                };
                ClientDelays {
                    components: kinds.map(component),
                    distributions: kinds.map(|k| self.spec(k).distribution),
                    draws: kinds.map(|k| rng::stream(run_seed, Purpose::DelayDraw, 3 * client + k as u64)),
                }
            })
            .collect()
    }
}

/// One client's delays: its picked components and its own draw streams.
pub struct ClientDelays {
    components: [Component; 3],
    distributions: [Distribution; 3],
    draws: [Rng; 3],
}

impl ClientDelays {
    pub fn draw(&mut self, kind: DelayKind) -> SimDuration {
        let k = kind as usize;
        SimDuration::from_units(draw(self.distributions[k], &self.components[k], &mut self.draws[k]))
    }

    pub fn component(&self, kind: DelayKind) -> Component {
        self.components[kind as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_mean(distribution: Distribution, mean: f64, std: f64, seed: u64) -> f64 {
        let component = Component { probability: 1.0, mean, std };
        let mut rng = rng::stream(seed, Purpose::DelayDraw, 0);
        let n = 20_000;
        (0..n).map(|_| draw(distribution, &component, &mut rng)).sum::<f64>() / n as f64
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn sample_means_are_near_the_configured_means(mean in 0.05f64..3.0, rel_std in 0.0f64..0.3, seed in 0u64..100) {
            let std = mean * rel_std;
            for distribution in [Distribution::Exponential, Distribution::Constant, Distribution::Uniform, Distribution::Normal, Distribution::LogNormal] {
                let got = sample_mean(distribution, mean, std, seed);
                // Exponential has std = mean: 20,000 draws put the sample mean within 3% (4 sigma).
                prop_assert!((got - mean).abs() <= 0.03 * mean + 1e-9, "{:?}: mean {} got {}", distribution, mean, got);
            }
        }

        #[test]
        fn draws_are_never_negative(mean in -1.0f64..1.0, std in 0.0f64..2.0, seed in 0u64..50) {
            let component = Component { probability: 1.0, mean, std };
            let mut rng = rng::stream(seed, Purpose::DelayDraw, 1);
            for distribution in [Distribution::Exponential, Distribution::Constant, Distribution::Uniform, Distribution::Normal, Distribution::LogNormal] {
                for _ in 0..50 {
                    prop_assert!(draw(distribution, &component, &mut rng) >= 0.0);
                }
            }
        }
    }

    #[test]
    fn profiles_follow_the_mixture_probabilities() {
        let model = DelayModel::reference_default();
        let clients = model.clients(10, 10, 4_000);
        let slow = clients.iter().filter(|c| c.component(DelayKind::Train).mean == 1.6).count();
        let middle = clients.iter().filter(|c| c.component(DelayKind::Train).mean == 1.3).count();
        assert!((900..1_100).contains(&slow), "{slow} of 4000 with mean 1.6 (expected ~1000)");
        assert!((1_850..2_150).contains(&middle), "{middle} of 4000 with mean 1.3 (expected ~2000)");
        assert!((model.train.expected() - 1.3).abs() < 1e-12);
    }

    #[test]
    fn a_normal_draw_is_clamped_at_zero_not_redrawn() {
        // N(0, 1) clamped: about half of the draws are exactly 0 (a redraw would give none).
        let component = Component { probability: 1.0, mean: 0.0, std: 1.0 };
        let mut rng = rng::stream(3, Purpose::DelayDraw, 0);
        let zeros = (0..4_000).filter(|_| draw(Distribution::Normal, &component, &mut rng) == 0.0).count();
        assert!((1_800..2_200).contains(&zeros), "{zeros} of 4000 draws at 0");
    }

    #[test]
    fn the_seed_decides_every_draw() {
        let model = DelayModel::reference_default();
        let draws = |setup, run| {
            let mut clients = model.clients(setup, run, 5);
            clients.iter_mut().map(|c| c.draw(DelayKind::Train)).collect::<Vec<_>>()
        };
        assert_eq!(draws(1, 1), draws(1, 1));
        assert_ne!(draws(1, 1), draws(1, 2), "the run seed decides the draws");
        let profiles = |setup, run| {
            model
                .clients(setup, run, 50)
                .iter()
                .map(|c| c.component(DelayKind::Train).mean)
                .collect::<Vec<_>>()
        };
        assert_eq!(profiles(1, 1), profiles(1, 2), "the run seed leaves the profiles alone");
        assert_ne!(profiles(1, 1), profiles(2, 1), "the setup seed decides them");
    }
}
