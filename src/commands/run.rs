//! `fedsim run` and `fedsim resume`: load and validate a config (a run directory's, for
//! resume, with its checkpoint), build the simulation, run it with a progress bar into a run
//! directory, taking checkpoints as it goes, and print what it cost.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::config::CpuKernels;
use crate::data::DataDirs;
use crate::exec::{EvalRecord, Progress, Sink, UpdateRecord};
use crate::params::weights_hash;
use crate::record::checkpoint;
use crate::record::stream::{CheckpointSettings, StreamingRecorder};
use crate::record::{git_commit, RunDir, RunInfo};
use crate::runtime::{self, DeviceChoice};
use crate::sched::summarize_watching;
use crate::simulation::{plan_config, Simulation};

/// Forwards rows to the recorder and keeps the progress bar current.
struct ProgressSink<'a> {
    recorder: &'a mut StreamingRecorder,
    bar: ProgressBar,
    horizon: Option<f64>,
    last_accuracy: Option<f64>,
}

impl Sink for ProgressSink<'_> {
    fn update(&mut self, record: UpdateRecord) {
        self.recorder.update(record);
    }
    fn eval(&mut self, record: EvalRecord) {
        self.last_accuracy = Some(record.accuracy);
        self.recorder.eval(record);
    }
    fn job(&mut self, record: crate::sched::JobRecord) {
        self.recorder.job(record);
    }
    fn check(&mut self) -> Result<(), crate::record::RecordError> {
        self.recorder.check()
    }
    fn checkpoint_due(&mut self, version: u64) -> bool {
        self.recorder.checkpoint_due(version)
    }
    fn checkpoint(&mut self, snapshot: &crate::saved::RunSnapshot) -> Result<(), crate::record::RecordError> {
        self.recorder.checkpoint(snapshot)
    }
    fn progress(&mut self, p: &Progress) {
        let position = match self.horizon {
            Some(_) => (p.virtual_time * 100.0) as u64,
            None => p.version,
        };
        self.bar.set_position(position);
        self.bar.set_message(format!(
            "t {:.2}  version {}  accuracy {}  {:.1} updates/s",
            p.virtual_time,
            p.version,
            self.last_accuracy.map_or("-".to_owned(), |a| format!("{a:.4}")),
            p.updates as f64 / p.elapsed.as_secs_f64().max(1e-9)
        ));
    }
}

/// Runs one config; returns its run directory.
pub fn run(
    dirs: &DataDirs,
    config_path: &Path,
    overrides: &[String],
    out: &Path,
) -> Result<std::path::PathBuf> {
    let config = Config::load(config_path, overrides)?;
    let device = start_runtime(&config)?;
    run_loaded(dirs, &config, out, device, &run_here)
}

/// A sweep point's run: kept where `out` already holds it finished by this build, continued
/// from its checkpoint where it was interrupted (killed, Ctrl-C, a full disk), run afresh
/// otherwise (a run of the same config by another build stays untouched); returns its run
/// directory. A run is this point's when its config.toml is the point's resolved config.
pub fn run_or_continue(
    dirs: &DataDirs,
    config_path: &Path,
    overrides: &[String],
    out: &Path,
) -> Result<std::path::PathBuf> {
    let config = Config::load(config_path, overrides)?;
    let device = start_runtime(&config)?;
    let provenance = checkpoint_settings(&config, device).provenance;
    match earlier_run(out, &config, &provenance)? {
        Some(Earlier::Finished(run_dir)) => {
            println!("kept {}: finished earlier by this build with this config", run_dir.display());
            Ok(run_dir)
        }
        Some(Earlier::Interrupted(run_dir, found)) => {
            resume_loaded(dirs, &run_dir, &config, *found, device, &run_here)
        }
        None => run_loaded(dirs, &config, out, device, &run_here),
    }
}

/// A run of a config found in an output folder.
enum Earlier {
    Finished(std::path::PathBuf),
    Interrupted(std::path::PathBuf, Box<checkpoint::Checkpoint>),
}

