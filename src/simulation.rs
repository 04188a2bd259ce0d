//! Setting up a run: from a validated [`Config`] to a [`Simulation`] that can only run. The
//! builder loads and partitions the data, draws the initial model and wires the scheduler,
//! the server rule and the executor; nothing here trains.

use std::sync::Arc;

use tch::Device;

use crate::config::algorithms::{Arrival, Distillation};
use crate::config::{CohortSize, Config, LateUpdatesConfig};
use crate::data::augment::Augment;
use crate::data::partition::Partition;
use crate::data::partition::PartitionError;
use crate::data::DataError;
use crate::data::Dataset;
use crate::data::{partition, split, DataDirs};
use crate::exec::sizing::{resident_bytes, size_cohorts, CohortPlan, DoesNotFit};
use crate::exec::trainer::{TorchEvaluator, TorchTrainer};
use crate::exec::{
    execute, Engines, ExecError, ExecSettings, RunOutcome, RunSnapshot, Sink, ThreadWorkers, TrainError,
    Trainer, Workers,
};
use crate::fl::lr_schedule::LrSchedule;
use crate::fl::revive::{Distiller, ReviveSchedule, TeacherBuffer};
use crate::fl::server::{Revive, Server};
use crate::fl::{ServerOptimizerSettings, ServerRule};
use crate::nn::device_weights::{DeviceWeights, TorchWeights};
use crate::nn::dfkd::DataFreeDistiller;
use crate::nn::kd::RealDataDistiller;
use crate::nn::train::TrainSpec;
use crate::nn::{initial_weights, InputSpec};
use crate::sched::{Fate, LateUpdates, Plan, PlanConfig, Policy, RoundDeadline, Scheduler};
use crate::sim::time::{SimDuration, SimTime};

