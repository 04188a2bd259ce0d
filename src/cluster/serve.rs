//! A training rank (1..N-1): it builds the run's trainer like a single process would, says it
//! is ready, then trains the cohorts rank 0 sends on its own worker threads, keeping the base
//! versions it is sent until rank 0 says they are no longer needed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::Communicator;

use super::wire::{self, OutcomeHead, ToCoordinator, ToRank, CONTROL, FLOATS};
use super::{Cluster, ClusterError};
use crate::exec::trainer::TorchTrainer;
use crate::exec::{Finished, Job, ThreadWorkers, Trainer, Workers};
use crate::nn::device_weights::TorchWeights;
use crate::nn::train::TrainOutcome;

/// How often a training rank tells rank 0 it is alive when it has nothing else to say.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Serves rank 0 until it ends the run.
pub fn serve<W: TorchWeights>(
    cluster: &Cluster,
    trainer: TorchTrainer,
    threads: usize,
) -> Result<(), ClusterError> {
    let device = trainer.device;
    let root = cluster.world.process_at_rank(0);
    let say = |message: &ToCoordinator| cluster.tell_rank_0(message);
    let trainer: Arc<dyn Trainer<W>> = Arc::new(trainer);
    let mut workers = ThreadWorkers::new(threads, trainer)?;
    say(&ToCoordinator::Ready { host: super::host_name(), workers: threads });
    let mut bases: HashMap<u64, Arc<W>> = HashMap::new();
    let mut trained: HashMap<u64, Vec<TrainOutcome<W>>> = HashMap::new();
    let mut last_said = Instant::now();
    loop {
        if let Some(matched) = root.immediate_matched_probe_with_tag(CONTROL) {
            let (bytes, _) = matched.matched_receive_vec::<u8>();
            match wire::decode::<ToRank>(&bytes, "rank 0")? {
                ToRank::Base { version } => {
                    let (floats, _) = root.receive_vec_with_tag::<f32>(FLOATS);
                    bases.insert(version, Arc::new(W::from_host(&floats, device)));
                }
                ToRank::Forget { versions } => {
                    for version in versions {
                        bases.remove(&version);
                    }
                }
                ToRank::Cohort { cohort, jobs } => {
                    let jobs: Result<Vec<Job<W>>, String> = jobs
                        .into_iter()
                        .map(|(task, client, version)| {
                            let base = bases.get(&version).cloned().ok_or_else(|| {
                                format!("task {task}'s base version {version} never arrived")
                            })?;
                            Ok(Job { task, client, version, base })
                        })
                        .collect();
                    match jobs {
                        Ok(jobs) => {
                            crate::faults::reached("train");
                            workers.start(cohort, jobs);
                        }
                        Err(error) => say(&ToCoordinator::Failed { cohort, error }),
                    }
                }
                ToRank::Pull { cohort } => {
                    let outcomes = trained.remove(&cohort).ok_or_else(|| {
                        ClusterError::Rank(format!("rank 0 asked for cohort {cohort}, which is not here"))
                    })?;
                    for outcome in outcomes {
                        root.send_with_tag(&outcome.delta.to_host()[..], FLOATS);
                        if let Some(model) = &outcome.model {
                            root.send_with_tag(&model.to_host()[..], FLOATS);
                        }
                    }
                }
                ToRank::Stop => {
                    say(&ToCoordinator::Stopped);
                    return Ok(());
                }
            }
            continue;
        }
        if let Some(Finished { cohort, worker, result }) = workers.finished_within(Duration::from_millis(1)) {
            match result {
                Ok(outcomes) => {
                    let heads = outcomes.iter().map(OutcomeHead::of).collect();
                    trained.insert(cohort, outcomes);
                    say(&ToCoordinator::Trained { cohort, worker, outcomes: heads });
                }
                Err(error) => say(&ToCoordinator::Failed { cohort, error: format!("{error:#}") }),
            }
            last_said = Instant::now();
        } else if last_said.elapsed() >= HEARTBEAT {
            say(&ToCoordinator::Alive);
            last_said = Instant::now();
        }
    }
}