/// The latest run in `out` whose config.toml is `config` resolved and that this build made:
/// finished (run.json, no checkpoint) or resumable (a checkpoint). A damaged checkpoint is an
/// error, so that nothing is run twice unnoticed.
fn earlier_run(out: &Path, config: &Config, provenance: &checkpoint::Provenance) -> Result<Option<Earlier>> {
    let Ok(entries) = std::fs::read_dir(out) else { return Ok(None) };
    let mut candidates: Vec<std::path::PathBuf> =
        entries.filter_map(|entry| entry.ok().map(|e| e.path())).filter(|path| path.is_dir()).collect();
    // Run folders are named NAME-YYYYMMDD-HHMMSS(-N): the latest sorts last.
    candidates.sort();
    let wanted = config.to_input_toml();
    for run_dir in candidates.into_iter().rev() {
        if std::fs::read_to_string(run_dir.join("config.toml")).ok().as_deref() != Some(wanted.as_str()) {
            continue;
        }
        let checkpoint_file = checkpoint::path(&run_dir);
        if checkpoint_file.exists() {
            let found = checkpoint::read(&checkpoint_file).with_context(|| {
                format!(
                    "{} holds an earlier run of this point; remove the folder to run the point afresh",
                    run_dir.display()
                )
            })?;
            if checkpoint::mismatch(provenance, &found.provenance).is_none() {
                return Ok(Some(Earlier::Interrupted(run_dir, Box::new(found))));
            }
        } else if finished_by(&run_dir, provenance) {
            return Ok(Some(Earlier::Finished(run_dir)));
        }
    }
    Ok(None)
}

