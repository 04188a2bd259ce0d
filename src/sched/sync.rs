//! FedAvg's rounds: dispatch K clients; when all K updates are in, aggregate them and dispatch
//! K new clients on the new version. With over-commitment f > 1 a round dispatches ceil(f K)
//! clients, aggregates the first K updates to arrive and cancels the jobs still in flight
//! (stragglers never slow a round down, and their jobs never train).

use super::policy::{ArrivalInfo, ArrivalPolicy, Decision};

pub struct SyncRounds {
    /// K: updates per round.
    active_jobs: usize,
    /// ceil(f K): clients dispatched per round.
    dispatched: usize,
}

impl SyncRounds {
    pub fn new(active_jobs: usize, over_commitment: f64) -> Self {
        SyncRounds { active_jobs, dispatched: dispatched_per_round(active_jobs, over_commitment) }
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
        let full = arrival.buffered + 1 == self.active_jobs;
        Decision {
            admit: true,
            aggregate: full,
            cancel_in_flight: full,
            dispatch: if full { self.dispatched } else { 0 },
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
        assert!(sync.on_arrival(arrival(9)).aggregate);
        assert_eq!(sync.on_arrival(arrival(9)).dispatch, 13);
    }
}
