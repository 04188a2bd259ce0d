//! `sgd`: theta <- theta + eta Delta_t, stateless: the server step of FedAvg and FedBuff, and of
//! every run before server optimizers existed (its floats are those runs' floats).

use super::ServerOptimizer;
use crate::params::Weights;
use crate::saved::{SavedState, StateError};

pub struct Sgd;

impl<W: Weights> ServerOptimizer<W> for Sgd {
    fn step(&mut self, theta: &mut W, mean_delta: &W, lr: f32) {
        theta.axpy(lr, mean_delta);
    }

    fn save(&self) -> SavedState {
        SavedState::default()
    }

    fn restore(&mut self, _: SavedState, _: &W) -> Result<(), StateError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_add_eta_times_each_mean_delta() {
        let mut theta = vec![1.0f32, -2.0];
        Sgd.step(&mut theta, &vec![0.5, 1.0], 2.0);
        assert_eq!(theta, [2.0, 0.0]);
        Sgd.step(&mut theta, &vec![-1.0, 0.25], 2.0);
        assert_eq!(theta, [0.0, 0.5]);
    }
}