/// Whether run.json says the run finished (not interrupted) under `provenance`: the checks a
/// checkpoint must pass ([`checkpoint::mismatch`]), with the config already matched by its text.
fn finished_by(run_dir: &Path, provenance: &checkpoint::Provenance) -> bool {
    let Some(info) = std::fs::read_to_string(run_dir.join("run.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<RunInfo>(&text).ok())
    else {
        return false;
    };
    let interrupted = info.stop_reason == crate::exec::StopReason::Interrupted.to_string();
    let recorded = checkpoint::Provenance {
        fedsim_version: info.fedsim_version,
        git_commit: info.git_commit,
        config_sha256: provenance.config_sha256.clone(),
        device: info.device,
        cpu_capability: info.cpu_capability.unwrap_or_default(),
    };
    !interrupted && checkpoint::mismatch(provenance, &recorded).is_none()
}

/// Runs the simulation built from a run's config, on this process's workers or, in an MPI
/// job, on the other ranks.
type Runner<'a> = dyn Fn(Simulation, &mut dyn Sink, Option<crate::saved::RunSnapshot>) -> Result<crate::exec::RunOutcome>
    + 'a;

/// The [`Runner`] of a single process: this process's worker threads train.
fn run_here(
    simulation: Simulation,
    sink: &mut dyn Sink,
    resume: Option<crate::saved::RunSnapshot>,
) -> Result<crate::exec::RunOutcome> {
    Ok(simulation.run(sink, resume)?)
}

/// Builds a loaded config's simulation and runs it into a new run directory.
fn run_loaded(
    dirs: &DataDirs,
    config: &Config,
    out: &Path,
    device: tch::Device,
    runner: &Runner,
) -> Result<std::path::PathBuf> {
    // Everything that can fail on input fails here, before the run directory exists.
    check_reachable(config)?;
    let setup_started = Instant::now();
    let simulation = Simulation::build(config, dirs, device)?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let run_dir = RunDir::create(out, &config.name, false)
        .with_context(|| format!("creating a run folder in {}", out.display()))?;
    run_dir.write_config(&config.to_input_toml())?;
    let recorder =
        StreamingRecorder::new(&run_dir.path).with_checkpoints(checkpoint_settings(config, device));
    carry_out(config, run_dir, simulation, recorder, None, setup_seconds, runner)
}

/// `fedsim run` in an MPI job (feature `mpi`): rank 0 runs the experiment into its run
/// directory while the other ranks train ([`crate::cluster`]); one rank is a plain run.
#[cfg(feature = "mpi")]
pub fn run_in_job(dirs: &DataDirs, config_path: &Path, overrides: &[String], out: &Path) -> Result<()> {
    let config = Config::load(config_path, overrides)?;
    let device = crate::cluster::gpu_of_this_rank(start_runtime(&config)?);
    let Some(cluster) = crate::cluster::join()? else {
        return run_loaded(dirs, &config, out, device, &run_here).map(|_| ());
    };
    let result =
        in_job(&cluster, &config, dirs, device, |runner| run_loaded(dirs, &config, out, device, runner));
    cluster.finish(result)
}

/// `fedsim resume` in an MPI job: as [`run_in_job`], from the run directory's checkpoint.
#[cfg(feature = "mpi")]
pub fn resume_in_job(dirs: &DataDirs, run_dir: &Path, workers: Option<usize>) -> Result<()> {
    let (config, found) = load_resumable(run_dir, workers)?;
    let device = crate::cluster::gpu_of_this_rank(start_runtime(&config)?);
    let Some(cluster) = crate::cluster::join()? else {
        return resume_loaded(dirs, run_dir, &config, found, device, &run_here).map(|_| ());
    };
    let mut found = Some(found);
    let result = in_job(&cluster, &config, dirs, device, |runner| {
        resume_loaded(dirs, run_dir, &config, found.take().expect("rank 0 resumes once"), device, runner)
    });
    cluster.finish(result)
}

/// This rank's part of a job: training ranks serve; rank 0 waits until they are ready (before
/// anything is written) and then runs the experiment with them through `run`.
#[cfg(feature = "mpi")]
fn in_job(
    cluster: &crate::cluster::Cluster,
    config: &Config,
    dirs: &DataDirs,
    device: tch::Device,
    run: impl FnOnce(&Runner) -> Result<std::path::PathBuf>,
) -> Result<()> {
    if cluster.rank > 0 {
        return serve_rank(cluster, config, dirs, device);
    }
    if cluster.size == 1 {
        cluster.warn_if_cpus_are_short(config.workers);
        return run(&run_here).map(|_| ());
    }
    let ranks = crate::cluster::await_ranks(cluster)?;
    crate::cluster::last_words::install();
    let threads: usize = ranks.iter().map(|r| r.workers).sum();
    println!(
        "MPI job of {} ranks: rank 0 coordinates, ranks 1-{} train ({threads} worker threads in all)",
        cluster.size,
        cluster.size - 1
    );
    run(&|s, sink, resume| Ok(s.run_on_ranks(cluster, &ranks, sink, resume)?)).map(|_| ())
}

/// A training rank: builds the simulation as rank 0 does and trains what rank 0 sends.
#[cfg(feature = "mpi")]
fn serve_rank(
    cluster: &crate::cluster::Cluster,
    config: &Config,
    dirs: &DataDirs,
    device: tch::Device,
) -> Result<()> {
    let simulation = match Simulation::build(config, dirs, device) {
        Ok(simulation) => simulation,
        Err(error) => {
            let error = anyhow::Error::from(error).context(format!("rank {} could not start", cluster.rank));
            cluster.report_startup_failure(&error);
            // Rank 0 ends the job with the error; this rank's own end is the fallback.
            std::thread::sleep(cluster.silence);
            return Err(error);
        }
    };
    let threads = simulation.experiment.cohorts.concurrent_cohorts;
    cluster.warn_if_cpus_are_short(threads);
    let trainer = simulation.experiment.trainer;
    if device.is_cuda() {
        crate::cluster::serve::<crate::nn::device_weights::DeviceWeights>(cluster, trainer, threads)
    } else {
        crate::cluster::serve::<Vec<f32>>(cluster, trainer, threads)
    }
    .with_context(|| format!("rank {}", cluster.rank))
}

/// `fedsim resume RUN_DIR`: continues a run from its checkpoint, with the run directory's own
/// config (and, where given, another worker count), to exactly the results the uninterrupted
/// run would have had.
pub fn resume(dirs: &DataDirs, run_dir: &Path, workers: Option<usize>) -> Result<std::path::PathBuf> {
    let (config, found) = load_resumable(run_dir, workers)?;
    let device = start_runtime(&config)?;
    resume_loaded(dirs, run_dir, &config, found, device, &run_here)
}

/// A run directory's config (with another worker count, where given) and its checkpoint.
fn load_resumable(run_dir: &Path, workers: Option<usize>) -> Result<(Config, checkpoint::Checkpoint)> {
    anyhow::ensure!(
        run_dir.is_dir(),
        "{} is not a run directory (fedsim run writes them into runs/)",
        run_dir.display()
    );
    let config_file = run_dir.join("config.toml");
    anyhow::ensure!(
        config_file.is_file(),
        "{} has no config.toml: not a fedsim run directory",
        run_dir.display()
    );
    let checkpoint_file = checkpoint::path(run_dir);
    if !checkpoint_file.exists() {
        if run_dir.join("run.json").exists() {
            anyhow::bail!(
                "{} holds a finished run (run.json, no checkpoint): nothing to resume",
                run_dir.display()
            );
        }
        anyhow::bail!(
            "{} has no checkpoint: the run stopped before its first one (run.checkpoint_every, run.checkpoint_minutes); run it again with `fedsim run {}`",
            run_dir.display(),
            config_file.display()
        );
    }
    let overrides: Vec<String> = workers.map(|w| format!("run.workers={w}")).into_iter().collect();
    let config = Config::load(&config_file, &overrides)?;
    let found = checkpoint::read(&checkpoint_file)?;
    Ok((config, found))
}

/// Continues a run from its checkpoint, once the runtime has started.
fn resume_loaded(
    dirs: &DataDirs,
    run_dir: &Path,
    config: &Config,
    found: checkpoint::Checkpoint,
    device: tch::Device,
    runner: &Runner,
) -> Result<std::path::PathBuf> {
    let checkpoint_file = checkpoint::path(run_dir);
    let settings = checkpoint_settings(config, device);
    if let Some(why) = checkpoint::mismatch(&settings.provenance, &found.provenance) {
        anyhow::bail!(
            "{} cannot continue this run exactly: {why} (resume with the fedsim build, device and CPU kernels that started it)",
            checkpoint_file.display()
        );
    }
    let setup_started = Instant::now();
    let simulation = Simulation::build(config, dirs, device)?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let recorder = StreamingRecorder::resume(run_dir, found.segments)
        .with_context(|| format!("reading the log segments of {}", run_dir.display()))?
        .with_checkpoints(settings);
    println!(
        "resuming {} from its checkpoint at version {} (virtual time {:.2}, {} updates applied)",
        run_dir.display(),
        found.snapshot.version,
        found.snapshot.virtual_time,
        found.snapshot.updates_applied
    );
    let run_dir = RunDir { path: run_dir.to_owned() };
    carry_out(config, run_dir, simulation, recorder, Some(found.snapshot), setup_seconds, runner)
}

/// What a run's checkpoints are taken on and must match.
fn checkpoint_settings(config: &Config, device: tch::Device) -> CheckpointSettings {
    CheckpointSettings {
        every: config.checkpoint_every,
        period: std::time::Duration::from_secs_f64(config.checkpoint_minutes * 60.0),
        provenance: checkpoint::Provenance {
            fedsim_version: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: git_commit(),
            config_sha256: config.results_fingerprint(),
            device: runtime::describe(device),
            cpu_capability: runtime::cpu_capability(),
        },
    }
}

/// Sets what libtorch's libraries read when they load (the CPU kernel pins, the OpenMP wait
/// policy) by re-executing this process where they are missing, and resolves the device.
fn start_runtime(config: &Config) -> Result<tch::Device> {
    runtime::restart_unless_set_for_libtorch(config.cpu_kernels == CpuKernels::Avx2, config.server_threads)?;
    if config.cpu_kernels == CpuKernels::Native && runtime::avx2_pinned() {
        anyhow::bail!(
            "run.cpu_kernels = \"native\", but this process has the AVX2 pins set ({}); unset them, or set run.cpu_kernels = \"avx2\" (a sweep runs all its points with one setting)",
            runtime::AVX2_PINS.map(|(k, v)| format!("{k}={v}")).join(" ")
        );
    }
    let device = config.device.parse::<DeviceChoice>()?.resolve()?;
    config.precision.check(device)?;
    Ok(device)
}

/// Runs a built simulation into its run directory (from a snapshot, when resuming) and writes
/// the results: tables, final weights, run.json; prints the summary.
fn carry_out(
    config: &Config,
    run_dir: RunDir,
    simulation: Simulation,
    mut recorder: StreamingRecorder,
    resume: Option<crate::saved::RunSnapshot>,
    setup_seconds: f64,
    runner: &Runner,
) -> Result<std::path::PathBuf> {
    let cohorts = simulation.experiment.cohorts;
    let device = simulation.experiment.trainer.device;
    let resumed_from_version = resume.as_ref().map(|s| s.version);
    announce(config, device, cohorts, setup_seconds, &run_dir);
    let started = Instant::now();
    runtime::reset_peak_memory(device);
    let outcome = match run_with_progress(config, simulation, &mut recorder, resume, runner) {
        Ok(outcome) => outcome,
        Err(error) => return Err(record_failure(error, recorder, &run_dir.path)),
    };
    let device_peak = runtime::device_memory(device).map(|m| m.peak_allocated);
    let written = Written {
        wall: started.elapsed().as_secs_f64(),
        device_peak,
        last: recorder.last_eval.clone(),
        evals: recorder.evals,
        checkpoints_written: recorder.checkpoints_written,
        checkpoint_seconds: recorder.checkpoint_time.as_secs_f64(),
        checkpoint_bytes: recorder.checkpoint_bytes,
        hash: weights_hash(&outcome.run.final_weights),
    };
    recorder.finish().context("writing the run's Parquet tables")?;
    write_results(config, &run_dir, &outcome, &written, cohorts, device, resumed_from_version)?;
    let run = &outcome.run;
    let interrupted = run.stop == crate::exec::StopReason::Interrupted;
    print_summary(config, &outcome, &written, device, &run_dir);
    // An interrupted run is recorded, but a sweep must not go on to its next point.
    anyhow::ensure!(
        !interrupted,
        "interrupted (Ctrl-C) at version {}; what ran is in {}{}",
        run.version,
        run_dir.path.display(),
        if checkpoint::path(&run_dir.path).exists() {
            format!("; `fedsim resume {}` continues it", run_dir.path.display())
        } else {
            String::new()
        }
    );
    Ok(run_dir.path)
}

/// What the end of a run measured besides its outcome, for run.json and the summary.
struct Written {
    wall: f64,
    device_peak: Option<u64>,
    last: Option<EvalRecord>,
    evals: u64,
    checkpoints_written: u64,
    checkpoint_seconds: f64,
    checkpoint_bytes: u64,
    hash: String,
}

/// The run's first lines: what runs where, its start-up time, its cohorts and its folder.
fn announce(
    config: &Config,
    device: tch::Device,
    cohorts: crate::exec::sizing::CohortPlan,
    setup_seconds: f64,
    run_dir: &RunDir,
) {
    println!(
        "fedsim run {}: {} on {}, {} worker{}, {} clients in flight (K), buffer {}; {} tasks ready at the start",
        config.name,
        config.algorithm.name(),
        runtime::describe(device),
        config.workers,
        if config.workers == 1 { "" } else { "s" },
        config.active_jobs,
        config.buffer_size,
        config.active_jobs,
    );
    println!(
        "  start-up {:.2} s (load {}, split, partition {} clients, initial model)",
        setup_seconds, config.dataset, config.num_clients
    );
    println!(
        "  cohorts of {} task{} (run.cohort_size = {}), {} at once{}",
        cohorts.cohort_size,
        if cohorts.cohort_size == 1 { "" } else { "s" },
        toml::Value::try_from(config.cohort_size).map_or("?".to_owned(), |v| v.to_string()),
        cohorts.concurrent_cohorts,
        device_memory_line(device)
    );
    println!("  results in {}", run_dir.path.display());
}

/// Runs the simulation behind a progress bar; a libtorch panic on this thread becomes an error.
fn run_with_progress(
    config: &Config,
    simulation: Simulation,
    recorder: &mut StreamingRecorder,
    resume: Option<crate::saved::RunSnapshot>,
    runner: &Runner,
) -> Result<Finished> {
    let horizon = config.max_virtual_time;
    let length = horizon.map_or(config.max_versions.unwrap_or(0), |h| (h * 100.0) as u64);
    let template = if horizon.is_some() {
        "{bar:30} virtual time {elapsed_precise} {msg}"
    } else {
        "{bar:30} {pos}/{len} versions {elapsed_precise} {msg}"
    };
    let bar = ProgressBar::new(length).with_style(ProgressStyle::with_template(template)?);
    let outcome = {
        let mut sink =
            ProgressSink { recorder: &mut *recorder, bar: bar.clone(), horizon, last_accuracy: None };
        // A libtorch error on the coordinating thread (server step, evaluation) is a panic too.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            simulation_run(simulation, &mut sink, resume, runner)
        }))
        .unwrap_or_else(|panic| {
            Err(crate::exec::workers::panic_error(panic, "in the server step or an evaluation").into())
        })
    };
    bar.finish_and_clear();
    outcome
}

