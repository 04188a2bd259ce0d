//! The simulator end to end: results identical for any worker count, the plan independent of
//! training, FedAvg equal to its textbook definition, and the run directory complete.

use fedsim::config::Config;
use fedsim::exec::{EvalRecord, UpdateRecord, VecSink};
use fedsim::nn::device_weights::DeviceWeights;
use fedsim::params::weights_hash;
use fedsim::sched::{Scheduler, Step};
use fedsim::simulation::{plan_config, Simulation};
use tch::Device;

use crate::{applied_updates, dirs, fedsim, relative_difference, scratch};

/// A small world that trains in seconds: 30 clients, short local updates.
pub(crate) fn small(algorithm: &str, extra: &str) -> String {
    format!(
        "name = \"small\"\nseed = 7\n\
         [data]\nnum_clients = 30\nclient_data_size = 64\n\
         [train]\nlocal_iters = 4\nbatch_size = 16\nlr = 1e-3\n\
         [algorithm]\nkind = \"{algorithm}\"\nactive_jobs = 6\n{extra}\n\
         [eval]\ninterval = 5\n\
         [stop]\nmax_versions = 20\n"
    )
}

pub(crate) fn config(text: &str, workers: usize) -> Config {
    Config::from_toml(text, "test", "test", &[format!("run.workers={workers}")]).unwrap()
}

pub(crate) fn cohort_config(text: &str, workers: usize, cohort: usize) -> Config {
    let overrides = [format!("run.workers={workers}"), format!("run.cohort_size={cohort}")];
    Config::from_toml(text, "test", "test", &overrides).unwrap()
}

/// A run with `workers` workers has the same final weights and the same tables (wall-clock
/// columns aside) as the 1-worker run.
pub(crate) fn assert_same_run(
    what: &str,
    workers: usize,
    (hash_n, sink_n): (&str, &VecSink),
    (hash_1, sink_1): (&str, &VecSink),
) {
    assert_eq!(hash_n, hash_1, "{what}: final weights differ with {workers} workers");
    assert_eq!(
        timeless(&sink_n.updates, &sink_n.evals),
        timeless(&sink_1.updates, &sink_1.evals),
        "{what}: tables differ with {workers} workers"
    );
}

pub(crate) fn run(config: &Config) -> (String, VecSink) {
    let mut sink = VecSink::default();
    let outcome = Simulation::build(config, &dirs(), Device::Cpu).unwrap().run(&mut sink, None).unwrap();
    (weights_hash(&outcome.final_weights), sink)
}

/// The rows without their wall-clock columns.
fn timeless(updates: &[UpdateRecord], evals: &[EvalRecord]) -> (Vec<UpdateRecord>, Vec<EvalRecord>) {
    let updates = updates
        .iter()
        .map(|u| UpdateRecord { train_ms: 0.0, worker: 0, server_ms: 0.0, ..u.clone() })
        .collect();
    let evals = evals.iter().map(|e| EvalRecord { wall_s: 0.0, ..e.clone() }).collect();
    (updates, evals)
}

#[test]
fn one_two_and_four_workers_give_identical_results() {
    for (algorithm, extra) in [
        ("async_fl", "buffer_size = 2\nserver_lr = 0.5"),
        ("afl_dw", "buffer_size = 1\nserver_lr = 0.5\nbeta = { kind = \"cosine\", s_max = 3.0 }"),
        ("sync_fl", "server_lr = 1.0"),
    ] {
        let text = small(algorithm, extra);
        let (hash_1, sink_1) = run(&config(&text, 1));
        assert_eq!(sink_1.evals.last().unwrap().version, 20, "{algorithm}");
        assert!(
            sink_1.updates.iter().any(|u| u.staleness > 0) || algorithm == "sync_fl",
            "{algorithm}: no stale update"
        );
        for workers in [2, 4] {
            let (hash_n, sink_n) = run(&config(&text, workers));
            assert_same_run(algorithm, workers, (&hash_n, &sink_n), (&hash_1, &sink_1));
        }
    }
}