/// Why a run could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("partitioning the training data")]
    Partition(#[source] PartitionError),
    #[error(
        "run.cohort_size = \"auto\" could not read the device's memory; set run.cohort_size to a number"
    )]
    MemoryUnreadable,
    #[error("run.cohort_size = \"auto\"")]
    DoesNotFit(#[source] DoesNotFit),
    #[error(transparent)]
    Model(#[from] crate::nn::NnError),
}

/// The scheduler's view of a config.
pub fn plan_config(config: &Config) -> PlanConfig {
    PlanConfig {
        policy: match config.algorithm.row().arrival {
            Arrival::Rounds => Policy::Sync {
                over_commitment: config.over_commitment,
                deadline: config.round_deadline.map(|after| RoundDeadline {
                    after: SimDuration::from_units(after),
                    late: match config.late_updates {
                        LateUpdatesConfig::Drop => LateUpdates::Drop,
                        LateUpdatesConfig::Carry => LateUpdates::Carry,
                    },
                }),
            },
            Arrival::Buffered => Policy::Buffered {
                buffer_size: config.buffer_size,
                max_staleness: config.max_staleness,
                min_hole_to_fill: config.min_hole_to_fill,
            },
        },
        active_jobs: config.active_jobs,
        num_clients: config.num_clients,
        delays: config.delays.clone(),
        setup_seed: config.setup_seed,
        run_seed: config.run_seed,
        eval_interval: config.eval_interval,
        max_versions: config.max_versions,
        max_virtual_time: config.max_virtual_time.map(SimTime::from_units),
        client_reuse: config.client_reuse,
        max_model_history: config.max_model_history,
        update_timeout: config.update_timeout.map(SimDuration::from_units),
        availability: config.availability.clone(),
        topology: config.topology.as_ref().map(|t| t.topology()),
    }
}

/// The server rule of a config's algorithm.
pub fn server_rule(config: &Config) -> ServerRule {
    ServerRule {
        server_lr: config.server_lr,
        weighting: config.client_weighting,
        staleness: config.staleness_weight,
        down_weight: config.algorithm.row().down_weight.then_some(config.beta),
    }
}

/// FedRevive's gates (none for DD-FedRevive) and beta.
fn revive_schedule(config: &Config) -> ReviveSchedule {
    ReviveSchedule { beta: config.beta, gates: config.kd.gates }
}

/// Everything a run needs besides the plan and the server: the initial model, the trainer its
/// workers share, the executor's settings, the cohort plan and the coordinating thread's
/// libtorch threads.
pub struct Experiment {
    /// Version 0, drawn from the run seed (on the host).
    pub initial_weights: Vec<f32>,
    pub trainer: TorchTrainer,
    pub settings: ExecSettings,
    /// Tasks per cohort and cohorts at once (run.cohort_size resolved; workers when fixed).
    pub cohorts: CohortPlan,
    /// libtorch threads of the coordinating thread (server step and evaluation) on CPU.
    pub server_threads: usize,
}

/// run.cohort_size resolved: a fixed size trains with run.workers cohorts at once; "auto" is 1
/// on CPU and, on a GPU, sized from free device memory, what stays resident (the model has
/// `weights` floats) and the model's measured footprint.
fn cohort_plan(
    config: &Config,
    spec: &TrainSpec,
    dataset: &Dataset,
    partition: &Partition,
    weights: usize,
    device: Device,
) -> Result<CohortPlan, SetupError> {
    let fixed = |cohort_size| CohortPlan { cohort_size, concurrent_cohorts: config.workers };
    match config.cohort_size {
        CohortSize::Fixed(size) => Ok(fixed(size)),
        CohortSize::Auto if device == Device::Cpu => Ok(fixed(1)),
        CohortSize::Auto => {
            let (mean, std) = dataset.kind.normalization();
            let normalize = crate::data::augment::Normalize::new(&mean, &std, device);
            let ctx = crate::nn::train::TrainContext { data: &dataset.train, normalize: &normalize, device };
            let unreadable = || SetupError::MemoryUnreadable;
            let per_client = crate::nn::cohort::measure_client_footprint(spec, &partition.shards[0], &ctx)
                .ok_or_else(unreadable)?;
            let free = crate::runtime::device_memory(device).ok_or_else(unreadable)?.free;
            let weight_bytes = weights as u64 * 4;
            let tasks_held = config.active_jobs + config.lookahead;
            let resident = resident_bytes(weight_bytes, tasks_held, 1 + spec.return_model as u64);
            size_cohorts(free, resident, per_client, config.workers, config.active_jobs)
                .map_err(SetupError::DoesNotFit)
        }
    }
}

/// A wired simulation, ready to run once.
pub struct Simulation {
    scheduler: Scheduler,
    pub experiment: Experiment,
    server: ServerParts,
}

/// FedRevive's distillers, built before the run knows where its weights live.
enum AnyDistiller {
    DataFree(Box<DataFreeDistiller>),
    RealData(Box<RealDataDistiller>),
}

/// The server's parts; the server itself is made for the run's kind of weights.
struct ServerParts {
    rule: ServerRule,
    optimizer: ServerOptimizerSettings,
    lr_schedule: LrSchedule,
    tracker_reset: Vec<(std::ops::Range<usize>, f32)>,
    /// Schedule, teacher buffer size and distiller of FedRevive and DD-FedRevive.
    revive: Option<(ReviveSchedule, usize, AnyDistiller)>,
}

impl ServerParts {
    /// Whether clients must send their trained models, not only deltas: interpolation and
    /// FedRevive's teachers need them.
    fn needs_models(&self) -> bool {
        self.rule.needs_models() || self.revive.is_some()
    }

    fn server<W: TorchWeights>(self) -> Server<W> {
        Server {
            rule: self.rule,
            optimizer: self.optimizer.build(),
            lr_schedule: self.lr_schedule,
            tracker_reset: self.tracker_reset,
            revive: self.revive.map(|(schedule, buffer_size, distiller)| Revive {
                schedule,
                teachers: TeacherBuffer::new(buffer_size),
                distiller: match distiller {
                    AnyDistiller::DataFree(d) => d as Box<dyn Distiller<W>>,
                    AnyDistiller::RealData(d) => d,
                },
            }),
        }
    }
}

impl Simulation {
    pub fn build(config: &Config, dirs: &DataDirs, device: Device) -> Result<Simulation, SetupError> {
        let dataset = Arc::new(crate::data::load(config.dataset, dirs)?.to_device(device));
        let input = InputSpec::of(&dataset);
        // The setup seed decides the data; the run seed everything that runs.
        let parts = split::split(dataset.train.len(), config.val_split, config.kd_split, config.setup_seed);
        let pool = parts.train;
        let partition = partition::partition(
            &dataset.train.host_labels,
            &pool,
            dataset.num_classes(),
            config.num_clients,
            config.client_data_size,
            config.partition,
            config.setup_seed,
        )
        .map_err(SetupError::Partition)?;
        let distiller = match config.algorithm.row().distillation {
            Distillation::RealData => {
                let mut distiller = RealDataDistiller::new(
                    config.kd.settings,
                    config.model,
                    dataset.clone(),
                    &parts.kd,
                    device,
                    config.run_seed,
                );
                distiller.core.set_precision(config.precision);
                Some(AnyDistiller::RealData(Box::new(distiller)))
            }
            Distillation::DataFree => {
                let mut distiller = DataFreeDistiller::new(
                    config.kd.settings,
                    config.dfkd,
                    config.model,
                    config.dataset,
                    input,
                    device,
                    config.run_seed,
                )?;
                distiller.core.set_precision(config.precision);
                Some(AnyDistiller::DataFree(Box::new(distiller)))
            }
            Distillation::None => None,
        };
        let initial = initial_weights(config.model, input, config.run_seed);
        let layout = crate::nn::Model::new(config.model, input, tch::Device::Cpu).layout;
        let server = ServerParts {
            tracker_reset: layout.tracker_resets(),
            rule: server_rule(config),
            optimizer: config.server_optimizer,
            lr_schedule: config.server_lr_schedule,
            revive: distiller.map(|distiller| (revive_schedule(config), config.kd.buffer_size, distiller)),
        };
        let spec = TrainSpec {
            model: config.model,
            input,
            optimizer: config.optimizer,
            lr: config.lr,
            momentum: config.momentum,
            local_iters: config.local_iters,
            batch_size: config.batch_size,
            prox_mu: config.prox_mu,
            augment: Augment::default(),
            precision: config.precision,
            return_model: server.needs_models(),
        };
        let partition = Arc::new(partition);
        let cohorts = cohort_plan(config, &spec, &dataset, &partition, layout.numel, device)?;
        let experiment = Experiment {
            initial_weights: initial,
            settings: ExecSettings {
                partition: partition.clone(),
                lookahead: config.active_jobs + config.lookahead,
                cohort_size: cohorts.cohort_size,
                client_lr: config.lr_schedule,
                target_accuracy: config.target_accuracy,
                early_stop: config.early_stop.clone(),
            },
            trainer: TorchTrainer {
                dataset,
                partition,
                spec,
                client_lr: config.lr_schedule,
                seed: config.run_seed,
                device,
            },
            cohorts,
            server_threads: config.server_threads,
        };
        Ok(Simulation { scheduler: Scheduler::new(plan_config(config)), experiment, server })
    }

    /// Runs to the plan's end or a stop rule. On a GPU model versions live on the device
    /// ([`DeviceWeights`]); on CPU they are host vectors, whose floats the reports hold.
    /// Continues from a checkpoint's snapshot where `resume` gives one.
    pub fn run(self, sink: &mut dyn Sink, resume: Option<RunSnapshot>) -> Result<RunOutcome, ExecError> {
        if self.experiment.trainer.device.is_cuda() {
            self.run_with::<DeviceWeights>(sink, resume)
        } else {
            self.run_with::<Vec<f32>>(sink, resume)
        }
    }

    /// Runs with versions, aggregation and updates kept as `W` (tests use device weights on CPU).
    pub fn run_with<W: TorchWeights>(
        self,
        sink: &mut dyn Sink,
        resume: Option<RunSnapshot>,
    ) -> Result<RunOutcome, ExecError> {
        self.run_on::<W>(sink, resume, |trainer, threads| Ok(Box::new(ThreadWorkers::new(threads, trainer)?)))
    }

    /// Runs as rank 0 of an MPI job: the other ranks train ([`crate::cluster`]).
    #[cfg(feature = "mpi")]
    pub fn run_on_ranks(
        self,
        cluster: &crate::cluster::Cluster,
        ranks: &[crate::exec::workers::RankLoad],
        sink: &mut dyn Sink,
        resume: Option<RunSnapshot>,
    ) -> Result<RunOutcome, ExecError> {
        use crate::cluster::RankWorkers;
        let device = self.experiment.trainer.device;
        let ranks = ranks.to_vec();
        if device.is_cuda() {
            self.run_on::<DeviceWeights>(sink, resume, |_, _| {
                Ok(Box::new(RankWorkers::new(cluster, ranks, device)))
            })
        } else {
            self.run_on::<Vec<f32>>(sink, resume, |_, _| {
                Ok(Box::new(RankWorkers::new(cluster, ranks, device)))
            })
        }
    }

    /// Runs on the workers `make_workers` builds from the trainer and the cohorts to run at once.
    fn run_on<'w, W: TorchWeights>(
        self,
        sink: &mut dyn Sink,
        resume: Option<RunSnapshot>,
        make_workers: impl FnOnce(Arc<dyn Trainer<W>>, usize) -> Result<Box<dyn Workers<W> + 'w>, TrainError>,
    ) -> Result<RunOutcome, ExecError> {
        let mut server = self.server.server::<W>();
        let Experiment { initial_weights, trainer, settings, cohorts, server_threads } = self.experiment;
        let device = trainer.device;
        if device == Device::Cpu {
            // The coordinating thread's own count; workers set theirs to 1 at every job.
            tch::set_num_threads(server_threads as i32);
        }
        let initial = W::from_host(&initial_weights, device);
        let mut evaluator = TorchEvaluator::new(trainer.dataset.clone(), &trainer.spec, device);
        let trainer: Arc<dyn Trainer<W>> = Arc::new(trainer);
        let mut workers = make_workers(trainer, cohorts.concurrent_cohorts)?;
        let engines = Engines {
            workers: &mut *workers,
            evaluator: &mut evaluator,
            server: &mut server,
            sink: &mut *sink,
        };
        let mut scheduler = self.scheduler;
        let mut outcome = execute(&mut scheduler, initial, resume, &settings, engines)?;
        outcome.ranks = workers.loads();
        drop(workers);
        // The rest of the jobs table (the executor streamed the jobs settled before its last
        // aggregation): what the plan made of every job, as far as the run got. A run that stopped early (a stop rule) leaves out what the plan decided after its end.
        let stopped_at = SimTime::from_units(outcome.virtual_time);
        let stopped_early = scheduler.end().is_none();
        for mut job in scheduler.take_jobs(true) {
            if stopped_early && job.dispatched_at > stopped_at {
                continue;
            }
            let decided_later = stopped_early && job.settled_at.is_some_and(|at| at > stopped_at);
            if decided_later || matches!(job.fate, Fate::Applied { version } if version > outcome.version) {
                (job.fate, job.settled_at) = (Fate::Open, None);
            }
            sink.job(job);
        }
        Ok(outcome)
    }
}
