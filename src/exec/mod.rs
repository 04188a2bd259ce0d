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

mod apply;
pub mod cohorts;
#[cfg(test)]
mod fixtures;
pub mod interrupt;
mod reader;
mod resume;
pub mod sizing;
pub mod stop;
mod table;
#[cfg(test)]
mod tests;
pub mod trainer;
mod versions;
pub mod workers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::data::partition::Partition;
use crate::fl::lr_schedule::LrSchedule;
use crate::fl::server::Server;
pub use crate::nn::train::TrainOutcome;
use crate::params::Weights;
pub use crate::record::rows::{EvalRecord, Progress, Sink, UpdateRecord, VecSink};
pub use crate::saved::{RunSnapshot, TrainedTask};
use crate::sched::{Plan, PlanEnd};
use crate::sim::time::SimTime;
use cohorts::CohortBuilder;
use reader::{Head, PlanReader};
use stop::StopRules;
pub use stop::{early_stop, StopReason};
use table::TaskTable;
pub use trainer::{Evaluator, Job, TrainError, Trainer};
use versions::VersionStore;
pub use workers::{Finished, ThreadWorkers, Workers};

/// How the executor runs a plan: the settings that are not the plan's, the server's or the
/// trainer's.
pub struct ExecSettings {
    /// The clients' shards: their sizes and class proportions reach the server with each update.
    pub partition: Arc<Partition>,
    pub lookahead: usize,
    /// Tasks per cohort (1: every task trains alone).
    pub cohort_size: usize,
    /// The clients' learning-rate schedule: a cohort holds tasks of one rate.
    pub client_lr: LrSchedule,
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

/// Why a run stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Server(#[from] crate::fl::ServerError),
    /// A checkpoint that does not fit this config's plan.
    #[error(transparent)]
    State(#[from] crate::saved::StateError),
    /// The run's record could not be stored (the rows flushed before are kept).
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
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
) -> Result<RunOutcome, ExecError> {
    let Engines { workers, evaluator, server, sink } = engines;
    let mut run = match resume {
        None => Run::new(settings, VersionStore::new(initial)),
        Some(snapshot) => Run::resume(settings, plan, &initial, snapshot, server)?,
    };
    let stop = loop {
        run.reader.read_ahead(plan, &mut run.table, &mut run.versions, settings.lookahead);
        run.start_ready(workers);
        let version = run.versions.current_version();
        let evaluation_follows = run.reader.evaluation_follows(version);
        let interrupted = interrupt::requested();
        // Nothing is left to save once the plan is read and carried out.
        let work_left = run.reader.work_left();
        let ask = !evaluation_follows && run.checkpoint_asked != version;
        if work_left && (interrupted || (ask && sink.checkpoint_due(version))) {
            sink.checkpoint(&run.snapshot(server)?)?;
        }
        if ask {
            run.checkpoint_asked = version;
        }
        // An interruption after the last step leaves nothing to continue: the run has ended.
        if interrupted && work_left {
            break Some(StopReason::Interrupted);
        }
        if let Some(stop) = run.rules.before_step(version, evaluation_follows) {
            break Some(stop);
        }
        let stop = match run.reader.head() {
            Head::Finished => break None,
            Head::Empty => None,
            Head::Aggregate(inputs) if !run.table.all_done(inputs) => {
                run.collect(workers.next_finished())?;
                None
            }
            Head::Aggregate(_) => run.aggregate(plan, server, sink)?,
            Head::Evaluate => run.evaluate(evaluator, sink)?,
        };
        if stop.is_some() {
            break stop;
        }
    };
    Ok(run.finish(stop, plan))
}

/// The executor's state while it carries out a plan.
struct Run<'s, W> {
    settings: &'s ExecSettings,
    started: Instant,
    reader: PlanReader,
    table: TaskTable<W>,
    versions: VersionStore<W>,
    rules: StopRules,
    virtual_time: f64,
    /// Jobs settled before this time are in the jobs table (streamed at each aggregation).
    jobs_recorded_before: SimTime,
    /// The version at which the sink was last asked whether a checkpoint is due.
    checkpoint_asked: u64,
    /// Tasks ready at the last look (reported with the progress).
    ready: usize,
    /// The totals so far; the final fields are filled in by [`Run::finish`].
    outcome: RunOutcome,
}

impl<'s, W: Weights> Run<'s, W> {
    fn new(settings: &'s ExecSettings, versions: VersionStore<W>) -> Self {
        Run {
            settings,
            started: Instant::now(),
            reader: PlanReader::default(),
            table: TaskTable::new(CohortBuilder::new(settings.cohort_size).split_by_rate(settings.client_lr)),
            versions,
            rules: StopRules::new(settings.target_accuracy, settings.early_stop.clone()),
            virtual_time: 0.0,
            jobs_recorded_before: SimTime::ZERO,
            checkpoint_asked: 0,
            ready: 0,
            outcome: RunOutcome {
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
            },
        }
    }

    /// Starts the cohorts that are ready, earliest first, noting the memory bounds first.
    fn start_ready(&mut self, workers: &mut dyn Workers<W>) {
        self.ready = self.table.ready(&self.versions);
        let outcome = &mut self.outcome;
        outcome.max_ready = outcome.max_ready.max(self.ready);
        outcome.max_tasks_held = outcome.max_tasks_held.max(self.table.len());
        outcome.max_versions_held = outcome.max_versions_held.max(self.versions.len());
        self.table.start_ready(workers, &self.versions);
    }

    /// A cohort finished training.
    fn collect(&mut self, finished: Finished<W>) -> Result<(), ExecError> {
        let trained = self.table.finish(finished, &mut self.versions)?;
        self.outcome.cohorts_trained += 1;
        self.outcome.tasks_trained += trained.tasks;
        self.outcome.train_time += trained.wall;
        Ok(())
    }

    fn finish(self, stop: Option<StopReason>, plan: &dyn Plan) -> RunOutcome {
        RunOutcome {
            stop: stop.unwrap_or_else(|| StopReason::PlanEnd(plan.end().unwrap_or(PlanEnd::MaxVirtualTime))),
            final_weights: self.versions.current().to_host().into_owned(),
            version: self.versions.current_version(),
            virtual_time: self.virtual_time,
            wall: self.started.elapsed(),
            ..self.outcome
        }
    }
}
