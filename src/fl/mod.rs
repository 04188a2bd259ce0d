//! Server update rules, as pure functions of plain weights: client and staleness weights,
//! beta schedules, and the aggregation step every algorithm shares. No tensors, no clock.

pub mod aggregate;
pub mod weights;

pub use aggregate::{ServerRule, Update};
pub use weights::{BetaSchedule, ClientWeighting, StalenessWeight};
