//! Buffered asynchronous aggregation (FedBuff; AFL-DW and FedRevive with B = 1): K jobs stay in
//! flight; every arrival joins a buffer, B buffered updates make a version, and each arrival
//! frees its client and dispatches one more, on the version that exists once it is handled.
//! With a maximum staleness, an update staler than that is dropped (its job never trains) and
//! its client is replaced all the same.

use super::policy::{ArrivalInfo, ArrivalPolicy, Decision};

pub struct Buffered {
    pub active_jobs: usize,
    pub buffer_size: usize,
    pub max_staleness: Option<u64>,
}

impl ArrivalPolicy for Buffered {
    fn initial_jobs(&self) -> usize {
        self.active_jobs
    }

    fn on_arrival(&mut self, arrival: ArrivalInfo) -> Decision {
        let admit = self.max_staleness.is_none_or(|max| arrival.staleness <= max);
        Decision {
            admit,
            aggregate: admit && arrival.buffered + 1 == self.buffer_size,
            cancel_in_flight: false,
            dispatch: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arrival_dispatches_one_and_every_bth_aggregates() {
        let mut fedbuff = Buffered { active_jobs: 10, buffer_size: 2, max_staleness: None };
        assert_eq!(fedbuff.initial_jobs(), 10);
        let first = fedbuff.on_arrival(ArrivalInfo { staleness: 50, buffered: 0 });
        assert_eq!(first, Decision { admit: true, aggregate: false, cancel_in_flight: false, dispatch: 1 });
        assert!(fedbuff.on_arrival(ArrivalInfo { staleness: 0, buffered: 1 }).aggregate);
    }

    #[test]
    fn updates_staler_than_the_maximum_are_dropped_and_replaced() {
        let mut fedbuff = Buffered { active_jobs: 10, buffer_size: 1, max_staleness: Some(5) };
        assert!(fedbuff.on_arrival(ArrivalInfo { staleness: 5, buffered: 0 }).aggregate);
        let stale = fedbuff.on_arrival(ArrivalInfo { staleness: 6, buffered: 0 });
        assert_eq!(stale, Decision { admit: false, aggregate: false, cancel_in_flight: false, dispatch: 1 });
    }
}
