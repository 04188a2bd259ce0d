//! A training task's result depends only on its inputs: run twice, on a rayon worker, or in
//! another process, it gives a bit-identical delta.

use fedsim::data::augment::{Augment, Normalize};
use fedsim::data::{partition, split, DatasetKind};
use fedsim::nn::train::{train_local, OptimizerKind, TrainContext, TrainOutcome, TrainSpec};
use fedsim::nn::{initial_weights, InputSpec, ModelKind};
use fedsim::params::weights_hash;
use fedsim::sim::rng::{stream, Purpose};
use tch::Device;

use crate::{cifar, fedsim};

const SEED: u64 = 10;

/// The task `fedsim bench local-update --seed 10` runs as its task `task`.
fn run_task(task: u64) -> TrainOutcome {
    let data = cifar();
    let input = InputSpec::of(data);
    let pool = split::split(data.train.len(), split::VAL_SPLIT, split::KD_SPLIT, SEED).train;
    let kind = partition::PartitionKind::Dirichlet { alpha: 0.5 };
    let shard = partition::partition(&data.train.host_labels, &pool, 10, 1, 350, kind, SEED)
        .unwrap()
        .shards
        .remove(0);
    let (mean, std) = DatasetKind::Cifar10.normalization();
    let normalize = Normalize::new(&mean, &std, Device::Cpu);
    let ctx = TrainContext { data: &data.train, normalize: &normalize, device: Device::Cpu };
    let spec = TrainSpec {
        model: ModelKind::ConvNet,
        input,
        optimizer: OptimizerKind::Adam,
        lr: 3e-4,
        momentum: 0.9,
        local_iters: 25,
        batch_size: 32,
        prox_mu: 0.0,
        augment: Augment::default(),
        precision: fedsim::nn::precision::Precision::Fp32,
        return_model: false,
    };
    let base = initial_weights(ModelKind::ConvNet, input, SEED);
    train_local(&spec, &base, &shard, &ctx, &mut stream(SEED, Purpose::TrainTask, task)).unwrap()
}

#[test]
fn the_same_task_twice_in_one_process_is_bit_identical() {
    let a = weights_hash(&run_task(0).delta);
    let b = weights_hash(&run_task(0).delta);
    assert_eq!(a, b);
    assert_ne!(a, weights_hash(&run_task(1).delta), "another task stream must give another delta");
}

#[test]
fn tasks_on_rayon_workers_match_the_main_thread() {
    let sequential: Vec<String> = (0..4).map(|t| weights_hash(&run_task(t).delta)).collect();
    for workers in [2, 4] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().unwrap();
        let parallel: Vec<String> = pool.install(|| {
            use rayon::prelude::*;
            (0..4u64).into_par_iter().map(|t| weights_hash(&run_task(t).delta)).collect()
        });
        assert_eq!(parallel, sequential, "{workers} workers");
    }
}

/// The delta hashes `fedsim bench local-update` prints for its task 0 (first run and repeat).
fn task_0_deltas(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("task 0:"))
        .filter_map(|l| l.rsplit(' ').next())
        .collect()
}

#[test]
fn another_process_gives_the_same_delta() {
    let here = weights_hash(&run_task(0).delta);
    let (code, stdout, stderr) =
        fedsim(&["bench", "local-update", "--repeats", "1", "--seed", "10", "--device", "cpu"]);
    assert_eq!(code, 0, "{stderr}");
    let there = task_0_deltas(&stdout);
    assert_eq!(there.len(), 2, "{stdout}");
    assert!(there.iter().all(|h| here.starts_with(h)), "in-process {here}, child process {there:?}");
}

/// The reproducible mode (run.cpu_kernels = "avx2") rounds alike on CPUs unlike this one: one
/// local update gives the same delta here and on an emulated Intel Haswell and AMD EPYC-Rome
/// (QEMU's user-mode emulator, installed by `just test`; both AVX2 without AVX-512). Before
/// fedsim took exact square roots, MKL's approximate one made both emulated CPUs differ.
#[test]
fn the_reproducible_mode_gives_one_delta_on_emulated_intel_and_amd_cpus() {
    let delta_on = |cpu: Option<&str>| {
        let fedsim = env!("CARGO_BIN_EXE_fedsim");
        let mut command = match cpu {
            Some(cpu) => {
                let mut qemu = std::process::Command::new("qemu-x86_64");
                qemu.args(["-cpu", cpu, fedsim]);
                qemu
            }
            None => std::process::Command::new(fedsim),
        };
        // The pins fedsim would restart itself with; set here, as a restart would leave the emulator.
        command.envs(fedsim::runtime::AVX2_PINS);
        let output = command
            .args(["bench", "local-update", "--repeats", "1", "--device", "cpu"])
            .current_dir(crate::repo())
            .output()
            .expect("qemu-x86_64 runs (qemu-user, installed by `just test`)");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{cpu:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        task_0_deltas(&stdout)
            .first()
            .map(|d| d.to_string())
            .unwrap_or_else(|| panic!("{cpu:?}: no delta in {stdout}"))
    };
    let here = delta_on(None);
    // Both emulations at once: each takes about a minute.
    let (haswell, epyc) = std::thread::scope(|s| {
        let haswell = s.spawn(|| delta_on(Some("Haswell-noTSX")));
        let epyc = s.spawn(|| delta_on(Some("EPYC-Rome-v2")));
        (haswell.join().unwrap(), epyc.join().unwrap())
    });
    assert_eq!((&haswell, &epyc), (&here, &here), "emulated Haswell and EPYC-Rome against this CPU");
}
