//! The executor's core with fakes: a trainer whose delta is a plain function of the task and
//! its base weights, workers that finish cohorts in an order a test chooses, an evaluator
//! without a model. No libtorch, no data: these run in milliseconds, so property tests can
//! try many finishing orders.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::fl::aggregate::ServerRule;
use crate::nn::eval::EvalResult;
use crate::params::weights_hash;
use crate::sched::{PlanConfig, Policy, Scheduler};
use crate::sim::delay::DelayModel;

const CLIENTS: usize = 12;
const WEIGHTS: usize = 6;

/// delta = a task-specific push minus a tenth of the base, so every applied sequence and
/// every base version leaves its trace in the final weights.
#[derive(Default)]
struct FakeTrainer {
    cohorts: Mutex<Vec<Vec<u64>>>,
    /// A task whose training loss comes out NaN.
    poisoned: Option<u64>,
}

impl Trainer for FakeTrainer {
    fn train(&self, jobs: &[Job]) -> Result<Vec<TrainOutcome>, TrainError> {
        self.cohorts.lock().unwrap().push(jobs.iter().map(|j| j.task).collect());
        Ok(jobs
            .iter()
            .map(|job| {
                let delta: Vec<f32> = job
                    .base
                    .iter()
                    .enumerate()
                    .map(|(i, b)| ((job.task * 7 + i as u64) % 13) as f32 * 1e-2 - 0.1 * b)
                    .collect();
                TrainOutcome {
                    model: Some(job.base.iter().zip(&delta).map(|(b, d)| b + d).collect()),
                    delta,
                    first_loss: 2.0,
                    last_loss: if Some(job.task) == self.poisoned {
                        f32::NAN
                    } else {
                        1.0 + job.task as f32 * 1e-3
                    },
                    samples: 32,
                    wall: Duration::ZERO,
                }
            })
            .collect())
    }
}

/// Runs started cohorts synchronously when asked, picking which one finishes next by
/// `picks` (cycled); `capacity` cohorts may be in flight.
struct OrderedWorkers {
    trainer: Arc<FakeTrainer>,
    capacity: usize,
    started: Vec<(u64, Vec<Job>)>,
    picks: Vec<usize>,
    next_pick: usize,
}

impl Workers for OrderedWorkers {
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn start(&mut self, cohort: u64, jobs: Vec<Job>) {
        self.started.push((cohort, jobs));
    }
    fn next_finished(&mut self) -> Finished {
        let pick = self.picks.get(self.next_pick % self.picks.len().max(1)).copied().unwrap_or(0);
        self.next_pick += 1;
        let (cohort, jobs) = self.started.remove(pick % self.started.len());
        Finished { cohort, worker: pick as u32, result: self.trainer.train(&jobs) }
    }
}

/// Accuracy as a plain function of the weights.
struct FakeEvaluator;

impl Evaluator for FakeEvaluator {
    fn evaluate(&mut self, weights: &Vec<f32>) -> EvalResult {
        let accuracy = (weights.iter().map(|w| w.abs() as f64).sum::<f64>() * 10.0).fract();
        EvalResult { accuracy, loss: 1.0 - accuracy, per_class_accuracy: vec![accuracy] }
    }
}

fn plan(policy: Policy) -> Scheduler {
    Scheduler::new(PlanConfig {
        policy,
        active_jobs: 6,
        num_clients: CLIENTS,
        delays: DelayModel::reference_default(),
        setup_seed: 5,
        run_seed: 5,
        eval_interval: 4,
        max_versions: Some(30),
        max_virtual_time: None,
        client_reuse: true,
        max_model_history: None,
        update_timeout: None,
        availability: Default::default(),
        topology: None,
    })
}

/// What a run applied, in order: (task, applied version) per update, the evaluations, and the
/// final weights' hash; beside it (not compared) the cohorts the trainer saw. Which cohorts
/// train may vary at the plan's end, where one no aggregation needs is skipped only if it has
/// not started yet.
#[derive(Debug, PartialEq)]
struct Trace {
    applied: Vec<(u64, u64)>,
    evals: Vec<(u64, u64)>,
    final_hash: String,
}

fn run(
    policy: Policy,
    cohort_size: usize,
    capacity: usize,
    picks: Vec<usize>,
    early_stop: Vec<(u64, f64)>,
) -> Trace {
    run_with_cohorts(policy, cohort_size, capacity, picks, early_stop).0
}

