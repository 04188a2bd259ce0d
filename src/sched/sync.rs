//! FedAvg's rounds: dispatch K clients; when all K updates are in, aggregate them and dispatch
//! K new clients on the new version. With over-commitment f > 1 a round dispatches ceil(f K)
//! clients, aggregates the first K updates to arrive and cancels the jobs still in flight
//! (stragglers never slow a round down, and their jobs never train). Jobs that time out
//! (`algorithm.update_timeout`) end a round early: it aggregates what arrived once every job
//! it dispatched has arrived or timed out (a round whose jobs all timed out makes no version).

use super::policy::{ArrivalInfo, ArrivalPolicy, Decision};

pub struct SyncRounds {
    /// K: updates per round.
    active_jobs: usize,
    /// ceil(f K): clients dispatched per round.
    dispatched: usize,
    /// Jobs of this round that arrived or timed out.
    resolved: usize,
}

impl SyncRounds {
    pub fn new(active_jobs: usize, over_commitment: f64) -> Self {
        SyncRounds {
            active_jobs,
            dispatched: dispatched_per_round(active_jobs, over_commitment),
            resolved: 0,
        }
    }

    /// One more of the round's jobs resolved, with `updates` updates in hand.
    fn resolve(&mut self, updates: usize) -> Decision {
        self.resolved += 1;
        let over = updates == self.active_jobs || self.resolved == self.dispatched;
        if over {
            self.resolved = 0;
        }
        Decision {
            admit: true,
            aggregate: over && updates > 0,
            cancel_in_flight: over,
            dispatch: if over { self.dispatched } else { 0 },
        }
    }
}

/// ceil(f K), at least K.
pub fn dispatched_per_round(active_jobs: usize, over_commitment: f64) -> usize {
    ((active_jobs as f64 * over_commitment).ceil() as usize).max(active_jobs)
}

impl ArrivalPolicy for SyncRounds {
    fn initial_jobs(&self) -> usize {
        self.dispatched
    }

    fn on_arrival(&mut self, arrival: ArrivalInfo) -> Decision {
        self.resolve(arrival.buffered + 1)
    }

    fn on_lost(&mut self, buffered: usize) -> Decision {
        Decision { admit: false, ..self.resolve(buffered) }
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
        let mut sync = SyncRounds::new(3, 1.0);
        assert_eq!(sync.initial_jobs(), 3);
        let wait = Decision { admit: true, aggregate: false, cancel_in_flight: false, dispatch: 0 };
        assert_eq!(sync.on_arrival(arrival(0)), wait);
        assert_eq!(sync.on_arrival(arrival(1)), wait);
        assert_eq!(
            sync.on_arrival(arrival(2)),
            Decision { admit: true, aggregate: true, cancel_in_flight: true, dispatch: 3 }
        );
    }

    #[test]
    fn over_commitment_dispatches_ceil_f_k_and_aggregates_the_first_k() {
        assert_eq!(dispatched_per_round(10, 1.3), 13);
        assert_eq!(dispatched_per_round(10, 1.25), 13);
        assert_eq!(dispatched_per_round(10, 1.0), 10);
        let mut sync = SyncRounds::new(10, 1.3);
        assert_eq!(sync.initial_jobs(), 13);
        for buffered in 0..9 {
            assert!(!sync.on_arrival(arrival(buffered)).aggregate);
        }
        let tenth = sync.on_arrival(arrival(9));
        assert!(tenth.aggregate && tenth.cancel_in_flight);
        assert_eq!(tenth.dispatch, 13);
    }

    #[test]
    fn a_round_with_timed_out_jobs_aggregates_what_arrived_once_all_are_resolved() {
        let mut sync = SyncRounds::new(3, 1.0);
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
            Decision { admit: false, aggregate: false, cancel_in_flight: true, dispatch: 3 }
        );
    }
}
