//! `fedsim bench`: throughput measurements that run where cargo does not (a GPU machine with
//! only the binary and data). Each prints what it timed, on which device, and its figures.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::load_dataset;
use crate::data::augment::{Augment, Normalize};
use crate::data::{partition, split, DataDirs, DatasetKind};
use crate::exec::trainer::{Job, TorchTrainer, Trainer};
use crate::exec::{ThreadWorkers, Workers};
use crate::fl::{ServerRule, Update};
use crate::nn::device_weights::{DeviceWeights, TorchWeights};
use crate::nn::precision::Precision;
use crate::nn::train::{train_local, OptimizerKind, TrainContext, TrainOutcome, TrainSpec};
use crate::nn::{initial_weights, InputSpec, Model, ModelKind};
use crate::params::weights_hash;
use crate::runtime::{self, DeviceChoice};
use crate::sim::rng::{self, Purpose};

/// The reference's client jobs: `clients` Dirichlet(0.5) shards of 350 samples (fewer where the
/// training pool is too small for that many) and Adam at lr 3e-4.
fn reference_jobs(
    dataset: &crate::data::Dataset,
    clients: usize,
    model: ModelKind,
    local_iters: usize,
    batch_size: usize,
    seed: u64,
) -> Result<(partition::Partition, TrainSpec)> {
    let pool = split::split(dataset.train.len(), split::VAL_SPLIT, split::KD_SPLIT, seed).train;
    let shards = partition::partition(
        &dataset.train.host_labels,
        &pool,
        dataset.num_classes(),
        clients,
        350.min(pool.len() / clients).max(1),
        partition::PartitionKind::Dirichlet { alpha: 0.5 },
        seed,
    )?;
    let spec = TrainSpec {
        model,
        input: InputSpec::of(dataset),
        optimizer: OptimizerKind::Adam,
        lr: 3e-4,
        momentum: 0.9,
        local_iters,
        batch_size,
        prox_mu: 0.0,
        augment: Augment::default(),
        precision: Precision::Fp32,
        return_model: false,
    };
    Ok((shards, spec))
}

/// A batch larger than a client's shard is no job a client could run: refused by name.
fn shard_holds_batch(partition: &partition::Partition, batch_size: usize) -> Result<()> {
    let smallest = partition.shards.iter().map(Vec::len).min().unwrap_or(0);
    anyhow::ensure!(
        batch_size <= smallest,
        "--batch-size {batch_size} is larger than a client's shard ({smallest} samples); give at most {smallest}"
    );
    Ok(())
}

/// Where a benchmark runs, and on CUDA how it computes float32.
#[derive(clap::Args, Debug)]
pub struct BenchDevice {
    /// On CUDA, TF32 tensor cores for convolutions and matrix products instead of IEEE
    /// float32 (what runs use).
    #[arg(long)]
    pub tf32: bool,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// What forward passes compute in, as a run's run.precision: fp32, or bf16 autocast.
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
}

impl BenchDevice {
    /// The device, computing float32 as asked (IEEE unless `--tf32`); refuses a precision the
    /// device cannot compute in.
    pub fn resolve(&self) -> Result<tch::Device> {
        let device = self.device.resolve()?;
        runtime::use_tf32(self.tf32);
        self.precision.check(device).map_err(|e| anyhow::anyhow!("--precision bf16: {}", e.0))?;
        Ok(device)
    }

