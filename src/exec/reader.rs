//! Reading the plan ahead of the server. Train steps join the task table as soon as they are
//! read, so their cohorts can train early; aggregations and evaluations wait in a window, in
//! plan order, for their turn. The reader keeps the executor's position in the plan: steps
//! read, and steps carried out (what a checkpoint records).

use std::collections::{HashSet, VecDeque};

use super::table::TaskTable;
use super::versions::VersionStore;
use crate::sched::{Plan, Step, UpdateInput};

#[derive(Default)]
pub struct PlanReader {
    /// Aggregations and evaluations read and not carried out, with their index in the plan.
    window: VecDeque<(u64, Step)>,
    steps_read: u64,
    /// Plan steps carried out.
    position: u64,
    /// The plan has no more steps.
    done: bool,
}

/// What the server does next.
pub enum Head<'a> {
    /// The plan is read and carried out.
    Finished,
    /// Nothing read yet to carry out; read on.
    Empty,
    Aggregate(&'a [UpdateInput]),
    Evaluate,
}

impl PlanReader {
    #[cfg(test)]
    pub fn steps_read(&self) -> u64 {
        self.steps_read
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// A resumed run carried out the plan up to its checkpoint's position.
    pub fn resume_at(&mut self, steps_read: u64, position: u64) {
        (self.steps_read, self.position) = (steps_read, position);
    }

    /// Reads at least up to the next aggregation or evaluation, ahead until `lookahead` tasks
    /// are held, and on while the next aggregation needs a task of the open cohort (it closes
    /// only as the plan goes). At the plan's end, cohorts nothing still needs are dropped.
    pub fn read_ahead<W>(
        &mut self,
        plan: &mut dyn Plan,
        table: &mut TaskTable<W>,
        versions: &mut VersionStore<W>,
        lookahead: usize,
    ) {
        while !self.done && (table.len() < lookahead || self.window.is_empty() || self.head_needs_open(table))
        {
            match plan.next() {
                Some(step) => self.read(step, table, versions),
                None => {
                    self.end(table);
                    table.drop_unneeded(&self.needed(), versions);
                }
            }
        }
    }

    /// Reads the rest of the plan at once (a resume whose checkpoint came in the run's tail).
    pub fn read_rest<W>(
        &mut self,
        plan: &mut dyn Plan,
        table: &mut TaskTable<W>,
        versions: &mut VersionStore<W>,
    ) {
        for step in &mut *plan {
            self.read(step, table, versions);
        }
        self.end(table);
    }

    fn read<W>(&mut self, step: Step, table: &mut TaskTable<W>, versions: &mut VersionStore<W>) {
        let index = self.steps_read;
        self.steps_read += 1;
        match step {
            Step::Train(task) => table.admit(task, versions),
            step => {
                if let Step::Aggregate { version, inputs, .. } = &step {
                    table.aggregation_read(*version, inputs);
                }
                self.window.push_back((index, step));
            }
        }
    }

    fn end<W>(&mut self, table: &mut TaskTable<W>) {
        self.done = true;
        table.plan_ended();
    }

    fn head_needs_open<W>(&self, table: &TaskTable<W>) -> bool {
        matches!(self.window.front(), Some((_, Step::Aggregate { inputs, .. })) if inputs.iter().any(|i| table.in_open_cohort(i.task)))
    }

    /// Tasks an aggregation still to come takes.
    pub fn needed(&self) -> HashSet<u64> {
        self.window
            .iter()
            .flat_map(|(_, s)| match s {
                Step::Aggregate { inputs, .. } => inputs.iter().map(|i| i.task).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    pub fn head(&self) -> Head<'_> {
        match self.window.front() {
            None if self.done => Head::Finished,
            None => Head::Empty,
            Some((_, Step::Aggregate { inputs, .. })) => Head::Aggregate(inputs),
            Some((_, Step::Evaluate { .. })) => Head::Evaluate,
            Some((_, Step::Train(_))) => unreachable!("train steps go to the task table"),
        }
    }

    /// Whether the next step evaluates `version`.
    pub fn evaluation_follows(&self, version: u64) -> bool {
        matches!(self.window.front(), Some((_, Step::Evaluate { version: v, .. })) if *v == version)
    }

    /// Whether steps remain to be read or carried out.
    pub fn work_left(&self) -> bool {
        !(self.done && self.window.is_empty())
    }

    /// Takes the next step to carry out; the position moves past it.
    pub fn pop(&mut self) -> Option<Step> {
        let (index, step) = self.window.pop_front()?;
        self.position = index + 1;
        Some(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::cohorts::CohortBuilder;
    use crate::exec::fixtures::{aggregate, train, Steps};

    #[test]
    fn it_reads_to_the_next_aggregation_then_up_to_the_lookahead() {
        let mut plan = Steps::new(vec![
            train(0, 0),
            train(1, 0),
            aggregate(1, &[0]),
            train(2, 1),
            train(3, 1),
            aggregate(2, &[1]),
        ]);
        let (mut table, mut versions) = (TaskTable::new(CohortBuilder::new(1)), VersionStore::new(vec![0.0]));
        let mut reader = PlanReader::default();
        reader.read_ahead(&mut plan, &mut table, &mut versions, 1);
        assert_eq!((reader.steps_read(), table.len()), (3, 2), "on to the first aggregation");
        assert!(matches!(reader.head(), Head::Aggregate(inputs) if inputs[0].task == 0));
        reader.read_ahead(&mut plan, &mut table, &mut versions, 3);
        assert_eq!(reader.steps_read(), 4, "then until 3 tasks are held");
        assert!(matches!(reader.pop(), Some(Step::Aggregate { version: 1, .. })));
        assert_eq!(reader.position(), 3);
        reader.read_ahead(&mut plan, &mut table, &mut versions, 100);
        assert!(reader.done() && reader.work_left());
        assert_eq!(reader.needed(), HashSet::from([1]));
        assert_eq!(table.len(), 1, "only task 1 is still needed; the rest went at the plan's end");
        reader.pop();
        assert!(matches!(reader.head(), Head::Finished) && !reader.work_left());
    }

    #[test]
    fn it_reads_on_while_the_next_aggregation_waits_in_the_open_cohort() {
        let mut plan =
            Steps::new(vec![train(0, 0), aggregate(1, &[0]), train(1, 0), train(2, 1), train(3, 1)]);
        let (mut table, mut versions) = (TaskTable::new(CohortBuilder::new(3)), VersionStore::new(vec![0.0]));
        let mut reader = PlanReader::default();
        reader.read_ahead(&mut plan, &mut table, &mut versions, 1);
        assert_eq!(reader.steps_read(), 4, "task 2 trains from version 1, which closes task 0's cohort");
        assert!(!table.in_open_cohort(0) && table.in_open_cohort(2) && !reader.done());
    }
}
