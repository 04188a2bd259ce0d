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
//!
//! A job's Train step is released only once its fate is known: taken by the server, or (where
//! a policy says so) dropped as too stale or cancelled with an over-committed round, in which
//! case the step is withdrawn and the job never trains. Steps leave in the order they were
//! made, so holding them back changes nothing else; jobs still in flight when the plan ends
//! keep their steps.
//!
//! With leaf aggregators ([`leaves`]) a finished job's update goes to its leaf, which forwards
//! it (alone or with others) over a hop to the server; the server handles it when the message
//! arrives. The client is free again once its upload ends. Every job's story is kept in a
//! [`jobs::JobRecord`] until its fate is known, then handed out: to the executor, which streams
//! the jobs settled before its own position ([`Plan::take_jobs_before`]), and at the end
//! ([`Scheduler::take_jobs`]).

pub mod buffered;
pub mod jobs;
pub mod leaves;
pub mod policy;
pub mod policy_kind;
pub mod select;
pub mod sync;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

pub use jobs::{Fate, JobRecord};
pub use leaves::{LeafAssignment, LeafFlush, Topology};
pub use policy::{ArrivalInfo, ArrivalPolicy, Decision, LateUpdates, RoundDeadline};
pub use policy_kind::Policy;
pub use select::{Pick, Selector, UniformIdle};

use leaves::{AtLeaf, Leaves};

use crate::sim::availability::{measured_online_share, Availability, AvailabilityModel};
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
    /// The client's leaf aggregator, in a hierarchy.
    pub leaf: Option<u32>,
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
    /// Every client took part once (no reuse) and every job has arrived.
    ClientsExhausted,
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
    /// A client may take part again after its job (the NVFlare port's device_reuse).
    pub client_reuse: bool,
    /// Versions the server keeps (the port's max_model_history): an update based on an older
    /// one is refused.
    pub max_model_history: Option<u64>,
    /// How long the server waits for a job (the port's update_timeout).
    pub update_timeout: Option<SimDuration>,
    /// When clients are online (drawn from the run seed).
    pub availability: AvailabilityModel,
    /// Leaf aggregators between clients and server; none: clients talk to the server.
    pub topology: Option<Topology>,
}

