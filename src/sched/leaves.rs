//! Leaf aggregators (FEDREVIVE.md sections 7 and 10): clients sit under `num_leaf_nodes`
//! leaves; a finished job's update reaches its leaf, which forwards it to the server at once,
//! once it holds `leaf_buffer_size` updates (or none of its clients' jobs is still in flight,
//! so nothing waits for ever), or at every tick of a virtual-time period. A forwarded message
//! travels one more delay, the leaf-to-server hop, drawn per message from the leaf's own
//! stream (a mixture component picked once per leaf, as clients pick theirs).
//!
//! A message carries its updates one by one: the server takes each as an arrival, with its
//! staleness measured when the message reaches the server. Combining n updates at the leaf
//! (their sum and count) and weighing the message by n at the server is the same mean, so the
//! executor and the server rules do not know leaves exist.

use rand::seq::SliceRandom as _;

use super::TrainTask;
use crate::sim::delay::{draw, Component, DelaySpec};
use crate::sim::rng::{self, Purpose, Rng};
use crate::sim::time::{SimDuration, SimTime};

/// How clients are split over leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafAssignment {
    /// Contiguous blocks of clients, like the port's devices_per_leaf.
    Blocks,
    /// A seeded shuffle (setup seed) cut into blocks.
    Seeded,
}

/// When a leaf forwards what it holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LeafFlush {
    /// Every `n` updates (1: each update passes through), or when none of the leaf's jobs is
    /// still in flight.
    Buffer(usize),
    /// At every multiple of this period, if it holds anything.
    Period(SimDuration),
}

/// The hierarchy as a config gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    pub num_leaves: usize,
    pub assignment: LeafAssignment,
    pub flush: LeafFlush,
    /// The leaf-to-server delay of one message.
    pub hop: DelaySpec,
}

impl Topology {
    /// Each client's leaf: blocks of ceil(N / L) clients, in client order or shuffled.
    pub fn leaf_of_clients(&self, num_clients: usize, setup_seed: u64) -> Vec<u32> {
        let mut order: Vec<usize> = (0..num_clients).collect();
        if self.assignment == LeafAssignment::Seeded {
            order.shuffle(&mut rng::stream(setup_seed, Purpose::LeafAssignment, 0));
        }
        let per_leaf = num_clients.div_ceil(self.num_leaves);
        let mut leaf_of = vec![0u32; num_clients];
        for (position, &client) in order.iter().enumerate() {
            leaf_of[client] = (position / per_leaf) as u32;
        }
        leaf_of
    }
}

/// What a leaf does with an arriving update.
pub enum AtLeaf {
    /// Forward these updates to the server now.
    Forward(Vec<TrainTask>),
    /// Hold it; if a tick is given, the engine wakes the leaf then.
    Hold { tick_at: Option<SimTime> },
}

/// The leaves' state during a plan.
pub struct Leaves {
    leaf_of: Vec<u32>,
    flush: LeafFlush,
    /// Updates each leaf holds, in arrival order.
    held: Vec<Vec<TrainTask>>,
    /// Jobs of each leaf's clients in flight (dispatched, not yet at the leaf nor lost).
    in_flight: Vec<usize>,
    /// Each leaf's hop: its mixture component and its draws.
    hops: Vec<(Component, Rng)>,
    distribution: crate::sim::delay::Distribution,
    /// Messages each leaf sent.
    pub messages: Vec<u64>,
}

impl Leaves {
    pub fn new(topology: &Topology, num_clients: usize, setup_seed: u64, run_seed: u64) -> Self {
        let leaves = topology.num_leaves;
        let hops = (0..leaves as u64)
            .map(|leaf| {
                let component = topology.hop.pick(&mut rng::stream(setup_seed, Purpose::HopProfile, leaf));
                (component, rng::stream(run_seed, Purpose::HopDraw, leaf))
            })
            .collect();
        Leaves {
            leaf_of: topology.leaf_of_clients(num_clients, setup_seed),
            flush: topology.flush,
            held: vec![Vec::new(); leaves],
            in_flight: vec![0; leaves],
            hops,
            distribution: topology.hop.distribution,
            messages: vec![0; leaves],
        }
    }

    pub fn leaf_of(&self, client: u32) -> u32 {
        self.leaf_of[client as usize]
    }

    pub fn dispatched(&mut self, leaf: u32) {
        self.in_flight[leaf as usize] += 1;
    }

    /// A job of the leaf ended without an update; returns what the leaf forwards now (its
    /// buffer, if that was the last job it waited for).
    pub fn lost(&mut self, leaf: u32) -> Vec<TrainTask> {
        self.in_flight[leaf as usize] -= 1;
        self.flush_if_idle(leaf)
    }

    /// A job's update reaches its leaf at `now`.
    pub fn arrive(&mut self, task: TrainTask, now: SimTime) -> AtLeaf {
        let leaf = task.leaf.expect("tasks of a hierarchy name their leaf");
        let l = leaf as usize;
        self.in_flight[l] -= 1;
        self.held[l].push(task);
        match self.flush {
            LeafFlush::Buffer(n) if self.held[l].len() >= n => AtLeaf::Forward(self.take(leaf)),
            LeafFlush::Buffer(_) => match self.flush_if_idle(leaf) {
                batch if batch.is_empty() => AtLeaf::Hold { tick_at: None },
                batch => AtLeaf::Forward(batch),
            },
            LeafFlush::Period(period) => {
                // The first update held arms the next tick.
                let tick_at = (self.held[l].len() == 1).then(|| next_tick(now, period));
                AtLeaf::Hold { tick_at }
            }
        }
    }

