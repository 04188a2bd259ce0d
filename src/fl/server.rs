//! The server: applies one aggregation's updates, in plan order, to the current model, then
//! resets the feature-statistic trackers of the new global model (mean 0, variance 1), as the
//! reference does after every aggregation for every algorithm. Plain algorithms use their
//! [`ServerRule`] alone; FedRevive-style algorithms first record each arriving client model as
//! a teacher and replace stale deltas by their blend with a distilled delta, asking a
//! [`Distiller`] for it.

use std::ops::Range;
use std::sync::Arc;

use super::aggregate::{ServerRule, Update};
use super::lr_schedule::LrSchedule;
use super::optimizer::ServerOptimizer;
use super::revive::{blend, Distiller, ReviveAction, ReviveSchedule, Teacher, TeacherBuffer};
use super::ServerError;
use crate::params::Weights;
use crate::saved::{Array, SavedState};

/// One update as it reaches the server.
pub struct Arrival<'a, W = Vec<f32>> {
    /// The task that produced it: the key of the distiller's randomness for this arrival.
    pub task: u64,
    pub delta: &'a W,
    /// The client's trained model (needed for interpolation and for teachers).
    pub model: Option<&'a W>,
    pub staleness: u64,
    pub samples: usize,
    pub class_proportions: Vec<f64>,
}

/// FedRevive's additions to the server rule.
pub struct Revive<W = Vec<f32>> {
    pub schedule: ReviveSchedule,
    pub teachers: TeacherBuffer<W>,
    pub distiller: Box<dyn Distiller<W>>,
}

/// The server of a run whose weights are `W` (host vectors, or tensors on the device).
pub struct Server<W = Vec<f32>> {
    pub rule: ServerRule,
    /// Turns each aggregation's mean delta into the next model; keeps its state (moments).
    pub optimizer: Box<dyn ServerOptimizer<W>>,
    /// server_lr by the version an aggregation makes (algorithm.server_lr_schedule).
    pub lr_schedule: LrSchedule,
    pub revive: Option<Revive<W>>,
    /// Where the global model's tracker buffers lie and what they are reset to.
    pub tracker_reset: Vec<(Range<usize>, f32)>,
}

impl<W: Weights> Server<W> {
    /// A server with `rule` and plain SGD, without FedRevive or trackers to reset.
    pub fn plain(rule: ServerRule) -> Self {
        Server {
            rule,
            optimizer: Box::new(super::optimizer::Sgd),
            lr_schedule: LrSchedule::Constant,
            revive: None,
            tracker_reset: Vec::new(),
        }
    }

    /// theta (version `version`) -> theta of version `version + 1`, where theta lives.
    pub fn aggregate(&mut self, theta: &W, version: u64, arrivals: &[Arrival<W>]) -> Result<W, ServerError> {
        let mut next = theta.clone();
        let rule =
            ServerRule { server_lr: self.lr_schedule.at(self.rule.server_lr, version + 1), ..self.rule };
        match &mut self.revive {
            None => {
                let updates: Vec<Update<W>> = arrivals.iter().map(Arrival::as_update).collect();
                rule.apply_with(&mut next, &updates, &mut *self.optimizer);
            }
            Some(revive) => {
                let deltas = revive.revived_deltas(theta, version, arrivals)?;
                // Interpolation pulls towards base + the revived delta: model - delta + revived.
                let models: Vec<Option<W>> = arrivals
                    .iter()
                    .zip(&deltas)
                    .map(|(arrival, revived)| {
                        let mut model = arrival.model.filter(|_| self.rule.needs_models())?.clone();
                        model.axpy(-1.0, arrival.delta);
                        model.axpy(1.0, revived);
                        Some(model)
                    })
                    .collect();
                let updates: Vec<Update<W>> = arrivals
                    .iter()
                    .zip(&deltas)
                    .zip(&models)
                    .map(|((arrival, delta), model)| Update {
                        delta,
                        model: model.as_ref(),
                        ..arrival.as_update()
                    })
                    .collect();
                rule.apply_with(&mut next, &updates, &mut *self.optimizer);
            }
        }
        for (range, value) in &self.tracker_reset {
            next.fill(range.clone(), *value);
        }
        Ok(next)
    }
}

