//! `adagrad` (FedAdagrad, Reddi et al. 2021, Algorithm 2): the adaptive step (`adaptive.rs`) with
//! v_t = v_{t-1} + Delta_t^2, which only grows, so the step shrinks over the run.

use super::adaptive::{Adaptive, SecondMoment};
use crate::params::Weights;

/// v_t = v_{t-1} + Delta_t^2.
pub struct AdagradMoment;

impl SecondMoment for AdagradMoment {
    fn advance<W: Weights>(&self, v: &mut W, mean_delta: &W) {
        v.add_squares(1.0, mean_delta);
    }
}

pub fn adagrad<W: Weights>(beta1: f32, tau: f32) -> Adaptive<W, AdagradMoment> {
    Adaptive::new(beta1, tau, AdagradMoment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fl::optimizer::ServerOptimizer;

    #[test]
    fn two_steps_worked_by_hand() {
        // beta1 0.5, tau 2 (v starts at 4), eta 4, theta 0.
        // Step 1, Delta 2: m = 1, v = 4 + 4 = 8, theta = 4 / (sqrt(8) + 2) = 0.8284271...
        // Step 2, Delta 1: m = 0.5 + 0.5 = 1, v = 8 + 1 = 9, theta += 4 * 1 / (3 + 2) = 0.8.
        let mut adagrad = adagrad(0.5, 2.0);
        let mut theta = vec![0.0f32];
        adagrad.step(&mut theta, &vec![2.0], 4.0);
        let first = 4.0 / (8f64.sqrt() + 2.0);
        assert!((theta[0] as f64 - first).abs() < 1e-6, "{} vs {first}", theta[0]);
        adagrad.step(&mut theta, &vec![1.0], 4.0);
        assert!((theta[0] as f64 - (first + 0.8)).abs() < 1e-6, "{} vs {}", theta[0], first + 0.8);
    }
}