/// Keeps what a failed run recorded (its tables so far, and failure.txt saying why) and returns
/// the error to report, naming where that is and whether `fedsim resume` can continue it.
fn record_failure(error: anyhow::Error, recorder: StreamingRecorder, run_dir: &Path) -> anyhow::Error {
    let (updates, evals) = (recorder.updates, recorder.evals);
    if let Err(finishing) = recorder.finish().context("writing the tables of a failed run") {
        return finishing;
    }
    let reason = format!("{error:#}\n");
    let failure = run_dir.join("failure.txt");
    if let Err(writing) = std::fs::write(&failure, &reason) {
        return anyhow::Error::from(writing).context(format!("writing {}", failure.display()));
    }
    let resumable = checkpoint::path(run_dir).exists();
    error.context(format!(
        "the run stopped after {updates} updates and {evals} evaluations, which are in {} (failure.txt says why){}",
        run_dir.display(),
        if resumable { "; `fedsim resume` continues it from its last checkpoint" } else { "" }
    ))
}

/// The final weights and run.json; a complete run's checkpoint and log segments go.
fn write_results(
    config: &Config,
    run_dir: &RunDir,
    outcome: &Finished,
    written: &Written,
    cohorts: crate::exec::sizing::CohortPlan,
    device: tch::Device,
    resumed_from_version: Option<u64>,
) -> Result<()> {
    let mut model = crate::nn::Model::new(config.model, outcome.input, tch::Device::Cpu);
    model
        .save(&outcome.run.final_weights, &run_dir.weights_path())
        .with_context(|| format!("writing the final weights to {}", run_dir.weights_path().display()))?;
    let run = &outcome.run;
    run_dir.write_info(&RunInfo {
        log_format: crate::record::LOG_FORMAT,
        name: config.name.clone(),
        algorithm: config.algorithm.name().to_owned(),
        seed: config.seed,
        setup_seed: Some(config.setup_seed),
        run_seed: Some(config.run_seed),
        server_threads: config.server_threads,
        fedsim_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: git_commit(),
        libtorch: runtime::LIBTORCH_VERSION.to_owned(),
        device: runtime::describe(device),
        host: runtime::host_cpu(),
        cpu_vector_extensions: Some(runtime::cpu_vector_extensions().to_owned()),
        cpu_capability: Some(runtime::cpu_capability()),
        cpu_kernels: Some(format!("{:?}", config.cpu_kernels).to_lowercase()),
        precision: Some(config.precision.name().to_owned()),
        omp_wait_policy: runtime::omp_wait_policy(),
        workers: config.workers,
        cohort_size: cohorts.cohort_size,
        concurrent_cohorts: Some(cohorts.concurrent_cohorts),
        device_memory_peak_bytes: written.device_peak,
        versions: run.version,
        virtual_time: run.virtual_time,
        wall_seconds: written.wall,
        stop_reason: run.stop.to_string(),
        final_weights_sha256: written.hash.clone(),
        tasks_trained: run.tasks_trained,
        updates_applied: run.updates_applied,
        train_seconds: run.train_time.as_secs_f64(),
        server_seconds: run.server_time.as_secs_f64(),
        eval_seconds: run.eval_time.as_secs_f64(),
        checkpoints_written: Some(written.checkpoints_written),
        checkpoint_seconds: Some(written.checkpoint_seconds),
        resumed_from_version,
        ranks: run.ranks.clone(),
    })?;
    if run.stop != crate::exec::StopReason::Interrupted {
        // Complete: its checkpoint and segments are no longer needed.
        crate::record::stream::tidy(&run_dir.path).with_context(|| {
            format!("removing the checkpoint of the finished run {}", run_dir.path.display())
        })?;
    }
    Ok(())
}

