//! The executor: carries out a plan. It materialises model versions in plan order; planned
//! tasks are grouped into cohorts as the plan is read ([`cohorts`]), every cohort whose base
//! versions exist is ready, and ready cohorts train in parallel on [`Workers`]. The server
//! applies finished updates strictly in plan order, so results never depend on which worker
//! finished first; only speed does. The executor itself never calls libtorch: training and
//! evaluation are behind [`Trainer`] and [`Evaluator`].
//!
//! Memory stays flat: a version is kept only while a planned task still needs it (and the
//! current one), and the executor holds at most `lookahead` planned-but-unapplied tasks
//! beyond what the next aggregation needs (plus what it takes to close the open cohort).

pub mod cohorts;
pub mod interrupt;
pub mod sizing;
#[cfg(test)]
mod tests;
pub mod trainer;
pub mod workers;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::data::partition::Partition;
use crate::fl::server::{Arrival, Server};
use crate::nn::train::TrainOutcome;
use crate::params::Weights;
pub use crate::record::rows::{EvalRecord, Progress, Sink, UpdateRecord, VecSink};
pub use crate::saved::{RunSnapshot, TrainedTask};
use crate::sched::{Plan, PlanEnd, Step, TrainTask, UpdateInput};
use crate::sim::time::SimTime;
use cohorts::CohortBuilder;
pub use trainer::{Evaluator, Job, Trainer};
pub use workers::{Finished, ThreadWorkers, Workers};

/// How the executor runs a plan: the settings that are not the plan's, the server's or the
/// trainer's.
pub struct ExecSettings {
    /// The clients' shards: their sizes and class proportions reach the server with each update.
    pub partition: Arc<Partition>,
    pub lookahead: usize,
    /// Tasks per cohort (1: every task trains alone).
    pub cohort_size: usize,
    pub target_accuracy: Option<f64>,
    /// [(version, acc)]: stop once the version count is >= version and the best accuracy so
    /// far is <= acc (checked after every aggregation and evaluation).
    pub early_stop: Vec<(u64, f64)>,
}

/// What runs the plan besides the executor: workers (with their trainer), the evaluator, the
/// server and where the records go.
pub struct Engines<'a, W> {
    pub workers: &'a mut dyn Workers<W>,
    pub evaluator: &'a mut dyn Evaluator<W>,
    pub server: &'a mut Server<W>,
    pub sink: &'a mut dyn Sink,
}

/// Why a run stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// The plan ended (max_versions or max_virtual_time).
    PlanEnd(PlanEnd),
    TargetAccuracy {
        accuracy: f64,
    },
    EarlyStop {
        version: u64,
        best_accuracy: f64,
        threshold: f64,
    },
    /// A client's loss or update was NaN or infinite; its aggregation was not applied.
    /// A loss or update was NaN or infinite: a client's (the aggregation that would have made
    /// `version` was not applied) or the evaluation's of `version`.
    NonFinite {
        version: u64,
        task: Option<u64>,
        what: &'static str,
    },
    /// The user asked the run to stop (Ctrl-C); what was applied so far stands.
    Interrupted,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::PlanEnd(PlanEnd::MaxVersions) => write!(f, "max_versions"),
            StopReason::PlanEnd(PlanEnd::MaxVirtualTime) => write!(f, "max_virtual_time"),
            StopReason::PlanEnd(PlanEnd::ClientsExhausted) => write!(f, "clients_exhausted"),
            StopReason::TargetAccuracy { accuracy } => write!(f, "target_accuracy (reached {accuracy:.4})"),
            StopReason::EarlyStop { version, best_accuracy, threshold } => {
                write!(f, "early_stop (best accuracy {best_accuracy:.4} <= {threshold} at version {version})")
            }
            StopReason::NonFinite { version, task: Some(task), what } => {
                write!(f, "non-finite {what} from task {task}; version {version} was not made")
            }
            StopReason::NonFinite { version, task: None, what } => {
                write!(f, "non-finite {what} evaluating version {version}")
            }
            StopReason::Interrupted => write!(f, "interrupted"),
        }
    }
}