    /// The leaf's periodic tick: forwards what it holds.
    pub fn tick(&mut self, leaf: u32) -> Vec<TrainTask> {
        self.take(leaf)
    }

    /// Removes a cancelled job's update from its leaf; whether the leaf held it.
    pub fn cancel(&mut self, leaf: u32, task: u64) -> bool {
        let held = &mut self.held[leaf as usize];
        let before = held.len();
        held.retain(|t| t.task != task);
        held.len() < before
    }

    /// A cancelled job that had not reached its leaf.
    pub fn cancel_in_flight(&mut self, leaf: u32) {
        self.in_flight[leaf as usize] -= 1;
    }

    /// The hop of one message from `leaf`.
    pub fn hop(&mut self, leaf: u32) -> SimDuration {
        let (component, rng) = &mut self.hops[leaf as usize];
        SimDuration::from_units(draw(self.distribution, component, rng))
    }

    fn flush_if_idle(&mut self, leaf: u32) -> Vec<TrainTask> {
        let l = leaf as usize;
        if matches!(self.flush, LeafFlush::Buffer(_)) && self.in_flight[l] == 0 && !self.held[l].is_empty() {
            self.take(leaf)
        } else {
            Vec::new()
        }
    }

    fn take(&mut self, leaf: u32) -> Vec<TrainTask> {
        let batch = std::mem::take(&mut self.held[leaf as usize]);
        if !batch.is_empty() {
            self.messages[leaf as usize] += 1;
        }
        batch
    }
}

/// The first multiple of `period` after `now`.
fn next_tick(now: SimTime, period: SimDuration) -> SimTime {
    SimTime((now.0 / period.0 + 1) * period.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(num_leaves: usize, assignment: LeafAssignment, flush: LeafFlush) -> Topology {
        Topology { num_leaves, assignment, flush, hop: DelaySpec::constant(0.05) }
    }

    fn task(task: u64, leaf: u32) -> TrainTask {
        TrainTask {
            task,
            client: 0,
            leaf: Some(leaf),
            base_version: 0,
            dispatched_at: SimTime::ZERO,
            train_time: SimDuration(1),
            arrives_at: SimTime(1),
        }
    }

    #[test]
    fn blocks_are_contiguous_and_a_seeded_assignment_is_a_balanced_shuffle() {
        let blocks = topology(20, LeafAssignment::Blocks, LeafFlush::Buffer(1)).leaf_of_clients(1000, 10);
        assert_eq!((blocks[0], blocks[49], blocks[50], blocks[999]), (0, 0, 1, 19));
        let seeded = topology(20, LeafAssignment::Seeded, LeafFlush::Buffer(1));
        let shuffled = seeded.leaf_of_clients(1000, 10);
        assert_ne!(shuffled, blocks);
        assert_eq!(shuffled, seeded.leaf_of_clients(1000, 10));
        for leaf in 0..20 {
            assert_eq!(shuffled.iter().filter(|&&l| l == leaf).count(), 50);
        }
        // Uneven splits fill leaves in order; no leaf index reaches num_leaves.
        let uneven = topology(3, LeafAssignment::Blocks, LeafFlush::Buffer(1)).leaf_of_clients(10, 0);
        assert_eq!(uneven, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);
    }

    #[test]
    fn a_buffering_leaf_forwards_when_full_or_when_nothing_more_is_coming() {
        let mut leaves = Leaves::new(&topology(2, LeafAssignment::Blocks, LeafFlush::Buffer(2)), 4, 1, 1);
        for _ in 0..3 {
            leaves.dispatched(0);
        }
        assert!(matches!(leaves.arrive(task(0, 0), SimTime(1)), AtLeaf::Hold { tick_at: None }));
        let AtLeaf::Forward(batch) = leaves.arrive(task(1, 0), SimTime(2)) else {
            panic!("two make a message")
        };
        assert_eq!(batch.iter().map(|t| t.task).collect::<Vec<_>>(), [0, 1]);
        assert!(
            matches!(leaves.arrive(task(2, 0), SimTime(3)), AtLeaf::Forward(b) if b.len() == 1),
            "the leaf's last job in flight: it forwards what it holds"
        );
        assert_eq!(leaves.messages, [2, 0]);
        // A lost job can be the one the leaf was waiting for.
        leaves.dispatched(1);
        leaves.dispatched(1);
        assert!(matches!(leaves.arrive(task(3, 1), SimTime(4)), AtLeaf::Hold { .. }));
        assert_eq!(leaves.lost(1).len(), 1);
    }

    #[test]
    fn a_periodic_leaf_arms_one_tick_at_the_next_multiple_of_its_period() {
        let period = SimDuration::from_units(0.5);
        let mut leaves =
            Leaves::new(&topology(1, LeafAssignment::Blocks, LeafFlush::Period(period)), 4, 1, 1);
        leaves.dispatched(0);
        leaves.dispatched(0);
        let AtLeaf::Hold { tick_at } = leaves.arrive(task(0, 0), SimTime::from_units(1.2)) else { panic!() };
        assert_eq!(tick_at, Some(SimTime::from_units(1.5)));
        assert!(matches!(
            leaves.arrive(task(1, 0), SimTime::from_units(1.3)),
            AtLeaf::Hold { tick_at: None }
        ));
        assert_eq!(leaves.tick(0).len(), 2);
        assert!(leaves.tick(0).is_empty());
        assert_eq!(leaves.hop(0), SimDuration::from_units(0.05));
    }
}
