//! The task table: every planned task the executor holds, from the moment the plan names it
//! until the server applies it, and the cohorts they train in. A task waits for its base
//! version, runs in its cohort, and is done with its outcome; cohorts start, earliest first,
//! once every member's base exists and a worker is free.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::cohorts::CohortBuilder;
use super::versions::VersionStore;
use super::workers::{Finished, Workers};
use super::{Job, TrainError};
use crate::nn::train::TrainOutcome;
use crate::params::Weights;
use crate::saved::StateError;
use crate::saved::TrainedTask;
use crate::sched::{TrainTask, UpdateInput};

pub enum TaskState<W> {
    Waiting,
    Running,
    Done { outcome: TrainOutcome<W>, worker: u32 },
}

pub struct Slot<W> {
    pub task: TrainTask,
    pub state: TaskState<W>,
}

impl<W: Weights> Slot<W> {
    /// What of the task's result is NaN or infinite, if anything.
    pub fn non_finite(&self) -> Option<&'static str> {
        match &self.state {
            TaskState::Done { outcome, .. }
                if !(outcome.last_loss.is_finite() && outcome.first_loss.is_finite()) =>
            {
                Some("training loss")
            }
            TaskState::Done { outcome, .. } if !outcome.delta.all_finite() => Some("update"),
            TaskState::Done { .. } => None,
            _ => Some("result (the task did not finish)"),
        }
    }
}

/// What finished cohorts trained.
#[derive(Debug, Default, PartialEq)]
pub struct Trained {
    pub tasks: u64,
    pub wall: Duration,
}

pub struct TaskTable<W> {
    slots: BTreeMap<u64, Slot<W>>,
    cohorts: CohortBuilder,
    next_cohort: u64,
    /// Closed cohorts not yet started, and started ones not yet finished, by cohort id.
    waiting: BTreeMap<u64, Vec<u64>>,
    running: HashMap<u64, Vec<u64>>,
    /// Tasks a checkpoint holds trained (they do not train again), until the plan names them.
    restored: HashMap<u64, TaskState<W>>,
}

impl<W> TaskTable<W> {
    /// A table whose cohorts `cohorts` composes.
    pub fn new(cohorts: CohortBuilder) -> Self {
        TaskTable {
            slots: BTreeMap::new(),
            cohorts,
            next_cohort: 0,
            waiting: BTreeMap::new(),
            running: HashMap::new(),
            restored: HashMap::new(),
        }
    }

    /// Tasks held (planned and not applied).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// A resumed run's task, trained before the checkpoint.
    pub fn restore(&mut self, task: u64, outcome: TrainOutcome<W>, worker: u32) {
        self.restored.insert(task, TaskState::Done { outcome, worker });
    }

    /// A planned task joins: trained already where the checkpoint holds its result, else
    /// waiting for its base version.
    pub fn admit(&mut self, task: TrainTask, versions: &mut VersionStore<W>) {
        let state = self.restored.remove(&task.task).unwrap_or_else(|| {
            versions.need(task.base_version);
            TaskState::Waiting
        });
        let closed = self.cohorts.train(&task);
        self.slots.insert(task.task, Slot { task, state });
        for cohort in closed {
            self.close(cohort);
        }
    }

    /// The plan aggregates `inputs` into `version` (the open cohort closes before a task that
    /// would train from it).
    pub fn aggregation_read(&mut self, version: u64, inputs: &[UpdateInput]) {
        self.cohorts.aggregate(version, inputs);
    }

    /// The plan ended: the open cohort closes as it is.
    pub fn plan_ended(&mut self) {
        if let Some(cohort) = self.cohorts.close() {
            self.close(cohort);
        }
    }

    /// Whether `task` waits in the open cohort, which closes only as the plan goes on.
    pub fn in_open_cohort(&self, task: u64) -> bool {
        self.cohorts.holds(task)
    }

