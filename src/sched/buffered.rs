//! Buffered asynchronous aggregation (FedBuff; AFL-DW and FedRevive with B = 1): K jobs stay in
//! flight; every arrival joins a buffer, B buffered updates make a version, and each arrival
//! frees its client and dispatches one more, on the version that exists once it is handled.

use super::policy::{ArrivalPolicy, Decision};

pub struct Buffered {
    pub active_jobs: usize,
    pub buffer_size: usize,
}

impl ArrivalPolicy for Buffered {
    fn initial_jobs(&self) -> usize {
        self.active_jobs
    }

    fn on_arrival(&mut self, buffered: usize) -> Decision {
        Decision { aggregate: buffered == self.buffer_size, dispatch: 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arrival_dispatches_one_and_every_bth_aggregates() {
        let mut fedbuff = Buffered { active_jobs: 10, buffer_size: 2 };
        assert_eq!(fedbuff.initial_jobs(), 10);
        assert_eq!(fedbuff.on_arrival(1), Decision { aggregate: false, dispatch: 1 });
        assert_eq!(fedbuff.on_arrival(2), Decision { aggregate: true, dispatch: 1 });
    }
}
