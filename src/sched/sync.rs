//! FedAvg's rounds: dispatch K clients; when all K updates are in, aggregate them and dispatch
//! K new clients on the new version. With over-commitment f > 1 a round dispatches ceil(f K)
//! clients, aggregates the first K updates to arrive and cancels the jobs still in flight
//! (stragglers never slow a round down, and their jobs never train). Jobs that time out
//! (`algorithm.update_timeout`) end a round early: it aggregates what arrived once every job
//! it dispatched has arrived or timed out (a round whose jobs all timed out makes no version).
//! With a round deadline, a round also ends when its deadline passes: it aggregates what
//! arrived, and the jobs still out are cancelled (`late_updates = "drop"`) or carried into
//! the next round, which then dispatches only enough clients to have ceil(f K) out again.

use super::policy::{ArrivalInfo, ArrivalPolicy, Decision, LateUpdates, RoundDeadline};

pub struct SyncRounds {
    /// K: updates per round.
    active_jobs: usize,
    /// ceil(f K): jobs a round waits for.
    dispatched: usize,
    deadline: Option<RoundDeadline>,
    /// Jobs of this round that arrived or timed out.
    resolved: usize,
}

impl SyncRounds {
    pub fn new(active_jobs: usize, over_commitment: f64, deadline: Option<RoundDeadline>) -> Self {
        SyncRounds {
            active_jobs,
            dispatched: dispatched_per_round(active_jobs, over_commitment),
            deadline,
            resolved: 0,
        }
    }

    /// One more of the round's jobs resolved, with `updates` updates in hand.
    fn resolve(&mut self, updates: usize) -> Decision {
        self.resolved += 1;
        if updates == self.active_jobs || self.resolved == self.dispatched {
            self.next_round(updates, self.dispatched, true)
        } else {
            Decision { admit: true, ..Decision::default() }
        }
    }

    /// Ends the round: aggregates what is in hand, cancels what is out (or not), dispatches.
    fn next_round(&mut self, updates: usize, dispatch: usize, cancel_in_flight: bool) -> Decision {
        self.resolved = 0;
        Decision {
            admit: true,
            aggregate: updates > 0,
            cancel_in_flight,
            dispatch,
            deadline: self.deadline.map(|d| d.after),
        }
    }
}

/// ceil(f K), at least K.
pub fn dispatched_per_round(active_jobs: usize, over_commitment: f64) -> usize {
    ((active_jobs as f64 * over_commitment).ceil() as usize).max(active_jobs)
}

impl ArrivalPolicy for SyncRounds {
    fn start(&mut self) -> Decision {
        Decision {
            dispatch: self.dispatched,
            deadline: self.deadline.map(|d| d.after),
            ..Decision::default()
        }
    }

    fn on_arrival(&mut self, arrival: ArrivalInfo) -> Decision {
        self.resolve(arrival.buffered + 1)
    }

    fn on_lost(&mut self, buffered: usize) -> Decision {
        Decision { admit: false, ..self.resolve(buffered) }
    }

    fn on_deadline(&mut self, buffered: usize, outstanding: usize) -> Decision {
        match self.deadline.map(|d| d.late) {
            None => Decision::default(),
            Some(LateUpdates::Drop) => self.next_round(buffered, self.dispatched, true),
            Some(LateUpdates::Carry) => {
                let carried = outstanding.min(self.dispatched);
                self.next_round(buffered, self.dispatched - carried, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(buffered: usize) -> ArrivalInfo {
        ArrivalInfo { staleness: 0, buffered }
    }

    #[test]
    fn a_round_ends_with_its_last_update_and_starts_the_next_one() {
        let mut sync = SyncRounds::new(3, 1.0, None);
        assert_eq!(sync.start().dispatch, 3);
        let wait = Decision { admit: true, ..Decision::default() };
        assert_eq!(sync.on_arrival(arrival(0)), wait);
        assert_eq!(sync.on_arrival(arrival(1)), wait);
        assert_eq!(
            sync.on_arrival(arrival(2)),
            Decision { admit: true, aggregate: true, cancel_in_flight: true, dispatch: 3, deadline: None }
        );
    }

    #[test]
    fn over_commitment_dispatches_ceil_f_k_and_aggregates_the_first_k() {
        assert_eq!(dispatched_per_round(10, 1.3), 13);
        assert_eq!(dispatched_per_round(10, 1.25), 13);
        assert_eq!(dispatched_per_round(10, 1.0), 10);
        let mut sync = SyncRounds::new(10, 1.3, None);
        assert_eq!(sync.start().dispatch, 13);
        for buffered in 0..9 {
            assert!(!sync.on_arrival(arrival(buffered)).aggregate);
        }
        let tenth = sync.on_arrival(arrival(9));
        assert!(tenth.aggregate && tenth.cancel_in_flight);
        assert_eq!(tenth.dispatch, 13);
    }

    #[test]
    fn a_round_with_timed_out_jobs_aggregates_what_arrived_once_all_are_resolved() {
        let mut sync = SyncRounds::new(3, 1.0, None);
        assert!(!sync.on_arrival(arrival(0)).aggregate);
        assert!(!sync.on_lost(1).aggregate);
        let last = sync.on_arrival(arrival(1));
        assert!(last.aggregate && last.dispatch == 3, "two updates make the version");
        // A round whose jobs all time out makes no version but starts the next round.
        for _ in 0..2 {
            assert_eq!(sync.on_lost(0).dispatch, 0);
        }
        assert_eq!(
            sync.on_lost(0),
            Decision { admit: false, aggregate: false, cancel_in_flight: true, dispatch: 3, deadline: None }
        );
    }

    #[test]
    fn a_deadline_ends_the_round_and_drops_or_carries_what_is_still_out() {
        use crate::sim::time::SimDuration;
        let after = SimDuration::from_units(2.0);
        let mut drop = SyncRounds::new(4, 1.0, Some(RoundDeadline { after, late: LateUpdates::Drop }));
        assert_eq!(drop.start().deadline, Some(after));
        assert!(!drop.on_arrival(arrival(0)).aggregate);
        let at_deadline = drop.on_deadline(1, 3);
        assert_eq!(
            at_deadline,
            Decision {
                admit: true,
                aggregate: true,
                cancel_in_flight: true,
                dispatch: 4,
                deadline: Some(after)
            }
        );
        let mut carry = SyncRounds::new(4, 1.0, Some(RoundDeadline { after, late: LateUpdates::Carry }));
        carry.start();
        assert!(!carry.on_arrival(arrival(0)).aggregate);
        let at_deadline = carry.on_deadline(1, 3);
        assert!(at_deadline.aggregate && !at_deadline.cancel_in_flight);
        assert_eq!(at_deadline.dispatch, 1, "three jobs carried, one new");
        // The next round ends once its four jobs (three carried, one new) are in.
        for buffered in 0..3 {
            assert!(!carry.on_arrival(arrival(buffered)).aggregate);
        }
        assert!(carry.on_arrival(arrival(3)).aggregate);
        // A deadline with nothing in hand makes no version.
        assert!(!carry.on_deadline(0, 4).aggregate);
    }
}