    /// How the headline names the arithmetic: float32's mode, and bf16 autocast where asked.
    fn arithmetic(&self, device: tch::Device) -> String {
        match self.precision {
            Precision::Fp32 => runtime::math_mode(device).to_owned(),
            Precision::Bf16 => ", bf16 autocast".to_owned(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn local_update(
    dirs: &DataDirs,
    model: ModelKind,
    kind: DatasetKind,
    repeats: usize,
    local_iters: usize,
    batch_size: usize,
    seed: u64,
    on: &BenchDevice,
) -> Result<()> {
    anyhow::ensure!(
        repeats > 0 && local_iters > 0 && batch_size > 0,
        "--repeats, --local-iters and --batch-size must be at least 1"
    );
    let device = on.resolve()?;
    let dataset = load_dataset(dirs, kind, device)?;
    let (shards, mut spec) = reference_jobs(&dataset, 1, model, local_iters, batch_size, seed)?;
    spec.precision = on.precision;
    shard_holds_batch(&shards, batch_size)?;
    let input = spec.input;
    let (mean, std) = kind.normalization();
    let normalize = Normalize::new(&mean, &std, device);
    let ctx = TrainContext { data: &dataset.train, normalize: &normalize, device };
    let base = initial_weights(model, input, seed);
    println!(
        "local update: {model} ({} parameters), {local_iters} Adam steps of batch {batch_size} on {}{}{}",
        Model::new(model, input, tch::Device::Cpu).layout.parameter_count(),
        runtime::describe(device),
        if runtime::deterministic_algorithms() { ", deterministic algorithms" } else { "" },
        on.arithmetic(device)
    );
    let mut times = Vec::new();
    let mut hashes = Vec::new();
    // Task 0 runs first and last: the first run includes warm-up, the two must agree bit for bit.
    for run in 0..=repeats {
        let task = if run == repeats { 0 } else { run as u64 };
        let mut task_rng = rng::stream(seed, Purpose::TrainTask, task);
        let outcome = train_local(&spec, &base, &shards.shards[0], &ctx, &mut task_rng)?;
        let hash = weights_hash(&outcome.delta);
        println!(
            "  task {task}: {:8.2} ms  loss {:.4} -> {:.4}  delta {}",
            outcome.wall.as_secs_f64() * 1e3,
            outcome.first_loss,
            outcome.last_loss,
            &hash[..16]
        );
        if run > 0 {
            times.push(outcome.wall.as_secs_f64());
        }
        hashes.push(hash);
    }
    let mean_s = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "mean {:.2} ms per update after warm-up ({:.0} samples/s); repeated task bit-identical: {}",
        mean_s * 1e3,
        (local_iters * batch_size) as f64 / mean_s,
        if hashes.first() == hashes.last() { "yes" } else { "NO" }
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn distill(
    model: ModelKind,
    ngf: i64,
    teachers: usize,
    repeats: usize,
    threads: usize,
    stacked: Option<bool>,
    on: &BenchDevice,
) -> Result<()> {
    use crate::fl::revive::Teacher;
    use crate::nn::dfkd::{DataFreeDistiller, DfkdSettings};
    use crate::nn::kd::KdSettings;
    use rand_distr::{Distribution, Gamma};
    anyhow::ensure!(
        ngf > 0 && teachers > 0 && repeats > 0 && threads > 0,
        "--ngf, --teachers, --repeats and --threads must be at least 1"
    );
    let device = on.resolve()?;
    if device == tch::Device::Cpu {
        tch::set_num_threads(threads as i32);
    }
    let input = InputSpec { channels: 3, height: 32, width: 32, classes: 10 };
    let kd = KdSettings { iters: 10, lr: 1e-4, weight_decay: 1e-5, temperature: 1.0, batch_per_teacher: 32 };
    // The adversarial term from the start, so that every call pays for all three losses.
    let settings = DfkdSettings { ngf, adv_after: 0, ..DfkdSettings::reference() };
    let mut distiller = DataFreeDistiller::new(kd, settings, model, DatasetKind::Cifar10, input, device, 10)?;
    if let Some(stacked) = stacked {
        distiller.core.stack_teachers = stacked;
    }
    distiller.core.set_precision(on.precision);
    let gamma = Gamma::new(0.5, 1.0)?;
    let mut rng = rng::stream(10, Purpose::Partition, 0);
    let teacher_set: Vec<Teacher> = (0..teachers as u64)
        .map(|k| {
            let g: Vec<f64> = (0..10).map(|_| gamma.sample(&mut rng)).collect();
            let total: f64 = g.iter().sum();
            Teacher {
                weights: std::sync::Arc::new(initial_weights(model, input, 100 + k)),
                class_proportions: g.iter().map(|x| x / total).collect(),
            }
        })
        .collect();
    let current = initial_weights(model, input, 10);
    println!(
        "distillation step: {model} student, {teachers} teachers ({}), generator ngf {ngf} (nz 256, batch 64, 2 steps), 10 KD steps of 32 images per teacher, on {}{} ({threads} libtorch threads)",
        if distiller.core.stack_teachers { "stacked" } else { "one by one" },
        runtime::describe(device),
        on.arithmetic(device)
    );
    // Teachers and the global model lie where a run keeps them: on a GPU, the device.
    let times = if device.is_cuda() {
        time_distillation::<DeviceWeights>(&mut distiller, &teacher_set, &current, repeats, device)?
    } else {
        time_distillation::<Vec<f32>>(&mut distiller, &teacher_set, &current, repeats, device)?
    };
    println!(
        "mean {:.1} ms per arrival after warm-up; pool holds {} images",
        times.iter().sum::<f64>() * 1e3 / times.len() as f64,
        distiller.pool_len()
    );
    Ok(())
}

/// Seconds per distillation call (the first, warm-up, left out), each until its delta_KD is
/// complete on the device.
fn time_distillation<W: TorchWeights>(
    distiller: &mut crate::nn::dfkd::DataFreeDistiller,
    teachers: &[crate::fl::revive::Teacher],
    current: &[f32],
    repeats: usize,
    device: tch::Device,
) -> Result<Vec<f64>> {
    use crate::fl::revive::{Distiller, Teacher};
    let placed: Vec<Teacher<W>> = teachers
        .iter()
        .map(|t| Teacher {
            weights: Arc::new(W::from_host(&t.weights, device)),
            class_proportions: t.class_proportions.clone(),
        })
        .collect();
    let refs: Vec<&Teacher<W>> = placed.iter().collect();
    let current = W::from_host(current, device);
    let mut times = Vec::new();
    for call in 0..=repeats {
        let started = Instant::now();
        let delta = distiller.distill(&current, &refs, call as u64 + 1)?;
        delta.settle();
        let seconds = started.elapsed().as_secs_f64();
        let host = delta.to_host();
        println!(
            "  call {call}: {:8.1} ms  |delta_KD| max {:.2e}  delta {}",
            seconds * 1e3,
            host.iter().fold(0f32, |m, d| m.max(d.abs())),
            &weights_hash(&host)[..16]
        );
        if call > 0 {
            times.push(seconds);
        }
    }
    Ok(times)
}

/// What `fedsim bench round` runs.
#[derive(clap::Args, Debug)]
pub struct RoundOptions {
    #[arg(long, default_value = "convnet")]
    pub model: ModelKind,
    #[arg(long, default_value = "cifar10")]
    pub dataset: DatasetKind,
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Clients per cohort (1: each alone, as run.cohort_size = 1).
    #[arg(long, default_value_t = 1)]
    pub cohort: usize,
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(long, default_value_t = 25)]
    pub local_iters: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 10)]
    pub seed: u64,
    #[command(flatten)]
    pub device: BenchDevice,
}

/// Times FedAvg rounds: `clients` local updates from one base (each 350 samples, Adam, as the
/// reference's job), trained in cohorts of `cohort` on `workers` workers through the trainer a
/// run uses, then averaged into the next base in task order, as a run's server does. On a GPU
/// the base, the updates and the average stay on the device, as a run's versions do. Round 0
/// warms up and is not counted.
pub fn round(dirs: &DataDirs, o: &RoundOptions) -> Result<()> {
    anyhow::ensure!(
        [o.clients, o.cohort, o.workers, o.rounds, o.local_iters, o.batch_size].iter().all(|&n| n > 0),
        "--clients, --cohort, --workers, --rounds, --local-iters and --batch-size must be at least 1"
    );
    let device = o.device.resolve()?;
    if device.is_cuda() {
        round_with::<DeviceWeights>(dirs, o, device)
    } else {
        round_with::<Vec<f32>>(dirs, o, device)
    }
}

fn round_with<W: TorchWeights>(dirs: &DataDirs, o: &RoundOptions, device: tch::Device) -> Result<()> {
    let dataset = Arc::new(load_dataset(dirs, o.dataset, device)?);
    let (partition, mut spec) =
        reference_jobs(&dataset, o.clients, o.model, o.local_iters, o.batch_size, o.seed)?;
    spec.precision = o.device.precision;
    shard_holds_batch(&partition, o.batch_size)?;
    let input = spec.input;
    let trainer: Arc<dyn Trainer<W>> = Arc::new(TorchTrainer {
        dataset,
        partition: Arc::new(partition),
        spec,
        client_lr: Default::default(),
        seed: o.seed,
        device,
    });
    let mut workers = ThreadWorkers::new(o.workers, trainer)?;
    let host_base = initial_weights(o.model, input, o.seed);
    let mut base = Arc::new(W::from_host(&host_base, device));
    let rule = ServerRule::plain(1.0);
    println!(
        "FedAvg round: {} clients of {} ({} parameters), {} Adam steps of batch {} each, cohorts of {}, {} worker{}, then their mean, on {}{}{}",
        o.clients,
        o.model,
        Model::new(o.model, input, tch::Device::Cpu).layout.parameter_count(),
        o.local_iters,
        o.batch_size,
        o.cohort,
        o.workers,
        if o.workers == 1 { "" } else { "s" },
        runtime::describe(device),
        if runtime::deterministic_algorithms() { ", deterministic algorithms" } else { "" },
        o.device.arithmetic(device)
    );
    let in_flight_clients = o.cohort.min(o.clients) * o.workers.min(o.clients.div_ceil(o.cohort));
    let mut seconds = Vec::new();
    for round in 0..=o.rounds {
        runtime::reset_peak_memory(device);
        let before = runtime::device_memory(device).map(|m| m.allocated);
        let started = Instant::now();
        let tasks: Vec<Job<W>> = (0..o.clients as u64)
            .map(|i| Job {
                task: round as u64 * o.clients as u64 + i,
                client: i as u32,
                version: round as u64,
                base: base.clone(),
            })
            .collect();
        let mut cohorts = tasks.chunks(o.cohort).enumerate();
        let mut outcomes: Vec<Option<Vec<TrainOutcome<W>>>> =
            (0..o.clients.div_ceil(o.cohort)).map(|_| None).collect();
        let mut running = 0usize;
        loop {
            while running < workers.capacity() {
                let Some((id, jobs)) = cohorts.next() else { break };
                workers.start(id as u64, jobs.to_vec());
                running += 1;
            }
            if running == 0 {
                break;
            }
            let finished = workers.next_finished();
            running -= 1;
            outcomes[finished.cohort as usize] = Some(finished.result?);
        }
        drop(tasks);
        let trained: Vec<TrainOutcome<W>> = outcomes.into_iter().flatten().flatten().collect();
        let training = started.elapsed().as_secs_f64();
        let updates: Vec<Update<W>> = trained
            .iter()
            .map(|t| Update { delta: &t.delta, model: None, staleness: 0, samples: t.samples })
            .collect();
        let mut next = (*base).clone();
        rule.apply(&mut next, &updates);
        next.settle();
        base = Arc::new(next);
        let elapsed = started.elapsed().as_secs_f64();
        let last_loss = trained.iter().map(|t| t.last_loss as f64).sum::<f64>();
        let memory = match (before, runtime::device_memory(device)) {
            (Some(before), Some(after)) => {
                let peak = after.peak_allocated.saturating_sub(before);
                format!(
                    "  peak {:.2} GiB, {:.0} MiB per client in flight",
                    runtime::gib(peak),
                    peak as f64 / in_flight_clients as f64 / (1 << 20) as f64
                )
            }
            _ => String::new(),
        };
        println!(
            "  round {round}{}: {:8.3} s ({:.3} s training, {:.1} ms mean)  {:7.1} client updates/s  {:9.0} samples/s  mean last loss {:.4}{memory}",
            if round == 0 { " (warm-up)" } else { "" },
            elapsed,
            training,
            (elapsed - training) * 1e3,
            o.clients as f64 / elapsed,
            (o.clients * o.local_iters * o.batch_size) as f64 / elapsed,
            last_loss / o.clients as f64
        );
        if round > 0 {
            seconds.push(elapsed);
        }
    }
    let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
    println!(
        "mean {:.3} s per round after warm-up: {:.1} client updates/s, {:.0} samples/s, {:.2} ms per client update",
        mean,
        o.clients as f64 / mean,
        (o.clients * o.local_iters * o.batch_size) as f64 / mean,
        mean * 1e3 / o.clients as f64
    );
    Ok(())
}

/// What `fedsim bench cohort` runs.
#[derive(clap::Args, Debug)]
pub struct CohortOptions {
    #[arg(long, default_value = "convnet")]
    pub model: ModelKind,
    /// Clients in the cohort (each also trained alone).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    #[arg(long, default_value_t = 25)]
    pub local_iters: usize,
    #[arg(long, default_value_t = 10)]
    pub seed: u64,
    #[command(flatten)]
    pub device: BenchDevice,
}

/// The bound the README states for a stacked client's delta against its delta alone (max
/// |cohort - alone| / max |alone|) where the stacked convolutions sum as single ones do (CPU),
/// which tests/it/cohort.rs holds.
pub const COHORT_TOLERANCE: f64 = 1e-4;

/// Where a GPU's grouped convolutions sum in another order, the bound is rounding's own: a
/// stacked client's delta may differ from its delta alone by at most this many times what a
/// last-bit change of the base weights does to it (relative L2 norms, worst client against
/// worst client). ResNet-18 with Adam is chaotic at that level: over 25 steps a last-bit change
/// moved a delta by 1.5e-2 to 1.9e-1 of its largest element (1.2e-3 to 8.9e-3 in L2) on CPU.
pub const ROUNDING_FACTOR: f64 = 10.0;

/// max |a - b| / max |b| and ||a - b|| / ||b||.
fn delta_differences(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut max_diff, mut max_b, mut sq_diff, mut sq_b) = (0f64, 0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let d = (*x as f64) - (*y as f64);
        max_diff = max_diff.max(d.abs());
        max_b = max_b.max((*y as f64).abs());
        sq_diff += d * d;
        sq_b += (*y as f64) * (*y as f64);
    }
    (max_diff / max_b.max(1e-30), (sq_diff / sq_b.max(1e-30)).sqrt())
}

/// Trains `clients` reference jobs from one base as one stacked cohort and each alone, on the
/// device a run would use, and compares every client's delta: the cohort contract checked
/// where it matters most, on a GPU. Each client also trains alone from the base with the last
/// bit of every second weight flipped, which measures what rounding alone does to its delta.
/// Fails unless the stacked deltas are within [`COHORT_TOLERANCE`] or within
/// [`ROUNDING_FACTOR`] times that rounding floor.
pub fn cohort(dirs: &DataDirs, o: &CohortOptions) -> Result<()> {
    use crate::nn::cohort::{train_cohort, Member};
    anyhow::ensure!(o.clients > 0 && o.local_iters > 0, "--clients and --local-iters must be at least 1");
    let device = o.device.resolve()?;
    let dataset = load_dataset(dirs, DatasetKind::Cifar10, device)?;
    let (shards, mut spec) = reference_jobs(&dataset, o.clients, o.model, o.local_iters, 32, o.seed)?;
    spec.precision = o.device.precision;
    let (mean, std) = DatasetKind::Cifar10.normalization();
    let normalize = Normalize::new(&mean, &std, device);
    let ctx = TrainContext { data: &dataset.train, normalize: &normalize, device };
    let base = initial_weights(o.model, spec.input, o.seed);
    let task_rng = |c: usize| rng::stream(o.seed, Purpose::TrainTask, c as u64);
    println!(
        "cohort against alone: {} clients of {}, {} Adam steps of batch 32, on {}{}{}",
        o.clients,
        o.model,
        o.local_iters,
        runtime::describe(device),
        if runtime::deterministic_algorithms() { ", deterministic algorithms" } else { "" },
        o.device.arithmetic(device)
    );
    // Warm-up (kernel selection, allocator) outside the timings.
    train_local(&spec, &base, &shards.shards[0], &ctx, &mut task_rng(0))?;
    let started = Instant::now();
    let alone = (0..o.clients)
        .map(|c| train_local(&spec, &base, &shards.shards[c], &ctx, &mut task_rng(c)))
        .collect::<Result<Vec<_>, _>>()?;
    let alone_s = started.elapsed().as_secs_f64();
    let members =
        (0..o.clients).map(|c| Member { base: &base, shard: &shards.shards[c], rng: task_rng(c) }).collect();
    let started = Instant::now();
    let stacked = train_cohort(&spec, members, &ctx)?;
    let stacked_s = started.elapsed().as_secs_f64();
    let nudged: Vec<f32> = base
        .iter()
        .enumerate()
        .map(|(i, w)| if i % 2 == 0 { f32::from_bits(w.to_bits() ^ 1) } else { *w })
        .collect();
    let (mut worst_max, mut worst_l2, mut floor_max, mut floor_l2) = (0f64, 0f64, 0f64, 0f64);
    for (c, (s, a)) in stacked.iter().zip(&alone).enumerate() {
        let rounded = train_local(&spec, &nudged, &shards.shards[c], &ctx, &mut task_rng(c))?;
        let (max_rel, l2_rel) = delta_differences(&s.delta, &a.delta);
        let (floor_max_rel, floor_l2_rel) = delta_differences(&rounded.delta, &a.delta);
        worst_max = worst_max.max(max_rel);
        worst_l2 = worst_l2.max(l2_rel);
        floor_max = floor_max.max(floor_max_rel);
        floor_l2 = floor_l2.max(floor_l2_rel);
        println!(
            "  client {c}: loss {:.4} -> {:.4} alone, {:.4} -> {:.4} stacked; delta difference {max_rel:.2e} of its largest element, {l2_rel:.2e} in L2; a last-bit change of the base: {floor_max_rel:.2e}, {floor_l2_rel:.2e}",
            a.first_loss, a.last_loss, s.first_loss, s.last_loss
        );
    }
    let exact = worst_max < COHORT_TOLERANCE;
    let rounding = worst_l2 <= ROUNDING_FACTOR * floor_l2;
    println!(
        "max relative delta difference {worst_max:.2e} (bound {COHORT_TOLERANCE:.0e}), {worst_l2:.2e} in L2 against a rounding floor of {floor_l2:.2e} ({floor_max:.2e} of the largest element): {}; alone {:.3} s, stacked {:.3} s ({:.1}x)",
        match (exact, rounding) {
            (true, _) => "within the bound",
            (false, true) => "within rounding",
            (false, false) => "OUTSIDE",
        },
        alone_s,
        stacked_s,
        alone_s / stacked_s.max(1e-9)
    );
    anyhow::ensure!(
        exact || rounding,
        "a stacked client's delta differs from its delta alone by {worst_max:.2e} of its largest element (bound {COHORT_TOLERANCE:.0e}) and {worst_l2:.2e} in L2, more than {ROUNDING_FACTOR} times the {floor_l2:.2e} a last-bit change of the base causes"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::delta_differences;

    #[test]
    fn delta_differences_are_relative_to_the_reference() {
        let reference = [1.0f32, -2.0, 0.0, 2.0];
        assert_eq!(delta_differences(&reference, &reference), (0.0, 0.0));
        let (max_rel, l2_rel) = delta_differences(&[1.0, -2.0, 0.5, 2.0], &reference);
        assert!((max_rel - 0.25).abs() < 1e-12, "{max_rel}");
        assert!((l2_rel - 0.5 / 3.0).abs() < 1e-12, "{l2_rel}");
    }
}