/// Totals of one execution.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub final_weights: Vec<f32>,
    pub version: u64,
    pub virtual_time: f64,
    pub stop: StopReason,
    pub wall: Duration,
    pub tasks_trained: u64,
    pub updates_applied: u64,
    /// Sum of the tasks' own training wall times.
    pub train_time: Duration,
    pub server_time: Duration,
    pub eval_time: Duration,
    /// The most tasks that were ready (base version present, not yet finished) at once.
    pub max_ready: usize,
    /// The most planned-but-unapplied tasks and model versions held at once (memory bounds).
    pub max_tasks_held: usize,
    pub max_versions_held: usize,
    /// Cohorts trained (equal to tasks_trained at cohort size 1).
    pub cohorts_trained: u64,
    /// What each training process did, where the workers were other processes (MPI ranks).
    pub ranks: Vec<workers::RankLoad>,
}

impl RunOutcome {
    /// Share of worker time spent training.
    pub fn busy_share(&self, workers: usize) -> f64 {
        self.train_time.as_secs_f64() / (self.wall.as_secs_f64() * workers as f64).max(1e-9)
    }
}

enum TaskState<W> {
    Waiting,
    Running,
    Done { outcome: TrainOutcome<W>, worker: u32 },
}

struct Slot<W> {
    task: TrainTask,
    state: TaskState<W>,
}

