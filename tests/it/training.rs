//! Local training and evaluation do what they say, end to end on real data.

use fedsim::data::augment::{Augment, Normalize};
use fedsim::data::{self, partition, split, DatasetKind};
use fedsim::nn::central::{self, CentralOptions};
use fedsim::nn::eval::evaluate;
use fedsim::nn::train::{train_local, OptimizerKind, TrainContext, TrainSpec};
use fedsim::nn::{initial_weights, InputSpec, Model, ModelKind};
use fedsim::sim::rng::{stream, Purpose};
use tch::Device;

use crate::{cifar, dirs};

fn spec(input: InputSpec, local_iters: usize) -> TrainSpec {
    TrainSpec {
        model: ModelKind::ConvNet,
        input,
        optimizer: OptimizerKind::Adam,
        lr: 3e-4,
        momentum: 0.9,
        local_iters,
        batch_size: 32,
        prox_mu: 0.0,
        augment: Augment::default(),
        precision: fedsim::nn::precision::Precision::Fp32,
        return_model: false,
    }
}

#[test]
fn a_local_update_lowers_the_loss_and_moves_weights_and_statistics() {
    for kind in DatasetKind::ALL {
        let data = data::load(kind, &dirs()).unwrap();
        let input = InputSpec::of(&data);
        let pool = split::split(data.train.len(), split::VAL_SPLIT, split::KD_SPLIT, 1).train;
        let skewed = partition::PartitionKind::Dirichlet { alpha: 0.5 };
        let shard = partition::partition(&data.train.host_labels, &pool, 10, 1, 350, skewed, 1)
            .unwrap()
            .shards
            .remove(0);
        let (mean, std) = kind.normalization();
        let normalize = Normalize::new(&mean, &std, Device::Cpu);
        let ctx = TrainContext { data: &data.train, normalize: &normalize, device: Device::Cpu };
        let base = initial_weights(ModelKind::ConvNet, input, 1);
        let outcome =
            train_local(&spec(input, 60), &base, &shard, &ctx, &mut stream(1, Purpose::TrainTask, 0))
                .unwrap();
        // 60 batches without drop_last: 5 epochs of 10 x 32 + 30, then 5 batches of 32.
        assert_eq!(outcome.samples, 5 * 350 + 5 * 32);
        assert!(
            outcome.last_loss < outcome.first_loss - 0.2,
            "{kind}: loss {} -> {}",
            outcome.first_loss,
            outcome.last_loss
        );
        let layout = Model::new(ModelKind::ConvNet, input, Device::Cpu).layout;
        let moved = |name: &str| {
            let e = layout.entries.iter().find(|e| e.name == name).unwrap();
            outcome.delta[e.offset..e.offset + e.numel].iter().any(|d| *d != 0.0)
        };
        assert!(moved("fc3.weight") && moved("conv1.weight"), "{kind}: parameters did not move");
        assert!(
            moved("track1.running_mean") && moved("track2.running_var"),
            "{kind}: trackers did not record"
        );
    }
}

#[test]
fn evaluation_of_an_untrained_model_is_near_chance() {
    let data = cifar();
    let input = InputSpec::of(data);
    let mut model = Model::new(ModelKind::ConvNet, input, Device::Cpu);
    model.load(&initial_weights(ModelKind::ConvNet, input, 3));
    let (mean, std) = DatasetKind::Cifar10.normalization();
    let result = evaluate(&model, &data.test, &Normalize::new(&mean, &std, Device::Cpu), 10);
    assert!(result.accuracy < 0.2, "{result:?}");
    assert!((result.loss - 10f64.ln()).abs() < 0.3, "{result:?}");
    assert_eq!(result.per_class_accuracy.len(), 10);
    let mean_per_class = result.per_class_accuracy.iter().sum::<f64>() / 10.0;
    assert!(
        (mean_per_class - result.accuracy).abs() < 1e-9,
        "balanced test set: per-class mean equals accuracy"
    );
}

#[test]
fn one_epoch_of_central_training_beats_chance_by_far() {
    let options = CentralOptions {
        model: ModelKind::ConvNet,
        epochs: 1,
        batch_size: 32,
        lr: 1e-3,
        optimizer: OptimizerKind::Adam,
        seed: 10,
    };
    let reports = central::train(&options, cifar(), Device::Cpu, |_, _| {}, |_| {}).unwrap();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].test.accuracy > 0.3, "accuracy after one epoch: {}", reports[0].test.accuracy);
}

