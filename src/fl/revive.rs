//! FedRevive's server-side policy, free of tensors: the teacher buffer, the gates, and the
//! blend of a stale update with a knowledge-distilled one,
//! delta~ = (1 - beta(tau)) delta + beta(tau) delta_KD (FEDREVIVE.md sections 2 and 3).
//! The distillation itself is behind the [`Distiller`] trait, so the engine never sees how it
//! is done (synthetic images for FedRevive, the real KD split for DD-FedRevive).

use super::ServerError;
use std::collections::VecDeque;
use std::sync::Arc;

use super::weights::BetaSchedule;
use crate::params::Weights;

/// A recent client model (kept where the run keeps weights: on a GPU, the device) and the
/// class proportions of its shard.
#[derive(Clone, Debug)]
pub struct Teacher<W = Vec<f32>> {
    pub weights: Arc<W>,
    pub class_proportions: Vec<f64>,
}

/// The `kd_buffer_size` most recent client models, oldest first.
#[derive(Clone, Debug)]
pub struct TeacherBuffer<W = Vec<f32>> {
    capacity: usize,
    teachers: VecDeque<Teacher<W>>,
}

impl<W> TeacherBuffer<W> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity >= 1, "validated by the config");
        TeacherBuffer { capacity, teachers: VecDeque::with_capacity(capacity) }
    }

    pub fn push(&mut self, teacher: Teacher<W>) {
        if self.teachers.len() == self.capacity {
            self.teachers.pop_front();
        }
        self.teachers.push_back(teacher);
    }

    pub fn teachers(&self) -> Vec<&Teacher<W>> {
        self.teachers.iter().collect()
    }

    pub fn len(&self) -> usize {
        self.teachers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.teachers.is_empty()
    }

    /// Empties the buffer (a resumed run refills it from its checkpoint).
    pub fn clear(&mut self) {
        self.teachers.clear();
    }
}

/// Produces delta_KD = theta_student - theta_current from the current global model and the
/// teachers. `arrival` is the arriving update's task id: implementations derive their
/// randomness from it, so the result depends only on the plan and two arrivals of one
/// aggregation never share a stream.
pub trait Distiller<W = Vec<f32>> {
    fn distill(&mut self, current: &W, teachers: &[&Teacher<W>], arrival: u64) -> Result<W, ServerError>;

    /// Work that runs between the freeze and warm-up gates, before distillation trains
    /// (FedRevive warms its generator up here). Nothing by default.
    fn warm_up(&mut self, _current: &W, _teachers: &[&Teacher<W>], _arrival: u64) -> Result<(), ServerError> {
        Ok(())
    }

    /// What the distiller carries from one arrival to the next (FedRevive's generator, its
    /// optimizer, the image pool, the stabilisers), for a checkpoint. Nothing by default.
    fn save(&self) -> Result<crate::saved::SavedState, ServerError> {
        Ok(crate::saved::SavedState::default())
    }

    /// Puts back what [`Distiller::save`] gave, into a distiller built from the same config.
    fn restore(&mut self, _state: crate::saved::SavedState) -> Result<(), ServerError> {
        Ok(())
    }
}

/// FedRevive's gates on the version count, both strict as in the reference: synthesis starts
/// once more than `freeze_rounds` versions exist, distillation trains once more than
/// `warmup_rounds` do (from version 101 with the reference's 100).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Gates {
    pub freeze_rounds: u64,
    pub warmup_rounds: u64,
    /// The reference's QUIRK: between freeze and warm-up it applies (1 - beta) delta, as if
    /// delta_KD were zero. fedsim's default applies the raw update until KD trains.
    pub quirk_down_weight_during_warmup: bool,
}

/// When distillation runs, and how stale updates are blended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReviveSchedule {
    pub beta: BetaSchedule,
    /// FedRevive's gates; None (DD-FedRevive) distils on every arrival whose beta > 0.
    pub gates: Option<Gates>,
}

/// What to do with one arriving update at a given server version.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReviveAction {
    /// Apply delta as it is.
    Raw,
    /// Apply delta as it is, but let the distiller warm up (between the gates).
    WarmUp,
    /// Apply (1 - beta) delta and let the distiller warm up (the reference's warm-up quirk).
    DownWeight { beta: f64 },
    /// Distil, then apply (1 - beta) delta + beta delta_KD.
    Blend { beta: f64 },
}

