//! The scheduler: runs the event queue over virtual time and emits the plan, a stream of
//! [`Step`]s. Who trains when, on which version, and which updates each aggregation takes
//! depend only on seeded draws, never on model values, so the plan runs ahead of training.
//!
//! The engine here owns the clock, the queue, the buffer and the versions; it asks an
//! [`ArrivalPolicy`] what each arrival does (FEDREVIVE.md section 2: FedAvg's rounds in
//! [`sync`], the buffered asynchronous rule of FedBuff, AFL-DW and FedRevive in [`buffered`])
//! and a [`Selector`] whom to dispatch ([`select`]: uniformly among clients not in flight; the
//! reference may also pick a client that is still downloading or uploading, which gives it 1-4%
//! more versions). A job's chain is download -> train -> upload; its base version is the
//! version at dispatch, its staleness the version count when it is aggregated minus that base.

pub mod buffered;
pub mod policy;
pub mod select;
pub mod sync;

use std::collections::VecDeque;

pub use policy::{ArrivalPolicy, Decision, Policy};
pub use select::{Selector, UniformIdle};

use crate::sim::delay::{ClientDelays, DelayKind, DelayModel};
use crate::sim::queue::EventQueue;
use crate::sim::rng::{self, Purpose};
use crate::sim::time::{SimDuration, SimTime};

/// One client job, as planned at dispatch.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainTask {
    /// Dispatch order, from 0; also the id of the task's random stream.
    pub task: u64,
    pub client: u32,
    pub base_version: u64,
    pub dispatched_at: SimTime,
    pub train_time: SimDuration,
    pub arrives_at: SimTime,
}

/// An update taken by an aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateInput {
    pub task: u64,
    pub staleness: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Train this task as soon as its base version exists.
    Train(TrainTask),
    /// Apply these updates (in this order) to make `version`.
    Aggregate { version: u64, at: SimTime, inputs: Vec<UpdateInput> },
    /// Evaluate `version` (the latest at that point of the plan).
    Evaluate { version: u64, at: SimTime },
}

/// Why the plan ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanEnd {
    MaxVersions,
    MaxVirtualTime,
}

#[derive(Clone, Debug)]
pub struct PlanConfig {
    pub policy: Policy,
    /// K: jobs in flight.
    pub active_jobs: usize,
    pub num_clients: usize,
    pub delays: DelayModel,
    /// Decides the clients' delay profiles.
    pub setup_seed: u64,
    /// Decides every delay draw and every client selection.
    pub run_seed: u64,
    pub eval_interval: u64,
    pub max_versions: Option<u64>,
    pub max_virtual_time: Option<SimTime>,
}

/// The planner. An iterator of steps; call [`Scheduler::end`] after it is exhausted.
pub struct Scheduler {
    config: PlanConfig,
    policy: Box<dyn ArrivalPolicy>,
    selector: Box<dyn Selector>,
    queue: EventQueue<TrainTask>,
    delays: Vec<ClientDelays>,
    version: u64,
    buffer: Vec<UpdateInput>,
    next_task: u64,
    now: SimTime,
    out: VecDeque<Step>,
    started: bool,
    last_evaluated: Option<u64>,
    end: Option<PlanEnd>,
}

impl Scheduler {
    pub fn new(config: PlanConfig) -> Self {
        assert!(
            config.active_jobs >= 1 && config.active_jobs <= config.num_clients,
            "validated by the config"
        );
        Scheduler {
            delays: config.delays.clients(config.setup_seed, config.run_seed, config.num_clients),
            policy: config.policy.build(config.active_jobs),
            selector: Box::new(UniformIdle::new(
                config.num_clients,
                rng::stream(config.run_seed, Purpose::ClientSelection, 0),
            )),
            queue: EventQueue::new(),
            version: 0,
            buffer: Vec::new(),
            next_task: 0,
            now: SimTime::ZERO,
            out: VecDeque::new(),
            started: false,
            last_evaluated: None,
            end: None,
            config,
        }
    }

    /// Dispatches the client the selector picks on the current version.
    fn dispatch(&mut self) {
        // K <= num_clients (validated) and a client is in flight at most once.
        let client = self.selector.pick().expect("a client is free whenever one is dispatched");
        let delays = &mut self.delays[client as usize];
        let download = delays.draw(DelayKind::Download);
        let train_time = delays.draw(DelayKind::Train);
        let upload = delays.draw(DelayKind::Upload);
        let task = TrainTask {
            task: self.next_task,
            client,
            base_version: self.version,
            dispatched_at: self.now,
            train_time,
            arrives_at: self.now + download + train_time + upload,
        };
        self.next_task += 1;
        // A job that cannot arrive within the horizon is never trained.
        if self.config.max_virtual_time.is_none_or(|limit| task.arrives_at <= limit) {
            self.out.push_back(Step::Train(task.clone()));
        }
        self.queue.push(task.arrives_at, task);
    }

