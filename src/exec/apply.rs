//! Carrying out the head of the plan once its tasks are trained: an aggregation (the server
//! applies the updates in plan order, and the updates, settled jobs and progress are
//! recorded) or an evaluation (recorded, then checked against the stop rules).

use std::time::Instant;

use super::{Evaluator, ExecError, Run, StopReason};
use crate::fl::server::{Arrival, Server};
use crate::params::Weights;
use crate::record::rows::{EvalRecord, Progress, Sink, UpdateRecord};
use crate::sched::{Plan, Step};

use super::table::TaskState;

impl<W: Weights> Run<'_, W> {
    /// Applies the aggregation at the head of the plan, whose tasks are all trained. A
    /// non-finite loss or update stops the run before the version is made.
    pub(super) fn aggregate(
        &mut self,
        plan: &mut dyn Plan,
        server: &mut Server<W>,
        sink: &mut dyn Sink,
    ) -> Result<Option<StopReason>, ExecError> {
        let Some(Step::Aggregate { version, at, inputs }) = self.reader.pop() else {
            unreachable!("the head of the plan is an aggregation")
        };
        let server_started = Instant::now();
        let taken = self.table.take(&inputs);
        if let Some((slot, what)) = taken.iter().find_map(|(slot, _)| slot.non_finite().map(|w| (slot, w))) {
            return Ok(Some(StopReason::NonFinite { version, task: Some(slot.task.task), what }));
        }
        let partition = &self.settings.partition;
        let arrivals: Vec<Arrival<W>> = taken
            .iter()
            .map(|(slot, input)| {
                let TaskState::Done { outcome, .. } = &slot.state else {
                    unreachable!("checked finite above")
                };
                let client = slot.task.client as usize;
                Arrival {
                    task: slot.task.task,
                    delta: &outcome.delta,
                    model: outcome.model.as_ref(),
                    staleness: input.staleness,
                    samples: partition.shards[client].len(),
                    class_proportions: partition.class_proportions(client),
                }
            })
            .collect();
        let next = server.aggregate(self.versions.current(), self.versions.current_version(), &arrivals)?;
        // Workers on other streams read the new version, and the deltas may be freed.
        next.settle();
        drop(arrivals);
        let server_time = server_started.elapsed();
        self.outcome.server_time += server_time;
        self.versions.advance(version, next);
        self.virtual_time = at.units();
        let per_update_ms = server_time.as_secs_f64() * 1e3 / taken.len() as f64;
        for (slot, input) in taken {
            let TaskState::Done { outcome: trained, worker } = slot.state else {
                unreachable!("checked above")
            };
            sink.update(UpdateRecord {
                task: slot.task.task,
                client: slot.task.client,
                leaf: slot.task.leaf,
                base_version: slot.task.base_version,
                applied_version: version,
                staleness: input.staleness,
                dispatched_at: slot.task.dispatched_at.units(),
                arrived_at: slot.task.arrives_at.units(),
                first_loss: trained.first_loss,
                last_loss: trained.last_loss,
                train_ms: trained.wall.as_secs_f64() * 1e3,
                worker,
                server_ms: per_update_ms,
            });
            self.outcome.updates_applied += 1;
        }
        // Jobs whose fate was known before this aggregation cannot change: stream them.
        for job in plan.take_jobs_before(at) {
            sink.job(job);
        }
        self.jobs_recorded_before = at;
        sink.progress(&Progress {
            version,
            virtual_time: self.virtual_time,
            updates: self.outcome.updates_applied,
            last_accuracy: self.rules.last_accuracy,
            elapsed: self.started.elapsed(),
            ready_tasks: self.ready,
        });
        self.rules.aggregated();
        Ok(None)
    }

    /// Evaluates the current version (the head of the plan), records it and checks the stop
    /// rules.
    pub(super) fn evaluate(
        &mut self,
        evaluator: &mut dyn Evaluator<W>,
        sink: &mut dyn Sink,
    ) -> Result<Option<StopReason>, ExecError> {
        let Some(Step::Evaluate { version, at }) = self.reader.pop() else {
            unreachable!("the head of the plan is an evaluation")
        };
        debug_assert_eq!(version, self.versions.current_version(), "evaluations follow their aggregation");
        let eval_started = Instant::now();
        let result = evaluator.evaluate(self.versions.current());
        self.outcome.eval_time += eval_started.elapsed();
        self.virtual_time = at.units();
        let stop = self.rules.evaluated(version, &result);
        sink.eval(EvalRecord {
            version,
            virtual_time: self.virtual_time,
            accuracy: result.accuracy,
            loss: result.loss,
            per_class_accuracy: result.per_class_accuracy,
            wall_s: self.started.elapsed().as_secs_f64(),
        });
        sink.check()?;
        Ok(stop)
    }
}
