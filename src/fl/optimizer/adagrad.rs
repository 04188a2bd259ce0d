//! `adagrad` (FedAdagrad, Reddi et al. 2021, Algorithm 2): v_t = v_{t-1} + Delta_t^2 (it only
//! grows, so the step shrinks over the run), m_t = beta1 m_{t-1} + (1 - beta1) Delta_t,
//! theta <- theta + eta m_t / (sqrt(v_t) + tau), from m_{-1} = 0 and v_{-1} = tau^2.

use super::{Moments, ServerOptimizer};
use crate::params::Weights;
use crate::saved::{SavedState, StateError};

pub struct Adagrad<W> {
    beta1: f32,
    tau: f32,
    moments: Moments<W>,
}

impl<W: Weights> Adagrad<W> {
    pub fn new(beta1: f32, tau: f32) -> Self {
        Adagrad { beta1, tau, moments: Moments::new() }
    }
}

impl<W: Weights> ServerOptimizer<W> for Adagrad<W> {
    fn step(&mut self, theta: &mut W, mean_delta: &W, lr: f32) {
        let v = self.moments.second_or_start(self.tau, mean_delta);
        v.add_squares(1.0, mean_delta);
        self.moments.advance_first(self.beta1, 1.0 - self.beta1, mean_delta);
        let (m, v) = self.moments.both();
        theta.add_adaptive_step(lr, m, v, self.tau);
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
        // beta1 0.5, tau 2 (v starts at 4), eta 4, theta 0.
        // Step 1, Delta 2: m = 1, v = 4 + 4 = 8, theta = 4 / (sqrt(8) + 2) = 0.8284271...
        // Step 2, Delta 1: m = 0.5 + 0.5 = 1, v = 8 + 1 = 9, theta += 4 * 1 / (3 + 2) = 0.8.
        let mut adagrad = Adagrad::new(0.5, 2.0);
        let mut theta = vec![0.0f32];
        adagrad.step(&mut theta, &vec![2.0], 4.0);
        let first = 4.0 / (8f64.sqrt() + 2.0);
        assert!((theta[0] as f64 - first).abs() < 1e-6, "{} vs {first}", theta[0]);
        adagrad.step(&mut theta, &vec![1.0], 4.0);
        assert!((theta[0] as f64 - (first + 0.8)).abs() < 1e-6, "{} vs {}", theta[0], first + 0.8);
    }
}