/// FedProx (train.prox_mu): the proximal term pulls a local update towards its base, more as mu
/// grows. (mu = 0 runs no extra operation: the hash oracle and the kept reports' hashes check it.)
#[test]
fn the_proximal_term_keeps_a_local_update_near_its_base() {
    let data = cifar();
    let input = InputSpec::of(data);
    let pool = split::split(data.train.len(), split::VAL_SPLIT, split::KD_SPLIT, 1).train;
    let iid = partition::PartitionKind::Iid;
    let shard =
        partition::partition(&data.train.host_labels, &pool, 10, 1, 350, iid, 1).unwrap().shards.remove(0);
    let (mean, std) = DatasetKind::Cifar10.normalization();
    let normalize = Normalize::new(&mean, &std, Device::Cpu);
    let ctx = TrainContext { data: &data.train, normalize: &normalize, device: Device::Cpu };
    let base = initial_weights(ModelKind::ConvNet, input, 1);
    let update = |prox_mu: f64| {
        let spec = TrainSpec { optimizer: OptimizerKind::Sgd, lr: 0.05, prox_mu, ..spec(input, 20) };
        train_local(&spec, &base, &shard, &ctx, &mut stream(1, Purpose::TrainTask, 0)).unwrap().delta
    };
    // The term pulls the trainable parameters only; tracker statistics follow the data.
    let layout = Model::new(ModelKind::ConvNet, input, Device::Cpu).layout;
    let norm = |delta: &[f32]| {
        let trainable = layout.entries.iter().filter(|e| e.trainable);
        trainable
            .flat_map(|e| &delta[e.offset..e.offset + e.numel])
            .map(|d| (*d as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let plain = update(0.0);
    let (weak, strong) = (norm(&update(1.0)), norm(&update(10.0)));
    assert!(
        strong < weak && weak < norm(&plain),
        "update norms: mu 0 {}, mu 1 {weak}, mu 10 {strong}",
        norm(&plain)
    );
}

/// train.lr_schedule: the trainer gives each job the rate of the version it trains from, alone
/// and in a cohort, exactly as a trainer without a schedule at that rate.
#[test]
fn a_client_lr_schedule_trains_each_job_at_the_rate_of_its_base_version() {
    use fedsim::exec::trainer::TorchTrainer;
    use fedsim::exec::{Job, Trainer};
    use fedsim::fl::lr_schedule::LrSchedule;
    use std::sync::Arc;

    let dataset = Arc::new(data::load(DatasetKind::Cifar10, &dirs()).unwrap());
    let input = InputSpec::of(&dataset);
    let pool = split::split(dataset.train.len(), split::VAL_SPLIT, split::KD_SPLIT, 1).train;
    let partition = Arc::new(
        partition::partition(&dataset.train.host_labels, &pool, 10, 4, 64, partition::PartitionKind::Iid, 1)
            .unwrap(),
    );
    let base = Arc::new(initial_weights(ModelKind::ConvNet, input, 1));
    let trainer = |lr: f64, client_lr: LrSchedule| TorchTrainer {
        dataset: dataset.clone(),
        partition: partition.clone(),
        spec: TrainSpec { lr, ..spec(input, 3) },
        client_lr,
        seed: 1,
        device: Device::Cpu,
    };
    let scheduled = trainer(3e-3, LrSchedule::Step { every: 5, factor: 0.1 });
    let deltas = |trainer: &TorchTrainer, jobs: &[Job]| -> Vec<Vec<f32>> {
        trainer.train(jobs).unwrap().into_iter().map(|o| o.delta).collect()
    };
    let mut by_version = Vec::new();
    for (version, rate) in [(4, 3e-3), (7, 3e-4)] {
        let jobs: Vec<Job> =
            (1..3).map(|c| Job { task: c as u64, client: c, version, base: base.clone() }).collect();
        for cohort in [&jobs[..1], &jobs[..]] {
            let got = deltas(&scheduled, cohort);
            assert_eq!(got, deltas(&trainer(rate, LrSchedule::Constant), cohort), "version {version}");
            by_version.push(got[0].clone());
        }
    }
    assert_ne!(by_version[0], by_version[2], "the rate changed nothing");
}
