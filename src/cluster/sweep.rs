//! `fedsim sweep` in an MPI job: each point of the sweep is a whole run on one training rank,
//! for seed and grid sweeps that need many runs rather than one big one. Rank 0 hands out one
//! point at a time to whichever rank is free (points differ in length: a FedRevive run takes
//! ten times a FedAvg one), then reports all the runs in point order, as a single process
//! would. It reads the runs where the ranks wrote them, so the output folder must be one that
//! every rank sees (a cluster's shared file system). Each point is the same run it would be
//! in a single process, so its results are too.
//!
//! A rank runs its point without saying anything until it ends (its main thread runs it, and
//! only the main thread may call MPI), so a stopped rank is not noticed as in one big run; the
//! launcher's time limit ends such a job, and each run keeps its checkpoints.

use std::path::PathBuf;

use mpi::point_to_point::{Destination, Source};
use mpi::topology::Communicator;
use serde::{Deserialize, Serialize};

use super::wire::{self, CONTROL};
use super::{Cluster, ClusterError};

/// What rank 0 needs to know of a sweep to hand out its points (the command's sweep is one).
pub trait Points {
    /// How many points.
    fn count(&self) -> usize;
    /// One line naming the sweep, for the log.
    fn headline(&self) -> String;
    /// One line naming point `index`.
    fn describe(&self, index: usize) -> String;
}

/// From rank 0 to a training rank.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Order {
    /// Run the sweep's point `point` (counted from 0) and say how it went.
    Run { point: usize },
    /// No points are left: leave.
    Stop,
}

/// From a training rank to rank 0, when its point has ended.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Ended {
    Finished { point: usize, run_dir: PathBuf },
    Failed { point: usize, error: String },
}

/// Rank 0: hands the sweep's points out to ranks 1..N-1 as they become free and returns the
/// run directories in point order. The first point that fails ends the sweep with its error.
pub fn hand_out_points(cluster: &Cluster, sweep: &dyn Points) -> Result<Vec<PathBuf>, ClusterError> {
    let world = &cluster.world;
    let total = sweep.count();
    println!("{}", sweep.headline());
    println!(
        "MPI job of {} ranks: rank 0 hands out the points, ranks 1-{} run one each at a time",
        cluster.size,
        cluster.size - 1
    );
    let mut next = 0;
    // Gives `rank` the next point, or tells it to leave; whether it got a point.
    let mut hand_next = |rank: usize| {
        let order = if next < total {
            println!("{} -> rank {rank}", sweep.describe(next));
            next += 1;
            Order::Run { point: next - 1 }
        } else {
            Order::Stop
        };
        world.process_at_rank(rank as i32).send_with_tag(&wire::encode(&order)[..], CONTROL);
        order != Order::Stop
    };
    let mut running = (1..cluster.size).filter(|&rank| hand_next(rank)).count();
    let mut finished: Vec<Option<PathBuf>> = vec![None; total];
    while running > 0 {
        let (bytes, status) = world.any_process().receive_vec_with_tag::<u8>(CONTROL);
        let rank = status.source_rank() as usize;
        running -= 1;
        match wire::decode::<Ended>(&bytes, &format!("rank {rank}"))? {
            Ended::Finished { point, run_dir } => {
                if !run_dir.join("run.json").is_file() {
                    return Err(ClusterError::Rank(format!(
                        "rank {rank} wrote point {} into {}, which rank 0 cannot read; give --out a folder \
                         every rank shares (a cluster's shared file system)",
                        point + 1,
                        run_dir.display()
                    )));
                }
                println!("[{}/{total}] finished on rank {rank}: {}", point + 1, run_dir.display());
                *finished.get_mut(point).ok_or_else(|| {
                    ClusterError::Rank(format!("rank {rank} ran point {point}, not in the sweep"))
                })? = Some(run_dir);
                if hand_next(rank) {
                    running += 1;
                }
            }
            Ended::Failed { point, error } => {
                let which = if point < total { sweep.describe(point) } else { format!("{point}") };
                return Err(ClusterError::Rank(format!(
                    "sweep point {which} failed on rank {rank}: {error}"
                )));
            }
        }
    }
    Ok(finished.into_iter().map(|run| run.expect("every point was handed out and finished")).collect())
}

/// A training rank: runs the points rank 0 gives it with `run_point` until told to leave.
pub fn run_points_given<E: std::fmt::Display>(
    cluster: &Cluster,
    mut run_point: impl FnMut(usize) -> Result<PathBuf, E>,
) -> Result<(), ClusterError> {
    let root = cluster.world.process_at_rank(0);
    loop {
        let (bytes, _) = root.receive_vec_with_tag::<u8>(CONTROL);
        match wire::decode::<Order>(&bytes, "rank 0")? {
            Order::Run { point } => cluster.tell_rank_0(&match run_point(point) {
                Ok(run_dir) => Ended::Finished { point, run_dir },
                // Rank 0 ends the job with it.
                Err(error) => Ended::Failed { point, error: format!("{error:#}") },
            }),
            Order::Stop => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_endings_survive_the_wire() {
        for order in [Order::Run { point: 7 }, Order::Stop] {
            assert_eq!(wire::decode::<Order>(&wire::encode(&order), "rank 0").unwrap(), order);
        }
        let ended = Ended::Finished { point: 3, run_dir: PathBuf::from("runs/s/fedavg-20261203-1") };
        assert_eq!(wire::decode::<Ended>(&wire::encode(&ended), "rank 1").unwrap(), ended);
    }
}
