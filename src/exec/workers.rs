//! Where cohorts run: the executor starts cohorts and waits for whichever finishes next.
//! [`ThreadWorkers`] runs them on a rayon pool of `workers` threads; tests substitute workers
//! that finish cohorts in an order they choose.

use std::sync::{mpsc, Arc};

use super::trainer::{Job, Trainer};
use crate::nn::train::TrainOutcome;

/// A finished cohort: its outcomes in job order, or why training failed.
pub struct Finished {
    pub cohort: u64,
    pub worker: u32,
    pub result: anyhow::Result<Vec<TrainOutcome>>,
}

pub trait Workers {
    /// How many cohorts may be started and not yet finished at once.
    fn capacity(&self) -> usize;
    fn start(&mut self, cohort: u64, jobs: Vec<Job>);
    /// Blocks until a started cohort finishes; called only while one is running.
    fn next_finished(&mut self) -> Finished;
}

/// A rayon pool; twice as many cohorts as threads may be queued, so that a thread never waits
/// for the coordinator to hand it work.
pub struct ThreadWorkers {
    pool: rayon::ThreadPool,
    threads: usize,
    trainer: Arc<dyn Trainer>,
    sender: mpsc::Sender<Finished>,
    receiver: mpsc::Receiver<Finished>,
    running: usize,
}

impl ThreadWorkers {
    pub fn new(threads: usize, trainer: Arc<dyn Trainer>) -> anyhow::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fedsim-worker-{i}"))
            .build()?;
        let (sender, receiver) = mpsc::channel();
        Ok(ThreadWorkers { pool, threads, trainer, sender, receiver, running: 0 })
    }
}

impl Workers for ThreadWorkers {
    fn capacity(&self) -> usize {
        self.threads * 2
    }

    fn start(&mut self, cohort: u64, jobs: Vec<Job>) {
        let trainer = self.trainer.clone();
        let sender = self.sender.clone();
        self.running += 1;
        self.pool.spawn(move || {
            let result = trainer.train(&jobs);
            let worker = rayon::current_thread_index().unwrap_or(0) as u32;
            // The receiver is gone only when the run stopped early; the result is not needed then.
            let _ = sender.send(Finished { cohort, worker, result });
        });
    }

    fn next_finished(&mut self) -> Finished {
        let finished = self.receiver.recv().expect("the pool holds a sender while cohorts run");
        self.running -= 1;
        finished
    }
}

impl Drop for ThreadWorkers {
    /// Lets running cohorts finish so that no worker outlives the run.
    fn drop(&mut self) {
        for _ in 0..self.running {
            let _ = self.receiver.recv();
        }
    }
}
