//! `momentum` (FedAvgM; Hsu et al. 2019, and Reddi et al. 2021's baseline): heavy-ball momentum
//! on the pseudo-gradient, m_t = beta1 m_{t-1} + Delta_t, theta <- theta + eta m_t. With no
//! update (Delta_t = 0) it coasts: theta still moves by eta beta1 m_{t-1}.

use super::{Moments, ServerOptimizer};
use crate::params::Weights;
use crate::saved::{SavedState, StateError};

pub struct Momentum<W> {
    beta1: f32,
    moments: Moments<W>,
}

impl<W: Weights> Momentum<W> {
    pub fn new(beta1: f32) -> Self {
        Momentum { beta1, moments: Moments::new() }
    }
}

impl<W: Weights> ServerOptimizer<W> for Momentum<W> {
    fn step(&mut self, theta: &mut W, mean_delta: &W, lr: f32) {
        let m = self.moments.advance_first(self.beta1, 1.0, mean_delta);
        theta.axpy(lr, m);
    }

    fn save(&self) -> SavedState {
        self.moments.save()
    }

    fn restore(&mut self, state: SavedState, like: &W) -> Result<(), StateError> {
        self.moments.restore(state, like)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_worked_by_hand() {
        // beta1 0.5, eta 2, theta 0. Step 1: Delta 1 -> m 1, theta 2.
        // Step 2: Delta 3 -> m 0.5 * 1 + 3 = 3.5, theta 2 + 2 * 3.5 = 9.
        let mut momentum = Momentum::new(0.5);
        let mut theta = vec![0.0f32];
        momentum.step(&mut theta, &vec![1.0], 2.0);
        assert_eq!(theta, [2.0]);
        momentum.step(&mut theta, &vec![3.0], 2.0);
        assert_eq!(theta, [9.0]);
    }
}
