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
/// (AFL-DW). Never decreases with tau.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BetaSchedule {
    /// 1 - (1 + cos(pi tau / (2 s_max))) / 2 up to 2 s_max, then 1 (the reference's default).
    Cosine { s_max: f64 },
    /// beta for every staleness.
    Constant { beta: f64 },
    /// tau / (2 s_max), capped at 1.
    Linear { s_max: f64 },
    /// 1 - exp(-tau / s_max).
    Exponential { s_max: f64 },
    /// 0 below s_max, 0.5 below 2 s_max, then 1.
    Stepwise { s_max: f64 },
}

impl BetaSchedule {
    pub fn beta(self, staleness: u64) -> f64 {
        let tau = staleness as f64;
        match self {
            BetaSchedule::Cosine { s_max } => {
                if tau <= 2.0 * s_max {
                    1.0 - 0.5 * (1.0 + (std::f64::consts::PI * tau / (2.0 * s_max)).cos())
                } else {
                    1.0
                }
            }
            BetaSchedule::Constant { beta } => beta,
            BetaSchedule::Linear { s_max } => (tau / (2.0 * s_max)).min(1.0),
            BetaSchedule::Exponential { s_max } => 1.0 - (-tau / s_max).exp(),
            BetaSchedule::Stepwise { s_max } => {
                if tau < s_max {
                    0.0
                } else if tau < 2.0 * s_max {
                    0.5
                } else {
                    1.0
                }
            }
        }
    }

    pub fn validate(self) -> Result<(), String> {
        match self {
            BetaSchedule::Constant { beta } if !(0.0..=1.0).contains(&beta) => {
                Err("beta must lie in [0, 1]".into())
            }
            BetaSchedule::Cosine { s_max }
            | BetaSchedule::Linear { s_max }
            | BetaSchedule::Exponential { s_max }
            | BetaSchedule::Stepwise { s_max }
                if !(s_max.is_finite() && s_max > 0.0) =>
            {
                Err("s_max must be a positive number of versions".into())
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
            StalenessWeight::Hinge { a: 0.3, b: 4.0 },
        ]
    }

    fn betas() -> Vec<BetaSchedule> {
        vec![
            BetaSchedule::Cosine { s_max: 75.0 },
            BetaSchedule::Constant { beta: 0.5 },
            BetaSchedule::Linear { s_max: 10.0 },
            BetaSchedule::Exponential { s_max: 10.0 },
            BetaSchedule::Stepwise { s_max: 10.0 },
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
        let b = BetaSchedule::Cosine { s_max: 75.0 };
        assert_eq!(b.beta(0), 0.0);
        assert!((b.beta(75) - 0.5).abs() < 1e-12);
        assert!((b.beta(150) - 1.0).abs() < 1e-12);
        assert_eq!(b.beta(10_000), 1.0);
    }

    #[test]
    fn staleness_curves_have_their_textbook_values() {
        assert_eq!(StalenessWeight::Polynomial { a: 1.0 }.weight(3), 0.25);
        assert_eq!(StalenessWeight::Sqrt.weight(3), 0.5);
        assert_eq!(StalenessWeight::Hinge { a: 0.5, b: 2.0 }.weight(2), 1.0);
        assert_eq!(StalenessWeight::Hinge { a: 0.5, b: 2.0 }.weight(4), 0.5);
        assert_eq!(ClientWeighting::Samples.weight(350), 350.0);
    }
}