/// The same contract with cohorts: at a given cohort size, any worker count gives the same
/// result; and a cohort's first updates (trained from the same base) lose what single tasks do.
#[test]
fn at_cohort_sizes_four_and_eight_one_two_and_four_workers_give_identical_results() {
    for (algorithm, extra) in
        [("async_fl", "buffer_size = 2\nserver_lr = 0.5"), ("sync_fl", "server_lr = 1.0")]
    {
        let text = small(algorithm, extra);
        let (_, single) = run(&config(&text, 1));
        for cohort in [4, 8] {
            let (hash_1, sink_1) = run(&cohort_config(&text, 1, cohort));
            assert_eq!(sink_1.evals.last().unwrap().version, 20, "{algorithm}");
            for workers in [2, 4] {
                let (hash_n, sink_n) = run(&cohort_config(&text, workers, cohort));
                let what = format!("{algorithm} cohort {cohort}");
                assert_same_run(&what, workers, (&hash_n, &sink_n), (&hash_1, &sink_1));
            }
            for (stacked, alone) in
                sink_1.updates.iter().zip(&single.updates).filter(|(u, _)| u.base_version == 0)
            {
                assert_eq!(stacked.task, alone.task);
                assert!(
                    (stacked.first_loss - alone.first_loss).abs() < 1e-4,
                    "{algorithm} cohort {cohort} task {}",
                    stacked.task
                );
            }
        }
    }
}

/// Over-committed rounds, a maximum staleness, an update timeout, clients going offline and
/// round deadlines withdraw jobs from the plan (leaves and carried late updates reorder them):
/// a run trains only the jobs it applies (or that are in flight at its end), an over-committed
/// round takes K updates, the jobs table accounts for every applied update, and each gives the
/// same result for 1 and 2 workers.
#[test]
fn over_commitment_and_maximum_staleness_train_only_what_is_applied_for_any_worker_count() {
    for (algorithm, extra) in [
        ("sync_fl", "server_lr = 1.0\nover_commitment = 1.5"),
        ("async_fl", "buffer_size = 1\nserver_lr = 0.5\nmax_staleness = 2"),
        ("sync_fl", "server_lr = 1.0\nupdate_timeout = 1.0"),
        (
            "async_fl",
            "buffer_size = 1\nserver_lr = 0.5\n[availability]\nkind = \"on_off\"\nmean_on = 2.0\nmean_off = 1.0",
        ),
        (
            "sync_fl",
            "server_lr = 1.0\nround_deadline = 1.3\n[topology]\nnum_leaf_nodes = 3\nleaf_buffer_size = 2\nhop_delay = { mean = 0.05 }",
        ),
        ("sync_fl", "server_lr = 1.0\nround_deadline = 1.3\nlate_updates = \"carry\""),
        (
            "async_fl",
            "buffer_size = 1\nserver_lr = 0.5\nmin_hole_to_fill = 2\nmax_model_history = 4\nclient_reuse = false\n[availability]\nkind = \"daily\"\nperiod = 4.0\nonline_fraction = 0.7",
        ),
        (
            "async_fl",
            "buffer_size = 2\nserver_lr = 0.5\nmax_staleness = 4\n[topology]\nnum_leaf_nodes = 4\nassignment = \"seeded\"\nflush_period = 0.3\nhop_delay = { distribution = \"exponential\", mean = 0.05 }",
        ),
    ] {
        let text = small(algorithm, extra);
        let one = config(&text, 1);
        let mut sink_1 = VecSink::default();
        let outcome_1 = Simulation::build(&one, &dirs(), Device::Cpu).unwrap().run(&mut sink_1, None).unwrap();
        let (hash_2, sink_2) = run(&config(&text, 2));
        let hash_1 = weights_hash(&outcome_1.final_weights);
        assert_same_run(algorithm, 2, (&hash_2, &sink_2), (&hash_1, &sink_1));
        let (summary, _) = fedsim::sched::summarize(plan_config(&one));
        let fates = summary.fates;
        let withdrawn = fates.withdrawn();
        if extra.contains("carry") {
            assert_eq!(withdrawn, 0, "carried late updates are all kept");
            assert!(sink_1.updates.iter().any(|u| u.staleness > 0), "some updates came in late");
        } else {
            assert!(withdrawn > 0, "{algorithm}: the plan withdrew no job");
        }
        if extra.contains("[topology]") {
            assert!(sink_1.updates.iter().all(|u| u.leaf.is_some()), "updates name their leaf");
        }
        let applied = sink_1.jobs.iter().filter(|j| matches!(j.fate, fedsim::sched::Fate::Applied { .. })).count();
        assert_eq!(applied, sink_1.updates.len(), "{algorithm}: the jobs table's applied jobs are the updates");
        assert!(outcome_1.tasks_trained <= summary.trained_jobs, "{algorithm}: a withdrawn job trained");
        if let Some(max) = one.max_staleness {
            assert!(sink_1.updates.iter().all(|u| u.staleness <= max), "{algorithm}");
        }
        if extra.contains("over_commitment") {
            for version in 1..=20 {
                assert_eq!(sink_1.updates.iter().filter(|u| u.applied_version == version).count(), 6);
            }
        }
    }
}