fn run_with_cohorts(
    policy: Policy,
    cohort_size: usize,
    capacity: usize,
    picks: Vec<usize>,
    early_stop: Vec<(u64, f64)>,
) -> (Trace, Vec<Vec<u64>>) {
    let trainer = Arc::new(FakeTrainer::default());
    let (outcome, sink) = execute_fake(trainer.clone(), policy, cohort_size, capacity, picks, early_stop);
    let trace = Trace {
        applied: sink.updates.iter().map(|u| (u.task, u.applied_version)).collect(),
        evals: sink.evals.iter().map(|e| (e.version, (e.accuracy * 1e9) as u64)).collect(),
        final_hash: weights_hash(&outcome.final_weights),
    };
    let cohorts = trainer.cohorts.lock().unwrap().clone();
    (trace, cohorts)
}

fn execute_fake(
    trainer: Arc<FakeTrainer>,
    policy: Policy,
    cohort_size: usize,
    capacity: usize,
    picks: Vec<usize>,
    early_stop: Vec<(u64, f64)>,
) -> (RunOutcome, VecSink) {
    let mut sink = VecSink::default();
    let outcome =
        execute_fake_into(trainer, policy, cohort_size, capacity, picks, early_stop, None, &mut sink)
            .unwrap();
    (outcome, sink)
}

#[allow(clippy::too_many_arguments)]
fn execute_fake_into(
    trainer: Arc<FakeTrainer>,
    policy: Policy,
    cohort_size: usize,
    capacity: usize,
    picks: Vec<usize>,
    early_stop: Vec<(u64, f64)>,
    resume: Option<RunSnapshot>,
    sink: &mut dyn Sink,
) -> Result<RunOutcome, ExecError> {
    let mut workers =
        OrderedWorkers { trainer: trainer.clone(), capacity, started: Vec::new(), picks, next_pick: 0 };
    let partition = Partition {
        shards: (0..CLIENTS).map(|c| (0..(10 + c as u32)).collect()).collect(),
        histograms: (0..CLIENTS).map(|c| vec![10 + c as u32]).collect(),
    };
    let initial: Vec<f32> = (0..WEIGHTS).map(|i| i as f32 * 0.1).collect();
    let settings = ExecSettings {
        partition: Arc::new(partition),
        lookahead: 12,
        cohort_size,
        client_lr: Default::default(),
        target_accuracy: None,
        early_stop,
    };
    let mut server = Server::plain(ServerRule::plain(1.0));
    let engines = Engines { workers: &mut workers, evaluator: &mut FakeEvaluator, server: &mut server, sink };
    execute(&mut plan(policy), initial, resume, &settings, engines)
}

/// Records like a VecSink and keeps a snapshot every `every` versions, with how many update,
/// evaluation and job rows were recorded when it was taken.
struct SnapshotSink {
    rows: VecSink,
    every: u64,
    snapshots: Vec<(RunSnapshot, [usize; 3])>,
}

impl Sink for SnapshotSink {
    fn update(&mut self, record: UpdateRecord) {
        self.rows.update(record);
    }
    fn eval(&mut self, record: EvalRecord) {
        self.rows.eval(record);
    }
    fn job(&mut self, record: crate::sched::JobRecord) {
        self.rows.job(record);
    }
    fn checkpoint_due(&mut self, version: u64) -> bool {
        version % self.every == 0
    }
    fn checkpoint(&mut self, snapshot: &RunSnapshot) -> Result<(), crate::record::RecordError> {
        let rows = [self.rows.updates.len(), self.rows.evals.len(), self.rows.jobs.len()];
        self.snapshots.push((snapshot.clone(), rows));
        Ok(())
    }
}

/// (task, applied version, base version, first loss bits) per update; (version, accuracy bits)
/// per evaluation: everything but the wall-clock columns.
type Rows = (Vec<(u64, u64, u64, u32)>, Vec<(u64, u64)>, Vec<crate::sched::JobRecord>);

fn rows(sink: &VecSink) -> Rows {
    (
        sink.updates
            .iter()
            .map(|u| (u.task, u.applied_version, u.base_version, u.last_loss.to_bits()))
            .collect(),
        sink.evals.iter().map(|e| (e.version, e.accuracy.to_bits())).collect(),
        sink.jobs.clone(),
    )
}

#[test]
fn a_nan_training_loss_stops_the_run_naming_the_task_and_the_version_not_made() {
    let trainer = Arc::new(FakeTrainer { poisoned: Some(9), ..FakeTrainer::default() });
    let (outcome, sink) = execute_fake(trainer, Policy::buffered(1), 1, 2, vec![0], Vec::new());
    let StopReason::NonFinite { version, task, what } = outcome.stop.clone() else {
        panic!("{:?}", outcome.stop)
    };
    assert_eq!((task, what), (Some(9), "training loss"));
    assert_eq!(version, outcome.version + 1, "the poisoned aggregation was not applied");
    assert!(sink.updates.iter().all(|u| u.task != 9 && u.applied_version <= outcome.version));
    assert_eq!(
        outcome.stop.to_string(),
        format!("non-finite training loss from task 9; version {version} was not made")
    );
}

