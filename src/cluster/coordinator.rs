//! Rank 0's workers: [`RankWorkers`] sends each cohort the executor starts to the least loaded
//! training rank, with the base versions that rank does not hold yet, and hands back cohorts
//! as ranks finish them. Cohorts are the plan's, whatever the number of ranks, and training
//! depends only on its jobs, so results never depend on how many ranks there are.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::request::StaticScope;
use mpi::topology::{Communicator, SimpleCommunicator};

use super::{Cluster, ClusterError};
use tch::Device;

use super::wire::{self, OutcomeHead, ToCoordinator, ToRank, CONTROL, FLOATS};
use crate::exec::workers::RankLoad;
use crate::exec::{Finished, Job, Workers};
use crate::nn::device_weights::TorchWeights;

/// A training rank as rank 0 sees it.
struct Rank {
    load: RankLoad,
    /// Versions it holds.
    cached: HashSet<u64>,
    /// Cohorts it is training.
    running: usize,
    last_heard: Instant,
    /// Whether it acknowledged the end of the run.
    stopped: bool,
}

impl Rank {
    fn capacity(&self) -> usize {
        self.load.workers * 2
    }
}

/// The training ranks 1..N-1 as the executor's workers.
pub struct RankWorkers<'a, W> {
    cluster: &'a Cluster,
    world: &'a SimpleCommunicator,
    device: Device,
    ranks: Vec<Rank>,
    /// Versions some rank holds; forgotten everywhere once the executor has let them go.
    bases: HashMap<u64, Arc<W>>,
    /// Running cohort -> (index into `ranks`, its tasks).
    running: HashMap<u64, (usize, Vec<u64>)>,
    /// How long a rank holding cohorts may stay silent.
    silence: Duration,
    /// A cohort that could not be sent, reported by the next `next_finished`.
    failed_start: Option<(u64, ClusterError)>,
}

/// How long rank 0 waits for the training ranks to build their trainers.
const STARTUP: Duration = Duration::from_secs(600);

