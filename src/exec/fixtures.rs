//! Small hand-written plans for the executor's unit tests.

use crate::sched::{Plan, PlanEnd, Step, TrainTask, UpdateInput};
use crate::sim::time::{SimDuration, SimTime};

/// A plan that is a fixed list of steps.
pub struct Steps(std::vec::IntoIter<Step>);

impl Steps {
    pub fn new(steps: Vec<Step>) -> Self {
        Steps(steps.into_iter())
    }
}

impl Iterator for Steps {
    type Item = Step;
    fn next(&mut self) -> Option<Step> {
        self.0.next()
    }
}

impl Plan for Steps {
    fn end(&self) -> Option<PlanEnd> {
        None
    }
}

pub fn task(task: u64, base_version: u64) -> TrainTask {
    TrainTask {
        task,
        client: task as u32,
        leaf: None,
        base_version,
        dispatched_at: SimTime::ZERO,
        train_time: SimDuration::from_units(0.0),
        arrives_at: SimTime::ZERO,
    }
}

pub fn train(id: u64, base_version: u64) -> Step {
    Step::Train(task(id, base_version))
}

pub fn aggregate(version: u64, tasks: &[u64]) -> Step {
    let inputs = tasks.iter().map(|&task| UpdateInput { task, staleness: 0 }).collect();
    Step::Aggregate { version, at: SimTime::ZERO, inputs }
}
