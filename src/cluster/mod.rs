//! One run over many processes (feature `mpi`, issue 13). Started by an MPI launcher
//! (`mpirun -np N fedsim run CONFIG`, or Slurm's `srun`), every rank reads the same config and
//! builds the same simulation; rank 0 plans, aggregates, distils, evaluates and records, and
//! ranks 1..N-1 only train ([`serve`]), each on its own worker threads, the cohorts rank 0's
//! executor starts ([`RankWorkers`]). Only training is distributed and the server applies
//! updates in plan order, so a run's results are the same for any number of ranks, and the
//! same as a single process's. One rank (-np 1) is a single process. `fedsim sweep` spreads
//! whole runs over the ranks instead ([`hand_out_points`]).

mod coordinator;
pub mod last_words;
mod serve;
mod sweep;
pub mod wire;

use std::cell::Cell;
use std::time::Duration;

use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

pub use coordinator::{await_ranks, RankWorkers};
pub use serve::serve;
pub use sweep::{hand_out_points, run_points_given, Points};

/// This process's place in an MPI job.
pub struct Cluster {
    /// Finalises MPI when dropped.
    _universe: Universe,
    pub world: SimpleCommunicator,
    pub rank: usize,
    pub size: usize,
    /// How long a training rank holding cohorts may stay silent before rank 0 gives up on it.
    pub silence: Duration,
    /// Set when a rank stopped answering: the job is then aborted rather than finalised
    /// (finalising waits for every rank).
    pub unresponsive: Cell<bool>,
}

/// Whether an MPI launcher started this process (mpirun, mpiexec, srun with PMIx).
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"].iter().any(|k| std::env::var_os(k).is_some())
}

/// The GPU of this process on a node with several: the node-local rank's, modulo the GPUs
/// (ranks share GPUs where there are fewer). `device` is what the config resolved to.
pub fn gpu_of_this_rank(device: tch::Device) -> tch::Device {
    let local_rank = ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok());
    match (device, local_rank) {
        (tch::Device::Cuda(_), Some(local)) => {
            let gpus = tch::Cuda::device_count().max(1) as usize;
            tch::Device::Cuda(local % gpus)
        }
        _ => device,
    }
}

/// Why an MPI job cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("MPI was already started in this process")]
    AlreadyStarted,
    #[error("FEDSIM_MPI_SILENCE_SECONDS = {0:?}: give a whole number of seconds, at least 1")]
    BadSilence(String),
    #[error("{from} sent a message this fedsim cannot read ({message}); every rank must run the same fedsim build")]
    Unreadable { from: String, message: String },
    /// What a rank reported, or did, that ends the job, in words naming the rank.
    #[error("{0}")]
    Rank(String),
    #[error(transparent)]
    Training(#[from] crate::exec::TrainError),
}

/// Joins the MPI job this process was launched in; `None` outside one. Call after the
/// process has restarted for its CPU pins (MPI must start in the process that stays).
pub fn join() -> Result<Option<Cluster>, ClusterError> {
    if !launched_by_mpi() {
        return Ok(None);
    }
    // Only the main thread calls MPI; training threads never do.
    let (universe, _) =
        mpi::initialize_with_threading(Threading::Funneled).ok_or(ClusterError::AlreadyStarted)?;
    let world = universe.world();
    let silence = match std::env::var("FEDSIM_MPI_SILENCE_SECONDS") {
        Ok(value) => value
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| ClusterError::BadSilence(value.clone()))?,
        Err(_) => Duration::from_secs(30),
    };
    Ok(Some(Cluster {
        rank: world.rank() as usize,
        size: world.size() as usize,
        world,
        _universe: universe,
        silence,
        unresponsive: Cell::new(false),
    }))
}

impl Cluster {
    /// Ends every process of the job at once (after rank 0 has written what it could).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Warns when this rank may run on fewer CPUs than the threads it trains with: mpirun
    /// binds each rank to one core by default (for up to 2 ranks), which would make a rank's
    /// workers take turns on it. Results do not change; only speed does.
    pub fn warn_if_cpus_are_short(&self, threads: usize) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < threads {
            eprintln!(
                "warning: rank {} may run on {cpus} CPU{} but trains with {threads} threads: mpirun binds ranks to \
                 cores by default; start it with --bind-to none, or give each rank its cores (--map-by slot:PE={threads})",
                self.rank,
                if cpus == 1 { "" } else { "s" }
            );
        }
    }

    /// The end of this rank's part of the job: a failure anywhere ends the whole job
    /// (MPI_Abort), once this rank has written what it has and said why; so does a rank that
    /// stopped answering, since finalising MPI would wait for it.
    pub fn finish<E: std::fmt::Display>(&self, result: Result<(), E>) -> Result<(), E> {
        let ending = match &result {
            Err(error) if self.size > 1 => Some(format!("error: {error:#}")),
            _ if self.unresponsive.get() => Some("a rank stopped answering".to_owned()),
            _ => None,
        };
        if let Some(why) = ending {
            eprintln!("{why}");
            eprintln!("rank {} ends the MPI job", self.rank);
            self.abort(2);
        }
        result
    }

    /// Sends a control message to rank 0 (from a training rank).
    pub fn tell_rank_0<M: serde::Serialize>(&self, message: &M) {
        use mpi::point_to_point::Destination;
        self.world.process_at_rank(0).send_with_tag(&wire::encode(message)[..], wire::CONTROL);
    }

    /// Tells rank 0 that this training rank could not start.
    pub fn report_startup_failure(&self, error: &dyn std::fmt::Display) {
        self.tell_rank_0(&wire::ToCoordinator::Failed { cohort: 0, error: format!("{error:#}") });
    }
}

/// The host's name as MPI knows it.
pub fn host_name() -> String {
    mpi::environment::processor_name().unwrap_or_else(|_| "unknown host".to_owned())
}