/// The closing lines: why the run stopped, what it cost and where it is.
fn print_summary(
    config: &Config,
    outcome: &Finished,
    written: &Written,
    device: tch::Device,
    run_dir: &RunDir,
) {
    let run = &outcome.run;
    let rounds = run.updates_applied as f64 / config.active_jobs as f64;
    // Over MPI the training threads are the ranks'; rank 0 only coordinates.
    let training_threads =
        if run.ranks.is_empty() { config.workers } else { run.ranks.iter().map(|r| r.workers).sum() };
    let last = written.last.as_ref();
    println!(
        "stopped: {} at version {}, virtual time {:.2}; final accuracy {}",
        run.stop,
        run.version,
        run.virtual_time,
        last.map_or("-".to_owned(), |e| format!("{:.4} (version {})", e.accuracy, e.version))
    );
    println!(
        "wall {:.1} s: {:.1} ms per version, {:.1} ms per round of K updates, {:.1} client updates/s",
        written.wall,
        written.wall * 1e3 / run.version.max(1) as f64,
        written.wall * 1e3 / rounds.max(1e-9),
        run.updates_applied as f64 / written.wall
    );
    println!(
        "workers busy {:.0}% (training {:.1} s over {} tasks; server {:.2} s; evaluation {:.1} s); up to {} tasks ready at once",
        100.0 * run.busy_share(training_threads),
        run.train_time.as_secs_f64(),
        run.tasks_trained,
        run.server_time.as_secs_f64(),
        run.eval_time.as_secs_f64(),
        run.max_ready
    );
    for rank in &run.ranks {
        println!(
            "  rank {} ({}): {} tasks in {} cohorts, its {} workers busy {:.0}%",
            rank.rank,
            rank.host,
            rank.tasks,
            rank.cohorts,
            rank.workers,
            100.0 * rank.train_seconds / (written.wall * rank.workers as f64).max(1e-9)
        );
    }
    if !run.ranks.is_empty() {
        println!(
            "  rank 0 (coordinator): server {:.1} s and evaluation {:.1} s, {:.0}% of the wall time",
            run.server_time.as_secs_f64(),
            run.eval_time.as_secs_f64(),
            100.0 * (run.server_time + run.eval_time).as_secs_f64() / written.wall.max(1e-9)
        );
    }
    let evals = written.evals.max(1);
    println!(
        "evaluation {:.3} s each on {} test images; peak memory {}",
        run.eval_time.as_secs_f64() / evals as f64,
        outcome.test_images,
        peak_memory().map_or("unknown".to_owned(), |kb| format!("{:.0} MB", kb as f64 / 1024.0))
    );
    if let Some(peak) = written.device_peak {
        println!(
            "device memory: peak {:.2} GiB allocated while training{}",
            runtime::gib(peak),
            device_memory_line(device)
        );
    }
    if written.checkpoints_written > 0 {
        println!(
            "checkpoints: {} of {:.1} MB (the last), {:.3} s each to write (logs flushed with each)",
            written.checkpoints_written,
            written.checkpoint_bytes as f64 / 1e6,
            written.checkpoint_seconds / written.checkpoints_written as f64
        );
    }
    println!("final weights sha256 {}", written.hash);
    println!("results in {}", run_dir.path.display());
}