/// The planner. An iterator of steps; call [`Scheduler::end`] after it is exhausted.
pub struct Scheduler {
    config: PlanConfig,
    policy: Box<dyn ArrivalPolicy>,
    selector: Box<dyn Selector>,
    queue: EventQueue<Event>,
    availability: Availability,
    /// Dispatches waiting for a free client to come online, and when the engine wakes for them.
    owed: usize,
    wake_at: Option<SimTime>,
    delays: Vec<ClientDelays>,
    version: u64,
    buffer: Vec<UpdateInput>,
    next_task: u64,
    now: SimTime,
    out: VecDeque<Step>,
    /// Jobs in flight: task -> client.
    in_flight: BTreeMap<u64, u32>,
    leaves: Option<Leaves>,
    /// Updates at a leaf or on a hop: task -> leaf.
    in_transit: BTreeMap<u64, u32>,
    /// Round deadlines armed so far; only the latest one counts.
    rounds: u64,
    /// Jobs whose fate is not yet known, and those whose fate is, not yet taken.
    open_jobs: HashMap<u64, JobRecord>,
    settled_jobs: Vec<JobRecord>,
    /// Train steps held back until their job's fate is known.
    undecided: HashSet<u64>,
    /// Cancelled jobs whose arrival events are still queued (skipped when they come up).
    cancelled: HashSet<u64>,
    /// Jobs that end without an update, queued at that moment, and why.
    lost: HashMap<u64, Lost>,
    fates: JobFates,
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
                config.client_reuse,
                rng::stream(config.run_seed, Purpose::ClientSelection, 0),
            )),
            queue: EventQueue::new(),
            availability: Availability::new(&config.availability, config.num_clients, config.run_seed),
            owed: 0,
            wake_at: None,
            leaves: config
                .topology
                .as_ref()
                .map(|t| Leaves::new(t, config.num_clients, config.setup_seed, config.run_seed)),
            in_transit: BTreeMap::new(),
            rounds: 0,
            open_jobs: HashMap::new(),
            settled_jobs: Vec::new(),
            version: 0,
            buffer: Vec::new(),
            next_task: 0,
            now: SimTime::ZERO,
            out: VecDeque::new(),
            in_flight: BTreeMap::new(),
            undecided: HashSet::new(),
            cancelled: HashSet::new(),
            lost: HashMap::new(),
            fates: JobFates::default(),
            started: false,
            last_evaluated: None,
            end: None,
            config,
        }
    }

    /// Dispatches the client the selector picks on the current version; none when every client
    /// has taken part (without reuse); later, when no free client is online now.
    fn dispatch(&mut self) {
        let client = match self.selector.pick(self.now, &mut self.availability) {
            Pick::Client(client) => client,
            Pick::WaitUntil(at) => {
                self.owed += 1;
                if self.wake_at.is_none_or(|wake| at < wake) {
                    self.wake_at = Some(at);
                    self.queue.push(at, Event::Wake);
                }
                return;
            }
            Pick::Exhausted => return,
        };
        let delays = &mut self.delays[client as usize];
        let download = delays.draw(DelayKind::Download);
        let train_time = delays.draw(DelayKind::Train);
        let upload = delays.draw(DelayKind::Upload);
        let leaf = self.leaves.as_mut().map(|leaves| {
            let leaf = leaves.leaf_of(client);
            leaves.dispatched(leaf);
            leaf
        });
        let task = TrainTask {
            task: self.next_task,
            client,
            leaf,
            base_version: self.version,
            dispatched_at: self.now,
            train_time,
            arrives_at: self.now + download + train_time + upload,
        };
        self.next_task += 1;
        self.in_flight.insert(task.task, client);
        self.open_jobs.insert(task.task, JobRecord::dispatched(&task, download, upload));
        // A job whose client goes offline before its update arrives drops out then; one that
        // would take longer than the server waits times out. Either way it never trains, and
        // its slot frees at that moment.
        let timeout_at = self.config.update_timeout.map(|t| self.now + t).filter(|&at| at < task.arrives_at);
        let offline_at = self.availability.offline_at(client, self.now).filter(|&at| at < task.arrives_at);
        let lost = match (offline_at, timeout_at) {
            (Some(offline), Some(timeout)) if timeout < offline => Some((timeout, Lost::TimedOut)),
            (Some(offline), _) => Some((offline, Lost::WentOffline)),
            (None, Some(timeout)) => Some((timeout, Lost::TimedOut)),
            (None, None) => None,
        };
        if let Some((at, why)) = lost {
            self.lost.insert(task.task, why);
            self.queue.push(at, Event::Job(task));
            return;
        }
        // A job that cannot arrive within the horizon is never trained.
        if self.config.max_virtual_time.is_none_or(|limit| task.arrives_at <= limit) {
            self.undecided.insert(task.task);
            self.out.push_back(Step::Train(task.clone()));
        }
        self.queue.push(task.arrives_at, Event::Job(task));
    }

    /// Dispatches what could not be dispatched while no free client was online.
    fn wake(&mut self) {
        if self.wake_at == Some(self.now) {
            self.wake_at = None;
        }
        for _ in 0..std::mem::take(&mut self.owed) {
            self.dispatch();
        }
    }

    /// Withdraws a job's held-back Train step: the job will never train.
    fn withdraw(&mut self, task: u64) {
        if self.undecided.remove(&task) {
            let index = self.out.iter().position(|s| matches!(s, Step::Train(t) if t.task == task));
            self.out.remove(index.expect("an undecided job's step is held back"));
        }
    }

    /// Cancels every job not yet at the server (in flight, at a leaf or on a hop): none of them
    /// trains; clients in flight may be picked again at once.
    fn cancel_outstanding(&mut self, fate: Fate) {
        for (task, client) in std::mem::take(&mut self.in_flight) {
            self.withdraw(task);
            self.lost.remove(&task);
            self.cancelled.insert(task);
            self.selector.release(client);
            if let (Some(leaves), Some(leaf)) = (&mut self.leaves, self.open_jobs[&task].leaf) {
                leaves.cancel_in_flight(leaf);
            }
            self.settle(task, fate);
        }
        for (task, leaf) in std::mem::take(&mut self.in_transit) {
            self.withdraw(task);
            let held = self.leaves.as_mut().is_some_and(|leaves| leaves.cancel(leaf, task));
            if !held {
                // On a hop: skipped when its message arrives.
                self.cancelled.insert(task);
            }
            self.settle(task, fate);
        }
    }

    /// Jobs the server has not heard back from, and dispatches owed.
    fn outstanding(&self) -> usize {
        self.in_flight.len() + self.in_transit.len() + self.owed
    }

    /// A job's fate is known: its record moves to the settled ones, and it is counted.
    fn settle(&mut self, task: u64, fate: Fate) {
        let mut record = self.open_jobs.remove(&task).expect("a job is settled once");
        self.fates.count(fate);
        record.fate = fate;
        record.settled_at = Some(self.now);
        self.settled_jobs.push(record);
    }

    /// Records of the jobs settled since the last call, in the order they were settled; with
    /// `open`, the rest too (fate [`Fate::Open`], by task), once the plan has been drained.
    pub fn take_jobs(&mut self, open: bool) -> Vec<JobRecord> {
        let mut jobs = std::mem::take(&mut self.settled_jobs);
        if open {
            let mut rest: Vec<JobRecord> = self.open_jobs.drain().map(|(_, record)| record).collect();
            rest.sort_by_key(|r| r.task);
            jobs.extend(rest);
        }
        jobs
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

    /// Handles the next event; the plan has ended when `end` is set.
    fn advance(&mut self) {
        if !self.started {
            self.started = true;
            self.evaluate();
            let start = self.policy.start();
            self.obey(start, Fate::Cancelled);
            return;
        }
        let Some((time, event)) = self.queue.pop() else {
            self.finish(if self.config.client_reuse {
                PlanEnd::MaxVirtualTime
            } else {
                PlanEnd::ClientsExhausted
            });
            return;
        };
        if matches!(&event, Event::Job(task) if self.cancelled.remove(&task.task)) {
            return;
        }
        if let Some(limit) = self.config.max_virtual_time {
            if time > limit {
                self.now = limit;
                self.finish(PlanEnd::MaxVirtualTime);
                return;
            }
        }
        self.now = time;
        match event {
            Event::Job(task) => self.job_ends(task),
            Event::Wake => self.wake(),
            Event::Tick { leaf } => {
                let batch = self.leaves.as_mut().map(|leaves| leaves.tick(leaf)).unwrap_or_default();
                self.forward(leaf, batch);
            }
            Event::Message(batch) => self.at_server(batch),
            Event::Deadline { round } => {
                if round == self.rounds {
                    let decision = self.policy.on_deadline(self.buffer.len(), self.outstanding());
                    self.obey(decision, Fate::MissedDeadline);
                }
            }
        }
    }

    /// A job's chain ends: its update reaches the leaf (or the server), or it is lost.
    fn job_ends(&mut self, task: TrainTask) {
        self.in_flight.remove(&task.task);
        self.selector.release(task.client);
        if let Some(why) = self.lost.remove(&task.task) {
            self.settle(task.task, why.fate());
            // The leaf may have been waiting for this job only.
            let (leaf, flushed) = match (&mut self.leaves, task.leaf) {
                (Some(leaves), Some(leaf)) => (leaf, leaves.lost(leaf)),
                _ => (0, Vec::new()),
            };
            let decision = self.policy.on_lost(self.buffer.len());
            self.obey(decision, Fate::Cancelled);
            if self.end.is_none() {
                self.forward(leaf, flushed);
            }
            return;
        }
        let Some(leaves) = &mut self.leaves else {
            self.at_server(vec![task]);
            return;
        };
        let leaf = task.leaf.expect("tasks of a hierarchy name their leaf");
        self.in_transit.insert(task.task, leaf);
        match leaves.arrive(task, self.now) {
            AtLeaf::Forward(batch) => self.forward(leaf, batch),
            AtLeaf::Hold { tick_at: Some(at) } => {
                self.queue.push(at, Event::Tick { leaf });
            }
            AtLeaf::Hold { tick_at: None } => {}
        }
    }

    /// A leaf sends a message; it reaches the server after the hop (at once for a zero hop).
    fn forward(&mut self, leaf: u32, batch: Vec<TrainTask>) {
        if batch.is_empty() {
            return;
        }
        let hop = self.leaves.as_mut().map_or(SimDuration::ZERO, |leaves| leaves.hop(leaf));
        if hop == SimDuration::ZERO {
            self.at_server(batch);
        } else {
            self.queue.push(self.now + hop, Event::Message(batch));
        }
    }

    /// Updates reach the server, one after another.
    fn at_server(&mut self, batch: Vec<TrainTask>) {
        for task in batch {
            if self.end.is_some() {
                // The rest keep their steps, like jobs in flight at the end.
                return;
            }
            if self.cancelled.remove(&task.task) {
                continue;
            }
            self.in_transit.remove(&task.task);
            if let Some(record) = self.open_jobs.get_mut(&task.task) {
                record.at_server = Some(self.now);
            }
            let decision = self.receive(&task);
            self.obey(decision, Fate::Cancelled);
        }
    }

    /// Carries out a policy's orders; jobs they cancel get `cancelled_as`.
    fn obey(&mut self, decision: Decision, cancelled_as: Fate) {
        if decision.cancel_in_flight {
            self.cancel_outstanding(cancelled_as);
        }
        if let Some(after) = decision.deadline {
            self.rounds += 1;
            self.queue.push(self.now + after, Event::Deadline { round: self.rounds });
        }
        if decision.aggregate {
            self.version += 1;
            let inputs = std::mem::take(&mut self.buffer);
            for input in &inputs {
                self.settle(input.task, Fate::Applied { version: self.version });
            }
            self.out.push_back(Step::Aggregate { version: self.version, at: self.now, inputs });
            if self.version % self.config.eval_interval == 0 {
                self.evaluate();
            }
            if self.config.max_versions.is_some_and(|max| self.version >= max) {
                self.finish(PlanEnd::MaxVersions);
                return;
            }
        }
        for _ in 0..decision.dispatch {
            self.dispatch();
        }
    }

    /// What became of the jobs that did not reach an aggregation, so far.
    pub fn fates(&self) -> JobFates {
        self.fates
    }

    /// An update arrives: into the buffer, or withdrawn (dropped as too stale, or refused for
    /// a base version the server no longer keeps). Returns the policy's orders.
    fn receive(&mut self, task: &TrainTask) -> Decision {
        let staleness = self.version - task.base_version;
        let decision = self.policy.on_arrival(ArrivalInfo { staleness, buffered: self.buffer.len() });
        let refused = self.config.max_model_history.is_some_and(|kept| staleness >= kept);
        if decision.admit && !refused {
            self.undecided.remove(&task.task);
            self.buffer.push(UpdateInput { task: task.task, staleness });
            return decision;
        }
        self.withdraw(task.task);
        self.settle(task.task, if refused { Fate::Refused } else { Fate::DroppedStale });
        Decision { aggregate: false, ..decision }
    }
}

