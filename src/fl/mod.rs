//! Server update rules, as pure functions of plain weights: client and staleness weights,
//! beta schedules, the aggregation step every algorithm shares, the server optimizers (sgd,
//! momentum, adam, yogi, adagrad) with their state, and FedRevive's blend and
//! gates (its distillation is a trait implemented with tensors elsewhere). No clock.

pub mod aggregate;
pub mod lr_schedule;
pub mod optimizer;
pub mod revive;
pub mod server;
pub mod stabilizer;
pub mod weights;

pub use aggregate::{ServerRule, Update};
pub use optimizer::{ServerOptimizer, ServerOptimizerKind, ServerOptimizerSettings};

/// Why the server could not aggregate, or save or restore its state.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("FedRevive needs the client's model")]
    MissingModel,
    /// The distiller's own failure (libtorch's, in `nn`), which `fl` does not name.
    #[error(transparent)]
    Distiller(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    State(#[from] crate::saved::StateError),
}
pub use weights::{BetaSchedule, ClientWeighting, StalenessWeight};