/// Runs with model versions, aggregation and updates kept as tensors on the training device
/// (on a GPU, the default; forced here on CPU): (hash, final weights, tables).
pub(crate) fn run_resident(config: &Config) -> (String, Vec<f32>, VecSink) {
    let mut sink = VecSink::default();
    let outcome = Simulation::build(config, &dirs(), Device::Cpu)
        .unwrap()
        .run_with::<DeviceWeights>(&mut sink, None)
        .unwrap();
    (weights_hash(&outcome.final_weights), outcome.final_weights, sink)
}

/// Device-resident versions keep the contract: any worker count gives the same result, alone
/// and in cohorts, for plain, down-weighted and interpolating server rules (the last needs the
/// clients' models on the device too). Against host versions only float rounding differs
/// (libtorch's add may fuse multiply and add where Rust's loop rounds twice): the same updates
/// are applied and the weights end within 1e-4 of their scale.
#[test]
fn device_resident_versions_give_one_result_for_any_worker_count_and_match_host_versions() {
    for (algorithm, extra) in [
        ("async_fl", "buffer_size = 2\nserver_lr = 0.5"),
        ("afl_dw", "buffer_size = 1\nserver_lr = -0.5\nbeta = { kind = \"cosine\", s_max = 3.0 }"),
        ("sync_fl", "server_lr = 1.0"),
    ] {
        let text = small(algorithm, extra);
        for cohort in [1, 4] {
            let (hash_1, weights_1, sink_1) = run_resident(&cohort_config(&text, 1, cohort));
            assert_eq!(sink_1.evals.last().unwrap().version, 20, "{algorithm}");
            for workers in [2, 4] {
                let (hash_n, _, sink_n) = run_resident(&cohort_config(&text, workers, cohort));
                let what = format!("{algorithm} cohort {cohort} on the device");
                assert_same_run(&what, workers, (&hash_n, &sink_n), (&hash_1, &sink_1));
            }
            let mut host_sink = VecSink::default();
            let host = Simulation::build(&cohort_config(&text, 2, cohort), &dirs(), Device::Cpu)
                .unwrap()
                .run(&mut host_sink, None)
                .unwrap();
            assert_eq!(
                applied_updates(&sink_1),
                applied_updates(&host_sink),
                "{algorithm}: the same updates are applied"
            );
            let difference = relative_difference(&weights_1, &host.final_weights);
            assert!(difference <= 1e-4, "{algorithm} cohort {cohort}: {difference:e} of the weights' scale");
            for (resident, host) in sink_1.evals.iter().zip(&host_sink.evals) {
                assert!(
                    (resident.accuracy - host.accuracy).abs() <= 0.01,
                    "{algorithm} version {}",
                    host.version
                );
            }
        }
    }
}

#[test]
fn the_plan_is_the_same_with_training_and_without() {
    let config = config(&small("async_fl", "buffer_size = 2\nserver_lr = 0.5"), 2);
    let (_, trained) = run(&config);
    let mut planned = Vec::new();
    let mut tasks = std::collections::HashMap::new();
    for step in Scheduler::new(plan_config(&config)) {
        match step {
            Step::Train(t) => {
                tasks.insert(t.task, t);
            }
            Step::Aggregate { version, inputs, .. } => {
                for input in inputs {
                    let t = &tasks[&input.task];
                    planned.push((
                        t.task,
                        t.client,
                        t.base_version,
                        version,
                        input.staleness,
                        t.dispatched_at.units(),
                        t.arrives_at.units(),
                    ));
                }
            }
            Step::Evaluate { .. } => {}
        }
    }
    let executed: Vec<_> = trained
        .updates
        .iter()
        .map(|u| {
            (u.task, u.client, u.base_version, u.applied_version, u.staleness, u.dispatched_at, u.arrived_at)
        })
        .collect();
    assert_eq!(executed, planned);
}

