//! What an arrival does. The engine ([`super::Scheduler`]) asks its policy, for every update
//! that arrives, whether the server takes it, whether to aggregate, whether to cancel the jobs
//! still in flight and how many clients to dispatch; each policy is a small type in its own
//! file ([`super::sync`], [`super::buffered`]) that never sees the clock, the queue or a client.

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