/// A stream of steps that can say why it ended.
pub trait Plan: Iterator<Item = Step> {
    fn end(&self) -> Option<PlanEnd>;

    /// The records of jobs whose fate was settled before `before`, in the order they were
    /// settled, not handed out yet: the executor streams them to the jobs table as it goes.
    fn take_jobs_before(&mut self, _before: SimTime) -> Vec<JobRecord> {
        Vec::new()
    }
}

impl Plan for Scheduler {
    fn end(&self) -> Option<PlanEnd> {
        self.end
    }

    fn take_jobs_before(&mut self, before: SimTime) -> Vec<JobRecord> {
        // Settled in time order: the ones before `before` are a prefix.
        let count =
            self.settled_jobs.iter().take_while(|j| j.settled_at.is_some_and(|at| at < before)).count();
        self.settled_jobs.drain(..count).collect()
    }
}

/// Jobs withdrawn from the plan (never trained), by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobFates {
    /// Arrived staler than the policy's maximum staleness.
    pub dropped_stale: u64,
    /// Still in flight when an over-committed round took its K updates.
    pub cancelled: u64,
    /// Based on a version the server no longer kept (max_model_history).
    pub refused: u64,
    /// Would have taken longer than algorithm.update_timeout.
    pub timed_out: u64,
    /// Their client went offline before the update arrived.
    pub went_offline: u64,
    /// Still out when their sync round's deadline passed (late_updates = "drop").
    pub missed_deadline: u64,
}

impl JobFates {
    /// Jobs withdrawn from the plan, all reasons together.
    pub fn withdrawn(&self) -> u64 {
        self.dropped_stale
            + self.cancelled
            + self.refused
            + self.timed_out
            + self.went_offline
            + self.missed_deadline
    }