impl<W: Weights> Server<W> {
    /// What of the server decides the future: its optimizer's moments, FedRevive's teachers
    /// and its distiller's state (plain SGD rules keep none).
    pub fn save(&self) -> Result<SavedState, ServerError> {
        let mut state = SavedState::default();
        state.nest("optimizer", self.optimizer.save());
        if let Some(revive) = &self.revive {
            let teachers = revive.teachers.teachers();
            state.put_value("teachers", teachers.len())?;
            for (i, teacher) in teachers.iter().enumerate() {
                state.put_array(
                    format!("teacher.{i}.weights"),
                    Array::vector(teacher.weights.to_host().into_owned()),
                );
                let proportions = teacher.class_proportions.clone();
                state.put_array(
                    format!("teacher.{i}.class_proportions"),
                    Array::F64 { shape: vec![proportions.len()], data: proportions },
                );
            }
            state.nest("distiller", revive.distiller.save()?);
        }
        Ok(state)
    }

    /// Puts back what [`Server::save`] gave; `like` places the teachers' weights where the
    /// run keeps its weights.
    pub fn restore(&mut self, mut state: SavedState, like: &W) -> Result<(), ServerError> {
        self.optimizer.restore(state.unnest("optimizer"), like)?;
        let Some(revive) = &mut self.revive else { return Ok(()) };
        let count: usize = state.value("teachers")?;
        revive.teachers.clear();
        for i in 0..count {
            let weights = state.take_f32(&format!("teacher.{i}.weights"), like.len())?;
            revive.teachers.push(Teacher {
                weights: Arc::new(like.like(&weights)),
                class_proportions: state.take_f64(&format!("teacher.{i}.class_proportions"))?,
            });
        }
        revive.distiller.restore(state.unnest("distiller"))
    }
}

impl<W: Weights> Revive<W> {
    /// Each arrival joins the teachers; its delta is kept, down-weighted or blended with a
    /// distilled one, as the schedule says.
    fn revived_deltas(
        &mut self,
        theta: &W,
        version: u64,
        arrivals: &[Arrival<W>],
    ) -> Result<Vec<W>, ServerError> {
        let mut deltas = Vec::with_capacity(arrivals.len());
        for arrival in arrivals {
            let model = arrival.model.ok_or(ServerError::MissingModel)?;
            self.teachers.push(Teacher {
                weights: Arc::new(model.clone()),
                class_proportions: arrival.class_proportions.clone(),
            });
            let teachers = self.teachers.teachers();
            deltas.push(match self.schedule.action(version, arrival.staleness) {
                ReviveAction::Raw => arrival.delta.clone(),
                ReviveAction::WarmUp => {
                    self.distiller.warm_up(theta, &teachers, arrival.task)?;
                    arrival.delta.clone()
                }
                ReviveAction::DownWeight { beta } => {
                    self.distiller.warm_up(theta, &teachers, arrival.task)?;
                    let mut delta = arrival.delta.clone();
                    delta.scale((1.0 - beta) as f32);
                    delta
                }
                ReviveAction::Blend { beta } => {
                    let delta_kd = self.distiller.distill(theta, &teachers, arrival.task)?;
                    blend(arrival.delta, &delta_kd, beta)
                }
            });
        }
        Ok(deltas)
    }
}