    fn evaluate(&mut self) {
        if self.last_evaluated != Some(self.version) {
            self.out.push_back(Step::Evaluate { version: self.version, at: self.now });
            self.last_evaluated = Some(self.version);
        }
    }

    fn finish(&mut self, why: PlanEnd) {
        self.evaluate();
        self.end = Some(why);
    }

    /// Handles the next arrival; returns false when the plan has ended.
    fn advance(&mut self) -> bool {
        if !self.started {
            self.started = true;
            self.evaluate();
            for _ in 0..self.policy.initial_jobs() {
                self.dispatch();
            }
            return true;
        }
        let Some((time, task)) = self.queue.pop() else {
            self.finish(PlanEnd::MaxVirtualTime);
            return false;
        };
        if let Some(limit) = self.config.max_virtual_time {
            if time > limit {
                self.now = limit;
                self.finish(PlanEnd::MaxVirtualTime);
                return false;
            }
        }
        self.now = time;
        self.selector.release(task.client);
        self.buffer.push(UpdateInput { task: task.task, staleness: self.version - task.base_version });
        let decision = self.policy.on_arrival(self.buffer.len());
        if decision.aggregate {
            self.version += 1;
            let inputs = std::mem::take(&mut self.buffer);
            self.out.push_back(Step::Aggregate { version: self.version, at: self.now, inputs });
            if self.version % self.config.eval_interval == 0 {
                self.evaluate();
            }
            if self.config.max_versions.is_some_and(|max| self.version >= max) {
                self.finish(PlanEnd::MaxVersions);
                return false;
            }
        }
        for _ in 0..decision.dispatch {
            self.dispatch();
        }
        true
    }
}

/// A stream of steps that can say why it ended.
pub trait Plan: Iterator<Item = Step> {
    fn end(&self) -> Option<PlanEnd>;
}

impl Plan for Scheduler {
    fn end(&self) -> Option<PlanEnd> {
        self.end
    }
}

impl Iterator for Scheduler {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        loop {
            if let Some(step) = self.out.pop_front() {
                return Some(step);
            }
            if self.end.is_some() || !self.advance() {
                return self.out.pop_front();
            }
        }
    }
}

/// Counts of a plan, as `fedsim plan` prints them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanSummary {
    pub versions: u64,
    pub dispatched_jobs: u64,
    pub aggregated_updates: u64,
    pub mean_staleness: f64,
    pub max_staleness: u64,
    pub evaluations: u64,
    pub virtual_time: f64,
}