    /// A closed cohort waits for its bases, unless a resumed run's checkpoint came after it
    /// trained: its members are then applied (gone) or held trained.
    fn close(&mut self, cohort: Vec<u64>) {
        let trained = |t: &u64| self.slots.get(t).is_none_or(|s| matches!(s.state, TaskState::Done { .. }));
        if !cohort.iter().all(trained) {
            self.waiting.insert(self.next_cohort, cohort);
        }
        self.next_cohort += 1;
    }

    /// Tasks whose base exists and that are not done, outside the open cohort.
    pub fn ready(&self, versions: &VersionStore<W>) -> usize {
        self.slots
            .values()
            .filter(|s| {
                !matches!(s.state, TaskState::Done { .. })
                    && !self.cohorts.holds(s.task.task)
                    && versions.contains(s.task.base_version)
            })
            .count()
    }

    /// Starts waiting cohorts whose bases all exist, earliest first, while workers are free.
    pub fn start_ready(&mut self, workers: &mut dyn Workers<W>, versions: &VersionStore<W>) {
        let free = workers.capacity().saturating_sub(self.running.len());
        let startable: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, cohort)| cohort.iter().all(|t| versions.contains(self.slots[t].task.base_version)))
            .map(|(id, _)| *id)
            .take(free)
            .collect();
        for id in startable {
            let cohort = self.waiting.remove(&id).expect("listed above");
            let jobs = cohort
                .iter()
                .map(|t| {
                    let slot = self.slots.get_mut(t).expect("a cohort's tasks have slots");
                    slot.state = TaskState::Running;
                    Job {
                        task: slot.task.task,
                        client: slot.task.client,
                        version: slot.task.base_version,
                        base: versions.get(slot.task.base_version),
                    }
                })
                .collect();
            workers.start(id, jobs);
            self.running.insert(id, cohort);
        }
    }

    /// A cohort finished: its tasks are done and no longer need their bases.
    pub fn finish(
        &mut self,
        finished: Finished<W>,
        versions: &mut VersionStore<W>,
    ) -> Result<Trained, TrainError> {
        let Finished { cohort, worker, result } = finished;
        let tasks = self.running.remove(&cohort).expect("a finished cohort was running");
        let outcomes = result?;
        if outcomes.len() != tasks.len() {
            return Err(TrainError::WrongCount { returned: outcomes.len(), tasks: tasks.len() });
        }
        let mut trained = Trained::default();
        for (id, outcome) in tasks.into_iter().zip(outcomes) {
            trained.tasks += 1;
            trained.wall += outcome.wall;
            let slot = self.slots.get_mut(&id).expect("a running task has a slot");
            slot.state = TaskState::Done { outcome, worker };
            versions.release(slot.task.base_version);
        }
        Ok(trained)
    }

    /// Whether every task of an aggregation is done.
    pub fn all_done(&self, inputs: &[UpdateInput]) -> bool {
        inputs.iter().all(|i| matches!(self.slots[&i.task].state, TaskState::Done { .. }))
    }

    /// Takes an aggregation's tasks out of the table, in its order.
    pub fn take(&mut self, inputs: &[UpdateInput]) -> Vec<(Slot<W>, UpdateInput)> {
        inputs
            .iter()
            .map(|i| (self.slots.remove(&i.task).expect("an aggregation's tasks are held"), *i))
            .collect()
    }

    /// A resume's replay passes an aggregation the checkpointed run had applied: its tasks go.
    /// Only the count of their bases drops: a task read later in the replay may need it again.
    pub fn replay_applied(
        &mut self,
        inputs: &[UpdateInput],
        versions: &mut VersionStore<W>,
    ) -> Result<(), StateError> {
        for input in inputs {
            let slot = self.slots.remove(&input.task).ok_or_else(|| {
                StateError::Mismatch(format!("the plan aggregates task {} before training it", input.task))
            })?;
            if matches!(slot.state, TaskState::Waiting) {
                versions.unneed(slot.task.base_version);
            }
        }
        Ok(())
    }

    /// After a resume's replay: cohorts whose tasks were all applied or trained before the
    /// checkpoint do not train. A cohort partly trained means the checkpoint is of another plan.
    pub fn drop_settled_cohorts(&mut self) -> Result<(), StateError> {
        let mut mixed = false;
        let slots = &self.slots;
        self.waiting.retain(|_, cohort| {
            let pending = cohort
                .iter()
                .filter(|t| matches!(slots.get(t), Some(Slot { state: TaskState::Waiting, .. })))
                .count();
            mixed |= pending != 0 && pending != cohort.len();
            pending != 0
        });
        crate::saved::ensure(!mixed, || {
            "the checkpoint holds part of a cohort's results: it is not of this config".to_owned()
        })
    }

    /// At the plan's end: waiting cohorts none of whose tasks is `needed` (by an aggregation
    /// still to come) do not train, and go with their need of their bases. A cohort that is
    /// needed at all trains whole: its composition is the plan's.
    pub fn drop_unneeded(&mut self, needed: &HashSet<u64>, versions: &mut VersionStore<W>) {
        let slots = &mut self.slots;
        self.waiting.retain(|_, cohort| {
            let keep = cohort.iter().any(|t| needed.contains(t));
            if !keep {
                for id in cohort.iter() {
                    let slot = slots.remove(id).expect("a waiting cohort's tasks have slots");
                    versions.release(slot.task.base_version);
                }
            }
            keep
        });
    }

    /// A waiting task whose base should exist by now (made at or before the current version)
    /// but is not held: a checkpoint that lacks it.
    pub fn missing_base(&self, versions: &VersionStore<W>) -> Option<&TrainTask> {
        let current = versions.current_version();
        self.slots
            .values()
            .find(|s| {
                let base = s.task.base_version;
                matches!(s.state, TaskState::Waiting) && base <= current && !versions.contains(base)
            })
            .map(|s| &s.task)
    }
}