impl<W> Arrival<'_, W> {
    fn as_update(&self) -> Update<'_, W> {
        Update { delta: self.delta, model: self.model, staleness: self.staleness, samples: self.samples }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fl::BetaSchedule;

    use crate::fl::revive::Gates;
    use std::sync::Mutex;

    /// Distils to a fixed delta and records the arrival keys it was called with.
    struct Fixed {
        delta: Vec<f32>,
        calls: Arc<Mutex<Vec<u64>>>,
    }

    impl Distiller for Fixed {
        fn distill(
            &mut self,
            _: &Vec<f32>,
            teachers: &[&Teacher],
            arrival: u64,
        ) -> Result<Vec<f32>, ServerError> {
            assert!(!teachers.is_empty());
            self.calls.lock().unwrap().push(arrival);
            Ok(self.delta.clone())
        }
    }

    fn server(gates: Option<u64>, server_lr: f64) -> (Server, Arc<Mutex<Vec<u64>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let server = Server {
            rule: ServerRule::plain(server_lr),
            optimizer: Box::new(crate::fl::optimizer::Sgd),
            lr_schedule: LrSchedule::Constant,
            revive: Some(Revive {
                schedule: ReviveSchedule {
                    beta: BetaSchedule::Constant { beta: 0.5 },
                    gates: gates.map(|g| Gates {
                        freeze_rounds: g,
                        warmup_rounds: g,
                        quirk_down_weight_during_warmup: false,
                    }),
                },
                teachers: TeacherBuffer::new(2),
                distiller: Box::new(Fixed { delta: vec![10.0, 10.0], calls: calls.clone() }),
            }),
            tracker_reset: Vec::new(),
        };
        (server, calls)
    }

    fn arrival<'a>(task: u64, delta: &'a Vec<f32>, model: &'a Vec<f32>, staleness: u64) -> Arrival<'a> {
        Arrival { task, delta, model: Some(model), staleness, samples: 1, class_proportions: vec![1.0] }
    }

    /// A plain rule's arrival: a delta alone.
    fn without_model(delta: &Vec<f32>) -> Arrival<'_> {
        Arrival { task: 0, delta, model: None, staleness: 0, samples: 1, class_proportions: vec![] }
    }

    #[test]
    fn up_to_the_freeze_gate_updates_are_raw() {
        let (mut s, calls) = server(Some(5), 1.0);
        let next =
            s.aggregate(&vec![1.0, 1.0], 5, &[arrival(0, &vec![2.0, 4.0], &vec![3.0, 5.0], 7)]).unwrap();
        assert_eq!(next, [3.0, 5.0]);
        assert!(calls.lock().unwrap().is_empty());
    }

    #[test]
    fn after_the_gate_stale_updates_blend_with_the_distilled_delta() {
        let (mut s, _) = server(Some(5), 1.0);
        let next =
            s.aggregate(&vec![1.0, 1.0], 6, &[arrival(0, &vec![2.0, 4.0], &vec![3.0, 5.0], 7)]).unwrap();
        assert_eq!(next, [1.0 + 0.5 * 2.0 + 0.5 * 10.0, 1.0 + 0.5 * 4.0 + 0.5 * 10.0]);
        assert_eq!(s.revive.as_ref().unwrap().teachers.len(), 1);
    }

    #[test]
    fn without_gates_distillation_runs_from_the_first_stale_arrival() {
        // DD-FedRevive: no freeze or warm-up; the very first stale update at version 1 blends.
        let (mut s, calls) = server(None, 1.0);
        let next =
            s.aggregate(&vec![0.0, 0.0], 1, &[arrival(3, &vec![2.0, 2.0], &vec![2.0, 2.0], 1)]).unwrap();
        assert_eq!(next, [6.0, 6.0]);
        assert_eq!(*calls.lock().unwrap(), [3]);
    }

    #[test]
    fn two_arrivals_of_one_aggregation_give_the_distiller_different_keys() {
        let (mut s, calls) = server(None, 1.0);
        let ones = vec![1.0, 1.0];
        let arrivals = [arrival(11, &ones, &ones, 4), arrival(12, &ones, &ones, 4)];
        s.aggregate(&vec![0.0, 0.0], 8, &arrivals).unwrap();
        assert_eq!(*calls.lock().unwrap(), [11, 12]);
    }

    #[test]
    fn negative_server_lr_interpolates_towards_base_plus_the_blended_delta() {
        // theta = base = 0, client model 2 (delta 2), delta_KD 10, beta 0.5: blended delta 6,
        // target 0 + 6 = 6, not the client's 2; mix 0.5 gives 3.
        let (mut s, _) = server(None, -0.5);
        let next =
            s.aggregate(&vec![0.0, 0.0], 1, &[arrival(0, &vec![2.0, 2.0], &vec![2.0, 2.0], 1)]).unwrap();
        assert_eq!(next, [3.0, 3.0]);
    }

    #[test]
    fn a_server_lr_schedule_scales_each_step_by_the_version_it_makes() {
        // Halved every 2 versions: version 1 at lr 1, versions 2 and 3 at 0.5, 4 at 0.25.
        let mut s = Server::plain(ServerRule::plain(1.0));
        s.lr_schedule = LrSchedule::Step { every: 2, factor: 0.5 };
        let delta = vec![1.0f32];
        let plain = without_model(&delta);
        let mut theta = vec![0.0f32];
        let mut steps = Vec::new();
        for version in 0..4 {
            let next = s.aggregate(&theta, version, std::slice::from_ref(&plain)).unwrap();
            steps.push(next[0] - theta[0]);
            theta = next;
        }
        assert_eq!(steps, [1.0, 0.5, 0.5, 0.25]);
    }

    #[test]
    fn trackers_are_reset_after_every_aggregation() {
        let mut s =
            Server { tracker_reset: vec![(1..2, 0.0), (2..4, 1.0)], ..Server::plain(ServerRule::plain(1.0)) };
        let delta = vec![1.0f32; 4];
        let next = s.aggregate(&vec![5.0, 5.0, 5.0, 5.0], 0, &[without_model(&delta)]).unwrap();
        assert_eq!(next, [6.0, 0.0, 1.0, 1.0]);
    }
}