impl ReviveSchedule {
    /// The action for an update of `staleness` arriving while `version` versions exist.
    pub fn action(&self, version: u64, staleness: u64) -> ReviveAction {
        let beta = self.beta.beta(staleness);
        match self.gates {
            _ if beta == 0.0 => ReviveAction::Raw,
            None => ReviveAction::Blend { beta },
            Some(gates) if version <= gates.freeze_rounds => ReviveAction::Raw,
            Some(gates) if version <= gates.warmup_rounds => {
                if gates.quirk_down_weight_during_warmup {
                    ReviveAction::DownWeight { beta }
                } else {
                    ReviveAction::WarmUp
                }
            }
            Some(_) => ReviveAction::Blend { beta },
        }
    }
}

/// (1 - beta) delta + beta delta_kd.
pub fn blend<W: Weights>(delta: &W, delta_kd: &W, beta: f64) -> W {
    assert_eq!(delta.len(), delta_kd.len(), "weight vectors differ in length");
    let mut blended = delta.clone();
    blended.scale((1.0 - beta) as f32);
    blended.axpy(beta as f32, delta_kd);
    blended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(quirk: bool) -> ReviveSchedule {
        ReviveSchedule {
            beta: BetaSchedule::Cosine { factor: 75.0 },
            gates: Some(Gates {
                freeze_rounds: 50,
                warmup_rounds: 100,
                quirk_down_weight_during_warmup: quirk,
            }),
        }
    }

    #[test]
    fn gates_follow_the_version_count_strictly() {
        let s = schedule(false);
        assert_eq!(s.action(10, 80), ReviveAction::Raw, "before freeze_rounds: raw");
        assert_eq!(s.action(50, 80), ReviveAction::Raw, "at freeze_rounds still raw (strict)");
        assert_eq!(s.action(51, 80), ReviveAction::WarmUp, "between freeze and warm-up: raw by default");
        assert_eq!(s.action(100, 80), ReviveAction::WarmUp, "at warmup_rounds KD does not train yet");
        assert!(
            matches!(schedule(true).action(70, 80), ReviveAction::DownWeight { .. }),
            "the reference's quirk"
        );
        assert!(matches!(s.action(101, 80), ReviveAction::Blend { .. }), "from version 101");
        assert_eq!(s.action(500, 0), ReviveAction::Raw, "beta(0) = 0: a fresh update is applied raw");
    }

    #[test]
    fn without_gates_every_arrival_with_positive_beta_blends() {
        let s = ReviveSchedule { beta: BetaSchedule::Constant { beta: 0.5 }, gates: None };
        assert_eq!(s.action(1, 1), ReviveAction::Blend { beta: 0.5 });
        assert_eq!(
            s.action(0, 0),
            ReviveAction::Blend { beta: 0.5 },
            "a constant beta blends even fresh updates"
        );
        let zero = ReviveSchedule { beta: BetaSchedule::Constant { beta: 0.0 }, gates: None };
        assert_eq!(zero.action(10, 5), ReviveAction::Raw);
    }

    #[test]
    fn blend_interpolates_between_the_update_and_the_distilled_one() {
        let (delta, delta_kd) = (vec![1.0, 2.0], vec![3.0, 6.0]);
        assert_eq!(blend(&delta, &delta_kd, 0.0), [1.0, 2.0]);
        assert_eq!(blend(&delta, &delta_kd, 1.0), [3.0, 6.0]);
        assert_eq!(blend(&delta, &delta_kd, 0.5), [2.0, 4.0]);
    }

    #[test]
    fn the_teacher_buffer_keeps_the_most_recent() {
        let mut buffer = TeacherBuffer::new(2);
        for i in 0..5 {
            buffer.push(Teacher { weights: Arc::new(vec![i as f32]), class_proportions: vec![1.0] });
        }
        let kept: Vec<f32> = buffer.teachers().iter().map(|t| t.weights[0]).collect();
        assert_eq!(kept, [3.0, 4.0]);
    }
}
