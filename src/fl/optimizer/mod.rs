//! Server optimizers: how the server turns an aggregation's pseudo-gradient (the weighted mean
//! of its updates' deltas, Delta_t) into the next model. `sgd` is theta + eta Delta_t, the
//! step every algorithm took before optimizers existed; the others are those of "Adaptive
//! Federated Optimization" (Reddi et al., ICLR 2021, Algorithm 2): server momentum (FedAvgM),
//! Adam, Yogi and Adagrad. Their state (first and second moments) is weights of the run's own
//! kind, so it lives where the model versions live (on the GPU in a GPU run), advances once per
//! aggregation in plan order, and is saved in checkpoints.
//!
//! A new optimizer is a file here implementing [`ServerOptimizer`] (or, for an adaptive one,
//! only its [`SecondMoment`]), a [`ServerOptimizerKind`] variant with its row in
//! [`ServerOptimizerKind::ALL`], and a line in the property suite (`properties.rs`).

mod adagrad;
mod adam;
mod adaptive;
mod momentum;
#[cfg(test)]
mod properties;
mod sgd;
mod yogi;

pub use adagrad::adagrad;
pub use adam::adam;
pub use adaptive::{Adaptive, SecondMoment};
pub use momentum::Momentum;
pub use sgd::Sgd;
pub use yogi::yogi;

use serde::Serialize;

use crate::params::Weights;
use crate::saved::{Array, SavedState, StateError};

/// A server optimizer of weights `W`.
pub trait ServerOptimizer<W>: Send {
    /// theta <- the next model from `mean_delta` (Delta_t) at learning rate `lr` (eta).
    fn step(&mut self, theta: &mut W, mean_delta: &W, lr: f32);
    /// The state that decides its future steps (nothing for a stateless optimizer).
    fn save(&self) -> SavedState;
    /// Puts back what [`ServerOptimizer::save`] gave; `like` places it where the model lives.
    fn restore(&mut self, state: SavedState, like: &W) -> Result<(), StateError>;
}

/// algorithm.server_optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerOptimizerKind {
    Sgd,
    Momentum,
    Adam,
    Yogi,
    Adagrad,
}

/// What an optimizer reads of its parameters, and the defaults it brings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerRow {
    pub kind: ServerOptimizerKind,
    pub name: &'static str,
    /// The paper's name for it on synchronous rounds (FedAvg with this server step).
    pub paper_name: &'static str,
    /// algorithm.server_lr when the config leaves it out (None: the algorithm's default).
    pub default_lr: Option<f64>,
    pub uses_beta1: bool,
    pub uses_beta2: bool,
    pub uses_tau: bool,
}

impl ServerOptimizerKind {
    /// Default eta from the paper's CIFAR-10 grid (Reddi et al. 2021, appendix D: log10 eta = 0
    /// for FedAvgM, -1 for FedAdagrad, -2 for FedAdam and FedYogi).
    pub const ALL: [OptimizerRow; 5] = [
        OptimizerRow {
            kind: Self::Sgd,
            name: "sgd",
            paper_name: "FedAvg",
            default_lr: None,
            uses_beta1: false,
            uses_beta2: false,
            uses_tau: false,
        },
        OptimizerRow {
            kind: Self::Momentum,
            name: "momentum",
            paper_name: "FedAvgM",
            default_lr: Some(1.0),
            uses_beta1: true,
            uses_beta2: false,
            uses_tau: false,
        },
        OptimizerRow {
            kind: Self::Adam,
            name: "adam",
            paper_name: "FedAdam",
            default_lr: Some(0.01),
            uses_beta1: true,
            uses_beta2: true,
            uses_tau: true,
        },
        OptimizerRow {
            kind: Self::Yogi,
            name: "yogi",
            paper_name: "FedYogi",
            default_lr: Some(0.01),
            uses_beta1: true,
            uses_beta2: true,
            uses_tau: true,
        },
        OptimizerRow {
            kind: Self::Adagrad,
            name: "adagrad",
            paper_name: "FedAdagrad",
            default_lr: Some(0.1),
            uses_beta1: true,
            uses_beta2: false,
            uses_tau: true,
        },
    ];

