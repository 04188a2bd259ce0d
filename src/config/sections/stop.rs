//! `[eval]` and `[stop]`: how often the model is evaluated and when the run ends.

use crate::config::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEval {
    /// Versions between evaluations (the port's eval_frequency).
    #[serde(alias = "eval_frequency")]
    pub interval: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStop {
    /// The port's max_model_version.
    #[serde(alias = "max_model_version")]
    pub max_versions: Option<u64>,
    pub max_virtual_time: Option<f64>,
    pub target_accuracy: Option<f64>,
    /// [[version, accuracy], ...]: stop once the version count is >= `version` and the best
    /// accuracy so far is <= `accuracy` (the reference's early_stop, checked after every event).
    pub early_stop: Option<Vec<(u64, f64)>>,
}

/// `[eval]` and `[stop]` validated.
pub struct StopSection {
    pub eval_interval: u64,
    pub max_versions: Option<u64>,
    pub max_virtual_time: Option<f64>,
    pub target_accuracy: Option<f64>,
    pub early_stop: Vec<(u64, f64)>,
}

impl RawStop {
    /// With `eval` ([eval]), whose default interval is the algorithm's.
    pub fn validate(self, eval: RawEval, algorithm: AlgorithmKind) -> Result<StopSection, ConfigError> {
        let eval_interval = eval.interval.unwrap_or(algorithm.row().defaults.eval_interval);
        if eval_interval == 0 {
            return Err(invalid("eval.interval", 0, "must be at least 1 (versions between evaluations)"));
        }
        if let Some(t) = self.max_virtual_time {
            if !(t.is_finite() && t > 0.0) {
                return Err(invalid("stop.max_virtual_time", t, "must be a positive number of time units"));
            }
        }
        if self.max_versions == Some(0) {
            return Err(invalid("stop.max_versions", 0, "must be at least 1"));
        }
        if self.max_versions.is_none() && self.max_virtual_time.is_none() {
            return Err(invalid(
                "stop",
                "{}",
                "set stop.max_versions or stop.max_virtual_time (or both), so that the run ends",
            ));
        }
        if let Some(a) = self.target_accuracy {
            if !(0.0..=1.0).contains(&a) {
                return Err(invalid("stop.target_accuracy", a, "must lie in [0, 1]"));
            }
        }
        let early_stop = self.early_stop.unwrap_or_default();
        if let Some((v, a)) = early_stop.iter().find(|(_, a)| !(0.0..=1.0).contains(a)) {
            return Err(invalid(
                "stop.early_stop",
                format!("[{v}, {a}]"),
                "minimum accuracies must lie in [0, 1]",
            ));
        }
        Ok(StopSection {
            eval_interval,
            max_versions: self.max_versions,
            max_virtual_time: self.max_virtual_time,
            target_accuracy: self.target_accuracy,
            early_stop,
        })
    }
}