/// Waits until every training rank has built its trainer and said so; what each has.
pub fn await_ranks(cluster: &Cluster) -> Result<Vec<RankLoad>, ClusterError> {
    let world = &cluster.world;
    let mut ranks: Vec<Option<RankLoad>> = (1..cluster.size).map(|_| None).collect();
    let started = Instant::now();
    while ranks.iter().any(Option::is_none) {
        let Some((source, message)) = receive_control(world)? else {
            if started.elapsed() >= STARTUP {
                return Err(ClusterError::Rank(format!(
                    "ranks {} did not start within {} s",
                    missing(&ranks),
                    STARTUP.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        match message {
            ToCoordinator::Ready { host, workers } => {
                ranks[source - 1] = Some(RankLoad {
                    rank: source as u32,
                    host,
                    workers,
                    cohorts: 0,
                    tasks: 0,
                    train_seconds: 0.0,
                })
            }
            // The rank's error names it ("rank 2 could not start: ...").
            ToCoordinator::Failed { error, .. } => return Err(ClusterError::Rank(error)),
            other => {
                return Err(ClusterError::Rank(format!("rank {source} sent {other:?} before it was ready")))
            }
        }
    }
    Ok(ranks.into_iter().map(|r| r.expect("all ready")).collect())
}

impl<'a, W: TorchWeights> RankWorkers<'a, W> {
    /// The ready ranks ([`await_ranks`]) as workers for one run.
    pub fn new(cluster: &'a Cluster, ranks: Vec<RankLoad>, device: Device) -> Self {
        RankWorkers {
            cluster,
            world: &cluster.world,
            device,
            ranks: ranks
                .into_iter()
                .map(|load| Rank {
                    load,
                    cached: HashSet::new(),
                    running: 0,
                    last_heard: Instant::now(),
                    stopped: false,
                })
                .collect(),
            bases: HashMap::new(),
            running: HashMap::new(),
            silence: cluster.silence,
            failed_start: None,
        }
    }

    fn send(&self, index: usize, message: &ToRank) {
        self.world.process_at_rank(index as i32 + 1).send_with_tag(&wire::encode(message)[..], CONTROL);
    }

    /// Tells ranks to forget versions the executor no longer holds (only this map still does).
    fn forget_released(&mut self) {
        let released: Vec<u64> =
            self.bases.iter().filter(|(_, base)| Arc::strong_count(base) == 1).map(|(v, _)| *v).collect();
        if released.is_empty() {
            return;
        }
        for index in 0..self.ranks.len() {
            let versions: Vec<u64> =
                released.iter().copied().filter(|v| self.ranks[index].cached.remove(v)).collect();
            if !versions.is_empty() {
                self.send(index, &ToRank::Forget { versions });
            }
        }
        for version in released {
            self.bases.remove(&version);
        }
    }

    /// Tells rank 0's last words ([`super::last_words`]) what the rank at `index` holds.
    fn publish_holdings(&self, index: usize) {
        let held =
            self.running.values().filter(|(i, _)| *i == index).flat_map(|(_, tasks)| tasks.iter().copied());
        super::last_words::holding(index + 1, held);
    }

    /// Gives up on the rank at `index` (the job is then aborted, not finalised): why, with
    /// what it held. `silent` says what it failed to do for the silence period.
    fn unresponsive(&self, index: usize, silent: &str) -> ClusterError {
        self.cluster.unresponsive.set(true);
        ClusterError::Rank(format!(
            "{} stopped answering ({silent} for {} s) while it held {}",
            self.rank_name(index),
            self.silence.as_secs(),
            self.held_by(index)
        ))
    }

    /// Tasks held by the rank at `index`, for messages.
    fn held_by(&self, index: usize) -> String {
        let mut held: Vec<(u64, &Vec<u64>)> =
            self.running.iter().filter(|(_, (i, _))| *i == index).map(|(c, (_, t))| (*c, t)).collect();
        held.sort();
        let list: Vec<String> = held
            .iter()
            .map(|(cohort, tasks)| {
                let tasks: Vec<String> = tasks.iter().map(u64::to_string).collect();
                format!(
                    "cohort {cohort} (task{} {})",
                    if tasks.len() == 1 { "" } else { "s" },
                    tasks.join(", ")
                )
            })
            .collect();
        if list.is_empty() {
            "no task".to_owned()
        } else {
            list.join("; ")
        }
    }

    fn rank_name(&self, index: usize) -> String {
        format!("rank {} ({})", index + 1, self.ranks[index].load.host)
    }

    /// Sends a float buffer to a rank, waiting at most `silence` for the rank to take it: a
    /// blocking send to a rank that stopped would never return.
    fn send_floats(&self, index: usize, floats: &[f32]) -> Result<(), ClusterError> {
        let buffer: *mut [f32] = Box::into_raw(floats.to_vec().into_boxed_slice());
        // SAFETY: the buffer stays allocated until the send completes (freed below), or for
        // ever when the rank never takes it (the job is then ended).
        let mut request = self.world.process_at_rank(index as i32 + 1).immediate_send_with_tag(
            StaticScope,
            unsafe { &*buffer },
            FLOATS,
        );
        let started = Instant::now();
        loop {
            match request.test() {
                Ok(_) => {
                    // SAFETY: the send completed, so MPI no longer reads the buffer.
                    drop(unsafe { Box::from_raw(buffer) });
                    return Ok(());
                }
                Err(pending) if started.elapsed() > self.silence => {
                    // The rank never took it: MPI may still read the buffer, so both stay.
                    std::mem::forget(pending);
                    return Err(self.unresponsive(index, "it took no model"));
                }
                Err(pending) => {
                    request = pending;
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
        }
    }

    /// Receives a float buffer from a rank, waiting at most `silence`.
    fn receive_floats(&self, index: usize) -> Result<Vec<f32>, ClusterError> {
        let source = self.world.process_at_rank(index as i32 + 1);
        let started = Instant::now();
        loop {
            if let Some(matched) = source.immediate_matched_probe_with_tag(FLOATS) {
                return Ok(matched.matched_receive_vec::<f32>().0);
            }
            if started.elapsed() > self.silence {
                return Err(self.unresponsive(index, "it sent no update"));
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    /// Receives the buffers of a finished cohort after asking for them.
    fn pull(
        &self,
        index: usize,
        cohort: u64,
        heads: &[OutcomeHead],
    ) -> Result<Vec<crate::nn::train::TrainOutcome<W>>, ClusterError> {
        self.send(index, &ToRank::Pull { cohort });
        let receive = || Ok::<_, ClusterError>(W::from_host(&self.receive_floats(index)?, self.device));
        heads
            .iter()
            .map(|head| {
                let delta = receive()?;
                let model = if head.model { Some(receive()?) } else { None };
                Ok(head.outcome(delta, model))
            })
            .collect()
    }

    /// A failed cohort for the executor, which ends the run with its error: `cohort` where it
    /// is running, or else any running cohort (the executor expects a running one back).
    fn failure(&self, cohort: u64, error: ClusterError) -> Finished<W> {
        let cohort = if self.running.contains_key(&cohort) {
            cohort
        } else {
            self.running.keys().min().copied().unwrap_or(cohort)
        };
        let error = match error {
            ClusterError::Training(error) => error,
            // The executor's error is a trainer's; the rank's story is its message.
            other => crate::exec::TrainError::Workers(other.to_string()),
        };
        Finished { cohort, worker: 0, result: Err(error) }
    }

    /// The first rank holding cohorts that has been silent too long, with what it held.
    fn silent_rank(&self) -> Option<usize> {
        (0..self.ranks.len())
            .find(|&i| self.ranks[i].running > 0 && self.ranks[i].last_heard.elapsed() > self.silence)
    }
}

fn missing(ranks: &[Option<RankLoad>]) -> String {
    let list: Vec<String> =
        ranks.iter().enumerate().filter(|(_, r)| r.is_none()).map(|(i, _)| (i + 1).to_string()).collect();
    list.join(", ")
}

/// A control message from any rank, if one is waiting: (source rank, message).
fn receive_control(world: &SimpleCommunicator) -> Result<Option<(usize, ToCoordinator)>, ClusterError> {
    let Some(matched) = world.any_process().immediate_matched_probe_with_tag(CONTROL) else {
        return Ok(None);
    };
    let (bytes, status) = matched.matched_receive_vec::<u8>();
    let source = status.source_rank() as usize;
    Ok(Some((source, wire::decode(&bytes, &format!("rank {source}"))?)))
}

impl<W: TorchWeights> Workers<W> for RankWorkers<'_, W> {
    fn capacity(&self) -> usize {
        self.ranks.iter().map(Rank::capacity).sum()
    }

    fn start(&mut self, cohort: u64, jobs: Vec<Job<W>>) {
        if self.failed_start.is_some() {
            // The run is ending with that failure; sending more would only wait on it again.
            self.running.insert(cohort, (0, jobs.iter().map(|j| j.task).collect()));
            return;
        }
        self.forget_released();
        // The least loaded rank with room (the executor never starts more than the capacity).
        let index = (0..self.ranks.len())
            .filter(|&i| self.ranks[i].running < self.ranks[i].capacity())
            .min_by(|&a, &b| {
                let share = |i: usize| self.ranks[i].running as f64 / self.ranks[i].capacity() as f64;
                share(a).total_cmp(&share(b))
            })
            .expect("the executor starts no more cohorts than the ranks' capacity");
        let tasks: Vec<u64> = jobs.iter().map(|j| j.task).collect();
        self.ranks[index].running += 1;
        self.running.insert(cohort, (index, tasks));
        self.publish_holdings(index);
        for job in &jobs {
            if self.ranks[index].cached.insert(job.version) {
                self.send(index, &ToRank::Base { version: job.version });
                if let Err(error) = self.send_floats(index, &job.base.to_host()) {
                    self.failed_start.get_or_insert((cohort, error));
                    return;
                }
                self.bases.entry(job.version).or_insert_with(|| job.base.clone());
            }
        }
        self.send(
            index,
            &ToRank::Cohort { cohort, jobs: jobs.iter().map(|j| (j.task, j.client, j.version)).collect() },
        );
    }

    fn next_finished(&mut self) -> Finished<W> {
        if let Some((cohort, error)) = self.failed_start.take() {
            return self.failure(cohort, error);
        }
        loop {
            let (source, message) = match receive_control(self.world) {
                Ok(Some(received)) => received,
                Ok(None) => {
                    // Everything waiting has been read: only now is silence meaningful.
                    if let Some(index) = self.silent_rank() {
                        let cohort = self.running.iter().find(|(_, (i, _))| *i == index).map(|(c, _)| *c);
                        return self.failure(cohort.unwrap_or_default(), self.unresponsive(index, "nothing"));
                    }
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                Err(error) => return self.failure(0, error),
            };
            let index = source - 1;
            self.ranks[index].last_heard = Instant::now();
            match message {
                ToCoordinator::Alive => {}
                ToCoordinator::Trained { cohort, worker, outcomes: heads } => {
                    let outcomes = match self.pull(index, cohort, &heads) {
                        Ok(outcomes) => outcomes,
                        Err(error) => return self.failure(cohort, error),
                    };
                    let Some((_, tasks)) = self.running.remove(&cohort) else {
                        return self.failure(
                            cohort,
                            ClusterError::Rank(format!(
                                "{} returned cohort {cohort}, which it was not given",
                                self.rank_name(index)
                            )),
                        );
                    };
                    self.publish_holdings(index);
                    let rank = &mut self.ranks[index];
                    rank.running -= 1;
                    rank.load.cohorts += 1;
                    rank.load.tasks += tasks.len() as u64;
                    rank.load.train_seconds += outcomes.iter().map(|o| o.wall.as_secs_f64()).sum::<f64>();
                    let worker = (index * 1000) as u32 + worker;
                    return Finished { cohort, worker, result: Ok(outcomes) };
                }
                ToCoordinator::Failed { cohort, error } => {
                    let held = self.held_by(index);
                    return self.failure(
                        cohort,
                        ClusterError::Rank(format!(
                            "{} failed while it held {held}: {error}",
                            self.rank_name(index)
                        )),
                    );
                }
                other => {
                    return self.failure(
                        0,
                        ClusterError::Rank(format!(
                            "{} sent {other:?} during the run",
                            self.rank_name(index)
                        )),
                    )
                }
            }
        }
    }

    fn loads(&self) -> Vec<RankLoad> {
        self.ranks.iter().map(|r| r.load.clone()).collect()
    }
}

impl<W> Drop for RankWorkers<'_, W> {
    /// Ends the run on every training rank and reads what they still send, so that no message
    /// is left in flight; a rank silent for too long is given up (and the job aborted later).
    fn drop(&mut self) {
        for index in 0..self.ranks.len() {
            self.world
                .process_at_rank(index as i32 + 1)
                .send_with_tag(&wire::encode(&ToRank::Stop)[..], CONTROL);
        }
        let started = Instant::now();
        while self.ranks.iter().any(|r| !r.stopped) {
            match receive_control(self.world) {
                Ok(Some((source, ToCoordinator::Stopped))) => self.ranks[source - 1].stopped = true,
                Ok(Some(_)) => {}
                Ok(None) if started.elapsed() > self.silence => {
                    self.cluster.unresponsive.set(true);
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => {}
            }
        }
    }
}
