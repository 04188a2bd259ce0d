//! `yogi` (FedYogi, Reddi et al. 2021, Algorithm 2): the adaptive step (`adaptive.rs`) with an
//! additive second moment, v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} - Delta_t^2), so v
//! moves towards Delta_t^2 by at most (1 - beta2) Delta_t^2 a step.

use super::adaptive::{Adaptive, SecondMoment};
use crate::params::Weights;

/// v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} - Delta_t^2).
pub struct YogiMoment {
    beta2: f32,
}

impl SecondMoment for YogiMoment {
    fn advance<W: Weights>(&self, v: &mut W, mean_delta: &W) {
        v.add_yogi_squares(1.0 - self.beta2, mean_delta);
    }
}

pub fn yogi<W: Weights>(beta1: f32, beta2: f32, tau: f32) -> Adaptive<W, YogiMoment> {
    Adaptive::new(beta1, tau, YogiMoment { beta2 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fl::optimizer::ServerOptimizer;

    #[test]
    fn two_steps_worked_by_hand() {
        // beta1 = beta2 = 0.5, tau 2 (v starts at 4), eta 4, theta 0.
        // Step 1, Delta 2: Delta^2 = 4 = v, sign 0, v stays 4; m = 1; theta = 4 * 1 / (2 + 2) = 1.
        // Step 2, Delta -4: sign(4 - 16) = -1, v = 4 + 0.5 * 16 = 12 (Adam's would be 10);
        //   m = 0.5 - 2 = -1.5; theta = 1 - 6 / (sqrt(12) + 2) = -0.0980762...
        let mut yogi = yogi(0.5, 0.5, 2.0);
        let mut theta = vec![0.0f32];
        yogi.step(&mut theta, &vec![2.0], 4.0);
        assert_eq!(theta, [1.0]);
        yogi.step(&mut theta, &vec![-4.0], 4.0);
        let expected = 1.0 - 6.0 / (12f64.sqrt() + 2.0);
        assert!((theta[0] as f64 - expected).abs() < 1e-6, "{} vs {expected}", theta[0]);
    }

    #[test]
    fn the_second_moment_shrinks_towards_a_smaller_squared_delta() {
        // v = 4 - 0.5 * 1 * sign(4 - 1) = 3.5 after a step with Delta 1 (Adam: 2.5).
        let mut yogi = yogi(0.0, 0.5, 2.0);
        let mut theta = vec![0.0f32];
        yogi.step(&mut theta, &vec![1.0], 1.0);
        let expected = 1.0 / (3.5f64.sqrt() + 2.0);
        assert!((theta[0] as f64 - expected).abs() < 1e-6, "{} vs {expected}", theta[0]);
    }
}
