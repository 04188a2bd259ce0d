//! Where cohorts run: the executor starts cohorts and waits for whichever finishes next.
//! [`ThreadWorkers`] runs them on a rayon pool of `workers` threads; tests substitute workers
//! that finish cohorts in an order they choose.

use std::sync::{mpsc, Arc};

use super::trainer::{Job, TrainError, Trainer};
use crate::nn::train::TrainOutcome;
use crate::params::Weights;
pub use crate::record::rows::RankLoad;

/// A finished cohort: its outcomes in job order, or why training failed.
pub struct Finished<W = Vec<f32>> {
    pub cohort: u64,
    pub worker: u32,
    pub result: Result<Vec<TrainOutcome<W>>, TrainError>,
}

pub trait Workers<W = Vec<f32>> {
    /// How many cohorts may be started and not yet finished at once.
    fn capacity(&self) -> usize;
    fn start(&mut self, cohort: u64, jobs: Vec<Job<W>>);
    /// Blocks until a started cohort finishes; called only while one is running.
    fn next_finished(&mut self) -> Finished<W>;
    /// What each process trained, where the workers span several (MPI ranks); empty otherwise.
    fn loads(&self) -> Vec<RankLoad> {
        Vec::new()
    }
}

/// A rayon pool; twice as many cohorts as threads may be queued, so that a thread never waits
/// for the coordinator to hand it work.
pub struct ThreadWorkers<W = Vec<f32>> {
    pool: rayon::ThreadPool,
    threads: usize,
    trainer: Arc<dyn Trainer<W>>,
    sender: mpsc::Sender<Finished<W>>,
    receiver: mpsc::Receiver<Finished<W>>,
    running: usize,
}

impl<W: Weights> ThreadWorkers<W> {
    pub fn new(threads: usize, trainer: Arc<dyn Trainer<W>>) -> Result<Self, TrainError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fedsim-worker-{i}"))
            .build()
            .map_err(|e| TrainError::Workers(format!("starting {threads} worker threads: {e}")))?;
        let (sender, receiver) = mpsc::channel();
        Ok(ThreadWorkers { pool, threads, trainer, sender, receiver, running: 0 })
    }
}

impl<W: Weights> Workers<W> for ThreadWorkers<W> {
    fn capacity(&self) -> usize {
        self.threads * 2
    }

    fn start(&mut self, cohort: u64, jobs: Vec<Job<W>>) {
        let trainer = self.trainer.clone();
        let sender = self.sender.clone();
        self.running += 1;
        self.pool.spawn(move || {
            // libtorch reports errors inside tensor operations (CUDA out of memory among them)
            // as panics; one must end the run with a message, not abort the process.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trainer.train(&jobs)))
                .unwrap_or_else(|panic| {
                    Err(panic_error(panic, &format!("training a cohort of {} clients", jobs.len())))
                });
            let worker = rayon::current_thread_index().unwrap_or(0) as u32;
            // The receiver is gone only when the run stopped early; the result is not needed then.
            let _ = sender.send(Finished { cohort, worker, result });
        });
    }

    fn next_finished(&mut self) -> Finished<W> {
        let finished = self.receiver.recv().expect("the pool holds a sender while cohorts run");
        self.running -= 1;
        finished
    }
}

impl<W> ThreadWorkers<W> {
    /// A finished cohort, if one finishes within `timeout` (for loops that also wait on
    /// something else, such as messages from other processes).
    pub fn finished_within(&mut self, timeout: std::time::Duration) -> Option<Finished<W>> {
        let finished = self.receiver.recv_timeout(timeout).ok()?;
        self.running -= 1;
        Some(finished)
    }

    /// Cohorts started and not yet finished.
    pub fn running(&self) -> usize {
        self.running
    }
}

/// A panic while doing `what` as an error; out-of-memory names the settings that lower memory use.
pub fn panic_error(panic: Box<dyn std::any::Any + Send>, what: &str) -> TrainError {
    let message = crate::faults::panic_message(&*panic).unwrap_or_else(|| "unknown panic".to_owned());
    if message.contains("out of memory") {
        TrainError::OutOfMemory {
            what: what.to_owned(),
            said: message.lines().next().unwrap_or_default().to_owned(),
        }
    } else {
        TrainError::Panicked { what: what.to_owned(), message }
    }
}

impl<W> Drop for ThreadWorkers<W> {
    /// Lets running cohorts finish so that no worker outlives the run.
    fn drop(&mut self) {
        for _ in 0..self.running {
            let _ = self.receiver.recv();
        }
    }
}