#[test]
fn the_setup_seed_decides_the_data_and_the_run_seed_what_runs() {
    let build = |seeds: &str| {
        let text =
            small("async_fl", "buffer_size = 2").replace("seed = 7\n", &format!("seed = 7\n{seeds}\n"));
        let config = config(&text, 1);
        let plan: Vec<Step> = Scheduler::new(plan_config(&config)).take(200).collect();
        (Simulation::build(&config, &dirs(), Device::Cpu).unwrap(), plan)
    };
    let (base, base_plan) = build("");
    let (other_run, run_plan) = build("run_seed = 8");
    let (other_setup, _) = build("setup_seed = 8");
    assert_eq!(
        base.experiment.trainer.partition.shards, other_run.experiment.trainer.partition.shards,
        "run seed: same shards"
    );
    assert_ne!(
        base.experiment.initial_weights, other_run.experiment.initial_weights,
        "run seed: another model"
    );
    assert_ne!(base_plan, run_plan, "run seed: other delay draws and selections");
    assert_ne!(
        base.experiment.trainer.partition.shards, other_setup.experiment.trainer.partition.shards,
        "setup seed: other shards"
    );
    assert_eq!(
        base.experiment.initial_weights, other_setup.experiment.initial_weights,
        "setup seed: same model"
    );
}

#[test]
fn zero_delay_sync_fedavg_is_textbook_fedavg() {
    use fedsim::data::augment::Normalize;
    use fedsim::nn::train::{train_local, TrainContext};
    use fedsim::sim::rng::{stream, Purpose};
    let zero = "[delays.download]\ndistribution = \"constant\"\nmean = 0.0\n\
                [delays.train]\ndistribution = \"constant\"\nmean = 0.0\n\
                [delays.upload]\ndistribution = \"constant\"\nmean = 0.0\n";
    let text = small("sync_fl", "server_lr = 1.0").replace("max_versions = 20", "max_versions = 3") + zero;
    let config = config(&text, 2);
    let (hash, _) = run(&config);
    let simulation = Simulation::build(&config, &dirs(), Device::Cpu).unwrap();
    let e = &simulation.experiment.trainer;
    let initial_weights = &simulation.experiment.initial_weights;
    let (mean, std) = e.dataset.kind.normalization();
    let normalize = Normalize::new(&mean, &std, Device::Cpu);
    let ctx = TrainContext { data: &e.dataset.train, normalize: &normalize, device: Device::Cpu };
    // theta_{r+1} = (1/K) sum_k theta_k, each client trained from theta_r; then, as in the
    // reference, the trackers of the new global model are reset (mean 0, variance 1).
    let resets = fedsim::nn::Model::new(e.spec.model, e.spec.input, Device::Cpu).layout.tracker_resets();
    let mut theta = initial_weights.clone();
    let mut round: Vec<(u64, u32)> = Vec::new();
    for step in Scheduler::new(plan_config(&config)) {
        match step {
            Step::Train(t) => round.push((t.task, t.client)),
            Step::Aggregate { inputs, .. } => {
                assert_eq!(inputs.len(), 6);
                let mut average = vec![0f64; theta.len()];
                for &(task, client) in &round {
                    let mut rng = stream(config.seed, Purpose::TrainTask, task);
                    let out =
                        train_local(&e.spec, &theta, &e.partition.shards[client as usize], &ctx, &mut rng)
                            .unwrap();
                    for (a, (t, d)) in average.iter_mut().zip(theta.iter().zip(&out.delta)) {
                        *a += (t + d) as f64 / round.len() as f64;
                    }
                }
                theta = average.into_iter().map(|a| a as f32).collect();
                for (range, value) in &resets {
                    theta[range.clone()].fill(*value);
                }
                round.clear();
            }
            Step::Evaluate { .. } => {}
        }
    }
    let mut sink = VecSink::default();
    let simulated =
        Simulation::build(&config, &dirs(), Device::Cpu).unwrap().run(&mut sink, None).unwrap().final_weights;
    assert_eq!(weights_hash(&simulated), hash);
    let worst =
        simulated.iter().zip(&theta).map(|(s, t)| (s - t).abs() / (1.0 + t.abs())).fold(0f32, f32::max);
    assert!(worst < 1e-5, "simulated FedAvg differs from textbook FedAvg by {worst}");
}

