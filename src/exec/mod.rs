//! The executor: carries out a plan. It materialises model versions in plan order; every
//! planned task whose base version exists is ready, and ready tasks train in parallel on a
//! rayon pool of `workers` threads. The server applies finished updates strictly in plan
//! order, so results never depend on which worker finished first; only speed does.
//!
//! Memory stays flat: a version is kept only while a planned task still needs it (and the
//! current one), and the executor holds at most `lookahead` planned-but-unapplied tasks
//! beyond what the next aggregation needs.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tch::Device;

use crate::data::augment::Normalize;
use crate::data::partition::Partition;
use crate::data::Dataset;
use crate::fl::server::{Arrival, Server};
use crate::nn::eval::{evaluate, EvalResult};
use crate::nn::train::{train_local, TrainContext, TrainOutcome, TrainSpec};
use crate::nn::Model;
use crate::sched::{Plan, PlanEnd, Step, TrainTask, UpdateInput};
use crate::sim::rng::{self, Purpose};

/// Everything the executor needs besides the plan.
pub struct Experiment {
    pub dataset: Arc<Dataset>,
    pub partition: Arc<Partition>,
    pub spec: TrainSpec,
    pub seed: u64,
    pub device: Device,
    pub workers: usize,
    pub lookahead: usize,
    pub initial_weights: Vec<f32>,
    pub target_accuracy: Option<f64>,
    /// [(version, acc)]: stop once the version count is >= version and the best accuracy so
    /// far is <= acc (checked after every aggregation and evaluation).
    pub early_stop: Vec<(u64, f64)>,
    /// libtorch threads of the coordinating thread (server step and evaluation) on CPU.
    pub server_threads: usize,
}

/// One applied client update (a row of updates.parquet).
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateRecord {
    pub task: u64,
    pub client: u32,
    pub base_version: u64,
    pub applied_version: u64,
    pub staleness: u64,
    pub dispatched_at: f64,
    pub arrived_at: f64,
    pub first_loss: f32,
    pub last_loss: f32,
    /// Wall-clock columns: they vary run to run and are left out of determinism checks.
    pub train_ms: f64,
    pub worker: u32,
    pub server_ms: f64,
}

/// One evaluation (a row of evals.parquet).
#[derive(Clone, Debug, PartialEq)]
pub struct EvalRecord {
    pub version: u64,
    pub virtual_time: f64,
    pub accuracy: f64,
    pub loss: f64,
    pub per_class_accuracy: Vec<f64>,
    /// Wall-clock seconds since the start of the run.
    pub wall_s: f64,
}

/// Where the executor's observations go: a recorder for runs, a vector for tests.
pub trait Sink {
    fn update(&mut self, record: UpdateRecord);
    fn eval(&mut self, record: EvalRecord);
    /// Called after every aggregation, for progress displays.
    fn progress(&mut self, _progress: &Progress) {}
}

/// Collects everything in memory.
#[derive(Default)]
pub struct VecSink {
    pub updates: Vec<UpdateRecord>,
    pub evals: Vec<EvalRecord>,
}

impl Sink for VecSink {
    fn update(&mut self, record: UpdateRecord) {
        self.updates.push(record);
    }
    fn eval(&mut self, record: EvalRecord) {
        self.evals.push(record);
    }
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub version: u64,
    pub virtual_time: f64,
    pub updates: u64,
    pub last_accuracy: Option<f64>,
    pub elapsed: Duration,
    pub ready_tasks: usize,
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
    NonFinite {
        task: u64,
    },
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::PlanEnd(PlanEnd::MaxVersions) => write!(f, "max_versions"),
            StopReason::PlanEnd(PlanEnd::MaxVirtualTime) => write!(f, "max_virtual_time"),
            StopReason::TargetAccuracy { accuracy } => write!(f, "target_accuracy (reached {accuracy:.4})"),
            StopReason::EarlyStop { version, best_accuracy, threshold } => {
                write!(f, "early_stop (best accuracy {best_accuracy:.4} <= {threshold} at version {version})")
            }
            StopReason::NonFinite { task } => write!(f, "non-finite loss or update from task {task}"),
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
}

impl RunOutcome {
    /// Share of worker time spent training.
    pub fn busy_share(&self, workers: usize) -> f64 {
        self.train_time.as_secs_f64() / (self.wall.as_secs_f64() * workers as f64).max(1e-9)
    }
}

enum TaskState {
    Waiting,
    Running,
    Done { outcome: TrainOutcome, worker: u32 },
}

struct Slot {
    task: TrainTask,
    state: TaskState,
}

struct Finished {
    task: u64,
    worker: u32,
    result: Result<TrainOutcome, tch::TchError>,
}

