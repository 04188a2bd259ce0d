//! The server: applies one aggregation's updates, in plan order, to the current model. Plain
//! algorithms use their [`ServerRule`] alone; FedRevive-style algorithms first record each
//! arriving client model as a teacher and replace stale deltas by their blend with a
//! distilled delta, asking a [`Distiller`] for it.

use std::sync::Arc;

use super::aggregate::{ServerRule, Update};
use super::revive::{blend, Distiller, ReviveAction, ReviveSchedule, Teacher, TeacherBuffer};

/// One update as it reaches the server.
pub struct Arrival<'a> {
    pub delta: &'a [f32],
    /// The client's trained model (needed for interpolation and for teachers).
    pub model: Option<&'a [f32]>,
    pub staleness: u64,
    pub samples: usize,
    pub class_proportions: Vec<f64>,
}

/// FedRevive's additions to the server rule.
pub struct Revive {
    pub schedule: ReviveSchedule,
    pub teachers: TeacherBuffer,
    pub distiller: Box<dyn Distiller>,
}

pub struct Server {
    pub rule: ServerRule,
    pub revive: Option<Revive>,
}

impl Server {
    /// Whether clients must send their trained models, not only deltas.
    pub fn needs_models(&self) -> bool {
        self.rule.needs_models() || self.revive.is_some()
    }

    /// theta (version `version`) -> theta of version `version + 1`.
    pub fn aggregate(
        &mut self,
        theta: &[f32],
        version: u64,
        arrivals: &[Arrival],
    ) -> anyhow::Result<Vec<f32>> {
        let mut next = theta.to_vec();
        let Some(revive) = &mut self.revive else {
            let updates: Vec<Update> = arrivals.iter().map(Arrival::as_update).collect();
            self.rule.apply(&mut next, &updates);
            return Ok(next);
        };
        let mut deltas: Vec<Vec<f32>> = Vec::with_capacity(arrivals.len());
        for arrival in arrivals {
            let model = arrival.model.ok_or_else(|| anyhow::anyhow!("FedRevive needs the client's model"))?;
            revive.teachers.push(Teacher {
                weights: Arc::new(model.to_vec()),
                class_proportions: arrival.class_proportions.clone(),
            });
            deltas.push(match revive.schedule.action(version, arrival.staleness) {
                ReviveAction::Raw => arrival.delta.to_vec(),
                ReviveAction::WarmUp => {
                    revive.distiller.warm_up(theta, &revive.teachers.teachers(), version + 1)?;
                    arrival.delta.to_vec()
                }
                ReviveAction::DownWeight { beta } => {
                    revive.distiller.warm_up(theta, &revive.teachers.teachers(), version + 1)?;
                    arrival.delta.iter().map(|d| (1.0 - beta) as f32 * d).collect()
                }
                ReviveAction::Blend { beta } => {
                    let delta_kd =
                        revive.distiller.distill(theta, &revive.teachers.teachers(), version + 1)?;
                    blend(arrival.delta, &delta_kd, beta)
                }
            });
        }
        let updates: Vec<Update> = arrivals
            .iter()
            .zip(&deltas)
            .map(|(arrival, delta)| Update { delta, ..arrival.as_update() })
            .collect();
        self.rule.apply(&mut next, &updates);
        Ok(next)
    }
}

impl Arrival<'_> {
    fn as_update(&self) -> Update<'_> {
        Update { delta: self.delta, model: self.model, staleness: self.staleness, samples: self.samples }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fl::{BetaSchedule, ClientWeighting, StalenessWeight};

    /// Distils to a fixed delta and counts its calls.
    struct Fixed {
        delta: Vec<f32>,
        calls: usize,
    }

    impl Distiller for Fixed {
        fn distill(&mut self, _: &[f32], teachers: &[&Teacher], _: u64) -> anyhow::Result<Vec<f32>> {
            assert!(!teachers.is_empty());
            self.calls += 1;
            Ok(self.delta.clone())
        }
    }

    fn server(freeze: u64) -> Server {
        Server {
            rule: ServerRule {
                server_lr: 1.0,
                weighting: ClientWeighting::Equal,
                staleness: StalenessWeight::Constant,
                down_weight: None,
            },
            revive: Some(Revive {
                schedule: ReviveSchedule {
                    beta: BetaSchedule::Constant { beta: 0.5 },
                    freeze_rounds: freeze,
                    warmup_rounds: freeze,
                    quirk_down_weight_during_warmup: false,
                },
                teachers: TeacherBuffer::new(2),
                distiller: Box::new(Fixed { delta: vec![10.0, 10.0], calls: 0 }),
            }),
        }
    }

    fn arrival<'a>(delta: &'a [f32], model: &'a [f32], staleness: u64) -> Arrival<'a> {
        Arrival { delta, model: Some(model), staleness, samples: 1, class_proportions: vec![1.0] }
    }

    #[test]
    fn before_the_freeze_gate_updates_are_raw() {
        let next = server(5).aggregate(&[1.0, 1.0], 4, &[arrival(&[2.0, 4.0], &[3.0, 5.0], 7)]).unwrap();
        assert_eq!(next, [3.0, 5.0]);
    }

    #[test]
    fn after_the_gate_stale_updates_blend_with_the_distilled_delta() {
        let mut s = server(5);
        let next = s.aggregate(&[1.0, 1.0], 5, &[arrival(&[2.0, 4.0], &[3.0, 5.0], 7)]).unwrap();
        assert_eq!(next, [1.0 + 0.5 * 2.0 + 0.5 * 10.0, 1.0 + 0.5 * 4.0 + 0.5 * 10.0]);
        assert_eq!(s.revive.as_ref().unwrap().teachers.len(), 1);
    }
}
