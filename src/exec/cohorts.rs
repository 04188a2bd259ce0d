//! Cohort composition: which planned tasks train together as one stacked model. A pure
//! function of the plan: tasks join in dispatch order, at most `size` to a cohort, and a task
//! starts a new cohort when its base version would need the update of a task already in the
//! open one (a cohort trains from versions that exist before any of its members is applied).
//! Since stacked training differs from single training by float rounding, the composition must
//! never depend on timing; then results are identical for any number of workers. Under a
//! client learning-rate schedule a task also starts a new cohort when its rate differs from the
//! open cohort's (a stacked model trains with one optimizer, at one rate).

use crate::fl::lr_schedule::LrSchedule;
use crate::sched::{Step, TrainTask, UpdateInput};

/// Builds cohorts while the plan is read, step by step.
#[derive(Debug)]
pub struct CohortBuilder {
    size: usize,
    open: Vec<u64>,
    /// The earliest version that applies a member of the open cohort, once the plan has shown it.
    first_applied: Option<u64>,
    /// The clients' learning-rate schedule, by base version (constant: one rate for all).
    client_lr: LrSchedule,
    /// The open cohort's rate factor.
    open_rate: f64,
}

impl CohortBuilder {
    pub fn new(size: usize) -> Self {
        assert!(size >= 1, "cohorts hold at least one task");
        CohortBuilder {
            size,
            open: Vec::new(),
            first_applied: None,
            client_lr: LrSchedule::Constant,
            open_rate: 1.0,
        }
    }

    /// Cohorts hold tasks of one client learning rate under `client_lr`.
    pub fn split_by_rate(self, client_lr: LrSchedule) -> Self {
        CohortBuilder { client_lr, ..self }
    }

    /// A planned task joins; returns the cohorts this closes (none, one or two), in order.
    pub fn train(&mut self, task: &TrainTask) -> Vec<Vec<u64>> {
        let mut closed = Vec::new();
        let rate = self.client_lr.factor(task.base_version);
        let another_rate = !self.open.is_empty() && rate != self.open_rate;
        if another_rate || self.first_applied.is_some_and(|v| task.base_version >= v) {
            closed.extend(self.close());
        }
        self.open_rate = rate;
        self.open.push(task.task);
        if self.open.len() == self.size {
            closed.extend(self.close());
        }
        closed
    }

    /// An aggregation of the plan: remembers whether it applies a member of the open cohort.
    pub fn aggregate(&mut self, version: u64, inputs: &[UpdateInput]) {
        if inputs.iter().any(|i| self.open.contains(&i.task)) {
            self.first_applied = Some(self.first_applied.map_or(version, |v| v.min(version)));
        }
    }

    /// Whether `task` waits in the open cohort (which closes only as the plan goes on).
    pub fn holds(&self, task: u64) -> bool {
        self.open.contains(&task)
    }

    /// The plan ended: the open cohort, if any, closes as it is.
    pub fn close(&mut self) -> Option<Vec<u64>> {
        self.first_applied = None;
        (!self.open.is_empty()).then(|| std::mem::take(&mut self.open))
    }
}