impl<W: Weights> TaskTable<W> {
    /// Trained tasks not yet applied, on the host (what a checkpoint saves).
    pub fn trained_on_host(&self) -> Vec<TrainedTask> {
        self.slots
            .values()
            .filter_map(|slot| match &slot.state {
                TaskState::Done { outcome, worker } => Some(TrainedTask {
                    task: slot.task.task,
                    worker: *worker,
                    first_loss: outcome.first_loss,
                    last_loss: outcome.last_loss,
                    samples: outcome.samples,
                    delta: outcome.delta.to_host().into_owned(),
                    model: outcome.model.as_ref().map(|m| m.to_host().into_owned()),
                }),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fixtures::task;

    fn outcome(loss: f32) -> TrainOutcome<Vec<f32>> {
        TrainOutcome {
            delta: vec![1.0],
            model: None,
            first_loss: loss,
            last_loss: loss,
            samples: 1,
            wall: Duration::from_millis(5),
        }
    }

    /// Records what it was asked to start; finishes nothing by itself.
    struct Recorder {
        capacity: usize,
        started: Vec<(u64, Vec<u64>)>,
    }

    impl Workers<Vec<f32>> for Recorder {
        fn capacity(&self) -> usize {
            self.capacity
        }
        fn start(&mut self, cohort: u64, jobs: Vec<Job<Vec<f32>>>) {
            self.started.push((cohort, jobs.iter().map(|j| j.task).collect()));
        }
        fn next_finished(&mut self) -> Finished<Vec<f32>> {
            unreachable!("the tests finish cohorts themselves")
        }
    }

    #[test]
    fn cohorts_start_when_their_bases_exist_and_workers_are_free() {
        let mut versions = VersionStore::new(vec![0.0]);
        let mut table = TaskTable::new(CohortBuilder::new(2));
        for (t, base) in [(0, 0), (1, 0), (2, 1), (3, 1)] {
            table.admit(task(t, base), &mut versions);
        }
        assert_eq!(table.ready(&versions), 2, "tasks 2 and 3 wait for version 1");
        let mut workers = Recorder { capacity: 1, started: vec![] };
        table.start_ready(&mut workers, &versions);
        assert_eq!(workers.started, vec![(0, vec![0, 1])]);
        table.start_ready(&mut workers, &versions);
        assert_eq!(workers.started.len(), 1, "version 1 does not exist yet");
        let trained = table
            .finish(
                Finished { cohort: 0, worker: 3, result: Ok(vec![outcome(1.0), outcome(2.0)]) },
                &mut versions,
            )
            .unwrap();
        assert_eq!(trained, Trained { tasks: 2, wall: Duration::from_millis(10) });
        let inputs = [UpdateInput { task: 0, staleness: 0 }, UpdateInput { task: 1, staleness: 0 }];
        assert!(table.all_done(&inputs));
        versions.advance(1, vec![1.0]);
        assert!(!versions.contains(0), "no waiting task needs version 0 any more");
        let taken = table.take(&inputs);
        assert_eq!(taken.iter().map(|(s, _)| s.task.task).collect::<Vec<_>>(), vec![0, 1]);
        table.start_ready(&mut workers, &versions);
        assert_eq!(workers.started[1], (1, vec![2, 3]));
    }

    #[test]
    fn a_trainer_that_returns_too_few_outcomes_is_an_error() {
        let mut versions = VersionStore::new(vec![0.0]);
        let mut table = TaskTable::new(CohortBuilder::new(2));
        table.admit(task(0, 0), &mut versions);
        table.admit(task(1, 0), &mut versions);
        table.start_ready(&mut Recorder { capacity: 4, started: vec![] }, &versions);
        let err = table
            .finish(Finished { cohort: 0, worker: 0, result: Ok(vec![outcome(1.0)]) }, &mut versions)
            .unwrap_err();
        assert!(err.to_string().contains("1 outcomes for 2 tasks"), "{err}");
    }

    #[test]
    fn unneeded_cohorts_go_at_the_plans_end_with_their_need_of_their_bases() {
        let mut versions = VersionStore::new(vec![0.0]);
        let mut table = TaskTable::new(CohortBuilder::new(1));
        table.admit(task(0, 0), &mut versions);
        table.admit(task(1, 0), &mut versions);
        versions.advance(1, vec![1.0]);
        assert!(versions.contains(0), "tasks 0 and 1 need version 0");
        table.drop_unneeded(&HashSet::from([1]), &mut versions);
        assert_eq!(table.len(), 1);
        assert!(versions.contains(0), "task 1 still needs it");
        table.drop_unneeded(&HashSet::new(), &mut versions);
        assert!(!versions.contains(0) && table.len() == 0);
    }

    #[test]
    fn restored_tasks_do_not_train_again_and_a_partly_trained_cohort_is_refused() {
        let mut versions = VersionStore::new(vec![0.0]);
        let mut table = TaskTable::new(CohortBuilder::new(2));
        table.restore(0, outcome(1.0), 0);
        table.restore(1, outcome(1.0), 0);
        table.admit(task(0, 0), &mut versions);
        table.admit(task(1, 0), &mut versions);
        assert_eq!(table.ready(&versions), 0);
        assert_eq!(table.trained_on_host().len(), 2);
        table.restore(2, outcome(1.0), 0);
        table.admit(task(2, 0), &mut versions);
        table.admit(task(3, 0), &mut versions);
        let err = table.drop_settled_cohorts().unwrap_err();
        assert!(err.to_string().contains("part of a cohort"), "{err}");
    }

    #[test]
    fn a_non_finite_result_is_named() {
        let slot = |outcome: TrainOutcome<Vec<f32>>| Slot {
            task: task(0, 0),
            state: TaskState::Done { outcome, worker: 0 },
        };
        assert_eq!(slot(outcome(f32::NAN)).non_finite(), Some("training loss"));
        let mut bad = outcome(1.0);
        bad.delta = vec![f32::INFINITY];
        assert_eq!(slot(bad).non_finite(), Some("update"));
        assert_eq!(slot(outcome(1.0)).non_finite(), None);
    }
}
