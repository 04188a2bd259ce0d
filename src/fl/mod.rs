//! Server update rules, as pure functions of plain weights: client and staleness weights,
//! beta schedules, the aggregation step every algorithm shares, and FedRevive's blend and
//! gates (its distillation is a trait implemented with tensors elsewhere). No clock.

pub mod aggregate;
pub mod revive;
pub mod server;
pub mod stabilizer;
pub mod weights;

pub use aggregate::{ServerRule, Update};
pub use weights::{BetaSchedule, ClientWeighting, StalenessWeight};