#[test]
fn fedsim_run_writes_a_complete_run_directory() {
    let dir = scratch("cli-run");
    let config_path = dir.join("tiny.toml");
    std::fs::write(&config_path, small("async_fl", "buffer_size = 2\nserver_lr = 0.5")).unwrap();
    let out = dir.join("runs");
    let (code, stdout, stderr) =
        fedsim(&["run", config_path.to_str().unwrap(), "--workers", "2", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 workers")
            && stdout.contains("client updates/s")
            && stdout.contains("workers busy"),
        "{stdout}"
    );
    let runs: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert!(run.file_name().unwrap().to_str().unwrap().starts_with("small-"));
    for file in
        ["config.toml", "run.json", "updates.parquet", "evals.parquet", "jobs.parquet", "final.safetensors"]
    {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["versions"], 20);
    assert_eq!(info["workers"], 2);
    // "auto" on CPU: every task alone, the two workers at once.
    assert_eq!((info["cohort_size"].as_u64(), info["concurrent_cohorts"].as_u64()), (Some(1), Some(2)));
    assert!(info["device_memory_peak_bytes"].is_null(), "no device memory on CPU");
    assert_eq!(info["stop_reason"], "max_versions");
    assert!(
        info["host"].as_str().unwrap().ends_with(" threads")
            || info["host"].as_str().unwrap().ends_with(" thread")
    );
    let updates = fedsim::record::read_parquet(&run.join("updates.parquet")).unwrap();
    assert_eq!(updates.height(), 40);
    let evals = fedsim::record::read_parquet(&run.join("evals.parquet")).unwrap();
    assert_eq!(evals.height(), 5, "versions 0, 5, 10, 15, 20");
    let hash = info["final_weights_sha256"].as_str().unwrap();
    assert!(stdout.contains(hash));
    let weights = tch::Tensor::read_safetensors(run.join("final.safetensors")).unwrap();
    assert!(weights.iter().any(|(name, _)| name == "fc3.weight"));
    // fedsim report reads the run back: at time 0 the initial model's accuracy, version 0.
    let first = evals.column("accuracy").unwrap().f64().unwrap().get(0).unwrap();
    let report = dir.join("report");
    let (code, stdout, stderr) =
        fedsim(&["report", run.to_str().unwrap(), "--out", report.to_str().unwrap(), "--at", "0,1000"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("report in"), "{stdout}");
    let table = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(table.contains("| virtual time | small |"), "{table}");
    assert!(table.contains(&format!("| 0 | {first:.4} (v0) |")), "{table}");
    assert!(table.contains("| 1000 |") && table.contains("(v20) |"), "{table}");
    // The run directory's config.toml runs again to the same weights, with any worker count,
    // and from any working directory: run.json names the commit of the checkout that holds the
    // binary, not of the directory fedsim was started in.
    let again = dir.join("again");
    let saved = run.join("config.toml");
    let data = crate::repo().join("data");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(["run", saved.to_str().unwrap(), "--workers", "1", "--out", again.to_str().unwrap()])
        .args(["--data-dir", data.to_str().unwrap()])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(hash), "{stdout}");
    assert!(std::fs::read_to_string(&saved).unwrap().contains("[algorithm]"), "the input format");
    let head = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let rerun = std::fs::read_dir(&again).unwrap().next().unwrap().unwrap().path();
    let rerun: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rerun.join("run.json")).unwrap()).unwrap();
    assert_eq!((info["git_commit"].as_str(), rerun["git_commit"].as_str()), (Some(&*head), Some(&*head)));
}

