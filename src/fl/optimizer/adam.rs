//! `adam` (FedAdam, Reddi et al. 2021, Algorithm 2): the adaptive step (`adaptive.rs`) with
//! v_t = beta2 v_{t-1} + (1 - beta2) Delta_t^2, Adam's exponential average of squares.

use super::adaptive::{Adaptive, SecondMoment};
use crate::params::Weights;

/// v_t = beta2 v_{t-1} + (1 - beta2) Delta_t^2.
pub struct AdamMoment {
    beta2: f32,
}

impl SecondMoment for AdamMoment {
    fn advance<W: Weights>(&self, v: &mut W, mean_delta: &W) {
        v.scale(self.beta2);
        v.add_squares(1.0 - self.beta2, mean_delta);
    }
}

pub fn adam<W: Weights>(beta1: f32, beta2: f32, tau: f32) -> Adaptive<W, AdamMoment> {
    Adaptive::new(beta1, tau, AdamMoment { beta2 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fl::optimizer::ServerOptimizer;

    #[test]
    fn two_steps_worked_by_hand() {
        // beta1 = beta2 = 0.5, tau 2 (v starts at 4), eta 4, theta 0.
        // Step 1, Delta 2: m = 0.5 * 0 + 0.5 * 2 = 1, v = 0.5 * 4 + 0.5 * 4 = 4,
        //   theta = 0 + 4 * 1 / (2 + 2) = 1.
        // Step 2, Delta -2: m = 0.5 - 1 = -0.5, v = 2 + 2 = 4, theta = 1 + 4 * -0.5 / 4 = 0.5.
        // A coordinate whose Delta stays 0 never moves (m stays 0).
        let mut adam = adam(0.5, 0.5, 2.0);
        let mut theta = vec![0.0f32, 0.0];
        adam.step(&mut theta, &vec![2.0, 0.0], 4.0);
        assert_eq!(theta, [1.0, 0.0]);
        adam.step(&mut theta, &vec![-2.0, 0.0], 4.0);
        assert_eq!(theta, [0.5, 0.0]);
    }
}
