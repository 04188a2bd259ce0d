//! A policy as a config names it, and what builds it: the one place that knows every policy
//! (so the policies' own files need not know each other or their factory).

use super::buffered::Buffered;
use super::policy::{ArrivalPolicy, RoundDeadline};
use super::sync::SyncRounds;

/// A policy as a config names it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    /// FedAvg's rounds of K updates, dispatching ceil(over_commitment K) clients a round, each
    /// round ending at its deadline if it has one.
    Sync { over_commitment: f64, deadline: Option<RoundDeadline> },
    /// FedBuff's buffer of B updates (AFL-DW and FedRevive too), dropping updates staler than
    /// `max_staleness`, refilling freed slots `min_hole_to_fill` at a time.
    Buffered { buffer_size: usize, max_staleness: Option<u64>, min_hole_to_fill: usize },
}

impl Policy {
    /// FedAvg's rounds without over-commitment.
    pub const SYNC: Policy = Policy::Sync { over_commitment: 1.0, deadline: None };

    /// FedBuff's buffer of `buffer_size` updates, taking every update.
    pub const fn buffered(buffer_size: usize) -> Policy {
        Policy::Buffered { buffer_size, max_staleness: None, min_hole_to_fill: 1 }
    }

    /// The policy for `active_jobs` (K) jobs in flight.
    pub fn build(self, active_jobs: usize) -> Box<dyn ArrivalPolicy> {
        match self {
            Policy::Sync { over_commitment, deadline } => {
                Box::new(SyncRounds::new(active_jobs, over_commitment, deadline))
            }
            Policy::Buffered { buffer_size, max_staleness, min_hole_to_fill } => {
                Box::new(Buffered::new(active_jobs, buffer_size, max_staleness, min_hole_to_fill))
            }
        }
    }
}
