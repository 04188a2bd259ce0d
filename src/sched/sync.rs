//! FedAvg's rounds: dispatch K clients; when all K updates are in, aggregate them and dispatch
//! K new clients on the new version.

use super::policy::{ArrivalPolicy, Decision};

pub struct SyncRounds {
    pub active_jobs: usize,
}

impl ArrivalPolicy for SyncRounds {
    fn initial_jobs(&self) -> usize {
        self.active_jobs
    }

    fn on_arrival(&mut self, buffered: usize) -> Decision {
        let full = buffered == self.active_jobs;
        Decision { aggregate: full, dispatch: if full { self.active_jobs } else { 0 } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_ends_with_its_last_update_and_starts_the_next_one() {
        let mut sync = SyncRounds { active_jobs: 3 };
        assert_eq!(sync.initial_jobs(), 3);
        assert_eq!(sync.on_arrival(1), Decision { aggregate: false, dispatch: 0 });
        assert_eq!(sync.on_arrival(2), Decision { aggregate: false, dispatch: 0 });
        assert_eq!(sync.on_arrival(3), Decision { aggregate: true, dispatch: 3 });
    }
}