    fn count(&mut self, fate: Fate) {
        match fate {
            Fate::Applied { .. } | Fate::Open => {}
            Fate::DroppedStale => self.dropped_stale += 1,
            Fate::Cancelled => self.cancelled += 1,
            Fate::Refused => self.refused += 1,
            Fate::TimedOut => self.timed_out += 1,
            Fate::WentOffline => self.went_offline += 1,
            Fate::MissedDeadline => self.missed_deadline += 1,
        }
    }
}

/// What the queue holds.
enum Event {
    /// A job's chain ends: its upload (to its leaf, or the server), or the moment it is lost.
    Job(TrainTask),
    /// Dispatches that waited for a client to come online.
    Wake,
    /// A periodic leaf forwards what it holds.
    Tick { leaf: u32 },
    /// A leaf's message reaches the server.
    Message(Vec<TrainTask>),
    /// A sync round's deadline (ignored unless it is the latest armed).
    Deadline { round: u64 },
}

/// Why a job ends without an update.
#[derive(Clone, Copy, Debug)]
enum Lost {
    TimedOut,
    WentOffline,
}

impl Lost {
    fn fate(self) -> Fate {
        match self {
            Lost::TimedOut => Fate::TimedOut,
            Lost::WentOffline => Fate::WentOffline,
        }
    }
}

impl Iterator for Scheduler {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        loop {
            if self.end.is_some() {
                // Jobs in flight at the end keep their steps (the executor trains only those an
                // aggregation needs).
                self.undecided.clear();
            }
            let held = matches!(self.out.front(), Some(Step::Train(t)) if self.undecided.contains(&t.task));
            if !held {
                if let Some(step) = self.out.pop_front() {
                    return Some(step);
                }
            }
            if self.end.is_some() {
                return None;
            }
            self.advance();
        }
    }
}

/// Counts of a plan, as `fedsim plan` prints them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanSummary {
    pub versions: u64,
    pub dispatched_jobs: u64,
    /// Jobs whose Train step is in the plan (dispatched minus withdrawn, and minus jobs that
    /// could not arrive within the horizon).
    pub trained_jobs: u64,
    pub fates: JobFates,
    /// The share of the plan's virtual time that clients were online (1 when always).
    pub online_share: f64,
    pub aggregated_updates: u64,
    pub mean_staleness: f64,
    pub max_staleness: u64,
    pub evaluations: u64,
    pub virtual_time: f64,
    /// Per leaf, in a hierarchy.
    pub leaves: Vec<LeafSummary>,
}

/// One leaf's counts in a plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeafSummary {
    pub clients: u64,
    pub dispatched_jobs: u64,
    pub aggregated_updates: u64,
    /// Messages it sent to the server.
    pub messages: u64,
}

/// Runs a plan to its end without training anything.
pub fn summarize(config: PlanConfig) -> (PlanSummary, Option<PlanEnd>) {
    summarize_watching(config, &mut |_| true)
}

