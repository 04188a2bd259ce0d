//! FedRevive's loss stabiliser for generator synthesis: a loss term that is NaN or infinite,
//! or more than `factor` (3) times its recent mean, is dropped for that step rather than
//! propagated into the generator.

use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct LossStabilizer {
    factor: f64,
    window: usize,
    history: Vec<VecDeque<f64>>,
}

impl LossStabilizer {
    /// `terms` loss terms, each judged against the mean of its last `window` kept values.
    pub fn new(terms: usize, window: usize, factor: f64) -> Self {
        LossStabilizer { factor, window: window.max(1), history: vec![VecDeque::new(); terms] }
    }

    /// Which of this step's term values to keep; kept values join their term's history.
    pub fn admit(&mut self, values: &[f64]) -> Vec<bool> {
        assert_eq!(values.len(), self.history.len(), "one value per loss term");
        values
            .iter()
            .zip(&mut self.history)
            .map(|(&value, history)| {
                let mean = (!history.is_empty()).then(|| history.iter().sum::<f64>() / history.len() as f64);
                let keep =
                    value.is_finite() && mean.is_none_or(|m| value.abs() <= self.factor * m.abs().max(1e-12));
                if keep {
                    if history.len() == self.window {
                        history.pop_front();
                    }
                    history.push_back(value);
                }
                keep
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_or_infinite_term_is_dropped_not_propagated() {
        let mut s = LossStabilizer::new(3, 10, 3.0);
        assert_eq!(s.admit(&[1.0, 2.0, 0.5]), [true, true, true]);
        assert_eq!(s.admit(&[f64::NAN, 2.1, f64::INFINITY]), [false, true, false]);
        // The dropped values left no trace: the next ordinary values are judged as before.
        assert_eq!(s.admit(&[1.1, 2.0, 0.6]), [true, true, true]);
    }

    #[test]
    fn a_spike_above_three_times_the_recent_mean_is_dropped() {
        let mut s = LossStabilizer::new(1, 4, 3.0);
        for v in [1.0, 1.0, 1.0] {
            assert_eq!(s.admit(&[v]), [true]);
        }
        assert_eq!(s.admit(&[3.5]), [false]);
        assert_eq!(s.admit(&[2.9]), [true]);
    }
}
