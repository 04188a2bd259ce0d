//! The rows a run records, and where they go: the executor hands every applied update,
//! evaluation and job to a [`Sink`] (a recorder that streams them to the run directory, or a
//! vector in tests) and knows nothing of files.

use std::time::Duration;

use crate::sched::JobRecord;

/// One applied client update (a row of updates.parquet).
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateRecord {
    pub task: u64,
    pub client: u32,
    /// The client's leaf aggregator, in a hierarchy.
    pub leaf: Option<u32>,
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
    /// A dispatched job and its fate (the jobs table).
    fn job(&mut self, _record: JobRecord) {}
    /// Called after every aggregation, for progress displays.
    fn progress(&mut self, _progress: &Progress) {}
    /// Whether the rows so far could be stored; the executor checks after each evaluation
    /// and stops the run with the error (a full disk, a file over the size limit).
    fn check(&mut self) -> Result<(), super::RecordError> {
        Ok(())
    }
    /// Whether a checkpoint is due now that `version` exists (never, by default); asked once
    /// per version, at a point where one can be taken.
    fn checkpoint_due(&mut self, _version: u64) -> bool {
        false
    }
    /// Stores a checkpoint (and first the rows so far, so that logs and checkpoint agree).
    /// Also called when the user interrupts the run; a sink without checkpoints ignores it.
    fn checkpoint(&mut self, _snapshot: &crate::saved::RunSnapshot) -> Result<(), super::RecordError> {
        Ok(())
    }
}

/// Collects everything in memory.
#[derive(Default)]
pub struct VecSink {
    pub updates: Vec<UpdateRecord>,
    pub evals: Vec<EvalRecord>,
    pub jobs: Vec<JobRecord>,
}

impl Sink for VecSink {
    fn update(&mut self, record: UpdateRecord) {
        self.updates.push(record);
    }
    fn eval(&mut self, record: EvalRecord) {
        self.evals.push(record);
    }
    fn job(&mut self, record: JobRecord) {
        self.jobs.push(record);
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

/// What one training process (an MPI rank) of a run did.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RankLoad {
    pub rank: u32,
    pub host: String,
    /// Its training threads (run.workers).
    pub workers: usize,
    pub cohorts: u64,
    pub tasks: u64,
    /// The tasks' own training wall times, summed.
    pub train_seconds: f64,
}
