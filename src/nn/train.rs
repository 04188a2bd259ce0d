//! Local training: one client job. Given base weights, a shard, the task's own RNG stream and
//! hyper-parameters, it trains a fresh copy of the model with a fresh optimizer and returns the
//! weight delta and statistics as plain data. On CPU it runs with one libtorch intra-op thread,
//! so its result does not depend on the thread that runs it.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tch::{nn, nn::OptimizerConfig, Device, Tensor};

use super::device_weights::TorchWeights;
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
    /// A fresh optimizer over the model's trainable variables; `momentum` is SGD's
    /// (the reference's local_momentum), Adam ignores it.
    pub fn build(self, vs: &nn::VarStore, lr: f64, momentum: f64) -> Result<nn::Optimizer, tch::TchError> {
        match self {
            OptimizerKind::Adam => nn::Adam::default().build(vs, lr),
            OptimizerKind::Sgd => nn::Sgd { momentum, ..Default::default() }.build(vs, lr),
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
    /// SGD's momentum (train.momentum, the reference's local_momentum 0.9).
    pub momentum: f64,
    /// Batches per job, counted across epochs.
    pub local_iters: usize,
    pub batch_size: usize,
    /// FedProx's mu (train.prox_mu): 0 leaves training exactly as without it.
    pub prox_mu: f64,
    pub augment: Augment,
    /// What the forward passes compute in (run.precision).
    pub precision: super::precision::Precision,
    /// Also return the trained weights (server rules that interpolate models need them).
    pub return_model: bool,
}

/// What a local update produced, its weights of the kind it was given (host vectors, or
/// tensors on the training device).
#[derive(Clone, Debug)]
pub struct TrainOutcome<W = Vec<f32>> {
    /// theta_after - theta_before, in the model's layout.
    pub delta: W,
    /// theta_after, when [`TrainSpec::return_model`] asks for it.
    pub model: Option<W>,
    pub first_loss: f32,
    pub last_loss: f32,
    /// Samples seen (the batches' sizes summed).
    pub samples: usize,
    pub wall: Duration,
}

/// Where a job trains and how its images are normalised.
pub struct TrainContext<'a> {
    pub data: &'a ImageSet,
    pub normalize: &'a Normalize,
    pub device: Device,
}

/// Batches of a shard in shuffled epochs, as a data loader with `shuffle=True` and no
/// `drop_last`: each epoch is one reshuffled pass, so its last batch holds what is left (a
/// 350-sample shard gives 10 batches of 32 and one of 30).
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
        if self.next == self.order.len() {
            self.order.shuffle(rng);
            self.next = 0;
        }
        let end = (self.next + size).min(self.order.len());
        let batch = self.order[self.next..end].iter().map(|&i| self.shard[i] as i64).collect();
        self.next = end;
        batch
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
pub fn train_local<W: TorchWeights>(
    spec: &TrainSpec,
    base: &W,
    shard: &[u32],
    ctx: &TrainContext,
    rng: &mut Rng,
) -> Result<TrainOutcome<W>, tch::TchError> {
    let started = Instant::now();
    if ctx.device == Device::Cpu {
        single_threaded_torch();
    }
    let mut model = Model::new(spec.model, spec.input, ctx.device);
    model.precision = spec.precision;
    model.load_weights(base);
    let mut optimizer = spec.optimizer.build(&model.vs, spec.lr, spec.momentum)?;
    let proximal = Proximal::anchored(&model.vs, spec.prox_mu);
    let mut batches = BatchOrder::new(shard);
    let mut first_loss = Tensor::new();
    let mut last_loss = Tensor::new();
    let mut samples = 0;
    for step in 0..spec.local_iters {
        let batch = batches.next_batch(spec.batch_size, rng);
        samples += batch.len();
        let loss = train_step(&model, &mut optimizer, ctx, &batch, spec, rng, proximal.as_ref())?;
        if step == 0 {
            first_loss = loss.shallow_clone();
        }
        last_loss = loss;
    }
    let trained = W::from_flat(model.flat_weights());
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
        samples,
        wall: started.elapsed(),
    })
}

