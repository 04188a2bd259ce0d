//! `adam` (FedAdam, Reddi et al. 2021, Algorithm 2): m_t = beta1 m_{t-1} + (1 - beta1) Delta_t,
//! v_t = beta2 v_{t-1} + (1 - beta2) Delta_t^2, theta <- theta + eta m_t / (sqrt(v_t) + tau),
//! from m_{-1} = 0 and v_{-1} = tau^2, without bias correction (as the paper writes it). With no
//! update it coasts on the decayed first moment.

use super::{Moments, ServerOptimizer};
use crate::params::Weights;
use crate::saved::{SavedState, StateError};

pub struct Adam<W> {
    beta1: f32,
    beta2: f32,
    tau: f32,
    moments: Moments<W>,
}

impl<W: Weights> Adam<W> {
    pub fn new(beta1: f32, beta2: f32, tau: f32) -> Self {
        Adam { beta1, beta2, tau, moments: Moments::new() }
    }
}

impl<W: Weights> ServerOptimizer<W> for Adam<W> {
    fn step(&mut self, theta: &mut W, mean_delta: &W, lr: f32) {
        let v = self.moments.second_or_start(self.tau, mean_delta);
        v.scale(self.beta2);
        v.add_squares(1.0 - self.beta2, mean_delta);
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
        // beta1 = beta2 = 0.5, tau 2 (v starts at 4), eta 4, theta 0.
        // Step 1, Delta 2: m = 0.5 * 0 + 0.5 * 2 = 1, v = 0.5 * 4 + 0.5 * 4 = 4,
        //   theta = 0 + 4 * 1 / (2 + 2) = 1.
        // Step 2, Delta -2: m = 0.5 - 1 = -0.5, v = 2 + 2 = 4, theta = 1 + 4 * -0.5 / 4 = 0.5.
        // A coordinate whose Delta stays 0 never moves (m stays 0).
        let mut adam = Adam::new(0.5, 0.5, 2.0);
        let mut theta = vec![0.0f32, 0.0];
        adam.step(&mut theta, &vec![2.0, 0.0], 4.0);
        assert_eq!(theta, [1.0, 0.0]);
        adam.step(&mut theta, &vec![-2.0, 0.0], 4.0);
        assert_eq!(theta, [0.5, 0.0]);
    }
}