/// Runs a plan to its end without training anything.
pub fn summarize(config: PlanConfig) -> (PlanSummary, Option<PlanEnd>) {
    let mut scheduler = Scheduler::new(config);
    let mut summary = PlanSummary::default();
    let mut staleness_sum = 0u64;
    for step in scheduler.by_ref() {
        match step {
            Step::Train(_) => {}
            Step::Aggregate { version, at, inputs } => {
                summary.versions = version;
                summary.virtual_time = at.units();
                summary.aggregated_updates += inputs.len() as u64;
                for input in &inputs {
                    staleness_sum += input.staleness;
                    summary.max_staleness = summary.max_staleness.max(input.staleness);
                }
            }
            Step::Evaluate { .. } => summary.evaluations += 1,
        }
    }
    summary.dispatched_jobs = scheduler.next_task;
    summary.mean_staleness = staleness_sum as f64 / summary.aggregated_updates.max(1) as f64;
    (summary, scheduler.end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: Policy, k: usize, horizon: f64) -> PlanConfig {
        PlanConfig {
            policy,
            active_jobs: k,
            num_clients: 1000,
            delays: DelayModel::reference_default(),
            setup_seed: 10,
            run_seed: 10,
            eval_interval: 10,
            max_versions: None,
            max_virtual_time: Some(SimTime::from_units(horizon)),
        }
    }

    #[test]
    fn every_aggregated_task_was_planned_before_and_based_on_an_earlier_version() {
        let mut planned = std::collections::HashMap::new();
        for step in Scheduler::new(config(Policy::Buffered { buffer_size: 2 }, 20, 30.0)) {
            match step {
                Step::Train(t) => {
                    planned.insert(t.task, t);
                }
                Step::Aggregate { version, inputs, at } => {
                    assert_eq!(inputs.len(), 2);
                    for input in inputs {
                        let t = planned.remove(&input.task).expect("trained before aggregated");
                        assert_eq!(t.base_version + input.staleness, version - 1);
                        assert!(t.arrives_at <= at && t.dispatched_at < t.arrives_at);
                    }
                }
                Step::Evaluate { .. } => {}
            }
        }
    }

    #[test]
    fn sync_rounds_take_all_k_updates_with_zero_staleness() {
        let mut steps = Scheduler::new(config(Policy::Sync, 10, 40.0));
        let mut rounds = 0;
        for step in steps.by_ref() {
            if let Step::Aggregate { inputs, .. } = step {
                assert_eq!(inputs.len(), 10);
                assert!(inputs.iter().all(|i| i.staleness == 0));
                rounds += 1;
            }
        }
        assert!(rounds >= 4, "{rounds} rounds in 40 time units");
        assert_eq!(steps.end(), Some(PlanEnd::MaxVirtualTime));
    }

    #[test]
    fn a_client_is_never_in_flight_twice() {
        let mut in_flight = std::collections::HashSet::new();
        let mut arrivals: Vec<(SimTime, u32)> = Vec::new();
        for step in Scheduler::new(config(Policy::Buffered { buffer_size: 1 }, 50, 20.0)) {
            if let Step::Train(t) = step {
                // Clients whose job arrived by this dispatch are free again.
                arrivals.retain(|&(at, client)| {
                    let done = at <= t.dispatched_at;
                    if done {
                        in_flight.remove(&client);
                    }
                    !done
                });
                assert!(in_flight.insert(t.client), "client {} dispatched while in flight", t.client);
                arrivals.push((t.arrives_at, t.client));
            }
        }
    }

    #[test]
    fn the_plan_is_a_function_of_the_seed() {
        let plan = |seed| {
            let mut c = config(Policy::Buffered { buffer_size: 2 }, 30, 15.0);
            c.setup_seed = seed;
            c.run_seed = seed;
            Scheduler::new(c).collect::<Vec<_>>()
        };
        assert_eq!(plan(1), plan(1));
        assert_ne!(plan(1), plan(2));
    }

    #[test]
    fn max_versions_ends_the_plan_with_a_final_evaluation() {
        let mut c = config(Policy::Buffered { buffer_size: 1 }, 10, 1e9);
        c.max_versions = Some(25);
        let steps: Vec<Step> = Scheduler::new(c).collect();
        assert!(matches!(steps.last(), Some(Step::Evaluate { version: 25, .. })));
        let evaluated: Vec<u64> = steps
            .iter()
            .filter_map(|s| if let Step::Evaluate { version, .. } = s { Some(*version) } else { None })
            .collect();
        assert_eq!(evaluated, [0, 10, 20, 25]);
    }

    /// SHA-256 of a plan's steps as Debug text, and its summary.
    fn fingerprint(policy: Policy, k: usize, horizon: f64) -> (String, PlanSummary) {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for step in Scheduler::new(config(policy, k, horizon)) {
            hasher.update(format!("{step:?}\n"));
        }
        (format!("{:x}", hasher.finalize()), summarize(config(policy, k, horizon)).0)
    }

    /// Regression guard of issue 11's refactor (policies and selectors as types): the plans
    /// hash, and count, as they did before it (values printed by commit 17b9c86's scheduler).
    #[test]
    fn plans_are_those_of_the_scheduler_before_policies_became_types() {
        for (policy, k, horizon, hash, versions, dispatched) in [
            (
                Policy::Sync,
                20,
                60.0,
                "0abc6e3ddde5eac26c53ef41703522c4cf2431a86f5996a3198eea473ddbaff9",
                11,
                240,
            ),
            (
                Policy::Buffered { buffer_size: 2 },
                20,
                60.0,
                "7bd05fc5e9663ace246aba310176a41849f16041594d0324ac4b3be6536ca9ff",
                375,
                771,
            ),
            (
                Policy::Buffered { buffer_size: 1 },
                100,
                30.0,
                "488c2f6d6b2795c545fa46bbcb68c518fb175cdf58f6779df94f31c29f056abd",
                1860,
                1960,
            ),
        ] {
            let (got, summary) = fingerprint(policy, k, horizon);
            assert_eq!(
                (got.as_str(), summary.versions, summary.dispatched_jobs),
                (hash, versions, dispatched),
                "{policy:?}"
            );
        }
    }

    /// FEDREVIVE.md section 6 / issue 3: within 5% of the published version counts.
    #[test]
    fn reference_world_version_counts_land_near_the_published_ones() {
        for (policy, published) in [
            (Policy::Sync, 28.0),
            (Policy::Buffered { buffer_size: 2 }, 6_343.0),
            (Policy::Buffered { buffer_size: 1 }, 12_687.0),
        ] {
            let (summary, _) = summarize(config(policy, 100, 200.0));
            let ratio = summary.versions as f64 / published;
            assert!(
                (0.95..=1.05).contains(&ratio),
                "{policy:?}: {} versions, published {published}",
                summary.versions
            );
        }
    }
}
