//! Local training: one client job. Given base weights, a shard, the task's own RNG stream and
//! hyper-parameters, it trains a fresh copy of the model with a fresh optimizer and returns the
//! weight delta and statistics as plain data. On CPU it runs with one libtorch intra-op thread,
//! so its result does not depend on the thread that runs it.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tch::{nn, nn::OptimizerConfig, Device, Tensor};

use super::{InputSpec, Model, ModelKind};
use crate::data::augment::{Augment, Normalize};
use crate::data::ImageSet;
use crate::sim::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown optimizer '{0}'; valid optimizers: adam, sgd")]
pub struct UnknownOptimizer(pub String);

impl std::str::FromStr for OptimizerKind {
    type Err = UnknownOptimizer;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "adam" => Ok(OptimizerKind::Adam),
            "sgd" => Ok(OptimizerKind::Sgd),
            other => Err(UnknownOptimizer(other.to_owned())),
        }
    }
}

impl OptimizerKind {
    /// A fresh optimizer over the model's trainable variables.
    pub fn build(self, vs: &nn::VarStore, lr: f64) -> Result<nn::Optimizer, tch::TchError> {
        match self {
            OptimizerKind::Adam => nn::Adam::default().build(vs, lr),
            OptimizerKind::Sgd => nn::Sgd::default().build(vs, lr),
        }
    }
}

/// Hyper-parameters of one local update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainSpec {
    pub model: ModelKind,
    pub input: InputSpec,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub local_iters: usize,
    pub batch_size: usize,
    pub augment: Augment,
    /// Also return the trained weights (server rules that interpolate models need them).
    pub return_model: bool,
}

/// What a local update produced.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// theta_after - theta_before, in the model's layout.
    pub delta: Vec<f32>,
    /// theta_after, when [`TrainSpec::return_model`] asks for it.
    pub model: Option<Vec<f32>>,
    pub first_loss: f32,
    pub last_loss: f32,
    /// Samples seen (local_iters x batch_size).
    pub samples: usize,
    pub wall: Duration,
}

/// Where a job trains and how its images are normalised.
pub struct TrainContext<'a> {
    pub data: &'a ImageSet,
    pub normalize: &'a Normalize,
    pub device: Device,
}

/// Batches of a shard in shuffled epochs, continuing into the next epoch when one runs out,
/// so every batch is full.
pub struct BatchOrder<'a> {
    shard: &'a [u32],
    order: Vec<usize>,
    next: usize,
}

impl<'a> BatchOrder<'a> {
    pub fn new(shard: &'a [u32]) -> Self {
        assert!(!shard.is_empty(), "a client shard is never empty");
        let order = (0..shard.len()).collect();
        BatchOrder { shard, order, next: shard.len() }
    }

    pub fn next_batch(&mut self, size: usize, rng: &mut Rng) -> Vec<i64> {
        (0..size)
            .map(|_| {
                if self.next == self.order.len() {
                    self.order.shuffle(rng);
                    self.next = 0;
                }
                self.next += 1;
                self.shard[self.order[self.next - 1]] as i64
            })
            .collect()
    }
}

/// Keeps libtorch's CPU work on the calling thread; called at the start of every job because
/// the setting is per thread (OpenMP) and rayon threads start with the default.
pub fn single_threaded_torch() {
    if tch::get_num_threads() != 1 {
        tch::set_num_threads(1);
    }
}

/// Runs one local update from `base` on `shard`, drawing batches and augmentation from `rng`.
pub fn train_local(
    spec: &TrainSpec,
    base: &[f32],
    shard: &[u32],
    ctx: &TrainContext,
    rng: &mut Rng,
) -> Result<TrainOutcome, tch::TchError> {
    let started = Instant::now();
    if ctx.device == Device::Cpu {
        single_threaded_torch();
    }
    let mut model = Model::new(spec.model, spec.input, ctx.device);
    model.load(base);
    let mut optimizer = spec.optimizer.build(&model.vs, spec.lr)?;
    let mut batches = BatchOrder::new(shard);
    let mut first_loss = Tensor::new();
    let mut last_loss = Tensor::new();
    for step in 0..spec.local_iters {
        let loss =
            train_step(&model, &mut optimizer, ctx, &batches.next_batch(spec.batch_size, rng), spec, rng)?;
        if step == 0 {
            first_loss = loss.shallow_clone();
        }
        last_loss = loss;
    }
    let trained = model.weights();
    let delta = crate::params::delta(&trained, base);
    let value = |t: &Tensor| {
        if t.defined() {
            t.double_value(&[]) as f32
        } else {
            f32::NAN
        }
    };
    Ok(TrainOutcome {
        delta,
        model: spec.return_model.then_some(trained),
        first_loss: value(&first_loss),
        last_loss: value(&last_loss),
        samples: spec.local_iters * spec.batch_size,
        wall: started.elapsed(),
    })
}

/// One optimizer step on the batch at `indices`; returns the detached loss.
pub fn train_step(
    model: &Model,
    optimizer: &mut nn::Optimizer,
    ctx: &TrainContext,
    indices: &[i64],
    spec: &TrainSpec,
    rng: &mut Rng,
) -> Result<Tensor, tch::TchError> {
    let index = Tensor::from_slice(indices).to_device(ctx.device);
    let images = spec.augment.apply(&ctx.data.images.index_select(0, &index), rng);
    let inputs = ctx.normalize.apply(&images);
    let labels = ctx.data.labels.index_select(0, &index);
    let loss = model.net.forward_t(&inputs, true).f_cross_entropy_loss(
        &labels,
        None::<Tensor>,
        tch::Reduction::Mean,
        -100,
        0.0,
    )?;
    optimizer.backward_step(&loss);
    Ok(loss.detach())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rng::{stream, Purpose};

    #[test]
    fn batches_cover_an_epoch_before_repeating_and_stay_full() {
        let shard: Vec<u32> = (100..110).collect();
        let mut order = BatchOrder::new(&shard);
        let mut rng = stream(0, Purpose::TrainTask, 0);
        let mut first: Vec<i64> = order.next_batch(4, &mut rng);
        first.extend(order.next_batch(4, &mut rng));
        let straddling = order.next_batch(4, &mut rng);
        assert_eq!(straddling.len(), 4);
        first.extend(&straddling[..2]);
        first.sort_unstable();
        assert_eq!(first, (100..110).collect::<Vec<i64>>());
    }
}
