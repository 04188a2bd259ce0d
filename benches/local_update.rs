//! One ConvNet local update (25 Adam steps, batch 32) through fedsim's pipeline (batch
//! sampling, augmentation, normalisation, weight load and delta) against a bare tch loop over
//! pre-made tensors doing the same steps. The pipeline's overhead is the ratio of the two.
//!
//! Needs the prepared CIFAR-10 (`just setup`); run with `just bench`.

use criterion::{criterion_group, criterion_main, Criterion};
use tch::{Device, Kind, Reduction, Tensor};

use fedsim::data::augment::{Augment, Normalize};
use fedsim::data::{self, partition, split, DataDirs, DatasetKind};
use fedsim::nn::train::{single_threaded_torch, train_local, OptimizerKind, TrainContext, TrainSpec};
use fedsim::nn::{initial_weights, InputSpec, Model, ModelKind};
use fedsim::sim::rng::{stream, Purpose};

const STEPS: usize = 25;
const BATCH: usize = 32;

fn local_update(c: &mut Criterion) {
    single_threaded_torch();
    let dataset =
        data::load(DatasetKind::Cifar10, &DataDirs::default()).expect("prepared CIFAR-10 (run `just setup`)");
    let input = InputSpec::of(&dataset);
    let pool = split::split(dataset.train.len(), split::VAL_SPLIT, split::KD_SPLIT, 10).train;
    let kind = partition::PartitionKind::Dirichlet { alpha: 0.5 };
    let shard = partition::partition(&dataset.train.host_labels, &pool, 10, 1, 350, kind, 10)
        .unwrap()
        .shards
        .remove(0);
    let (mean, std) = DatasetKind::Cifar10.normalization();
    let normalize = Normalize::new(&mean, &std, Device::Cpu);
    let ctx = TrainContext { data: &dataset.train, normalize: &normalize, device: Device::Cpu };
    let spec = TrainSpec {
        model: ModelKind::ConvNet,
        input,
        optimizer: OptimizerKind::Adam,
        lr: 3e-4,
        momentum: 0.9,
        local_iters: STEPS,
        batch_size: BATCH,
        prox_mu: 0.0,
        augment: Augment::default(),
        precision: fedsim::nn::precision::Precision::Fp32,
        return_model: false,
    };
    let base = initial_weights(ModelKind::ConvNet, input, 10);

    let mut group = c.benchmark_group("convnet_local_update_25x32");
    group.sample_size(30);
    group.bench_function("fedsim_pipeline", |b| {
        let mut task = 0;
        b.iter(|| {
            task += 1;
            train_local(&spec, &base, &shard, &ctx, &mut stream(10, Purpose::TrainTask, task)).unwrap()
        })
    });

    // The same model and steps with the batches already made: only forward, backward, Adam.
    let batches: Vec<(Tensor, Tensor)> = (0..STEPS as i64)
        .map(|i| {
            let index =
                Tensor::arange_start(i * BATCH as i64, (i + 1) * BATCH as i64, (Kind::Int64, Device::Cpu));
            (
                normalize.apply(&dataset.train.images.index_select(0, &index)),
                dataset.train.labels.index_select(0, &index),
            )
        })
        .collect();
    group.bench_function("bare_tch_loop", |b| {
        b.iter(|| {
            let mut model = Model::new(ModelKind::ConvNet, input, Device::Cpu);
            model.load(&base);
            let mut optimizer = OptimizerKind::Adam.build(&model.vs, 3e-4, 0.0).unwrap();
            for (images, labels) in &batches {
                let loss = model.net.forward_t(images, true).cross_entropy_loss(
                    labels,
                    None::<Tensor>,
                    Reduction::Mean,
                    -100,
                    0.0,
                );
                optimizer.backward_step(&loss);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, local_update);
criterion_main!(benches);