const POLICIES: [Policy; 2] = [Policy::SYNC, Policy::buffered(2)];

#[test]
fn the_applied_sequence_follows_the_plan() {
    for policy in POLICIES {
        let trace = run(policy, 1, 1, vec![0], Vec::new());
        assert_eq!(trace.applied.len() as u64, trace.applied.last().unwrap().1 * policy_updates(policy));
        // Every update is applied once, versions rise one aggregation at a time.
        let versions: Vec<u64> = trace.applied.iter().map(|a| a.1).collect();
        assert!(versions.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
        assert_eq!(*versions.last().unwrap(), 30);
        assert!(!trace.evals.is_empty());
    }
}

fn policy_updates(policy: Policy) -> u64 {
    match policy {
        Policy::Sync { .. } => 6,
        Policy::Buffered { buffer_size, .. } => buffer_size as u64,
    }
}

#[test]
fn cohort_composition_is_the_plans_for_any_worker_count_and_order() {
    for policy in POLICIES {
        for size in [1, 4, 8] {
            let reference = run(policy, size, 1, vec![0], Vec::new());
            let planned =
                cohorts::compose(&plan(policy).collect::<Vec<_>>(), cohorts::CohortBuilder::new(size));
            for capacity in [1, 2, 4, 8] {
                let (trace, trained) =
                    run_with_cohorts(policy, size, capacity, vec![3, 1, 4, 1, 5, 9, 2, 6], Vec::new());
                assert_eq!(trace, reference, "{policy:?} size {size} capacity {capacity}");
                // The trainer saw only the plan's cohorts, each once.
                for cohort in &trained {
                    assert!(
                        planned.contains(cohort),
                        "{policy:?} size {size}: {cohort:?} is not a planned cohort"
                    );
                }
                let mut unique = trained.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), trained.len());
                if size > 1 {
                    assert!(trained.iter().any(|c| c.len() > 1), "{policy:?} size {size}: cohorts formed");
                }
            }
        }
    }
}

#[test]
fn cohort_size_changes_nothing_when_training_is_exact() {
    // The fake trainer has no rounding, so every cohort size must apply the same updates.
    for policy in POLICIES {
        let single = run(policy, 1, 2, vec![0], Vec::new());
        for size in [4, 8] {
            let cohort = run(policy, size, 2, vec![1], Vec::new());
            assert_eq!(
                (&cohort.applied, &cohort.final_hash),
                (&single.applied, &single.final_hash),
                "{policy:?} {size}"
            );
        }
    }
}