/// Runs `plan` from `initial` (version 0), or from a checkpoint's snapshot (`resume`; the
/// plan then starts from its beginning and is replayed up to the snapshot's position), to its
/// end or to a model-dependent stop. Versions and aggregation stay where the weights live (on
/// a GPU, the device); `initial` shows where.
///
/// Where the sink asks for it, a checkpoint is taken between two steps of the plan, after a
/// version's evaluation if one follows, and when the user interrupts the run.
pub fn execute<W: Weights>(
    plan: &mut dyn Plan,
    initial: W,
    resume: Option<RunSnapshot>,
    settings: &ExecSettings,
    engines: Engines<W>,
) -> anyhow::Result<RunOutcome> {
    let Engines { workers, evaluator, server, sink } = engines;
    let started = Instant::now();
    // Plan steps read so far, and those carried out (the position a checkpoint records).
    let mut steps_read = 0u64;
    let mut position = 0u64;
    let mut window: VecDeque<(u64, Step)> = VecDeque::new();
    let mut slots: BTreeMap<u64, Slot<W>> = BTreeMap::new();
    let mut builder = CohortBuilder::new(settings.cohort_size);
    let mut next_cohort = 0u64;
    // Closed cohorts not yet started, and started ones not yet finished, by cohort id.
    let mut waiting: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut running: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut references: HashMap<u64, usize> = HashMap::new();
    let mut versions: HashMap<u64, Arc<W>> = HashMap::new();
    let mut current_version = 0u64;
    let mut current = Arc::new(initial);
    versions.insert(0, current.clone());
    let mut plan_done = false;
    let mut virtual_time = 0.0;
    let mut last_accuracy = None;
    let mut best_accuracy: Option<f64> = None;
    // An aggregation happened whose early-stop check is still to come: it runs once the next
    // step is known, after the evaluation of that version where one follows.
    let mut early_stop_due = false;
    let mut outcome = RunOutcome {
        final_weights: Vec::new(),
        version: 0,
        virtual_time: 0.0,
        stop: StopReason::PlanEnd(PlanEnd::MaxVirtualTime),
        wall: Duration::ZERO,
        tasks_trained: 0,
        updates_applied: 0,
        train_time: Duration::ZERO,
        server_time: Duration::ZERO,
        eval_time: Duration::ZERO,
        max_ready: 0,
        max_tasks_held: 0,
        max_versions_held: 0,
        cohorts_trained: 0,
        ranks: Vec::new(),
    };
    // A closed cohort waits for its bases, unless a resumed run's checkpoint came after it
    // trained: its members are then applied (gone) or held trained.
    let mut close =
        |cohort: Vec<u64>, waiting: &mut BTreeMap<u64, Vec<u64>>, slots: &BTreeMap<u64, Slot<W>>| {
            let trained = |t: &u64| slots.get(t).is_none_or(|s| matches!(s.state, TaskState::Done { .. }));
            if !cohort.iter().all(trained) {
                waiting.insert(next_cohort, cohort);
            }
            next_cohort += 1;
        };
    // Tasks a checkpoint holds trained (they do not train again), by task.
    let mut restored: HashMap<u64, TaskState<W>> = HashMap::new();
    // The version at which the sink was last asked whether a checkpoint is due.
    let mut checkpoint_asked = 0u64;
    // Jobs settled before this time are in the jobs table (streamed at each aggregation).
    let mut jobs_recorded_before = SimTime::ZERO;
    if let Some(snapshot) = resume {
        // Version 0 shows where weights live; the snapshot's versions replace it.
        let initial = current.clone();
        versions.clear();
        for (version, host) in &snapshot.versions {
            versions.insert(*version, Arc::new(initial.like(host)));
        }
        current_version = snapshot.version;
        current = versions.get(&current_version).cloned().ok_or_else(|| {
            anyhow::anyhow!("the checkpoint lacks its own current model (version {current_version})")
        })?;
        for trained in snapshot.trained {
            let outcome = TrainOutcome {
                delta: initial.like(&trained.delta),
                model: trained.model.as_deref().map(|m| initial.like(m)),
                first_loss: trained.first_loss,
                last_loss: trained.last_loss,
                samples: trained.samples,
                wall: Duration::ZERO,
            };
            restored.insert(trained.task, TaskState::Done { outcome, worker: trained.worker });
        }
        virtual_time = snapshot.virtual_time;
        (last_accuracy, best_accuracy) = (snapshot.last_accuracy, snapshot.best_accuracy);
        early_stop_due = snapshot.early_stop_due;
        outcome.tasks_trained = snapshot.tasks_trained;
        outcome.updates_applied = snapshot.updates_applied;
        outcome.cohorts_trained = snapshot.cohorts_trained;
        checkpoint_asked = current_version;
        server.restore(snapshot.server, &*initial)?;
        // Replay the plan up to the checkpoint: what was applied is dropped, what was trained
        // waits done, the cohorts form as they did.
        let mut last_made = 0u64;
        while steps_read < snapshot.position {
            let step = plan.next().ok_or_else(|| {
                anyhow::anyhow!(
                    "the plan ends after {steps_read} steps, before the checkpoint's position {}: the checkpoint is not of this config",
                    snapshot.position
                )
            })?;
            steps_read += 1;
            match step {
                Step::Train(task) => {
                    for cohort in admit(task, &mut restored, &mut references, &mut builder, &mut slots) {
                        close(cohort, &mut waiting, &slots);
                    }
                }
                Step::Aggregate { version, inputs, .. } => {
                    builder.aggregate(version, &inputs);
                    for input in &inputs {
                        let slot = slots.remove(&input.task).ok_or_else(|| {
                            anyhow::anyhow!("the plan aggregates task {} before training it", input.task)
                        })?;
                        // Only the count drops: a version may be needed again by a task read
                        // later in the replay; unneeded versions go once it is done.
                        if let (TaskState::Waiting, Some(count)) =
                            (&slot.state, references.get_mut(&slot.task.base_version))
                        {
                            *count -= 1;
                            if *count == 0 {
                                references.remove(&slot.task.base_version);
                            }
                        }
                    }
                    last_made = version;
                }
                Step::Evaluate { .. } => {}
            }
        }
        anyhow::ensure!(
            last_made == snapshot.version,
            "replaying the plan to the checkpoint's position makes version {last_made}, the checkpoint holds version {}: the checkpoint is not of this config",
            snapshot.version
        );
        if snapshot.plan_read {
            // Taken in the run's tail: the run had read the whole plan, so read the rest now.
            for step in &mut *plan {
                steps_read += 1;
                for cohort in read_ahead(
                    step,
                    steps_read - 1,
                    &mut window,
                    &mut restored,
                    &mut references,
                    &mut builder,
                    &mut slots,
                ) {
                    close(cohort, &mut waiting, &slots);
                }
            }
            plan_done = true;
            if let Some(cohort) = builder.close() {
                close(cohort, &mut waiting, &slots);
            }
        }
        // Cohorts whose tasks were all applied or trained before the checkpoint do not train.
        let mut mixed = None;
        waiting.retain(|id, cohort| {
            let pending = cohort
                .iter()
                .filter(|t| matches!(slots.get(t), Some(Slot { state: TaskState::Waiting, .. })))
                .count();
            if pending != 0 && pending != cohort.len() {
                mixed = Some(*id);
            }
            pending != 0
        });
        anyhow::ensure!(
            mixed.is_none(),
            "the checkpoint holds part of a cohort's results: it is not of this config"
        );
        if plan_done {
            drop_unneeded(&window, &mut waiting, &mut slots, &mut references, &mut versions, current_version);
        }
        versions.retain(|version, _| *version == current_version || references.contains_key(version));
        // Tasks read in the tail may train from versions still to be made.
        let missing = slots.values().find(|s| {
            let base = s.task.base_version;
            matches!(s.state, TaskState::Waiting) && base <= current_version && !versions.contains_key(&base)
        });
        if let Some(slot) = missing {
            anyhow::bail!(
                "the checkpoint lacks version {}, the base of task {}",
                slot.task.base_version,
                slot.task.task
            );
        }
        position = snapshot.position;
        // Jobs the checkpointed run had recorded are in its log segments already.
        jobs_recorded_before = SimTime::from_units(snapshot.jobs_recorded_before);
        drop(plan.take_jobs_before(jobs_recorded_before));
    }

    let stop = loop {
        // 1. Read the plan ahead, at least up to the next aggregation or evaluation, and on
        //    while that aggregation needs a task of the open cohort (it closes as the plan goes).
        let head_needs_open = |window: &VecDeque<(u64, Step)>, builder: &CohortBuilder| matches!(window.front(), Some((_, Step::Aggregate { inputs, .. })) if inputs.iter().any(|i| builder.holds(i.task)));
        while !plan_done
            && (slots.len() < settings.lookahead || window.is_empty() || head_needs_open(&window, &builder))
        {
            match plan.next() {
                Some(step) => {
                    steps_read += 1;
                    for cohort in read_ahead(
                        step,
                        steps_read - 1,
                        &mut window,
                        &mut restored,
                        &mut references,
                        &mut builder,
                        &mut slots,
                    ) {
                        close(cohort, &mut waiting, &slots);
                    }
                }
                None => {
                    plan_done = true;
                    if let Some(cohort) = builder.close() {
                        close(cohort, &mut waiting, &slots);
                    }
                    drop_unneeded(
                        &window,
                        &mut waiting,
                        &mut slots,
                        &mut references,
                        &mut versions,
                        current_version,
                    );
                }
            }
        }

        // 2. Start ready cohorts, earliest first.
        let ready = slots
            .values()
            .filter(|s| {
                !matches!(s.state, TaskState::Done { .. })
                    && !builder.holds(s.task.task)
                    && versions.contains_key(&s.task.base_version)
            })
            .count();
        outcome.max_ready = outcome.max_ready.max(ready);
        outcome.max_tasks_held = outcome.max_tasks_held.max(slots.len());
        outcome.max_versions_held = outcome.max_versions_held.max(versions.len());
        let free = workers.capacity().saturating_sub(running.len());
        let startable: Vec<u64> = waiting
            .iter()
            .filter(|(_, cohort)| cohort.iter().all(|t| versions.contains_key(&slots[t].task.base_version)))
            .map(|(id, _)| *id)
            .take(free)
            .collect();
        for id in startable {
            let cohort = waiting.remove(&id).expect("listed above");
            let jobs = cohort
                .iter()
                .map(|t| {
                    let slot = slots.get_mut(t).expect("a cohort's tasks have slots");
                    slot.state = TaskState::Running;
                    Job {
                        task: slot.task.task,
                        client: slot.task.client,
                        version: slot.task.base_version,
                        base: versions[&slot.task.base_version].clone(),
                    }
                })
                .collect();
            workers.start(id, jobs);
            running.insert(id, cohort);
        }

        // 3. Apply the head of the plan, or wait for a worker; take a checkpoint first where due
        //    (after the version's evaluation, where one follows) or when the user interrupts.
        let evaluation_follows = matches!(window.front(), Some((_, Step::Evaluate { version, .. })) if *version == current_version);
        let interrupted = interrupt::requested();
        let ask = !evaluation_follows && checkpoint_asked != current_version;
        // Nothing is left to save once the plan is read and carried out.
        let work_left = !(plan_done && window.is_empty());
        if work_left && (interrupted || (ask && sink.checkpoint_due(current_version))) {
            let snapshot = RunSnapshot {
                position,
                plan_read: plan_done,
                version: current_version,
                virtual_time,
                versions: versions.iter().map(|(v, w)| (*v, w.to_host().into_owned())).collect(),
                trained: slots
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
                    .collect(),
                last_accuracy,
                best_accuracy,
                early_stop_due,
                jobs_recorded_before: jobs_recorded_before.units(),
                tasks_trained: outcome.tasks_trained,
                updates_applied: outcome.updates_applied,
                cohorts_trained: outcome.cohorts_trained,
                server: server.save()?,
            };
            sink.checkpoint(&snapshot)?;
        }
        if ask {
            checkpoint_asked = current_version;
        }
        // An interruption after the last step leaves nothing to continue: the run has ended.
        if interrupted && work_left {
            break Some(StopReason::Interrupted);
        }
        if !evaluation_follows && std::mem::take(&mut early_stop_due) {
            if let Some(stop) = early_stop(&settings.early_stop, current_version, best_accuracy) {
                break Some(stop);
            }
        }
        match window.front().map(|(_, step)| step) {
            None if plan_done => break None,
            None => continue,
            Some(Step::Aggregate { inputs, .. }) => {
                let missing = inputs.iter().any(|i| !matches!(slots[&i.task].state, TaskState::Done { .. }));
                if missing {
                    let Finished { cohort, worker, result } = workers.next_finished();
                    let tasks = running.remove(&cohort).expect("a finished cohort was running");
                    let trained = result?;
                    anyhow::ensure!(
                        trained.len() == tasks.len(),
                        "a trainer returned {} outcomes for {} tasks",
                        trained.len(),
                        tasks.len()
                    );
                    outcome.cohorts_trained += 1;
                    for (id, trained) in tasks.into_iter().zip(trained) {
                        outcome.tasks_trained += 1;
                        outcome.train_time += trained.wall;
                        let slot = slots.get_mut(&id).expect("a running task has a slot");
                        slot.state = TaskState::Done { outcome: trained, worker };
                        let base = slot.task.base_version;
                        release(&mut references, &mut versions, base, current_version);
                    }
                    continue;
                }
                let Some((index, Step::Aggregate { version, at, inputs })) = window.pop_front() else {
                    unreachable!()
                };
                position = index + 1;
                let server_started = Instant::now();
                let taken: Vec<(Slot<W>, UpdateInput)> =
                    inputs.iter().map(|i| (slots.remove(&i.task).expect("checked above"), *i)).collect();
                if let Some((slot, what)) =
                    taken.iter().find_map(|(slot, _)| non_finite(slot).map(|w| (slot, w)))
                {
                    break Some(StopReason::NonFinite { version, task: Some(slot.task.task), what });
                }
                let arrivals: Vec<Arrival<W>> = taken
                    .iter()
                    .map(|(slot, input)| {
                        let TaskState::Done { outcome, .. } = &slot.state else { unreachable!() };
                        let client = slot.task.client as usize;
                        Arrival {
                            task: slot.task.task,
                            delta: &outcome.delta,
                            model: outcome.model.as_ref(),
                            staleness: input.staleness,
                            samples: settings.partition.shards[client].len(),
                            class_proportions: settings.partition.class_proportions(client),
                        }
                    })
                    .collect();
                let next = server.aggregate(&*current, current_version, &arrivals)?;
                // Workers on other streams read the new version, and the deltas may be freed.
                next.settle();
                drop(arrivals);
                let server_time = server_started.elapsed();
                outcome.server_time += server_time;
                let old = current_version;
                current_version = version;
                current = Arc::new(next);
                versions.insert(current_version, current.clone());
                if references.get(&old).copied().unwrap_or(0) == 0 {
                    versions.remove(&old);
                }
                virtual_time = at.units();
                let per_update_ms = server_time.as_secs_f64() * 1e3 / taken.len() as f64;
                for (slot, input) in taken {
                    let TaskState::Done { outcome: trained, worker } = slot.state else { unreachable!() };
                    sink.update(UpdateRecord {
                        task: slot.task.task,
                        client: slot.task.client,
                        leaf: slot.task.leaf,
                        base_version: slot.task.base_version,
                        applied_version: version,
                        staleness: input.staleness,
                        dispatched_at: slot.task.dispatched_at.units(),
                        arrived_at: slot.task.arrives_at.units(),
                        first_loss: trained.first_loss,
                        last_loss: trained.last_loss,
                        train_ms: trained.wall.as_secs_f64() * 1e3,
                        worker,
                        server_ms: per_update_ms,
                    });
                    outcome.updates_applied += 1;
                }
                // Jobs whose fate was known before this aggregation cannot change: stream them.
                for job in plan.take_jobs_before(at) {
                    sink.job(job);
                }
                jobs_recorded_before = at;
                sink.progress(&Progress {
                    version,
                    virtual_time,
                    updates: outcome.updates_applied,
                    last_accuracy,
                    elapsed: started.elapsed(),
                    ready_tasks: ready,
                });
                early_stop_due = true;
            }
            Some(Step::Evaluate { .. }) => {
                let Some((index, Step::Evaluate { version, at })) = window.pop_front() else {
                    unreachable!()
                };
                position = index + 1;
                debug_assert_eq!(version, current_version, "evaluations follow their aggregation");
                let eval_started = Instant::now();
                let result = evaluator.evaluate(&*current);
                outcome.eval_time += eval_started.elapsed();
                virtual_time = at.units();
                last_accuracy = Some(result.accuracy);
                best_accuracy = Some(best_accuracy.map_or(result.accuracy, |b: f64| b.max(result.accuracy)));
                sink.eval(EvalRecord {
                    version,
                    virtual_time,
                    accuracy: result.accuracy,
                    loss: result.loss,
                    per_class_accuracy: result.per_class_accuracy,
                    wall_s: started.elapsed().as_secs_f64(),
                });
                sink.check()?;
                if let Some(target) = settings.target_accuracy {
                    if result.accuracy >= target {
                        break Some(StopReason::TargetAccuracy { accuracy: result.accuracy });
                    }
                }
                if !result.loss.is_finite() {
                    break Some(StopReason::NonFinite { version, task: None, what: "test loss" });
                }
                early_stop_due = false;
                if let Some(stop) = early_stop(&settings.early_stop, current_version, best_accuracy) {
                    break Some(stop);
                }
            }
            Some(Step::Train(_)) => unreachable!("train steps go to the task table"),
        }
    };
    outcome.stop = stop.unwrap_or_else(|| StopReason::PlanEnd(plan.end().unwrap_or(PlanEnd::MaxVirtualTime)));
    outcome.final_weights = current.to_host().into_owned();
    outcome.version = current_version;
    outcome.virtual_time = virtual_time;
    outcome.wall = started.elapsed();
    Ok(outcome)
}

