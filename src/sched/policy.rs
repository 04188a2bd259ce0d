//! What an arrival does. The engine ([`super::Scheduler`]) asks its policy after every update
//! joins the buffer whether to aggregate and how many clients to dispatch; each policy is a
//! small type in its own file ([`super::sync`], [`super::buffered`]) that never sees the clock,
//! the queue or a client.

use super::buffered::Buffered;
use super::sync::SyncRounds;

/// The engine's orders after an arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Make a new version from the buffered updates.
    pub aggregate: bool,
    /// Clients to dispatch (after the aggregation, on the version it makes).
    pub dispatch: usize,
}

pub trait ArrivalPolicy: Send {
    /// Clients dispatched at the start, on version 0.
    fn initial_jobs(&self) -> usize;
    /// An update arrived; `buffered` updates (it included) wait for aggregation.
    fn on_arrival(&mut self, buffered: usize) -> Decision;
}

/// A policy as a config names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// FedAvg's rounds.
    Sync,
    /// FedBuff's buffer of B updates (AFL-DW and FedRevive too).
    Buffered { buffer_size: usize },
}

impl Policy {
    /// The policy for `active_jobs` (K) jobs in flight.
    pub fn build(self, active_jobs: usize) -> Box<dyn ArrivalPolicy> {
        match self {
            Policy::Sync => Box::new(SyncRounds { active_jobs }),
            Policy::Buffered { buffer_size } => Box::new(Buffered { active_jobs, buffer_size }),
        }
    }
}
