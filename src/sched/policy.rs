//! What an arrival does. The engine ([`super::Scheduler`]) asks its policy, for every update
//! that arrives, whether the server takes it, whether to aggregate, whether to cancel the jobs
//! still in flight and how many clients to dispatch; each policy is a small type in its own
//! file ([`super::sync`], [`super::buffered`]) that never sees the clock, the queue or a client.

use super::buffered::Buffered;
use super::sync::SyncRounds;
use crate::sim::time::SimDuration;

/// An arriving update as a policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrivalInfo {
    /// Versions made since the update's base version.
    pub staleness: u64,
    /// Updates already waiting in the buffer (this one not included).
    pub buffered: usize,
}

/// The engine's orders after an arrival.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The update joins the buffer; otherwise it is dropped (and its job never trains).
    pub admit: bool,
    /// Make a new version from the buffered updates.
    pub aggregate: bool,
    /// Cancel every job still in flight (over-committed rounds); cancelled jobs never train.
    pub cancel_in_flight: bool,
    /// Clients to dispatch (after the aggregation, on the version it makes).
    pub dispatch: usize,
    /// A round starts: call [`ArrivalPolicy::on_deadline`] this long from now, unless another
    /// deadline is armed first.
    pub deadline: Option<SimDuration>,
}

pub trait ArrivalPolicy: Send {
    /// Orders at the start, on version 0 (`dispatch`: the first clients).
    fn start(&mut self) -> Decision;
    fn on_arrival(&mut self, arrival: ArrivalInfo) -> Decision;
    /// A job ended without an update (it timed out, or its client went offline); `buffered`
    /// updates wait for aggregation. Nothing joins the buffer; `admit` is ignored.
    fn on_lost(&mut self, buffered: usize) -> Decision;
    /// The armed deadline passed with `buffered` updates waiting and `outstanding` jobs not yet
    /// at the server. Jobs the orders cancel missed the deadline.
    fn on_deadline(&mut self, _buffered: usize, _outstanding: usize) -> Decision {
        Decision::default()
    }
}

/// A sync round's deadline: the round aggregates what arrived by then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundDeadline {
    /// Virtual time from the round's start.
    pub after: SimDuration,
    /// What happens to the jobs still out at the deadline.
    pub late: LateUpdates,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LateUpdates {
    /// Cancelled: they never train.
    Drop,
    /// Kept: their updates join the round open when they arrive (staleness 1 or more), and
    /// the next round dispatches only what tops the jobs out back up.
    Carry,
}

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