#[test]
fn an_early_stop_ends_the_run_after_the_evaluation_that_decides_it() {
    let full = run(Policy::buffered(2), 4, 4, vec![2, 0], Vec::new());
    let stopped = run(Policy::buffered(2), 4, 4, vec![2, 0], vec![(8, 1.0)]);
    assert_eq!(stopped.evals.last().unwrap().0, 8, "stops at the first evaluation past version 8");
    assert!(stopped.applied.len() < full.applied.len());
    assert_eq!(stopped.applied, full.applied[..stopped.applied.len()], "a prefix of the full run");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any finishing order of the workers gives the same applied sequence and final weights.
    #[test]
    fn any_finishing_order_gives_the_same_applied_sequence(
        picks in proptest::collection::vec(0usize..16, 1..40),
        capacity in 1usize..10,
        size in 1usize..9,
        buffered in any::<bool>(),
    ) {
        let policy = if buffered { Policy::buffered(2) } else { Policy::SYNC };
        let reference = run(policy, size, 1, vec![0], Vec::new());
        let trace = run(policy, size, capacity, picks, Vec::new());
        prop_assert_eq!(trace, reference);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A run resumed from any of its checkpoints, with any worker count and finishing order,
    /// applies the rest of the updates, evaluates and ends exactly as the uninterrupted run.
    #[test]
    fn a_run_resumed_from_any_checkpoint_ends_as_the_uninterrupted_run(
        picks in proptest::collection::vec(0usize..16, 1..20),
        capacity in 1usize..6,
        resumed_capacity in 1usize..6,
        size in 1usize..6,
        buffered in any::<bool>(),
        every in 1u64..6,
    ) {
        let policy = if buffered { Policy::buffered(2) } else { Policy::SYNC };
        let mut full = SnapshotSink { rows: VecSink::default(), every, snapshots: Vec::new() };
        let trainer = Arc::new(FakeTrainer::default());
        let outcome =
            execute_fake_into(trainer, policy, size, capacity, picks.clone(), Vec::new(), None, &mut full).unwrap();
        // Checkpoints are taken up to the end, in the run's tail (the plan read to its end) too.
        let last = &full.snapshots.last().unwrap().0;
        prop_assert_eq!(last.version, (outcome.version - 1) / every * every, "the last checkpoint");
        if every == 1 {
            prop_assert!(full.snapshots.iter().any(|(s, _)| s.plan_read), "no checkpoint in the tail");
        }
        let (updates, evals, jobs) = rows(&full.rows);
        prop_assert!(!jobs.is_empty(), "jobs are streamed as the run goes");
        for (snapshot, [updates_before, evals_before, jobs_before]) in &full.snapshots {
            let mut rest = VecSink::default();
            let trainer = Arc::new(FakeTrainer::default());
            let resumed = execute_fake_into(
                trainer.clone(),
                policy,
                size,
                resumed_capacity,
                picks.iter().rev().copied().collect(),
                Vec::new(),
                Some(snapshot.clone()),
                &mut rest,
            )
            .unwrap();
            let (rest_updates, rest_evals, rest_jobs) = rows(&rest);
            prop_assert_eq!(&rest_jobs[..], &jobs[*jobs_before..], "jobs after version {}", snapshot.version);
            prop_assert_eq!(&rest_updates[..], &updates[*updates_before..], "updates after version {}", snapshot.version);
            prop_assert_eq!(&rest_evals[..], &evals[*evals_before..], "evaluations after version {}", snapshot.version);
            prop_assert_eq!(weights_hash(&resumed.final_weights), weights_hash(&outcome.final_weights));
            prop_assert_eq!((resumed.version, resumed.updates_applied), (outcome.version, outcome.updates_applied));
            // Nothing the checkpoint held trained is trained again.
            let retrained: Vec<u64> = trainer.cohorts.lock().unwrap().concat();
            for task in &snapshot.trained {
                prop_assert!(!retrained.contains(&task.task), "task {} trained again", task.task);
            }
        }
    }
}

#[test]
fn a_snapshot_of_another_plan_is_refused() {
    let mut full = SnapshotSink { rows: VecSink::default(), every: 5, snapshots: Vec::new() };
    execute_fake_into(
        Arc::new(FakeTrainer::default()),
        Policy::buffered(2),
        1,
        2,
        vec![0],
        Vec::new(),
        None,
        &mut full,
    )
    .unwrap();
    let (snapshot, _) = full.snapshots[1].clone();
    type Change = fn(&mut RunSnapshot);
    let changes: [(Change, &str); 3] = [
        (|s| s.version += 1, "lacks its own current model"),
        (|s| s.position = 1_000_000, "not of this config"),
        (|s| s.versions.retain(|(v, _)| *v == s.version), "the checkpoint lacks version"),
    ];
    for (change, expected) in changes {
        let mut snapshot = snapshot.clone();
        change(&mut snapshot);
        let error = resume_fake(snapshot);
        assert!(error.contains(expected), "{error}");
    }
}

fn resume_fake(snapshot: RunSnapshot) -> String {
    let trainer = Arc::new(FakeTrainer::default());
    let mut sink = VecSink::default();
    let resumed =
        execute_fake_into(trainer, Policy::buffered(2), 1, 1, vec![0], Vec::new(), Some(snapshot), &mut sink);
    resumed.map(|_| ()).unwrap_err().to_string()
}

#[test]
fn early_stop_judges_the_best_accuracy_so_far_once_the_version_is_reached() {
    let thresholds = [(1000, 0.15)];
    assert_eq!(early_stop(&thresholds, 999, Some(0.1)), None, "before the version");
    assert_eq!(early_stop(&thresholds, 1000, None), None, "nothing evaluated yet");
    assert_eq!(
        early_stop(&thresholds, 1000, Some(0.15)),
        Some(StopReason::EarlyStop { version: 1000, best_accuracy: 0.15, threshold: 0.15 }),
        "at most the threshold stops (<=)"
    );
    assert_eq!(early_stop(&thresholds, 1500, Some(0.16)), None, "a best above the threshold goes on");
    // Checked after every event: any later version still stops while the best stays low.
    assert!(early_stop(&thresholds, 1234, Some(0.1)).is_some());
}

#[test]
fn a_panic_becomes_an_error_and_out_of_memory_names_the_settings_to_lower() {
    let oom = workers::panic_error(
        Box::new("CUDA out of memory. Tried to allocate 2.00 GiB\nmore".to_owned()),
        "training a cohort of 8 clients",
    )
    .to_string();
    assert!(oom.contains("run.cohort_size") && oom.contains("run.workers"), "{oom}");
    assert!(
        oom.contains("cohort of 8") && oom.contains("Tried to allocate 2.00 GiB") && !oom.contains("more"),
        "{oom}"
    );
    let other =
        workers::panic_error(Box::new("shape mismatch"), "training a cohort of 2 clients").to_string();
    assert_eq!(other, "training a cohort of 2 clients failed: shape mismatch");
}
