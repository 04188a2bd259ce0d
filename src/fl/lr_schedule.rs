//! Learning-rate schedules: a factor on a learning rate by model version. The clients' rate
//! (train.lr_schedule) follows the version a task trains from, the server's
//! (algorithm.server_lr_schedule) the version an aggregation makes; both are functions of the
//! plan alone, so they change no schedule and keep results identical for any worker count.
//! `constant` (the default) is a factor of exactly 1, and a run without a schedule multiplies by
//! nothing at all.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// Factor 1.
    #[default]
    Constant,
    /// factor^floor(v / every): e.g. halve every 100 versions.
    Step { every: u64, factor: f64 },
    /// gamma^v.
    Exponential { gamma: f64 },
    /// floor + (1 - floor)(1 + cos(pi min(v, versions) / versions)) / 2: from 1 down to `floor`
    /// at version `versions`, then flat (SGDR without restarts, Loshchilov and Hutter 2017).
    Cosine {
        versions: u64,
        #[serde(default)]
        floor: f64,
    },
}

impl LrSchedule {
    /// The factor at `version`.
    pub fn factor(self, version: u64) -> f64 {
        match self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Step { every, factor } => factor.powi((version / every).min(i32::MAX as u64) as i32),
            LrSchedule::Exponential { gamma } => gamma.powf(version as f64),
            LrSchedule::Cosine { versions, floor } => {
                let progress = version.min(versions) as f64 / versions as f64;
                floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// `rate` at `version`: `rate` itself, untouched, without a schedule.
    pub fn at(self, rate: f64, version: u64) -> f64 {
        match self {
            LrSchedule::Constant => rate,
            _ => rate * self.factor(version),
        }
    }

    /// What is wrong with the parameters, if anything.
    pub fn validate(self) -> Result<(), String> {
        match self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { every: 0, .. } => Err("every must be at least 1 (versions)".into()),
            LrSchedule::Step { factor, .. } if !(factor.is_finite() && factor > 0.0 && factor <= 1.0) => {
                Err("factor must lie in (0, 1]".into())
            }
            LrSchedule::Exponential { gamma } if !(gamma.is_finite() && gamma > 0.0 && gamma <= 1.0) => {
                Err("gamma must lie in (0, 1]".into())
            }
            LrSchedule::Cosine { versions: 0, .. } => {
                Err("versions must be at least 1 (where the rate reaches its floor)".into())
            }
            LrSchedule::Cosine { floor, .. } if !(floor.is_finite() && (0.0..=1.0).contains(&floor)) => {
                Err("floor must lie in [0, 1] (a share of the rate)".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schedule_gives_its_factor_worked_by_hand() {
        assert_eq!(LrSchedule::Constant.factor(12345), 1.0);
        let step = LrSchedule::Step { every: 10, factor: 0.5 };
        assert_eq!([0, 9, 10, 25, 30].map(|v| step.factor(v)), [1.0, 1.0, 0.5, 0.25, 0.125]);
        let exponential = LrSchedule::Exponential { gamma: 0.5 };
        assert_eq!([0, 1, 3].map(|v| exponential.factor(v)), [1.0, 0.5, 0.125]);
        let cosine = LrSchedule::Cosine { versions: 4, floor: 0.2 };
        // 0.2 + 0.8 (1 + cos(pi v / 4)) / 2: 1, 0.2 + 0.4 (1 + 1/sqrt 2), 0.6, ..., 0.2, 0.2.
        assert_eq!(cosine.factor(0), 1.0);
        assert!((cosine.factor(1) - (0.2 + 0.4 * (1.0 + 0.5f64.sqrt()))).abs() < 1e-12);
        assert!((cosine.factor(2) - 0.6).abs() < 1e-12);
        assert!((cosine.factor(4) - 0.2).abs() < 1e-12);
        assert_eq!(cosine.factor(9), cosine.factor(4));
    }

    #[test]
    fn without_a_schedule_the_rate_is_untouched_and_bad_parameters_are_named() {
        assert_eq!(LrSchedule::Constant.at(3e-4, 77).to_bits(), 3e-4f64.to_bits());
        assert!(LrSchedule::Step { every: 0, factor: 0.5 }.validate().unwrap_err().contains("every"));
        assert!(LrSchedule::Step { every: 5, factor: 1.5 }.validate().unwrap_err().contains("factor"));
        assert!(LrSchedule::Exponential { gamma: 0.0 }.validate().unwrap_err().contains("gamma"));
        assert!(LrSchedule::Cosine { versions: 0, floor: 0.0 }.validate().unwrap_err().contains("versions"));
        assert!(LrSchedule::Cosine { versions: 5, floor: 2.0 }.validate().unwrap_err().contains("floor"));
        assert!(LrSchedule::Cosine { versions: 5, floor: 0.1 }.validate().is_ok());
    }
}
