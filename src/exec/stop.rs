//! The stop rules that depend on model values: a target accuracy, the reference's early stop
//! (the version count has reached a threshold's version and the best accuracy so far is at
//! most its accuracy) and a non-finite test loss. The plan's own ends (versions, virtual time)
//! are the plan's; this tracks the accuracies the rules read, and saves them with a checkpoint.

use crate::nn::eval::EvalResult;
use crate::sched::PlanEnd;

/// Why a run stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// The plan ended (max_versions or max_virtual_time).
    PlanEnd(PlanEnd),
    TargetAccuracy {
        accuracy: f64,
    },
    EarlyStop {
        version: u64,
        best_accuracy: f64,
        threshold: f64,
    },
    /// A loss or update was NaN or infinite: a client's (the aggregation that would have made
    /// `version` was not applied) or the evaluation's of `version`.
    NonFinite {
        version: u64,
        task: Option<u64>,
        what: &'static str,
    },
    /// The user asked the run to stop (Ctrl-C); what was applied so far stands.
    Interrupted,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::PlanEnd(PlanEnd::MaxVersions) => write!(f, "max_versions"),
            StopReason::PlanEnd(PlanEnd::MaxVirtualTime) => write!(f, "max_virtual_time"),
            StopReason::PlanEnd(PlanEnd::ClientsExhausted) => write!(f, "clients_exhausted"),
            StopReason::TargetAccuracy { accuracy } => write!(f, "target_accuracy (reached {accuracy:.4})"),
            StopReason::EarlyStop { version, best_accuracy, threshold } => {
                write!(f, "early_stop (best accuracy {best_accuracy:.4} <= {threshold} at version {version})")
            }
            StopReason::NonFinite { version, task: Some(task), what } => {
                write!(f, "non-finite {what} from task {task}; version {version} was not made")
            }
            StopReason::NonFinite { version, task: None, what } => {
                write!(f, "non-finite {what} evaluating version {version}")
            }
            StopReason::Interrupted => write!(f, "interrupted"),
        }
    }
}

/// The reference's early stop, checked after every event: the version count has reached a
/// threshold's version and the best accuracy so far is at most its accuracy.
pub fn early_stop(thresholds: &[(u64, f64)], version: u64, best_accuracy: Option<f64>) -> Option<StopReason> {
    let best = best_accuracy?;
    thresholds
        .iter()
        .find(|&&(at, acc)| version >= at && best <= acc)
        .map(|&(_, threshold)| StopReason::EarlyStop { version, best_accuracy: best, threshold })
}

/// The rules and what they have seen so far.
#[derive(Clone, Debug, PartialEq)]
pub struct StopRules {
    target_accuracy: Option<f64>,
    /// [(version, acc)], as in [`early_stop`].
    thresholds: Vec<(u64, f64)>,
    pub last_accuracy: Option<f64>,
    pub best_accuracy: Option<f64>,
    /// An aggregation happened whose early-stop check is still to come: it runs once the next
    /// step is known, after the evaluation of that version where one follows.
    pub early_stop_due: bool,
}

impl StopRules {
    pub fn new(target_accuracy: Option<f64>, thresholds: Vec<(u64, f64)>) -> Self {
        StopRules {
            target_accuracy,
            thresholds,
            last_accuracy: None,
            best_accuracy: None,
            early_stop_due: false,
        }
    }

    /// A version was made; its early-stop check waits for the next step.
    pub fn aggregated(&mut self) {
        self.early_stop_due = true;
    }

    /// Before the next step: the pending early-stop check, unless `version`'s evaluation comes
    /// first (it checks then, with its accuracy).
    pub fn before_step(&mut self, version: u64, evaluation_follows: bool) -> Option<StopReason> {
        if evaluation_follows || !std::mem::take(&mut self.early_stop_due) {
            return None;
        }
        early_stop(&self.thresholds, version, self.best_accuracy)
    }

    /// `version` was evaluated: the target, a non-finite loss, then the early stop, in that order.
    pub fn evaluated(&mut self, version: u64, result: &EvalResult) -> Option<StopReason> {
        self.last_accuracy = Some(result.accuracy);
        self.best_accuracy = Some(self.best_accuracy.map_or(result.accuracy, |b| b.max(result.accuracy)));
        if self.target_accuracy.is_some_and(|target| result.accuracy >= target) {
            return Some(StopReason::TargetAccuracy { accuracy: result.accuracy });
        }
        if !result.loss.is_finite() {
            return Some(StopReason::NonFinite { version, task: None, what: "test loss" });
        }
        self.early_stop_due = false;
        early_stop(&self.thresholds, version, self.best_accuracy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(accuracy: f64, loss: f64) -> EvalResult {
        EvalResult { accuracy, loss, per_class_accuracy: vec![] }
    }

    #[test]
    fn the_early_stop_needs_both_the_version_and_a_low_best_accuracy() {
        let thresholds = [(10, 0.2), (20, 0.5)];
        assert_eq!(early_stop(&thresholds, 9, Some(0.1)), None);
        assert_eq!(early_stop(&thresholds, 10, None), None, "no evaluation yet");
        assert!(
            matches!(early_stop(&thresholds, 10, Some(0.2)), Some(StopReason::EarlyStop { threshold, .. }) if threshold == 0.2)
        );
        assert!(
            matches!(early_stop(&thresholds, 25, Some(0.3)), Some(StopReason::EarlyStop { threshold, .. }) if threshold == 0.5)
        );
        assert_eq!(early_stop(&thresholds, 25, Some(0.6)), None);
    }

    #[test]
    fn an_aggregations_check_waits_for_its_evaluation() {
        let mut rules = StopRules::new(None, vec![(1, 0.5)]);
        assert!(
            rules.evaluated(0, &result(0.3, 1.0)).is_none(),
            "version 0 is below the threshold's version"
        );
        rules.aggregated();
        assert_eq!(rules.before_step(1, true), None, "the evaluation of version 1 decides");
        assert!(rules.early_stop_due);
        assert!(matches!(
            rules.evaluated(1, &result(0.4, 1.0)),
            Some(StopReason::EarlyStop { version: 1, .. })
        ));
        assert!(!rules.early_stop_due);
    }

    #[test]
    fn without_an_evaluation_the_check_runs_once_before_the_next_step() {
        let mut rules = StopRules::new(None, vec![(1, 0.5)]);
        rules.evaluated(0, &result(0.3, 1.0));
        rules.aggregated();
        assert!(matches!(rules.before_step(1, false), Some(StopReason::EarlyStop { version: 1, .. })));
        assert_eq!(rules.before_step(1, false), None, "the check is taken once");
    }

    #[test]
    fn the_target_comes_before_a_non_finite_loss_and_the_best_accuracy_only_rises() {
        let mut rules = StopRules::new(Some(0.8), vec![]);
        assert_eq!(
            rules.evaluated(3, &result(0.5, f64::NAN)),
            Some(StopReason::NonFinite { version: 3, task: None, what: "test loss" })
        );
        assert_eq!(
            rules.evaluated(4, &result(0.9, f64::NAN)),
            Some(StopReason::TargetAccuracy { accuracy: 0.9 })
        );
        rules.evaluated(5, &result(0.2, 1.0));
        assert_eq!((rules.last_accuracy, rules.best_accuracy), (Some(0.2), Some(0.9)));
    }
}