#[test]
fn bad_configs_fail_before_anything_is_written() {
    let dir = scratch("cli-bad-config");
    let out = dir.join("runs");
    let cases = [
        ("[algorithm]\nbuffer_size = 0\n[stop]\nmax_versions = 3", "algorithm.buffer_size = 0"),
        (
            "[algorithm]\nactive_jobs = 5000\n[stop]\nmax_versions = 3",
            "must be between 1 and data.num_clients (1000)",
        ),
        ("[delays.train]\nmean = -2.0\n[stop]\nmax_versions = 3", "delays.train.mean = -2"),
        (
            "[delays.upload]\nmixture = [[0.3, 0.1]]\n[stop]\nmax_versions = 3",
            "mixture probabilities must sum to 1",
        ),
        ("[stop]\nmax_versions = 3\nmax_epochs = 2", "unknown field `max_epochs`"),
    ];
    for (i, (text, expected)) in cases.into_iter().enumerate() {
        let path = dir.join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, stderr) = fedsim(&["run", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(expected) && stderr.contains(&format!("bad-{i}.toml"))
                || stderr.contains(expected),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists(), "nothing may be written for a bad config");
    }
    let empty = scratch("cli-no-data");
    let good = dir.join("good.toml");
    std::fs::write(&good, "[stop]\nmax_versions = 3").unwrap();
    let (code, _, stderr) = fedsim(&[
        "--data-dir",
        empty.to_str().unwrap(),
        "run",
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("fedsim data prepare"), "{stderr}");
    assert!(!out.exists(), "nothing may be written when data is missing");
}

#[test]
fn memory_stays_flat_over_thousands_of_versions() {
    // Tiny local updates so that 3,000 versions take seconds; only the bookkeeping is tested.
    let text = "seed = 3\n[data]\nnum_clients = 40\nclient_data_size = 16\n\
                [train]\nlocal_iters = 1\nbatch_size = 4\n\
                [algorithm]\nkind = \"async_fl\"\nactive_jobs = 8\nbuffer_size = 1\nserver_lr = 0.5\n\
                [eval]\ninterval = 100000\n[stop]\nmax_versions = 3000\n[run]\nlookahead = 8\n";
    let config = config(text, 2);
    let mut sink = VecSink::default();
    let outcome = Simulation::build(&config, &dirs(), Device::Cpu).unwrap().run(&mut sink, None).unwrap();
    assert_eq!(outcome.version, 3000);
    assert_eq!(sink.updates.len(), 3000);
    // K + lookahead planned tasks, plus at most K more to reach the next aggregation.
    let task_bound = 8 + 8 + 8;
    assert!(outcome.max_tasks_held <= task_bound, "{} tasks held", outcome.max_tasks_held);
    assert!(outcome.max_versions_held <= task_bound + 1, "{} versions held", outcome.max_versions_held);
    assert!(outcome.max_ready >= 2, "tasks should be ready in parallel");
}

#[test]
fn a_worker_sweep_runs_every_point_and_finds_identical_results() {
    let dir = scratch("cli-sweep");
    std::fs::write(dir.join("tiny.toml"), small("async_fl", "buffer_size = 2\nserver_lr = 0.5")).unwrap();
    std::fs::write(
        dir.join("sweep.toml"),
        "name = \"tiny-sweep\"\nconfigs = [\"tiny.toml\"]\n[set]\n\"stop.max_versions\" = 10\n[grid]\n\"run.workers\" = [1, 2]\n",
    )
    .unwrap();
    let out = dir.join("runs");
    let report = dir.join("report");
    let sweep = dir.join("sweep.toml");
    let (code, stdout, stderr) = fedsim(&[
        "sweep",
        sweep.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2, "one run directory per point");
    assert!(stdout.contains("sweep tiny-sweep: 2 runs"), "{stdout}");
    // The sweep ends with its report.
    assert!(stdout.contains("identical results: small, workers 1 = small, workers 2"), "{stdout}");
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(summary.contains("**small** (1, 2 workers): **identical**"), "{summary}");
    assert!(summary.contains(&format!("fedsim sweep {}", sweep.display())), "{summary}");
    assert!(summary.contains("| 1.00x | 100% |"), "the 1-worker run is its own baseline: {summary}");
    assert!(report.join("speedup.png").is_file());
    // A bad point fails before anything runs.
    std::fs::write(
        dir.join("bad.toml"),
        "configs = [\"tiny.toml\"]\n[grid]\n\"algorithm.buffer_size\" = [0]\n",
    )
    .unwrap();
    let bad_out = dir.join("bad-runs");
    let (code, _, stderr) =
        fedsim(&["sweep", dir.join("bad.toml").to_str().unwrap(), "--out", bad_out.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("algorithm.buffer_size = 0"), "{stderr}");
    assert!(!bad_out.exists());
}

/// Starts `fedsim run` on a FedBuff config that runs for minutes (2 workers), its output to
/// `stdio`; returns the process and its --out folder.
fn start_long_run(
    name: &str,
    stdio: fn() -> std::process::Stdio,
) -> (std::process::Child, std::path::PathBuf) {
    let dir = scratch(name);
    let config = dir.join("long.toml");
    std::fs::write(
        &config,
        "name = \"long\"\n[data]\nnum_clients = 100\nclient_data_size = 64\n[algorithm]\nkind = \"async_fl\"\nactive_jobs = 8\nbuffer_size = 1\nserver_lr = 0.5\n[eval]\ninterval = 5\n[stop]\nmax_versions = 100000\n",
    )
    .unwrap();
    let out = dir.join("runs");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(["run", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--workers", "2"])
        .current_dir(crate::repo())
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .unwrap();
    (child, out)
}

/// Rows reach the disk as the run goes: a run killed with SIGKILL leaves its rows up to the
/// last flush readable in segments/, in plan order.
#[test]
fn a_killed_run_keeps_the_rows_it_flushed() {
    let (mut child, out) = start_long_run("killed-run", std::process::Stdio::null);
    // Wait for the first flush (at an evaluation, 10 s after the start), then kill.
    let started = std::time::Instant::now();
    let segments = loop {
        let found = std::fs::read_dir(&out)
            .ok()
            .and_then(|mut runs| runs.next())
            .map(|run| run.unwrap().path().join(fedsim::record::stream::SEGMENTS))
            // A flush writes updates, then evals, then jobs: wait for its evals, or a kill
            // between the two files leaves a first segment without them.
            .filter(|s| s.join("updates-000001.parquet").exists() && s.join("evals-000001.parquet").exists());
        if let Some(segments) = found {
            break segments;
        }
        assert!(started.elapsed().as_secs() < 300, "no segment was written");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it flushed");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let updates = fedsim::record::stream::read_segments(&segments, "updates").unwrap().unwrap();
    let evals = fedsim::record::stream::read_segments(&segments, "evals").unwrap().unwrap();
    assert!(updates.height() > 0 && evals.height() > 0);
    let versions: Vec<u64> =
        updates.column("applied_version").unwrap().u64().unwrap().into_no_null_iter().collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "B = 1: one update per version, in order");
    assert_eq!(versions[0], 1);
    assert!(!segments.parent().unwrap().join("updates.parquet").exists(), "the run never finished");
}

/// run.cpu_kernels = "avx2" restarts fedsim with the CPU kernels pinned before libtorch loads:
/// run.json says libtorch dispatched to AVX2, and the pinned runs agree for 1 and 2 workers.
#[test]
fn cpu_kernels_pinned_to_avx2_are_used_and_recorded() {
    let dir = scratch("cpu-kernels");
    let config_path = dir.join("pinned.toml");
    std::fs::write(&config_path, small("async_fl", "buffer_size = 2\nserver_lr = 0.5")).unwrap();
    let run = |workers: &str, out: &str| {
        let out = dir.join(out);
        let (code, stdout, stderr) = fedsim(&[
            "run",
            config_path.to_str().unwrap(),
            "--set",
            "run.cpu_kernels=\"avx2\"",
            "--workers",
            workers,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let run = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        assert_eq!(info["cpu_capability"], "AVX2", "{info}");
        assert_eq!(info["cpu_kernels"], "avx2");
        assert!(std::fs::read_to_string(run.join("config.toml")).unwrap().contains("cpu_kernels = \"avx2\""));
        info["final_weights_sha256"].as_str().unwrap().to_owned()
    };
    assert_eq!(run("1", "one"), run("2", "two"));
}

/// With more than one server thread fedsim restarts with OMP_WAIT_POLICY=PASSIVE unless the
/// environment names a policy, and records the policy in run.json; the policy never changes
/// results.
#[test]
fn several_server_threads_wait_passively_unless_told_otherwise() {
    let dir = scratch("wait-policy");
    let config_path = dir.join("threads.toml");
    std::fs::write(&config_path, small("async_fl", "buffer_size = 2\nserver_lr = 0.5")).unwrap();
    let run = |threads: usize, policy: Option<&str>, out: &str| {
        let out = dir.join(out);
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fedsim"));
        command
            .args(["run", config_path.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args(["--set", &format!("run.server_threads={threads}")])
            .current_dir(crate::repo());
        match policy {
            Some(policy) => command.env("OMP_WAIT_POLICY", policy),
            None => command.env_remove("OMP_WAIT_POLICY"),
        };
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let run = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        (info["omp_wait_policy"].clone(), info["final_weights_sha256"].as_str().unwrap().to_owned())
    };
    let (policy, passive) = run(2, None, "unset");
    assert_eq!(policy, "PASSIVE");
    let (policy, active) = run(2, Some("ACTIVE"), "active");
    assert_eq!(policy, "ACTIVE", "a policy the environment names is kept");
    assert_eq!(active, passive, "the wait policy changes no result");
    let (policy, _) = run(1, None, "one-thread");
    assert!(policy.is_null(), "one server thread: no restart, libgomp's default ({policy})");
}

/// Ctrl-C (SIGINT) ends a run at its next step: its tables, run.json and a checkpoint are
/// written, the stop reason says so, and the command fails so that a sweep does not go on.
#[test]
fn ctrl_c_ends_a_run_cleanly_with_its_logs_written() {
    use std::io::BufRead;
    let (mut child, out) = start_long_run("interrupted-run", std::process::Stdio::piped);
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.trim_start().starts_with("results in") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the run ended before it started");
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    crate::send_sigint(&child);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("interrupted (Ctrl-C) at version"), "{stderr}");
    let run = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["stop_reason"], "interrupted");
    let updates = fedsim::record::read_parquet(&run.join("updates.parquet")).unwrap();
    assert_eq!(updates.height() as u64, info["updates_applied"].as_u64().unwrap());
    assert!(run.join("final.safetensors").exists());
    // A checkpoint at the point of interruption, with the segments it covers: resumable.
    assert!(stderr.contains("`fedsim resume"), "{stderr}");
    let checkpoint = fedsim::record::checkpoint::read(&run.join("checkpoint.safetensors")).unwrap();
    assert_eq!(checkpoint.snapshot.version, info["versions"].as_u64().unwrap());
    assert_eq!(checkpoint.snapshot.updates_applied, info["updates_applied"].as_u64().unwrap());
    assert!(run.join("segments").exists());
}

/// A write that fails (here a file over the process's size limit, as a full disk would fail
/// one) ends the run with an error naming the file, and the logs written before stay readable.
#[test]
fn a_failed_write_ends_the_run_with_a_clear_error_and_readable_logs() {
    let dir = scratch("file-size-limit");
    let config = dir.join("tiny.toml");
    std::fs::write(&config, small("async_fl", "buffer_size = 2\nserver_lr = 0.5")).unwrap();
    let out = dir.join("runs");
    // 200 KiB per file: the tables fit, the final weights (about 0.25 MB) do not.
    let script = format!(
        "ulimit -f 200; exec {} run {} --out {}",
        env!("CARGO_BIN_EXE_fedsim"),
        config.display(),
        out.display()
    );
    let output =
        std::process::Command::new("bash").args(["-c", &script]).current_dir(crate::repo()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("writing the final weights to") && stderr.contains("File too large"), "{stderr}");
    let run = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
    let updates = fedsim::record::read_parquet(&run.join("updates.parquet")).unwrap();
    assert_eq!(updates.height(), 40, "the tables were written before the weights");
    assert!(
        !run.join("final.safetensors").exists() && !run.join("final.partial.safetensors").exists(),
        "no half-written weights"
    );
}
