//! FedRevive's loss stabiliser (FEDREVIVE.md section 8), used for the synthesis loss terms and,
//! with a window of its own, for the distillation loss. A step's value of a term is dropped
//! (left out of that step's loss) only if it is NaN or infinite, or if the term's window
//! already holds at least `min_history` values, their mean is positive and the value exceeds
//! `factor` times that mean. So a negative term (L_adv) is never dropped as a spike. Kept values
//! join the window; a term is judged only once it is switched on: values of a gated term are
//! never passed in before its gate opens, so they never enter its history.

use std::collections::VecDeque;

/// The reference's rule: 10 values before spikes count, a spike is more than 3x the mean.
pub const MIN_HISTORY: usize = 10;
pub const SPIKE_FACTOR: f64 = 3.0;
/// Values in a term's window.
pub const WINDOW: usize = 20;

#[derive(Clone, Debug)]
pub struct LossStabilizer {
    factor: f64,
    window: usize,
    min_history: usize,
    history: Vec<VecDeque<f64>>,
}

impl LossStabilizer {
    /// `terms` loss terms with the reference's window, history and spike factor.
    pub fn reference(terms: usize) -> Self {
        Self::new(terms, WINDOW, MIN_HISTORY, SPIKE_FACTOR)
    }

    /// `terms` loss terms, each judged against the mean of its last `window` kept values once
    /// it holds at least `min_history` of them.
    pub fn new(terms: usize, window: usize, min_history: usize, factor: f64) -> Self {
        let window = window.max(1);
        LossStabilizer {
            factor,
            window,
            min_history: min_history.min(window),
            history: vec![VecDeque::new(); terms],
        }
    }

    /// Whether to keep this step's value of `term`; a kept value joins the term's window.
    pub fn admit(&mut self, term: usize, value: f64) -> bool {
        let history = &mut self.history[term];
        if !value.is_finite() {
            return false;
        }
        if history.len() >= self.min_history {
            let mean = history.iter().sum::<f64>() / history.len() as f64;
            if mean > 0.0 && value > self.factor * mean {
                return false;
            }
        }
        if history.len() == self.window {
            history.pop_front();
        }
        history.push_back(value);
        true
    }

    /// The values a term's window holds (oldest first).
    pub fn history(&self, term: usize) -> &VecDeque<f64> {
        &self.history[term]
    }

    /// Each term's window (what decides future judgements), for a checkpoint.
    pub fn save(&self) -> crate::saved::SavedState {
        let mut state = crate::saved::SavedState::default();
        for (term, history) in self.history.iter().enumerate() {
            let data: Vec<f64> = history.iter().copied().collect();
            state.put_array(term.to_string(), crate::saved::Array::F64 { shape: vec![data.len()], data });
        }
        state
    }

    /// Puts back the windows [`LossStabilizer::save`] gave.
    pub fn restore(&mut self, mut state: crate::saved::SavedState) -> Result<(), crate::saved::StateError> {
        for (term, history) in self.history.iter_mut().enumerate() {
            let values = state.take_f64(&term.to_string())?;
            crate::saved::ensure(values.len() <= self.window, || {
                format!("a stabiliser window holds more than {} values", self.window)
            })?;
            *history = values.into();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_or_infinite_value_is_dropped_and_leaves_no_trace() {
        let mut s = LossStabilizer::reference(2);
        assert!(s.admit(0, 1.0));
        assert!(!s.admit(0, f64::NAN));
        assert!(!s.admit(1, f64::INFINITY));
        assert!(!s.admit(1, f64::NEG_INFINITY));
        assert_eq!(s.history(0).len(), 1);
        assert!(s.history(1).is_empty());
    }

    #[test]
    fn spikes_are_judged_only_once_the_window_holds_ten_values() {
        let mut s = LossStabilizer::reference(1);
        // Nine values of 1.0: a value of 100 is not yet a spike.
        for _ in 0..9 {
            assert!(s.admit(0, 1.0));
        }
        assert!(s.admit(0, 100.0), "fewer than 10 values before it: kept");
        // Now 10 values with mean 10.9: 33 is above 3x the mean, 32 is not.
        assert!(!s.admit(0, 33.0));
        assert!(s.admit(0, 32.0));
    }

    #[test]
    fn a_non_positive_mean_never_drops_a_value() {
        // L_adv is negative: a more negative (or any finite) value is never a spike.
        let mut s = LossStabilizer::reference(1);
        for _ in 0..12 {
            assert!(s.admit(0, -0.5));
        }
        assert!(s.admit(0, -50.0));
        assert!(s.admit(0, 50.0), "the mean is negative, so 50 is not judged a spike");
        let mut zeros = LossStabilizer::reference(1);
        for _ in 0..12 {
            assert!(zeros.admit(0, 0.0));
        }
        assert!(zeros.admit(0, 1.0), "a zero mean drops nothing");
    }

    #[test]
    fn a_restored_stabiliser_judges_as_the_saved_one() {
        let mut s = LossStabilizer::reference(2);
        for v in [1.0, 2.0, 0.1 + 0.2, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0] {
            assert!(s.admit(1, v));
        }
        let mut restored = LossStabilizer::reference(2);
        restored.restore(s.save()).unwrap();
        assert_eq!(restored.history(1), s.history(1));
        assert_eq!(restored.admit(1, 17.0), s.admit(1, 17.0));
        assert_eq!(restored.admit(1, 16.0), s.admit(1, 16.0));
    }

    #[test]
    fn the_window_forgets_old_values() {
        let mut s = LossStabilizer::new(1, 10, 10, 3.0);
        for _ in 0..10 {
            assert!(s.admit(0, 100.0));
        }
        for _ in 0..10 {
            assert!(s.admit(0, 1.0));
        }
        assert!(!s.admit(0, 3.5), "the window now holds only 1.0s");
    }
}