/// The cohorts of a whole plan, in order (what the executor builds as it reads).
pub fn compose<'a>(steps: impl IntoIterator<Item = &'a Step>, mut builder: CohortBuilder) -> Vec<Vec<u64>> {
    let mut cohorts = Vec::new();
    for step in steps {
        match step {
            Step::Train(task) => cohorts.extend(builder.train(task)),
            Step::Aggregate { version, inputs, .. } => builder.aggregate(*version, inputs),
            Step::Evaluate { .. } => {}
        }
    }
    cohorts.extend(builder.close());
    cohorts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fixtures::{aggregate, train};
    use crate::sched::{PlanConfig, Policy, Scheduler};
    use crate::sim::delay::DelayModel;
    use std::collections::HashMap;

    #[test]
    fn cohorts_fill_in_dispatch_order_and_cut_where_a_base_needs_a_member() {
        // FedAvg with K = 5 and cohorts of 3: [0 1 2] [3 4]; round 2's tasks need version 1,
        // which applies 3 and 4, so they start a new cohort.
        let steps = [
            train(0, 0),
            train(1, 0),
            train(2, 0),
            train(3, 0),
            train(4, 0),
            aggregate(1, &[0, 1, 2, 3, 4]),
            train(5, 1),
            train(6, 1),
        ];
        assert_eq!(compose(&steps, CohortBuilder::new(3)), [vec![0, 1, 2], vec![3, 4], vec![5, 6]]);
        assert_eq!(compose(&steps, CohortBuilder::new(1)).len(), 7, "cohorts of one are the tasks");
        // An aggregation of tasks outside the open cohort cuts nothing.
        let steps =
            [train(0, 0), train(1, 0), aggregate(1, &[0]), train(2, 1), train(3, 1), aggregate(2, &[1])];
        assert_eq!(compose(&steps, CohortBuilder::new(2)), [vec![0, 1], vec![2, 3]]);
        let steps = [train(0, 0), train(1, 0), aggregate(1, &[0]), train(2, 1), train(3, 1)];
        assert_eq!(
            compose(&steps, CohortBuilder::new(3)),
            [vec![0, 1], vec![2, 3]],
            "2 needs version 1, which applies 0"
        );
    }

    #[test]
    fn under_a_client_lr_schedule_a_cohort_holds_one_rate() {
        // Halved every 2 versions: bases 0 and 1 share a rate, base 2 has another. Buffered
        // aggregations of one update apply tasks outside the open cohort, so only the rate cuts.
        let steps = [
            train(0, 0),
            train(1, 0),
            aggregate(1, &[9]),
            train(2, 1),
            aggregate(2, &[8]),
            train(3, 2),
            train(4, 2),
        ];
        let compose_by_rate = |schedule| compose(&steps, CohortBuilder::new(4).split_by_rate(schedule));
        let halving = LrSchedule::Step { every: 2, factor: 0.5 };
        assert_eq!(compose_by_rate(halving), [vec![0, 1, 2], vec![3, 4]]);
        assert_eq!(compose_by_rate(LrSchedule::Constant), [vec![0, 1, 2, 3], vec![4]]);
    }

    /// For real plans of both policies: cohorts are at most `size`, partition the tasks in
    /// dispatch order, and no member's base version applies another member.
    #[test]
    fn plans_of_both_policies_give_valid_cohorts() {
        for policy in [Policy::SYNC, Policy::buffered(3)] {
            let plan = Scheduler::new(PlanConfig {
                policy,
                active_jobs: 10,
                num_clients: 30,
                delays: DelayModel::reference_default(),
                setup_seed: 3,
                run_seed: 3,
                eval_interval: 5,
                max_versions: Some(40),
                max_virtual_time: None,
                client_reuse: true,
                max_model_history: None,
                update_timeout: None,
                availability: Default::default(),
                topology: None,
            });
            let steps: Vec<Step> = plan.collect();
            let mut applied_at = HashMap::new();
            let mut base_of = HashMap::new();
            for step in &steps {
                match step {
                    Step::Train(t) => {
                        base_of.insert(t.task, t.base_version);
                    }
                    Step::Aggregate { version, inputs, .. } => {
                        for i in inputs {
                            applied_at.insert(i.task, *version);
                        }
                    }
                    Step::Evaluate { .. } => {}
                }
            }
            for size in [1, 4, 8] {
                let cohorts = compose(&steps, CohortBuilder::new(size));
                let flat: Vec<u64> = cohorts.iter().flatten().copied().collect();
                assert_eq!(flat, (0..base_of.len() as u64).collect::<Vec<_>>(), "{policy:?} {size}");
                for cohort in &cohorts {
                    assert!(!cohort.is_empty() && cohort.len() <= size);
                    for a in cohort {
                        for b in cohort {
                            if let Some(&applied) = applied_at.get(b) {
                                assert!(base_of[a] < applied, "{policy:?}: task {a} needs {b} of its cohort");
                            }
                        }
                    }
                }
                if size > 1 {
                    assert!(cohorts.iter().any(|c| c.len() == size), "{policy:?}: some cohort is full");
                }
            }
        }
    }
}
