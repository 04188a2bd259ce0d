//! Buffered asynchronous aggregation (FedBuff; AFL-DW and FedRevive with B = 1): K jobs stay in
//! flight; every arrival joins a buffer, B buffered updates make a version, and each arrival
//! frees its client's slot, which is refilled on the version that exists once the arrival is
//! handled. With a maximum staleness, an update staler than that is dropped (its job never
//! trains) and its slot refilled all the same. With the NVFlare port's `min_hole_to_fill` = h,
//! freed slots are refilled h at a time (h = K refills in whole rounds).

use super::policy::{ArrivalInfo, ArrivalPolicy, Decision};

pub struct Buffered {
    active_jobs: usize,
    buffer_size: usize,
    max_staleness: Option<u64>,
    min_hole_to_fill: usize,
    /// Slots freed and not yet refilled.
    holes: usize,
}

impl Buffered {
    pub fn new(
        active_jobs: usize,
        buffer_size: usize,
        max_staleness: Option<u64>,
        min_hole_to_fill: usize,
    ) -> Self {
        Buffered {
            active_jobs,
            buffer_size,
            max_staleness,
            min_hole_to_fill: min_hole_to_fill.max(1),
            holes: 0,
        }
    }
}

impl ArrivalPolicy for Buffered {
    fn start(&mut self) -> Decision {
        Decision { dispatch: self.active_jobs, ..Decision::default() }
    }

    fn on_arrival(&mut self, arrival: ArrivalInfo) -> Decision {
        let admit = self.max_staleness.is_none_or(|max| arrival.staleness <= max);
        Decision {
            admit,
            aggregate: admit && arrival.buffered + 1 == self.buffer_size,
            dispatch: self.free_slot(),
            ..Decision::default()
        }
    }

    fn on_lost(&mut self, _buffered: usize) -> Decision {
        Decision { dispatch: self.free_slot(), ..Decision::default() }
    }
}

impl Buffered {
    /// A job left its slot; returns how many slots to refill now.
    fn free_slot(&mut self) -> usize {
        self.holes += 1;
        if self.holes >= self.min_hole_to_fill {
            std::mem::take(&mut self.holes)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arrival_dispatches_one_and_every_bth_aggregates() {
        let mut fedbuff = Buffered::new(10, 2, None, 1);
        assert_eq!(fedbuff.start().dispatch, 10);
        let first = fedbuff.on_arrival(ArrivalInfo { staleness: 50, buffered: 0 });
        assert_eq!(first, Decision { admit: true, dispatch: 1, ..Decision::default() });
        assert!(fedbuff.on_arrival(ArrivalInfo { staleness: 0, buffered: 1 }).aggregate);
    }

    #[test]
    fn updates_staler_than_the_maximum_are_dropped_and_replaced() {
        let mut fedbuff = Buffered::new(10, 1, Some(5), 1);
        assert!(fedbuff.on_arrival(ArrivalInfo { staleness: 5, buffered: 0 }).aggregate);
        let stale = fedbuff.on_arrival(ArrivalInfo { staleness: 6, buffered: 0 });
        assert_eq!(stale, Decision { dispatch: 1, ..Decision::default() });
    }

    #[test]
    fn freed_slots_are_refilled_min_hole_to_fill_at_a_time() {
        let mut fedbuff = Buffered::new(10, 1, None, 3);
        let dispatched: Vec<usize> =
            (0..7).map(|_| fedbuff.on_arrival(ArrivalInfo { staleness: 0, buffered: 0 }).dispatch).collect();
        assert_eq!(dispatched, [0, 0, 3, 0, 0, 3, 0]);
        // A timed-out job's slot is a hole like any other.
        assert_eq!(fedbuff.on_lost(0).dispatch, 0);
        assert_eq!(fedbuff.on_lost(0), Decision { dispatch: 3, ..Decision::default() });
    }
}
