//! The event queue: a priority queue of payloads keyed by (virtual time, sequence number).
//! The sequence number is assigned at push and only grows, so events at equal times pop in
//! the order they were pushed. It knows nothing of what the payloads mean.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::time::SimTime;

struct Entry<E> {
    time: SimTime,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    /// Reversed, so that the max-heap pops the earliest (time, seq) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue { heap: BinaryHeap::new(), next_seq: 0 }
    }
}

impl<E> EventQueue<E> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `event` at `time`; returns its sequence number.
    pub fn push(&mut self, time: SimTime, event: E) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { time, seq, event });
        seq
    }

    /// The earliest event, ties broken by push order.
    pub fn pop(&mut self) -> Option<(SimTime, E)> {
        self.heap.pop().map(|e| (e.time, e.event))
    }

    pub fn peek_time(&self) -> Option<SimTime> {
        self.heap.peek().map(|e| e.time)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pops_in_nondecreasing_time_then_push_order(times in prop::collection::vec(0u64..50, 0..300)) {
            let mut queue = EventQueue::new();
            for (i, &t) in times.iter().enumerate() {
                queue.push(SimTime(t), i);
            }
            let mut last: Option<(SimTime, usize)> = None;
            let mut popped = 0;
            while let Some((time, index)) = queue.pop() {
                prop_assert_eq!(SimTime(times[index]), time);
                if let Some(previous) = last {
                    prop_assert!(previous < (time, index), "{:?} then {:?}", previous, (time, index));
                }
                last = Some((time, index));
                popped += 1;
            }
            prop_assert_eq!(popped, times.len());
        }

        #[test]
        fn interleaved_pushes_never_pop_before_an_earlier_event(ops in prop::collection::vec((any::<bool>(), 0u64..20), 0..200)) {
            let mut queue = EventQueue::new();
            let mut now = SimTime(0);
            for (push, delay) in ops {
                if push {
                    queue.push(SimTime(now.0 + delay), ());
                } else if let Some((time, ())) = queue.pop() {
                    prop_assert!(time >= now);
                    now = time;
                }
            }
        }
    }
}
