//! What the executor asks of training and evaluation, as traits, and their libtorch
//! implementations. The executor hands a trainer a cohort of planned tasks (base weights and
//! client; the shard and the task's random stream follow from them) and gets the deltas back
//! in the same order; it never calls libtorch itself, so its core tests with fakes.

use std::sync::Arc;

use tch::Device;

use crate::data::augment::Normalize;
use crate::data::partition::Partition;
use crate::data::Dataset;
use crate::nn::cohort::{train_cohort, Member};
use crate::nn::eval::{evaluate, EvalResult};
use crate::nn::train::{train_local, TrainContext, TrainOutcome, TrainSpec};
use crate::nn::Model;
use crate::sim::rng::{self, Purpose};

/// One planned task as a trainer receives it.
#[derive(Clone, Debug)]
pub struct Job {
    pub task: u64,
    pub client: u32,
    pub base: Arc<Vec<f32>>,
}

/// Trains cohorts. `train` returns one outcome per job, in job order, and depends only on the
/// jobs (never on the thread or on other cohorts), so any worker may run any cohort.
pub trait Trainer: Send + Sync {
    fn train(&self, jobs: &[Job]) -> anyhow::Result<Vec<TrainOutcome>>;
}

/// Evaluates model versions.
pub trait Evaluator {
    fn evaluate(&mut self, weights: &[f32]) -> EvalResult;
}

/// Local training on libtorch: a cohort of one trains alone ([`train_local`], today's path),
/// larger cohorts as one stacked model ([`train_cohort`]).
pub struct TorchTrainer {
    pub dataset: Arc<Dataset>,
    pub partition: Arc<Partition>,
    pub spec: TrainSpec,
    /// The run seed: task t draws from (seed, TrainTask, t).
    pub seed: u64,
    pub device: Device,
}

impl Trainer for TorchTrainer {
    fn train(&self, jobs: &[Job]) -> anyhow::Result<Vec<TrainOutcome>> {
        crate::runtime::use_own_stream(self.device);
        let (mean, std) = self.dataset.kind.normalization();
        let normalize = Normalize::new(&mean, &std, self.device);
        let ctx = TrainContext { data: &self.dataset.train, normalize: &normalize, device: self.device };
        let shard = |job: &Job| self.partition.shards[job.client as usize].as_slice();
        let stream = |job: &Job| rng::stream(self.seed, Purpose::TrainTask, job.task);
        if let [job] = jobs {
            return Ok(vec![train_local(&self.spec, &job.base, shard(job), &ctx, &mut stream(job))?]);
        }
        let members =
            jobs.iter().map(|job| Member { base: &job.base, shard: shard(job), rng: stream(job) }).collect();
        Ok(train_cohort(&self.spec, members, &ctx)?)
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
        TorchEvaluator {
            model: Model::new(spec.model, spec.input, device),
            normalize: Normalize::new(&mean, &std, device),
            dataset,
        }
    }
}

impl Evaluator for TorchEvaluator {
    fn evaluate(&mut self, weights: &[f32]) -> EvalResult {
        self.model.load(weights);
        evaluate(&self.model, &self.dataset.test, &self.normalize, self.dataset.num_classes())
    }
}