/// Runs `plan` to its end or to a model-dependent stop.
pub fn execute(
    plan: &mut dyn Plan,
    experiment: &Experiment,
    server: &mut Server,
    sink: &mut dyn Sink,
) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    if experiment.device == Device::Cpu {
        // The coordinating thread's own count; workers set theirs to 1 at every job.
        tch::set_num_threads(experiment.server_threads as i32);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(experiment.workers)
        .thread_name(|i| format!("fedsim-worker-{i}"))
        .build()?;
    let (sender, receiver) = mpsc::channel::<Finished>();
    let (mean, std) = experiment.dataset.kind.normalization();
    let normalize = Normalize::new(&mean, &std, experiment.device);
    let mut eval_model = Model::new(experiment.spec.model, experiment.spec.input, experiment.device);

    let mut window: VecDeque<Step> = VecDeque::new();
    let mut slots: BTreeMap<u64, Slot> = BTreeMap::new();
    let mut references: HashMap<u64, usize> = HashMap::new();
    let mut versions: HashMap<u64, Arc<Vec<f32>>> = HashMap::new();
    let mut current_version = 0u64;
    let mut current = Arc::new(experiment.initial_weights.clone());
    versions.insert(0, current.clone());
    let mut plan_done = false;
    let mut running = 0usize;
    let max_running = experiment.workers * 2;
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
    };

    let stop = loop {
        // 1. Read the plan ahead, at least up to the next aggregation or evaluation.
        while !plan_done && (slots.len() < experiment.lookahead || window.is_empty()) {
            match plan.next() {
                Some(Step::Train(task)) => {
                    *references.entry(task.base_version).or_default() += 1;
                    slots.insert(task.task, Slot { task, state: TaskState::Waiting });
                }
                Some(step) => window.push_back(step),
                None => {
                    plan_done = true;
                    // Tasks that no remaining aggregation takes need not train.
                    let needed: HashSet<u64> = window
                        .iter()
                        .flat_map(|s| match s {
                            Step::Aggregate { inputs, .. } => inputs.iter().map(|i| i.task).collect(),
                            _ => Vec::new(),
                        })
                        .collect();
                    let unneeded: Vec<u64> = slots
                        .iter()
                        .filter(|(id, slot)| matches!(slot.state, TaskState::Waiting) && !needed.contains(id))
                        .map(|(id, _)| *id)
                        .collect();
                    for id in unneeded {
                        let slot = slots.remove(&id).expect("listed above");
                        release(&mut references, &mut versions, slot.task.base_version, current_version);
                    }
                }
            }
        }

        // 2. Start ready tasks, earliest first.
        let ready = slots
            .values()
            .filter(|s| {
                !matches!(s.state, TaskState::Done { .. }) && versions.contains_key(&s.task.base_version)
            })
            .count();
        outcome.max_ready = outcome.max_ready.max(ready);
        outcome.max_tasks_held = outcome.max_tasks_held.max(slots.len());
        outcome.max_versions_held = outcome.max_versions_held.max(versions.len());
        if running < max_running {
            let startable: Vec<u64> = slots
                .iter()
                .filter(|(_, s)| {
                    matches!(s.state, TaskState::Waiting) && versions.contains_key(&s.task.base_version)
                })
                .map(|(id, _)| *id)
                .take(max_running - running)
                .collect();
            for id in startable {
                let slot = slots.get_mut(&id).expect("listed above");
                slot.state = TaskState::Running;
                running += 1;
                spawn_task(
                    &pool,
                    experiment,
                    &slot.task,
                    versions[&slot.task.base_version].clone(),
                    sender.clone(),
                );
            }
        }

        // 3. Apply the head of the plan, or wait for a worker.
        let evaluation_follows =
            matches!(window.front(), Some(Step::Evaluate { version, .. }) if *version == current_version);
        if !evaluation_follows && std::mem::take(&mut early_stop_due) {
            if let Some(stop) = early_stop(&experiment.early_stop, current_version, best_accuracy) {
                break Some(stop);
            }
        }
        match window.front() {
            None if plan_done => break None,
            None => continue,
            Some(Step::Aggregate { inputs, .. }) => {
                let missing = inputs.iter().any(|i| !matches!(slots[&i.task].state, TaskState::Done { .. }));
                if missing {
                    let finished = receiver.recv().expect("workers hold a sender while tasks run");
                    running -= 1;
                    let outcome_of_task = finished.result?;
                    outcome.tasks_trained += 1;
                    outcome.train_time += outcome_of_task.wall;
                    let slot = slots.get_mut(&finished.task).expect("a running task has a slot");
                    slot.state = TaskState::Done { outcome: outcome_of_task, worker: finished.worker };
                    let base = slot.task.base_version;
                    release(&mut references, &mut versions, base, current_version);
                    continue;
                }
                let Some(Step::Aggregate { version, at, inputs }) = window.pop_front() else {
                    unreachable!()
                };
                let server_started = Instant::now();
                let taken: Vec<(Slot, UpdateInput)> =
                    inputs.iter().map(|i| (slots.remove(&i.task).expect("checked above"), *i)).collect();
                if let Some((slot, _)) = taken.iter().find(|(slot, _)| !is_finite(slot)) {
                    break Some(StopReason::NonFinite { task: slot.task.task });
                }
                let arrivals: Vec<Arrival> = taken
                    .iter()
                    .map(|(slot, input)| {
                        let TaskState::Done { outcome, .. } = &slot.state else { unreachable!() };
                        let client = slot.task.client as usize;
                        Arrival {
                            task: slot.task.task,
                            delta: &outcome.delta,
                            model: outcome.model.as_deref(),
                            staleness: input.staleness,
                            samples: experiment.partition.shards[client].len(),
                            class_proportions: experiment.partition.class_proportions(client),
                        }
                    })
                    .collect();
                let next = server.aggregate(&current, current_version, &arrivals)?;
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
                let Some(Step::Evaluate { version, at }) = window.pop_front() else { unreachable!() };
                debug_assert_eq!(version, current_version, "evaluations follow their aggregation");
                let eval_started = Instant::now();
                eval_model.load(&current);
                let result: EvalResult = evaluate(
                    &eval_model,
                    &experiment.dataset.test,
                    &normalize,
                    experiment.dataset.num_classes(),
                );
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
                if let Some(target) = experiment.target_accuracy {
                    if result.accuracy >= target {
                        break Some(StopReason::TargetAccuracy { accuracy: result.accuracy });
                    }
                }
                if !result.loss.is_finite() {
                    break Some(StopReason::NonFinite { task: u64::MAX });
                }
                early_stop_due = false;
                if let Some(stop) = early_stop(&experiment.early_stop, current_version, best_accuracy) {
                    break Some(stop);
                }
            }
            Some(Step::Train(_)) => unreachable!("train steps go to the task table"),
        }
    };
    // Let running tasks finish so that no worker outlives the run.
    drop(sender);
    for _ in 0..running {
        let _ = receiver.recv();
    }
    outcome.stop = stop.unwrap_or_else(|| StopReason::PlanEnd(plan.end().unwrap_or(PlanEnd::MaxVirtualTime)));
    outcome.final_weights = (*current).clone();
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

