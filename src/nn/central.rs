//! Centralised training on the clients' 37,500 training images (the union of what
//! federated clients could see): the accuracy upper bound that reports compare against.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tch::Device;

use crate::data::augment::{Augment, Normalize};
use crate::data::{split, Dataset};
use crate::nn::eval::{evaluate, EvalResult};
use crate::nn::train::{single_threaded_torch, train_step, OptimizerKind, TrainContext, TrainSpec};
use crate::nn::{initial_weights, InputSpec, Model, ModelKind};
use crate::sim::rng::{self, Purpose};

#[derive(Clone, Debug)]
pub struct CentralOptions {
    pub model: ModelKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    pub seed: u64,
}

/// One finished epoch.
#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    pub mean_loss: f64,
    pub test: EvalResult,
    pub wall: Duration,
}

/// Trains for `epochs` epochs, evaluating on the test set after each; `on_step` is called
/// after every optimizer step (for a progress bar) and `on_epoch` after every epoch.
pub fn train(
    options: &CentralOptions,
    dataset: &Dataset,
    device: Device,
    mut on_step: impl FnMut(usize, usize),
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<Vec<EpochReport>, tch::TchError> {
    if device == Device::Cpu {
        single_threaded_torch();
    }
    let input = InputSpec::of(dataset);
    let pool = split::split(dataset.train.len(), split::VAL_SPLIT, split::KD_SPLIT, options.seed).train;
    let (mean, std) = dataset.kind.normalization();
    let normalize = Normalize::new(&mean, &std, device);
    let ctx = TrainContext { data: &dataset.train, normalize: &normalize, device };
    let spec = TrainSpec {
        model: options.model,
        input,
        optimizer: options.optimizer,
        lr: options.lr,
        momentum: 0.9,
        local_iters: 0,
        batch_size: options.batch_size,
        prox_mu: 0.0,
        augment: Augment::default(),
        precision: crate::nn::precision::Precision::Fp32,
        return_model: false,
    };
    let mut model = Model::new(options.model, input, device);
    model.load(&initial_weights(options.model, input, options.seed));
    let mut optimizer = options.optimizer.build(&model.vs, options.lr, spec.momentum)?;
    let steps_per_epoch = pool.len() / options.batch_size;
    let mut reports = Vec::new();
    for epoch in 0..options.epochs {
        let started = Instant::now();
        let mut rng = rng::stream(options.seed, Purpose::CentralTrain, epoch as u64);
        let mut order = pool.clone();
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        for (step, batch) in order.chunks_exact(options.batch_size).enumerate() {
            let indices: Vec<i64> = batch.iter().map(|&i| i as i64).collect();
            let loss = train_step(&model, &mut optimizer, &ctx, &indices, &spec, &mut rng, None)?;
            loss_sum += loss.double_value(&[]);
            on_step(epoch * steps_per_epoch + step + 1, options.epochs * steps_per_epoch);
        }
        let test = evaluate(&model, &dataset.test, &normalize, dataset.num_classes());
        let report = EpochReport {
            epoch: epoch + 1,
            mean_loss: loss_sum / steps_per_epoch.max(1) as f64,
            test,
            wall: started.elapsed(),
        };
        on_epoch(&report);
        reports.push(report);
    }
    Ok(reports)
}
