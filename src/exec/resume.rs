//! Saved state both ways: the snapshot a checkpoint takes between two steps of the plan, and
//! the resume that replays the plan to the snapshot's position, so the run goes on to exactly
//! the results of an uninterrupted one. The replay forms cohorts as the run did, drops what
//! was applied and holds what was trained.

use std::time::Duration;

use super::{ExecError, ExecSettings, Run, RunSnapshot, VersionStore};
use crate::fl::server::Server;
use crate::fl::ServerError;
use crate::nn::train::TrainOutcome;
use crate::params::Weights;
use crate::saved::StateError;
use crate::sched::{Plan, Step};
use crate::sim::time::SimTime;

impl<'s, W: Weights> Run<'s, W> {
    /// What a checkpoint saves now.
    pub(super) fn snapshot(&self, server: &Server<W>) -> Result<RunSnapshot, ServerError> {
        Ok(RunSnapshot {
            position: self.reader.position(),
            plan_read: self.reader.done(),
            version: self.versions.current_version(),
            virtual_time: self.virtual_time,
            versions: self.versions.to_host(),
            trained: self.table.trained_on_host(),
            last_accuracy: self.rules.last_accuracy,
            best_accuracy: self.rules.best_accuracy,
            early_stop_due: self.rules.early_stop_due,
            jobs_recorded_before: self.jobs_recorded_before.units(),
            tasks_trained: self.outcome.tasks_trained,
            updates_applied: self.outcome.updates_applied,
            cohorts_trained: self.outcome.cohorts_trained,
            server: server.save()?,
        })
    }

    /// A run continued from `snapshot`: `plan` is read from its beginning up to the snapshot's
    /// position; `like` shows where weights live (the snapshot's versions replace version 0).
    pub(super) fn resume(
        settings: &'s ExecSettings,
        plan: &mut dyn Plan,
        like: &W,
        snapshot: RunSnapshot,
        server: &mut Server<W>,
    ) -> Result<Self, ExecError> {
        let versions = snapshot.versions.iter().map(|(version, host)| (*version, like.like(host)));
        let mut run = Run::new(settings, VersionStore::restore(versions, snapshot.version)?);
        for trained in snapshot.trained {
            let outcome = TrainOutcome {
                delta: like.like(&trained.delta),
                model: trained.model.as_deref().map(|m| like.like(m)),
                first_loss: trained.first_loss,
                last_loss: trained.last_loss,
                samples: trained.samples,
                wall: Duration::ZERO,
            };
            run.table.restore(trained.task, outcome, trained.worker);
        }
        run.virtual_time = snapshot.virtual_time;
        run.rules.last_accuracy = snapshot.last_accuracy;
        run.rules.best_accuracy = snapshot.best_accuracy;
        run.rules.early_stop_due = snapshot.early_stop_due;
        run.outcome.tasks_trained = snapshot.tasks_trained;
        run.outcome.updates_applied = snapshot.updates_applied;
        run.outcome.cohorts_trained = snapshot.cohorts_trained;
        run.checkpoint_asked = snapshot.version;
        server.restore(snapshot.server, like)?;
        run.replay(plan, snapshot.position, snapshot.version)?;
        if snapshot.plan_read {
            // Taken in the run's tail: the run had read the whole plan, so read the rest now.
            run.reader.read_rest(plan, &mut run.table, &mut run.versions);
        }
        run.table.drop_settled_cohorts()?;
        if run.reader.done() {
            run.table.drop_unneeded(&run.reader.needed(), &mut run.versions);
        }
        run.versions.keep_needed();
        // Tasks read in the tail may train from versions still to be made.
        if let Some(task) = run.table.missing_base(&run.versions) {
            return Err(StateError::Mismatch(format!(
                "the checkpoint lacks version {}, the base of task {}",
                task.base_version, task.task
            ))
            .into());
        }
        // Jobs the checkpointed run had recorded are in its log segments already.
        run.jobs_recorded_before = SimTime::from_units(snapshot.jobs_recorded_before);
        drop(plan.take_jobs_before(run.jobs_recorded_before));
        Ok(run)
    }

