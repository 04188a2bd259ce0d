//! The command line: parses arguments (clap) and hands them to [`crate::commands`]. Errors
//! reach the user as one clear message and a non-zero exit code, never a panic.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::commands::{self, bench};
use crate::data::{self, DataDirs, DatasetKind};
use crate::nn::central::CentralOptions;
use crate::nn::train::OptimizerKind;
use crate::nn::ModelKind;
use crate::report::ReportOptions;
use crate::runtime::DeviceChoice;

#[derive(Parser, Debug)]
#[command(name = "fedsim", version, about = "Deterministic discrete-event simulator for federated learning")]
pub struct Cli {
    /// Folder of prepared datasets (holds cifar-10-batches-bin/).
    #[arg(long, global = true, default_value = "data")]
    data_dir: PathBuf,
    /// Folder of Fashion-MNIST's IDX files.
    #[arg(long, global = true, default_value = data::idx::DEBIAN_DIR)]
    fashion_mnist_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print fedsim's and libtorch's versions, CUDA devices, CPU threads and where data is.
    Info,
    /// Prepare datasets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Train one model centrally on the 37,500 training images: the federated upper bound.
    #[command(allow_negative_numbers = true)]
    TrainCentral {
        #[arg(long, default_value = "convnet")]
        model: ModelKind,
        #[arg(long, default_value = "cifar10")]
        dataset: DatasetKind,
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        #[arg(long, default_value = "adam")]
        optimizer: OptimizerKind,
        #[arg(long, default_value_t = 10)]
        seed: u64,
        /// auto, cpu or cuda.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Run a federated simulation from a config file into runs/<name>-<timestamp>/.
    #[command(allow_negative_numbers = true)]
    Run {
        config: PathBuf,
        /// Training threads (overrides run.workers).
        #[arg(long)]
        workers: Option<usize>,
        /// Master seed (overrides seed; at most 2^63 - 1, the largest TOML integer).
        #[arg(long, value_parser = seed_value)]
        seed: Option<u64>,
        /// Override any config key, e.g. --set algorithm.buffer_size=1 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// auto, cpu or cuda (overrides run.device).
        #[arg(long)]
        device: Option<DeviceChoice>,
        /// Folder for run directories.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
    },
    /// Continue a run from its checkpoint (after a crash, a kill, Ctrl-C or a full disk), with
    /// its own config.toml, to exactly the results of an uninterrupted run.
    Resume {
        run_dir: PathBuf,
        /// Training threads (any count: results do not depend on it).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Run a grid of configs (a sweep file), each into its own run directory, then report them.
    Sweep {
        sweep: PathBuf,
        /// Folder for the sweep's run directories (default runs/<sweep name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Folder for the report (default reports/<sweep name>).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Compare run directories: summary.md with cost, speed-up, accuracy and determinism
    /// tables, and figures (PNG and SVG).
    #[command(allow_negative_numbers = true)]
    Report {
        /// Run directories, as `fedsim run` and `fedsim sweep` write them.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Folder for summary.md and the figures, e.g. reports/my-comparison.
        #[arg(long)]
        out: PathBuf,
        /// Virtual times for the accuracy table, comma-separated (default: round steps).
        #[arg(long, value_delimiter = ',', value_parser = time_at)]
        at: Option<Vec<f64>>,
        /// Target accuracies for time-to-accuracy, comma-separated (default: 0.2, 0.3, ...
        /// up to the best accuracy reached); a fraction, or a percentage such as 80%.
        #[arg(long, value_delimiter = ',', value_parser = accuracy_target)]
        targets: Option<Vec<f64>>,
    },
    /// Print a config's schedule (versions, client jobs, staleness) without training.
    #[command(allow_negative_numbers = true)]
    Plan {
        config: PathBuf,
        /// Virtual-time horizon in time units (replaces the config's stop conditions).
        #[arg(long, value_parser = positive_time)]
        horizon: Option<f64>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Throughput measurements that run where cargo does not (e.g. on a GPU machine).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Build data/cifar-10-batches-bin/ (official binary layout) and check it; a no-op when
    /// it is already there.
    Prepare {
        /// A .tar.gz of <split>/<class>/*.jpg|png, an official cifar-10-batches-bin folder, or
        /// an image folder with train/ and test/. Default: ../shared/data/cifar10-jpeg.tar.gz.
        #[arg(long)]
        from: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Time FedRevive's per-arrival server step: synthesis (generator) plus KD steps.
    Distill {
        #[arg(long, default_value = "convnet")]
        model: ModelKind,
        /// Generator width (the reference's ngf).
        #[arg(long, default_value_t = 128)]
        ngf: i64,
        #[arg(long, default_value_t = 8)]
        teachers: usize,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// libtorch threads on CPU (a config's run.server_threads).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Teachers as one stacked model (true) or one by one (false); default: stacked on a
        /// GPU, one by one on CPU, as runs do.
        #[arg(long)]
        stacked: Option<bool>,
        #[command(flatten)]
        device: bench::BenchDevice,
    },
    /// Time FedAvg rounds: N client updates from one base, trained in cohorts of G (stacked
    /// models) on W workers, as a run trains them; prints seconds per round and samples per
    /// second, and on a GPU the memory per client.
    Round(bench::RoundOptions),
    /// Train N reference jobs from one base as one stacked cohort and each alone, and compare
    /// each client's delta against the README's bound (the cohort contract on this device).
    Cohort(bench::CohortOptions),
    /// Time client local updates (the reference's job: 25 Adam steps of batch 32 on a
    /// 350-sample Dirichlet shard) and check that a repeated task gives the same delta.
    LocalUpdate {
        #[arg(long, default_value = "convnet")]
        model: ModelKind,
        #[arg(long, default_value = "cifar10")]
        dataset: DatasetKind,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        #[arg(long, default_value_t = 25)]
        local_iters: usize,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[arg(long, default_value_t = 10)]
        seed: u64,
        #[command(flatten)]
        device: bench::BenchDevice,
    },
}

/// Runs the command line; errors print as `error: ...` with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::exec::interrupt::install();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let dirs = DataDirs { root: cli.data_dir, fashion_mnist: cli.fashion_mnist_dir };
    match cli.command {
        Command::Info => commands::info::info(&dirs),
        Command::Data { command: DataCommand::Prepare { from } } => {
            commands::prepare::prepare(&dirs, from.as_deref())
        }
        Command::TrainCentral { model, dataset, epochs, batch_size, lr, optimizer, seed, device } => {
            let options = CentralOptions { model, epochs, batch_size, lr, optimizer, seed };
            commands::train_central::train_central(&dirs, dataset, &options, device)
        }
        Command::Run { config, workers, seed, mut overrides, device, out } => {
            overrides.extend(workers.map(|w| format!("run.workers={w}")));
            overrides.extend(seed.map(|s| format!("seed={s}")));
            overrides.extend(device.map(|d| format!("run.device=\"{d}\"")));
            #[cfg(feature = "mpi")]
            if crate::cluster::launched_by_mpi() {
                return commands::run::run_in_job(&dirs, &config, &overrides, &out);
            }
            commands::run::run(&dirs, &config, &overrides, &out).map(|_| ())
        }
        Command::Resume { run_dir, workers } => {
            #[cfg(feature = "mpi")]
            if crate::cluster::launched_by_mpi() {
                return commands::run::resume_in_job(&dirs, &run_dir, workers);
            }
            commands::run::resume(&dirs, &run_dir, workers).map(|_| ())
        }
        Command::Sweep { sweep, out, report } => {
            #[cfg(feature = "mpi")]
            if crate::cluster::launched_by_mpi() {
                return commands::sweep::run_in_job(&dirs, &sweep, out, report);
            }
            commands::sweep::run(&dirs, &sweep, out, report)
        }
        Command::Report { runs, out, at, targets } => {
            let command = std::iter::once("fedsim".to_owned()).chain(std::env::args().skip(1)).collect();
            let options =
                ReportOptions { out, times: at, targets, command: commands::report::shell_words(command) };
            commands::report::report(&runs, &options)
        }
        Command::Plan { config, horizon, mut overrides } => {
            if let Some(h) = horizon {
                overrides.push(format!("stop.max_virtual_time={h}"));
            }
            commands::plan::plan(&config, &overrides, horizon.is_some())
        }
        Command::Bench {
            command: BenchCommand::Distill { model, ngf, teachers, repeats, threads, stacked, device },
        } => bench::distill(model, ngf, teachers, repeats, threads, stacked, &device),
        Command::Bench {
            command:
                BenchCommand::LocalUpdate { model, dataset, repeats, local_iters, batch_size, seed, device },
        } => bench::local_update(&dirs, model, dataset, repeats, local_iters, batch_size, seed, &device),
        Command::Bench { command: BenchCommand::Round(options) } => bench::round(&dirs, &options),
        Command::Bench { command: BenchCommand::Cohort(options) } => bench::cohort(&dirs, &options),
    }
}

/// A master seed: a whole number from 0 to 2^63 - 1 (the largest TOML integer).
fn seed_value(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(seed) if seed <= i64::MAX as u64 => Ok(seed),
        _ => Err(format!(
            "'{text}' is not a seed: a seed is a whole number, and this is not in 0..={}",
            i64::MAX
        )),
    }
}

/// A virtual time for the report's accuracy table: finite and not negative.
fn time_at(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(format!("'{text}' is not a virtual time (a finite number of time units, 0 or more)")),
    }
}

/// A target accuracy: a fraction in (0, 1], or a percentage in (0%, 100%].
fn accuracy_target(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(percent) => (percent, 0.01),
        None => (text, 1.0),
    };
    match number.trim().parse::<f64>().map(|v| v * scale) {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!(
            "'{text}' is not an accuracy; give a fraction above 0 and at most 1 (0.8) or a percentage (80%)"
        )),
    }
}

/// A positive, finite number of virtual time units.
fn positive_time(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(t) if t.is_finite() && t > 0.0 => Ok(t),
        _ => Err(format!("'{text}' is not a positive, finite virtual time")),
    }
}