/// The images at `indices`, augmented from `rng` and normalised, and their labels.
pub fn augmented_batch(
    ctx: &TrainContext,
    spec: &TrainSpec,
    indices: &[i64],
    rng: &mut Rng,
) -> (Tensor, Tensor) {
    let index = Tensor::from_slice(indices).to_device(ctx.device);
    let images = spec.augment.apply(&ctx.data.images.index_select(0, &index), rng);
    (ctx.normalize.apply(&images), ctx.data.labels.index_select(0, &index))
}

/// FedProx's proximal term, mu/2 ||w - w_base||^2 over the trainable variables, anchored at
/// what they hold when it is made (the task's base). A stacked model's term is the sum of its
/// clients' terms, as its loss is the sum of theirs, so each client's gradient is its own.
pub struct Proximal {
    half_mu: f64,
    anchored: Vec<(Tensor, Tensor)>,
}

impl Proximal {
    /// None for mu = 0: training then runs exactly the operations it runs without FedProx.
    pub fn anchored(vs: &nn::VarStore, mu: f64) -> Option<Proximal> {
        (mu > 0.0).then(|| Proximal {
            half_mu: mu / 2.0,
            anchored: vs.trainable_variables().into_iter().map(|v| (v.detach().copy(), v)).collect(),
        })
    }

    /// The term, differentiable in the variables.
    pub fn term(&self) -> Tensor {
        let squares: Vec<Tensor> =
            self.anchored.iter().map(|(base, v)| (v - base).square().sum(tch::Kind::Float)).collect();
        Tensor::stack(&squares, 0).sum(tch::Kind::Float) * self.half_mu
    }
}

/// One optimizer step on the batch at `indices` (with FedProx's term, where given); returns
/// the detached cross-entropy loss.
pub fn train_step(
    model: &Model,
    optimizer: &mut nn::Optimizer,
    ctx: &TrainContext,
    indices: &[i64],
    spec: &TrainSpec,
    rng: &mut Rng,
    proximal: Option<&Proximal>,
) -> Result<Tensor, tch::TchError> {
    let (inputs, labels) = augmented_batch(ctx, spec, indices, rng);
    let loss = model.forward_t(&inputs, true).f_cross_entropy_loss(
        &labels,
        None::<Tensor>,
        tch::Reduction::Mean,
        -100,
        0.0,
    )?;
    match proximal {
        Some(proximal) => optimizer.backward_step(&(&loss + proximal.term())),
        None => optimizer.backward_step(&loss),
    }
    Ok(loss.detach())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rng::{stream, Purpose};

    #[test]
    fn each_epoch_is_one_pass_whose_last_batch_holds_the_rest() {
        let shard: Vec<u32> = (0..350).collect();
        let mut order = BatchOrder::new(&shard);
        let mut rng = stream(0, Purpose::TrainTask, 0);
        let sizes: Vec<usize> = (0..13).map(|_| order.next_batch(32, &mut rng).len()).collect();
        assert_eq!(sizes, [32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 30, 32, 32], "no drop_last");
        let mut order = BatchOrder::new(&shard);
        let mut rng = stream(0, Purpose::TrainTask, 0);
        let mut epoch: Vec<i64> = (0..11).flat_map(|_| order.next_batch(32, &mut rng)).collect();
        epoch.sort_unstable();
        assert_eq!(epoch, (0..350).collect::<Vec<i64>>(), "one epoch sees every sample once");
    }

    #[test]
    fn sgd_takes_its_momentum() {
        // Two steps on f(w) = w with lr 1: plain SGD moves w by -2, momentum 0.9 by -(1 + 1.9).
        for (momentum, expected) in [(0.0, -2.0f32), (0.9, -2.9)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let w = vs.root().zeros("w", &[1]);
            let mut sgd = OptimizerKind::Sgd.build(&vs, 1.0, momentum).unwrap();
            for _ in 0..2 {
                sgd.backward_step(&w.sum(tch::Kind::Float));
            }
            assert!((w.double_value(&[0]) as f32 - expected).abs() < 1e-6, "momentum {momentum}");
        }
    }
}
