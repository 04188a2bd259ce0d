//! The adaptive optimizers' step (Reddi et al. 2021, Algorithm 2), shared by adam, yogi and
//! adagrad, which differ only in how they advance the second moment ([`SecondMoment`]):
//! m_t = beta1 m_{t-1} + (1 - beta1) Delta_t, v_t from v_{t-1} and Delta_t,
//! theta <- theta + eta m_t / (sqrt(v_t) + tau), from m_{-1} = 0 and v_{-1} = tau^2, without
//! bias correction (as the paper writes it). With no update the model coasts on the decayed
//! first moment.

use super::{Moments, ServerOptimizer};
use crate::params::Weights;
use crate::saved::{SavedState, StateError};

/// How an adaptive optimizer advances v from Delta_t.
pub trait SecondMoment: Send {
    fn advance<W: Weights>(&self, v: &mut W, mean_delta: &W);
}

pub struct Adaptive<W, S> {
    beta1: f32,
    tau: f32,
    second_moment: S,
    moments: Moments<W>,
}

impl<W: Weights, S: SecondMoment> Adaptive<W, S> {
    pub fn new(beta1: f32, tau: f32, second_moment: S) -> Self {
        Adaptive { beta1, tau, second_moment, moments: Moments::new() }
    }
}

impl<W: Weights, S: SecondMoment> ServerOptimizer<W> for Adaptive<W, S> {
    fn step(&mut self, theta: &mut W, mean_delta: &W, lr: f32) {
        let v = self.moments.second_or_start(self.tau, mean_delta);
        self.second_moment.advance(v, mean_delta);
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