    pub fn row(self) -> &'static OptimizerRow {
        Self::ALL.iter().find(|row| row.kind == self).expect("every optimizer has its row")
    }

    pub fn name(self) -> &'static str {
        self.row().name
    }

    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|row| row.name == name).map(|row| row.kind)
    }

    /// The valid names, for error messages.
    pub fn names() -> String {
        Self::ALL.iter().map(|row| row.name).collect::<Vec<_>>().join(", ")
    }
}

/// An optimizer's parameters (the paper's beta1, beta2 and tau; eta is algorithm.server_lr).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ServerOptimizerSettings {
    pub kind: ServerOptimizerKind,
    pub beta1: f64,
    pub beta2: f64,
    pub tau: f64,
}

impl ServerOptimizerSettings {
    /// The paper's defaults: beta1 0.9, beta2 0.99, tau 1e-3.
    pub const DEFAULT_BETA1: f64 = 0.9;
    pub const DEFAULT_BETA2: f64 = 0.99;
    pub const DEFAULT_TAU: f64 = 1e-3;

    pub fn sgd() -> Self {
        ServerOptimizerSettings {
            kind: ServerOptimizerKind::Sgd,
            beta1: Self::DEFAULT_BETA1,
            beta2: Self::DEFAULT_BETA2,
            tau: Self::DEFAULT_TAU,
        }
    }

    /// A fresh optimizer (no state yet) for weights `W`.
    pub fn build<W: Weights>(&self) -> Box<dyn ServerOptimizer<W>> {
        let (beta1, beta2, tau) = (self.beta1 as f32, self.beta2 as f32, self.tau as f32);
        match self.kind {
            ServerOptimizerKind::Sgd => Box::new(Sgd),
            ServerOptimizerKind::Momentum => Box::new(Momentum::new(beta1)),
            ServerOptimizerKind::Adam => Box::new(adam::<W>(beta1, beta2, tau)),
            ServerOptimizerKind::Yogi => Box::new(yogi::<W>(beta1, beta2, tau)),
            ServerOptimizerKind::Adagrad => Box::new(adagrad::<W>(beta1, tau)),
        }
    }
}

/// The moments an optimizer keeps, made at its first step (they take the model's shape).
pub(crate) struct Moments<W> {
    /// m_t, the first moment (momentum).
    pub first: Option<W>,
    /// v_t, the second moment (adaptive optimizers only).
    pub second: Option<W>,
}

impl<W: Weights> Moments<W> {
    pub fn new() -> Self {
        Moments { first: None, second: None }
    }

    /// m_t = beta1 m_{t-1} + scale Delta_t, from m_{-1} = 0.
    pub fn advance_first(&mut self, beta1: f32, scale: f32, delta: &W) -> &W {
        let first = self.first.get_or_insert_with(|| delta.zeros_like());
        first.scale(beta1);
        first.axpy(scale, delta);
        first
    }

    /// v_{-1} = tau^2 everywhere, as the paper's Algorithm 2 starts it (v_{-1} >= tau^2).
    pub fn second_or_start(&mut self, tau: f32, like: &W) -> &mut W {
        self.second.get_or_insert_with(|| {
            let mut v = like.zeros_like();
            v.fill(0..v.len(), tau * tau);
            v
        })
    }

    /// (m_t, v_t), once both have been advanced this step.
    pub fn both(&self) -> (&W, &W) {
        match (&self.first, &self.second) {
            (Some(first), Some(second)) => (first, second),
            _ => unreachable!("an adaptive step advances both moments before it reads them"),
        }
    }

    pub fn save(&self) -> SavedState {
        let mut state = SavedState::default();
        for (name, moment) in [("first", &self.first), ("second", &self.second)] {
            if let Some(moment) = moment {
                state.put_array(name, Array::vector(moment.to_host().into_owned()));
            }
        }
        state
    }

    pub fn restore(&mut self, mut state: SavedState, like: &W) -> Result<(), StateError> {
        for (name, moment) in [("first", &mut self.first), ("second", &mut self.second)] {
            *moment = match state.arrays.contains_key(name) {
                true => Some(like.like(&state.take_f32(name, like.len())?)),
                false => None,
            };
        }
        Ok(())
    }
}
