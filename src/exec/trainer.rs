//! What the executor asks of training and evaluation, as traits, and their libtorch
//! implementations. The executor hands a trainer a cohort of planned tasks (base weights and
//! client; the shard and the task's random stream follow from them) and gets the deltas back
//! in the same order; it never calls libtorch itself, so its core tests with fakes. Weights
//! come and go as the executor keeps them: host vectors, or tensors on the training device.

use std::sync::Arc;

use tch::Device;

use crate::data::augment::Normalize;
use crate::data::partition::Partition;
use crate::data::Dataset;
use crate::fl::lr_schedule::LrSchedule;
use crate::nn::cohort::{train_cohort, Member};
use crate::nn::device_weights::TorchWeights;
use crate::nn::eval::{evaluate, EvalResult};
use crate::nn::train::{train_local, TrainContext, TrainOutcome, TrainSpec};
use crate::nn::Model;
use crate::sim::rng::{self, Purpose};

/// One planned task as a trainer receives it.
#[derive(Debug)]
pub struct Job<W = Vec<f32>> {
    pub task: u64,
    pub client: u32,
    /// The model version `base` holds (workers in other processes cache bases by it).
    pub version: u64,
    pub base: Arc<W>,
}

impl<W> Clone for Job<W> {
    fn clone(&self) -> Self {
        Job { task: self.task, client: self.client, version: self.version, base: self.base.clone() }
    }
}

/// Why a cohort did not train.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(
        "the device ran out of memory {what}; lower run.cohort_size (clients per cohort) or run.workers (cohorts at once). libtorch said: {said}"
    )]
    OutOfMemory { what: String, said: String },
    #[error("{what} failed: {message}")]
    Panicked { what: String, message: String },
    #[error("a trainer returned {returned} outcomes for {tasks} tasks")]
    WrongCount { returned: usize, tasks: usize },
    /// Another process's failure, as it reported it (MPI ranks), or a worker pool that could
    /// not start.
    #[error("{0}")]
    Workers(String),
}

/// Trains cohorts. `train` returns one outcome per job, in job order, and depends only on the
/// jobs (never on the thread or on other cohorts), so any worker may run any cohort.
pub trait Trainer<W = Vec<f32>>: Send + Sync {
    fn train(&self, jobs: &[Job<W>]) -> Result<Vec<TrainOutcome<W>>, TrainError>;
}

/// Evaluates model versions.
pub trait Evaluator<W = Vec<f32>> {
    fn evaluate(&mut self, weights: &W) -> EvalResult;
}

/// Local training on libtorch: a cohort of one trains alone ([`train_local`], today's path),
/// larger cohorts as one stacked model ([`train_cohort`]).
pub struct TorchTrainer {
    pub dataset: Arc<Dataset>,
    pub partition: Arc<Partition>,
    pub spec: TrainSpec,
    /// The clients' learning rate by the version a task trains from (spec.lr times its factor).
    pub client_lr: LrSchedule,
    /// The run seed: task t draws from (seed, TrainTask, t).
    pub seed: u64,
    pub device: Device,
}

impl<W: TorchWeights> Trainer<W> for TorchTrainer {
    fn train(&self, jobs: &[Job<W>]) -> Result<Vec<TrainOutcome<W>>, TrainError> {
        crate::runtime::use_own_stream(self.device);
        let (mean, std) = self.dataset.kind.normalization();
        let normalize = Normalize::new(&mean, &std, self.device);
        let ctx = TrainContext { data: &self.dataset.train, normalize: &normalize, device: self.device };
        let shard = |job: &Job<W>| self.partition.shards[job.client as usize].as_slice();
        let stream = |job: &Job<W>| rng::stream(self.seed, Purpose::TrainTask, job.task);
        // A cohort's tasks share one rate (exec::cohorts splits them by it).
        let base_version = jobs.first().map_or(0, |job| job.version);
        let spec = TrainSpec { lr: self.client_lr.at(self.spec.lr, base_version), ..self.spec };
        let outcomes = if let [job] = jobs {
            vec![train_local(&spec, &*job.base, shard(job), &ctx, &mut stream(job))?]
        } else {
            let members = jobs
                .iter()
                .map(|job| Member { base: &*job.base, shard: shard(job), rng: stream(job) })
                .collect();
            train_cohort(&spec, members, &ctx)?
        };
        // The coordinator reads the results on its own stream.
        crate::runtime::sync_current_stream(self.device);
        Ok(outcomes)
    }
}

/// Test-set accuracy on libtorch.
pub struct TorchEvaluator {
    model: Model,
    normalize: Normalize,
    dataset: Arc<Dataset>,
}

impl TorchEvaluator {
    pub fn new(dataset: Arc<Dataset>, spec: &TrainSpec, device: Device) -> Self {
        let (mean, std) = dataset.kind.normalization();
        let mut model = Model::new(spec.model, spec.input, device);
        model.precision = spec.precision;
        TorchEvaluator { model, normalize: Normalize::new(&mean, &std, device), dataset }
    }
}

impl<W: TorchWeights> Evaluator<W> for TorchEvaluator {
    fn evaluate(&mut self, weights: &W) -> EvalResult {
        self.model.load_weights(weights);
        evaluate(&self.model, &self.dataset.test, &self.normalize, self.dataset.num_classes())
    }
}