/// The reference's early stop, checked after every event: the version count has reached a
/// threshold's version and the best accuracy so far is at most its accuracy.
pub fn early_stop(thresholds: &[(u64, f64)], version: u64, best_accuracy: Option<f64>) -> Option<StopReason> {
    let best = best_accuracy?;
    thresholds
        .iter()
        .find(|&&(at, acc)| version >= at && best <= acc)
        .map(|&(_, threshold)| StopReason::EarlyStop { version, best_accuracy: best, threshold })
}

/// What of a trained task is NaN or infinite, if anything.
fn non_finite<W: Weights>(slot: &Slot<W>) -> Option<&'static str> {
    match &slot.state {
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

/// A step read ahead of the one being carried out: a task joins the task table, an aggregation
/// or evaluation waits its turn in `window`. Returns the cohorts it closes.
fn read_ahead<W>(
    step: Step,
    index: u64,
    window: &mut VecDeque<(u64, Step)>,
    restored: &mut HashMap<u64, TaskState<W>>,
    references: &mut HashMap<u64, usize>,
    builder: &mut CohortBuilder,
    slots: &mut BTreeMap<u64, Slot<W>>,
) -> Vec<Vec<u64>> {
    match step {
        Step::Train(task) => admit(task, restored, references, builder, slots),
        step => {
            if let Step::Aggregate { version, inputs, .. } = &step {
                builder.aggregate(*version, inputs);
            }
            window.push_back((index, step));
            Vec::new()
        }
    }
}

/// A planned task joins the task table: trained already where a resumed run's checkpoint
/// holds its result, else waiting for its base version. Returns the cohorts it closes.
fn admit<W>(
    task: TrainTask,
    restored: &mut HashMap<u64, TaskState<W>>,
    references: &mut HashMap<u64, usize>,
    builder: &mut CohortBuilder,
    slots: &mut BTreeMap<u64, Slot<W>>,
) -> Vec<Vec<u64>> {
    let state = restored.remove(&task.task).unwrap_or_else(|| {
        *references.entry(task.base_version).or_default() += 1;
        TaskState::Waiting
    });
    let closed = builder.train(&task);
    slots.insert(task.task, Slot { task, state });
    closed
}

/// At the plan's end: cohorts that no remaining aggregation (in `window`) takes from need not
/// train, and are dropped with their references to their bases. A cohort that is needed at all
/// trains whole: its composition is the plan's.
fn drop_unneeded<W>(
    window: &VecDeque<(u64, Step)>,
    waiting: &mut BTreeMap<u64, Vec<u64>>,
    slots: &mut BTreeMap<u64, Slot<W>>,
    references: &mut HashMap<u64, usize>,
    versions: &mut HashMap<u64, Arc<W>>,
    current_version: u64,
) {
    let needed: HashSet<u64> = window
        .iter()
        .flat_map(|(_, s)| match s {
            Step::Aggregate { inputs, .. } => inputs.iter().map(|i| i.task).collect(),
            _ => Vec::new(),
        })
        .collect();
    waiting.retain(|_, cohort| {
        let keep = cohort.iter().any(|t| needed.contains(t));
        if !keep {
            for id in cohort.iter() {
                let slot = slots.remove(id).expect("a waiting cohort's tasks have slots");
                release(references, versions, slot.task.base_version, current_version);
            }
        }
        keep
    });
}

/// One fewer task needs `version`; forget it when nobody does and it is not the current one.
fn release<W>(
    references: &mut HashMap<u64, usize>,
    versions: &mut HashMap<u64, Arc<W>>,
    version: u64,
    current: u64,
) {
    if let Some(count) = references.get_mut(&version) {
        *count -= 1;
        if *count == 0 {
            references.remove(&version);
            if version != current {
                versions.remove(&version);
            }
        }
    }
}