    /// Reads the plan's first `position` steps as the checkpointed run carried them out: what
    /// was applied is dropped, what was trained waits done, the cohorts form as they did.
    fn replay(&mut self, plan: &mut dyn Plan, position: u64, version: u64) -> Result<(), StateError> {
        let mut last_made = 0u64;
        for read in 0..position {
            let step = plan.next().ok_or_else(|| {
                StateError::Mismatch(format!(
                    "the plan ends after {read} steps, before the checkpoint's position {position}: the checkpoint is not of this config"
                ))
            })?;
            match step {
                Step::Train(task) => self.table.admit(task, &mut self.versions),
                Step::Aggregate { version, inputs, .. } => {
                    self.table.aggregation_read(version, &inputs);
                    self.table.replay_applied(&inputs, &mut self.versions)?;
                    last_made = version;
                }
                Step::Evaluate { .. } => {}
            }
        }
        crate::saved::ensure(last_made == version, || {
            format!(
                "replaying the plan to the checkpoint's position makes version {last_made}, the checkpoint holds version {version}: the checkpoint is not of this config"
            )
        })?;
        self.reader.resume_at(position, position);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data::partition::Partition;
    use crate::exec::fixtures::{aggregate, train, Steps};
    use crate::fl::aggregate::ServerRule;
    use crate::saved::SavedState;

    fn settings() -> ExecSettings {
        let partition = Partition { shards: vec![vec![0]; 4], histograms: vec![vec![1]; 4] };
        ExecSettings {
            partition: Arc::new(partition),
            lookahead: 8,
            cohort_size: 1,
            client_lr: Default::default(),
            target_accuracy: None,
            early_stop: vec![],
        }
    }

    fn snapshot(position: u64, version: u64, versions: Vec<u64>) -> RunSnapshot {
        RunSnapshot {
            position,
            plan_read: false,
            version,
            virtual_time: 0.0,
            versions: versions.into_iter().map(|v| (v, vec![v as f32])).collect(),
            trained: vec![],
            last_accuracy: None,
            best_accuracy: None,
            early_stop_due: false,
            jobs_recorded_before: 0.0,
            tasks_trained: 0,
            updates_applied: 0,
            cohorts_trained: 0,
            server: SavedState::default(),
        }
    }

    fn plan() -> Steps {
        Steps::new(vec![train(0, 0), train(1, 0), aggregate(1, &[0]), train(2, 1), aggregate(2, &[1])])
    }

    /// Position, current version, tasks held and versions held after a resume.
    type Resumed = (u64, u64, usize, Vec<(u64, Vec<f32>)>);

    fn resume(snapshot: RunSnapshot) -> Result<Resumed, ExecError> {
        let settings = settings();
        let mut server = Server::plain(ServerRule::plain(1.0));
        let run = Run::resume(&settings, &mut plan(), &vec![0.0], snapshot, &mut server)?;
        Ok((run.reader.position(), run.versions.current_version(), run.table.len(), run.versions.to_host()))
    }

    #[test]
    fn a_resume_holds_what_is_still_to_train_and_the_versions_it_needs() {
        let (position, version, tasks, versions) = resume(snapshot(3, 1, vec![0, 1])).unwrap();
        assert_eq!((position, version, tasks), (3, 1, 1), "task 1 waits; task 0 was applied");
        assert_eq!(versions, vec![(0, vec![0.0]), (1, vec![1.0])], "task 1 trains from version 0");
    }

    #[test]
    fn a_checkpoint_of_another_plan_is_refused_naming_why() {
        let past_the_end = resume(snapshot(9, 2, vec![2])).unwrap_err().to_string();
        assert!(
            past_the_end.contains("the plan ends after 5 steps, before the checkpoint's position 9"),
            "{past_the_end}"
        );
        let wrong_version = resume(snapshot(3, 2, vec![2])).unwrap_err().to_string();
        assert!(wrong_version.contains("makes version 1, the checkpoint holds version 2"), "{wrong_version}");
        let lacking = resume(snapshot(3, 1, vec![1])).unwrap_err().to_string();
        assert!(lacking.contains("lacks version 0, the base of task 1"), "{lacking}");
    }
}