fn is_finite(slot: &Slot) -> bool {
    match &slot.state {
        TaskState::Done { outcome, .. } => {
            outcome.last_loss.is_finite()
                && outcome.first_loss.is_finite()
                && outcome.delta.iter().all(|d| d.is_finite())
        }
        _ => false,
    }
}

/// One fewer task needs `version`; forget it when nobody does and it is not the current one.
fn release(
    references: &mut HashMap<u64, usize>,
    versions: &mut HashMap<u64, Arc<Vec<f32>>>,
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

fn spawn_task(
    pool: &rayon::ThreadPool,
    experiment: &Experiment,
    task: &TrainTask,
    base: Arc<Vec<f32>>,
    sender: mpsc::Sender<Finished>,
) {
    let dataset = experiment.dataset.clone();
    let partition = experiment.partition.clone();
    let spec = experiment.spec;
    let device = experiment.device;
    let seed = experiment.seed;
    let (id, client) = (task.task, task.client);
    pool.spawn(move || {
        let (mean, std) = dataset.kind.normalization();
        let normalize = Normalize::new(&mean, &std, device);
        let ctx = TrainContext { data: &dataset.train, normalize: &normalize, device };
        let mut rng = rng::stream(seed, Purpose::TrainTask, id);
        let result = train_local(&spec, &base, &partition.shards[client as usize], &ctx, &mut rng);
        let worker = rayon::current_thread_index().unwrap_or(0) as u32;
        // The receiver is gone only when the run stopped early; the result is not needed then.
        let _ = sender.send(Finished { task: id, worker, result });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stop_judges_the_best_accuracy_so_far_once_the_version_is_reached() {
        let thresholds = [(1000, 0.15)];
        assert_eq!(early_stop(&thresholds, 999, Some(0.1)), None, "before the version");
        assert_eq!(early_stop(&thresholds, 1000, None), None, "nothing evaluated yet");
        assert_eq!(
            early_stop(&thresholds, 1000, Some(0.15)),
            Some(StopReason::EarlyStop { version: 1000, best_accuracy: 0.15, threshold: 0.15 }),
            "at most the threshold stops (<=)"
        );
        assert_eq!(early_stop(&thresholds, 1500, Some(0.16)), None, "a best above the threshold goes on");
        // Checked after every event: any later version still stops while the best stays low.
        assert!(early_stop(&thresholds, 1234, Some(0.1)).is_some());
    }
}