/// [`summarize`], showing `watch` the counts so far every few thousand steps; the plan stops
/// there (and ends with None) when `watch` returns false.
pub fn summarize_watching(
    config: PlanConfig,
    watch: &mut dyn FnMut(&PlanSummary) -> bool,
) -> (PlanSummary, Option<PlanEnd>) {
    let mut scheduler = Scheduler::new(config);
    let mut summary = PlanSummary::default();
    let mut staleness_sum = 0u64;
    let count_leaves = |summary: &mut PlanSummary, jobs: Vec<JobRecord>| {
        for job in jobs {
            let Some(leaf) = job.leaf else { continue };
            let leaf = &mut summary.leaves[leaf as usize];
            leaf.dispatched_jobs += 1;
            leaf.aggregated_updates += matches!(job.fate, Fate::Applied { .. }) as u64;
        }
    };
    if let Some(topology) = &scheduler.config.topology {
        summary.leaves = vec![LeafSummary::default(); topology.num_leaves];
        for leaf in topology.leaf_of_clients(scheduler.config.num_clients, scheduler.config.setup_seed) {
            summary.leaves[leaf as usize].clients += 1;
        }
    }
    let mut steps = 0u64;
    while let Some(step) = scheduler.next() {
        steps += 1;
        if steps % 4096 == 0 && !watch(&summary) {
            break;
        }
        count_leaves(&mut summary, scheduler.take_jobs(false));
        match step {
            Step::Train(_) => summary.trained_jobs += 1,
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
    count_leaves(&mut summary, scheduler.take_jobs(true));
    if let Some(leaves) = &scheduler.leaves {
        for (summary, &messages) in summary.leaves.iter_mut().zip(&leaves.messages) {
            summary.messages = messages;
        }
    }
    summary.dispatched_jobs = scheduler.next_task;
    summary.fates = scheduler.fates();
    let config = &scheduler.config;
    summary.online_share =
        measured_online_share(&config.availability, config.num_clients, config.run_seed, scheduler.now);
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
            client_reuse: true,
            max_model_history: None,
            update_timeout: None,
            availability: Default::default(),
            topology: None,
        }
    }

    #[test]
    fn every_aggregated_task_was_planned_before_and_based_on_an_earlier_version() {
        let mut planned = std::collections::HashMap::new();
        for step in Scheduler::new(config(Policy::buffered(2), 20, 30.0)) {
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
        let mut steps = Scheduler::new(config(Policy::SYNC, 10, 40.0));
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
        for step in Scheduler::new(config(Policy::buffered(1), 50, 20.0)) {
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
            let mut c = config(Policy::buffered(2), 30, 15.0);
            c.setup_seed = seed;
            c.run_seed = seed;
            Scheduler::new(c).collect::<Vec<_>>()
        };
        assert_eq!(plan(1), plan(1));
        assert_ne!(plan(1), plan(2));
    }

    #[test]
    fn max_versions_ends_the_plan_with_a_final_evaluation() {
        let mut c = config(Policy::buffered(1), 10, 1e9);
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
            // As the steps printed before tasks named their leaf.
            hasher.update(format!("{step:?}\n").replace("leaf: None, ", ""));
        }
        (format!("{:x}", hasher.finalize()), summarize(config(policy, k, horizon)).0)
    }

    /// Regression guard of issue 11's refactor (policies and selectors as types): the plans
    /// hash, and count, as they did before it (values printed by commit 17b9c86's scheduler).
    #[test]
    fn plans_are_those_of_the_scheduler_before_policies_became_types() {
        for (policy, k, horizon, hash, versions, dispatched) in [
            (
                Policy::SYNC,
                20,
                60.0,
                "0abc6e3ddde5eac26c53ef41703522c4cf2431a86f5996a3198eea473ddbaff9",
                11,
                240,
            ),
            (
                Policy::buffered(2),
                20,
                60.0,
                "7bd05fc5e9663ace246aba310176a41849f16041594d0324ac4b3be6536ca9ff",
                375,
                771,
            ),
            (
                Policy::buffered(1),
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

    /// Train steps by task, and every aggregation's inputs, of a whole plan.
    fn trained_and_aggregated(plan: PlanConfig) -> (Scheduler, Vec<u64>, Vec<Vec<UpdateInput>>) {
        let mut scheduler = Scheduler::new(plan);
        let (mut trained, mut aggregations) = (Vec::new(), Vec::new());
        for step in scheduler.by_ref() {
            match step {
                Step::Train(t) => trained.push(t.task),
                Step::Aggregate { inputs, .. } => aggregations.push(inputs),
                Step::Evaluate { .. } => {}
            }
        }
        (scheduler, trained, aggregations)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Over-committed rounds take exactly K updates each; the jobs they cancel never reach
        /// the plan, every job that does is aggregated (but for the last round's, which the plan
        /// cut short), and ceil(f K) jobs are dispatched a round.
        #[test]
        fn over_committed_rounds_apply_exactly_k_and_never_train_the_cancelled(k in 2usize..20, f in 1.0f64..2.0, seed in 0u64..1000) {
            let mut plan = config(Policy::Sync { over_commitment: f, deadline: None }, k, 25.0);
            plan.setup_seed = seed;
            plan.run_seed = seed;
            let (scheduler, trained, aggregations) = trained_and_aggregated(plan);
            let per_round = sync::dispatched_per_round(k, f);
            proptest::prop_assert!(aggregations.iter().all(|inputs| inputs.len() == k));
            let aggregated: HashSet<u64> = aggregations.iter().flatten().map(|i| i.task).collect();
            let cut_short: Vec<&u64> = trained.iter().filter(|t| !aggregated.contains(t)).collect();
            proptest::prop_assert!(cut_short.len() < per_round, "only the last round may be cut short");
            let rounds = aggregations.len() as u64;
            proptest::prop_assert!(scheduler.next_task <= (rounds + 1) * per_round as u64);
            proptest::prop_assert_eq!(scheduler.fates().cancelled, rounds * (per_round - k) as u64);
            proptest::prop_assert_eq!(scheduler.fates().dropped_stale, 0);
        }

        /// With a maximum staleness no aggregated update is staler; the dropped ones never
        /// reach the plan, and K jobs stay in flight.
        #[test]
        fn updates_beyond_the_maximum_staleness_are_dropped_untrained(max in 0u64..40, b in 1usize..4, seed in 0u64..1000) {
            let mut plan = config(Policy::Buffered { buffer_size: b, max_staleness: Some(max), min_hole_to_fill: 1 }, 50, 8.0);
            plan.setup_seed = seed;
            plan.run_seed = seed;
            let (scheduler, trained, aggregations) = trained_and_aggregated(plan);
            let aggregated: HashSet<u64> = aggregations.iter().flatten().map(|i| i.task).collect();
            proptest::prop_assert!(aggregations.iter().flatten().all(|i| i.staleness <= max));
            // Jobs in flight or buffered at the end keep their steps: at most K + B of them.
            let left = trained.iter().filter(|t| !aggregated.contains(t)).count();
            proptest::prop_assert!(left <= 50 + b, "{} trained jobs never aggregated", left);
            let fates = scheduler.fates();
            proptest::prop_assert_eq!(fates.cancelled, 0);
            proptest::prop_assert!(trained.len() as u64 + fates.dropped_stale <= scheduler.next_task);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Jobs slower than the timeout never reach the plan; every other job does, rounds
        /// aggregate what arrived in time, and FedBuff keeps its slots filled.
        #[test]
        fn jobs_slower_than_the_update_timeout_never_train(timeout in 0.3f64..4.0, sync in proptest::prelude::any::<bool>(), seed in 0u64..1000) {
            let policy = if sync { Policy::SYNC } else { Policy::buffered(2) };
            let mut plan = config(policy, 20, 30.0);
            plan.setup_seed = seed;
            plan.run_seed = seed;
            plan.update_timeout = Some(SimDuration::from_units(timeout));
            let mut scheduler = Scheduler::new(plan);
            let mut trained = Vec::new();
            let mut aggregations = 0;
            for step in scheduler.by_ref() {
                match step {
                    Step::Train(t) => trained.push(t),
                    Step::Aggregate { inputs, .. } => {
                        proptest::prop_assert!(!inputs.is_empty() && inputs.len() <= 20);
                        aggregations += 1;
                    }
                    Step::Evaluate { .. } => {}
                }
            }
            let limit = SimDuration::from_units(timeout);
            proptest::prop_assert!(trained.iter().all(|t| t.arrives_at <= t.dispatched_at + limit));
            proptest::prop_assert!(aggregations > 0 || scheduler.fates().timed_out > 0);
            proptest::prop_assert!(trained.len() as u64 + scheduler.fates().timed_out <= scheduler.next_task);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

        /// With clients online in windows, a job is only ever dispatched to an online client,
        /// and a job that trains never spans its client going offline; the others drop out.
        #[test]
        fn jobs_go_to_online_clients_and_drop_out_only_when_one_goes_offline(mean_on in 0.5f64..20.0, mean_off in 0.5f64..20.0, sync in proptest::prelude::any::<bool>(), daily in proptest::prelude::any::<bool>(), seed in 0u64..1000) {
            let model = if daily {
                AvailabilityModel::Daily { period: mean_on + mean_off, online_fraction: mean_on / (mean_on + mean_off) }
            } else {
                AvailabilityModel::OnOff { mean_on, mean_off }
            };
            let policy = if sync { Policy::SYNC } else { Policy::buffered(2) };
            let mut plan = config(policy, 20, 30.0);
            plan.num_clients = 100;
            (plan.setup_seed, plan.run_seed, plan.availability) = (seed, seed, model.clone());
            let mut scheduler = Scheduler::new(plan);
            let mut check = Availability::new(&model, 100, seed);
            let mut trained = 0;
            for step in scheduler.by_ref() {
                if let Step::Train(t) = step {
                    proptest::prop_assert!(check.online(t.client, t.dispatched_at), "task {} went to an offline client", t.task);
                    let offline = check.offline_at(t.client, t.dispatched_at).expect("on/off clients go offline");
                    proptest::prop_assert!(offline >= t.arrives_at, "task {} spans its client going offline", t.task);
                    trained += 1;
                }
            }
            proptest::prop_assert!(trained > 0);
            let fates = scheduler.fates();
            proptest::prop_assert!(trained + fates.went_offline <= scheduler.next_task);
        }
    }

    #[test]
    fn a_trace_decides_who_may_train_when_and_the_plan_ends_once_nobody_comes_back() {
        let t = SimTime::from_units;
        let windows = crate::sim::availability::TraceWindows {
            clients: vec![vec![(t(0.0), t(5.0))], vec![(t(2.0), t(8.0)), (t(30.0), t(31.0))], vec![], vec![]],
        };
        let mut plan = config(Policy::buffered(1), 2, 1e6);
        plan.num_clients = 4;
        plan.availability =
            AvailabilityModel::Trace { file: "test".into(), windows: std::sync::Arc::new(windows) };
        let mut scheduler = Scheduler::new(plan);
        let trained: Vec<TrainTask> =
            scheduler.by_ref().filter_map(|s| if let Step::Train(t) = s { Some(t) } else { None }).collect();
        assert!(!trained.is_empty());
        for task in &trained {
            let window = match task.client {
                0 => (t(0.0), t(5.0)),
                1 if task.dispatched_at < t(8.0) => (t(2.0), t(8.0)),
                1 => (t(30.0), t(31.0)),
                other => panic!("client {other} is never online"),
            };
            assert!(window.0 <= task.dispatched_at && task.arrives_at <= window.1, "{task:?}");
        }
        assert!(trained.iter().any(|t| t.client == 1 && t.dispatched_at >= SimTime::from_units(2.0)));
        assert_eq!(scheduler.end(), Some(PlanEnd::MaxVirtualTime), "the queue empties: nobody comes back");
    }

    #[test]
    fn seventy_percent_availability_loses_jobs_and_the_plan_reports_the_online_share() {
        let mut plan = config(Policy::buffered(2), 100, 30.0);
        plan.availability = AvailabilityModel::OnOff { mean_on: 7.0, mean_off: 3.0 };
        let (summary, end) = summarize(plan);
        let (always, _) = summarize(config(Policy::buffered(2), 100, 30.0));
        assert_eq!(end, Some(PlanEnd::MaxVirtualTime));
        assert!(summary.fates.went_offline > 0 && summary.versions > 0);
        assert!(summary.versions < always.versions, "jobs lost to clients going offline make fewer versions");
        assert!((summary.online_share - 0.7).abs() < 0.05, "{}", summary.online_share);
        assert_eq!(always.online_share, 1.0);
    }

    #[test]
    fn a_short_update_timeout_times_jobs_out_and_sync_rounds_go_on() {
        let (plain, _) = summarize(config(Policy::SYNC, 20, 60.0));
        let mut plan = config(Policy::SYNC, 20, 60.0);
        plan.update_timeout = Some(SimDuration::from_units(1.5));
        let (summary, _) = summarize(plan);
        assert!(summary.fates.timed_out > 0);
        assert!(summary.versions > plain.versions, "rounds no longer wait for the slowest job");
        assert!(summary.aggregated_updates < summary.versions * 20, "rounds aggregate what arrived in time");
    }

    #[test]
    fn without_reuse_every_client_takes_part_once_and_the_plan_ends_when_all_have() {
        let mut plan = config(Policy::buffered(2), 20, 1e6);
        plan.num_clients = 100;
        plan.client_reuse = false;
        let (scheduler, trained, aggregations) = trained_and_aggregated(plan);
        assert_eq!(scheduler.end(), Some(PlanEnd::ClientsExhausted));
        assert_eq!(scheduler.next_task, 100);
        assert_eq!(trained.len(), 100);
        assert_eq!(aggregations.iter().map(Vec::len).sum::<usize>(), 100, "B = 2 takes them all");
    }

    #[test]
    fn refills_come_min_hole_to_fill_at_a_time_and_old_bases_are_refused() {
        // Refilling 10 slots at a time keeps between K - 9 and K jobs in flight.
        let plan =
            config(Policy::Buffered { buffer_size: 1, max_staleness: None, min_hole_to_fill: 10 }, 50, 40.0);
        let tasks: Vec<TrainTask> = Scheduler::new(plan)
            .filter_map(|s| if let Step::Train(t) = s { Some(t) } else { None })
            .collect();
        let in_flight_at =
            |t: SimTime| tasks.iter().filter(|j| j.dispatched_at <= t && t < j.arrives_at).count();
        let (one, four) = (SimTime::from_units(1.0), SimTime::from_units(4.0));
        let counts: Vec<usize> = tasks
            .iter()
            .flat_map(|j| [j.dispatched_at, j.arrives_at])
            .filter(|&t| one <= t && t <= four)
            .map(in_flight_at)
            .collect();
        assert!(
            counts.iter().all(|n| (41..=50).contains(n)),
            "{:?}",
            (counts.iter().min(), counts.iter().max())
        );
        assert!(counts.iter().any(|&n| n < 45), "refills wait for ten holes");
        // The server keeps 8 versions: an update based on an older one is refused.
        let mut plan = config(Policy::buffered(1), 50, 10.0);
        plan.max_model_history = Some(8);
        let (summary, _) = summarize(plan);
        assert!(summary.fates.refused > 0 && summary.max_staleness < 8);
    }

    #[test]
    fn over_commitment_shortens_rounds_and_a_small_maximum_staleness_drops_updates() {
        let time_per_round = |f: f64| {
            let (summary, _) =
                summarize(config(Policy::Sync { over_commitment: f, deadline: None }, 20, 60.0));
            summary.virtual_time / summary.versions as f64
        };
        assert!(time_per_round(1.5) < 0.8 * time_per_round(1.0), "stragglers no longer set the pace");
        let (summary, _) = summarize(config(
            Policy::Buffered { buffer_size: 1, max_staleness: Some(5), min_hole_to_fill: 1 },
            50,
            10.0,
        ));
        let (plain, _) = summarize(config(Policy::buffered(1), 50, 10.0));
        assert!(summary.fates.dropped_stale > 0 && summary.max_staleness <= 5 && plain.max_staleness > 5);
        assert_eq!(summary.trained_jobs + summary.fates.dropped_stale, plain.trained_jobs);
    }

    /// FEDREVIVE.md section 6 / issue 3: within 5% of the published version counts.
    #[test]
    fn reference_world_version_counts_land_near_the_published_ones() {
        for (policy, published) in
            [(Policy::SYNC, 28.0), (Policy::buffered(2), 6_343.0), (Policy::buffered(1), 12_687.0)]
        {
            let (summary, _) = summarize(config(policy, 100, 200.0));
            let ratio = summary.versions as f64 / published;
            assert!(
                (0.95..=1.05).contains(&ratio),
                "{policy:?}: {} versions, published {published}",
                summary.versions
            );
        }
    }

    fn leaves(num_leaves: usize, flush: LeafFlush, hop: f64) -> Option<Topology> {
        Some(Topology {
            num_leaves,
            assignment: LeafAssignment::Seeded,
            flush,
            hop: crate::sim::delay::DelaySpec::constant(hop),
        })
    }

    /// A plan's steps with the leaf left out, for comparing a hierarchy with the flat world.
    fn without_leaves(plan: PlanConfig) -> Vec<Step> {
        Scheduler::new(plan)
            .map(|step| match step {
                Step::Train(task) => Step::Train(TrainTask { leaf: None, ..task }),
                other => other,
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

        /// Pass-through leaves with no hop delay give exactly the flat plan, for every policy,
        /// with timeouts and availability too.
        #[test]
        fn pass_through_leaves_with_zero_hop_give_the_flat_plan(num_leaves in 1usize..40, policy in 0usize..4, timeout in proptest::option::of(0.5f64..3.0), on_off in proptest::prelude::any::<bool>(), seed in 0u64..1000) {
            let policy = [
                Policy::SYNC,
                Policy::Sync { over_commitment: 1.3, deadline: None },
                Policy::buffered(2),
                Policy::Buffered { buffer_size: 1, max_staleness: Some(20), min_hole_to_fill: 3 },
            ][policy];
            let mut flat = config(policy, 30, 15.0);
            (flat.setup_seed, flat.run_seed) = (seed, seed);
            flat.num_clients = 200;
            flat.update_timeout = timeout.map(SimDuration::from_units);
            if on_off {
                flat.availability = AvailabilityModel::OnOff { mean_on: 6.0, mean_off: 2.0 };
            }
            let mut hierarchy = flat.clone();
            hierarchy.topology = leaves(num_leaves, LeafFlush::Buffer(1), 0.0);
            proptest::prop_assert_eq!(without_leaves(hierarchy), without_leaves(flat));
        }

        /// Leaves that combine updates, or forward on a period, with a hop delay: every update
        /// reaches the server after its upload plus at least the hop, staleness is counted there,
        /// sync rounds still take K, and every job is accounted for exactly once.
        #[test]
        fn buffered_and_periodic_leaves_deliver_every_update_once_after_its_hop(buffer in 1usize..6, period in proptest::option::of(0.05f64..1.0), sync in proptest::prelude::any::<bool>(), seed in 0u64..1000) {
            let policy = if sync { Policy::SYNC } else { Policy::buffered(2) };
            let mut plan = config(policy, 20, 20.0);
            (plan.setup_seed, plan.run_seed, plan.num_clients) = (seed, seed, 100);
            let flush = period.map_or(LeafFlush::Buffer(buffer), |p| LeafFlush::Period(SimDuration::from_units(p)));
            plan.topology = leaves(5, flush, 0.05);
            let mut scheduler = Scheduler::new(plan);
            let mut tasks = HashMap::new();
            let mut versions = 0;
            for step in scheduler.by_ref() {
                match step {
                    Step::Train(t) => {
                        proptest::prop_assert!(t.leaf.is_some());
                        tasks.insert(t.task, t);
                    }
                    Step::Aggregate { version, at, inputs } => {
                        versions = version;
                        if sync {
                            proptest::prop_assert_eq!(inputs.len(), 20);
                        }
                        for input in inputs {
                            let t = &tasks[&input.task];
                            proptest::prop_assert!(at >= t.arrives_at + SimDuration::from_units(0.05));
                            proptest::prop_assert_eq!(t.base_version + input.staleness, version - 1);
                        }
                    }
                    Step::Evaluate { .. } => {}
                }
            }
            proptest::prop_assert!(versions > 0);
            let jobs = scheduler.take_jobs(true);
            proptest::prop_assert_eq!(jobs.len() as u64, scheduler.next_task);
            let mut seen = HashSet::new();
            for job in &jobs {
                proptest::prop_assert!(seen.insert(job.task), "job {} recorded twice", job.task);
                if let Fate::Applied { .. } = job.fate {
                    let at_server = job.at_server.expect("applied jobs reached the server");
                    proptest::prop_assert!(at_server >= job.upload_ends_at() + SimDuration::from_units(0.05));
                }
            }
        }

        /// A round deadline: no round waits longer than the deadline; with "drop" the late jobs
        /// never train, with "carry" their updates join a later round with staleness >= 1.
        #[test]
        fn round_deadlines_bound_rounds_and_drop_or_carry_late_updates(after in 0.8f64..3.0, carry in proptest::prelude::any::<bool>(), seed in 0u64..1000) {
            let late = if carry { LateUpdates::Carry } else { LateUpdates::Drop };
            let deadline = RoundDeadline { after: SimDuration::from_units(after), late };
            let mut plan = config(Policy::Sync { over_commitment: 1.0, deadline: Some(deadline) }, 20, 30.0);
            (plan.setup_seed, plan.run_seed) = (seed, seed);
            let mut scheduler = Scheduler::new(plan);
            let mut previous = SimTime::ZERO;
            let mut trained = HashMap::new();
            let mut stale = 0;
            for step in scheduler.by_ref() {
                match step {
                    Step::Train(t) => {
                        trained.insert(t.task, t);
                    }
                    Step::Aggregate { at, inputs, .. } => {
                        proptest::prop_assert!(at <= previous + deadline.after, "a round outlived its deadline");
                        previous = at;
                        proptest::prop_assert!(!inputs.is_empty() && inputs.len() <= 20);
                        stale += inputs.iter().filter(|i| i.staleness > 0).count();
                        if !carry {
                            proptest::prop_assert!(inputs.iter().all(|i| i.staleness == 0));
                        }
                    }
                    Step::Evaluate { .. } => {}
                }
            }
            let fates = scheduler.fates();
            if carry {
                proptest::prop_assert_eq!(fates.missed_deadline, 0);
            } else {
                // Every trained job arrived within its round's deadline.
                proptest::prop_assert!(trained.values().all(|t| t.arrives_at <= t.dispatched_at + deadline.after));
            }
            // Short deadlines miss updates: dropped ones are counted, carried ones show as stale.
            if after < 1.2 {
                let missed = if carry { stale > 0 } else { fates.missed_deadline > 0 };
                proptest::prop_assert!(missed, "no late update with a deadline of {}", after);
            }
        }
    }

    #[test]
    fn a_hop_delay_slows_the_server_down_and_the_plan_counts_each_leaf() {
        let flat = config(Policy::buffered(1), 100, 30.0);
        let mut hierarchy = flat.clone();
        hierarchy.topology = leaves(20, LeafFlush::Buffer(1), 0.5);
        let (flat, _) = summarize(flat);
        let (summary, _) = summarize(hierarchy);
        // A job holds its slot for its hop too: with K in flight, fewer versions (staleness stays
        // about K, Little's law).
        assert!(summary.versions * 10 < flat.versions * 9, "{} vs {}", summary.versions, flat.versions);
        assert_eq!(summary.leaves.len(), 20);
        assert!(summary.leaves.iter().all(|l| l.clients == 50 && l.dispatched_jobs > 0));
        let sum = |f: fn(&LeafSummary) -> u64| summary.leaves.iter().map(f).sum::<u64>();
        assert_eq!(sum(|l| l.dispatched_jobs), summary.dispatched_jobs);
        assert_eq!(sum(|l| l.aggregated_updates), summary.aggregated_updates);
        // Pass-through: a message per update that reached the server (some are still on the way).
        assert!(sum(|l| l.messages) >= summary.aggregated_updates);
        assert!(sum(|l| l.messages) <= summary.aggregated_updates + 100);
        // Leaves that combine five updates send about a fifth as many messages.
        let mut combining = config(Policy::buffered(1), 100, 30.0);
        combining.topology = leaves(20, LeafFlush::Buffer(5), 0.5);
        let (combined, _) = summarize(combining);
        let messages: u64 = combined.leaves.iter().map(|l| l.messages).sum();
        assert!(
            messages * 4 < combined.aggregated_updates,
            "{messages} messages for {} updates",
            combined.aggregated_updates
        );
    }

    #[test]
    fn over_committed_rounds_cancel_updates_waiting_at_leaves_too() {
        let mut plan = config(Policy::Sync { over_commitment: 1.5, deadline: None }, 20, 40.0);
        plan.topology = leaves(4, LeafFlush::Buffer(3), 0.2);
        let (scheduler, trained, aggregations) = trained_and_aggregated(plan);
        assert!(aggregations.len() > 3 && aggregations.iter().all(|inputs| inputs.len() == 20));
        let aggregated: HashSet<u64> = aggregations.iter().flatten().map(|i| i.task).collect();
        assert!(
            trained.iter().filter(|t| !aggregated.contains(t)).count() < 30,
            "only the last round is cut short"
        );
        assert_eq!(scheduler.fates().cancelled, aggregations.len() as u64 * 10);
    }
}