struct Finished {
    run: crate::exec::RunOutcome,
    input: crate::nn::InputSpec,
    test_images: usize,
}

fn simulation_run(
    simulation: Simulation,
    sink: &mut dyn Sink,
    resume: Option<crate::saved::RunSnapshot>,
    runner: &Runner,
) -> Result<Finished> {
    let input = simulation.experiment.trainer.spec.input;
    let test_images = simulation.experiment.trainer.dataset.test.len();
    Ok(Finished { run: runner(simulation, sink, resume)?, input, test_images })
}

/// "; device memory X GiB in use of Y GiB" on a GPU, nothing on CPU.
fn device_memory_line(device: tch::Device) -> String {
    runtime::device_memory(device).map_or(String::new(), |m| {
        format!(
            "; device memory {:.2} GiB in use of {:.2} GiB",
            runtime::gib(m.total - m.free),
            runtime::gib(m.total)
        )
    })
}

/// The process's peak resident memory in kB (Linux), for the end-of-run summary.
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The most versions a run may be planned to make: at the fastest rate measured (about 35
/// versions a second, the ConvNet quickstart on an H200) 10^8 versions take a month.
pub const REACHABLE_VERSIONS: f64 = 1e8;

/// Refuses a virtual-time horizon whose run could never end (`fedsim plan` may plan such a
/// horizon: it says how far it got and stops on Ctrl-C): plans its beginning (for at most
/// 0.2 s) and extrapolates the versions per time unit to the horizon. A plan that ends within
/// the probe, or a run bounded by stop.max_versions, passes.
fn check_reachable(config: &Config) -> Result<()> {
    let Some(horizon) = config.max_virtual_time else { return Ok(()) };
    if config.max_versions.is_some_and(|v| v as f64 <= REACHABLE_VERSIONS) {
        return Ok(());
    }
    let started = Instant::now();
    let mut within_probe = |_: &crate::sched::PlanSummary| started.elapsed().as_secs_f64() < 0.2;
    let (probe, end) = summarize_watching(plan_config(config), &mut within_probe);
    if end.is_some() || probe.virtual_time <= 0.0 {
        return Ok(());
    }
    let estimate = probe.versions as f64 / probe.virtual_time * horizon;
    anyhow::ensure!(
        estimate <= REACHABLE_VERSIONS,
        "stop.max_virtual_time = {horizon}: the plan would make about {estimate:.1e} versions ({} in its first {:.1} time units), more than the {REACHABLE_VERSIONS:.0e} a run can reach; give a shorter horizon or set stop.max_versions",
        probe.versions,
        probe.virtual_time
    );
    Ok(())
}
