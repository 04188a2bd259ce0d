//! Knowledge distillation on the server: the student starts from the current global model
//! and takes `iters` Adam steps towards the teachers (FedRevive: lr 1e-4, weight decay 1e-5,
//! T 1; DD-FedRevive: lr 3e-4, no weight decay, T 2). Per teacher, `iters x batch_per_teacher`
//! labels are drawn at once from its class proportions and images matched to them
//! ([`draw_by_class`]); step i takes the i-th batch of each teacher, augmented (reflect-padded
//! crop, flip). The loss is T^2 times the sum over teachers of KL_T(teacher || student),
//! divided by the whole batch. FedRevive's loss goes through a [`LossStabilizer`] of its own: a
//! dropped value skips the step. delta_KD = theta_student - theta_current.
//!
//! [`RealDataDistiller`] draws its images from the real KD split (DD-FedRevive). The student
//! runs in evaluation mode, so distillation never moves the trackers' statistics of client
//! data (the networks have no normalisation, so the forward pass is the same either way).

use super::NnError;
use crate::fl::ServerError;
use rand::Rng as _;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Reduction, Tensor};

use super::cohort::StackedModel;
use super::device_weights::TorchWeights;
use super::precision::Precision;
use super::tracker::BatchStats;
use super::{InputSpec, Model, ModelKind};
use crate::data::augment::{Augment, Normalize};
use crate::data::Dataset;
use crate::fl::revive::{Distiller, Teacher};
use crate::fl::stabilizer::LossStabilizer;
use crate::sim::rng::{self, Purpose, Rng};

/// A mean KL per image below this is float noise, not a signal to learn from.
pub const NOISE_LEVEL_KL: f64 = 1e-6;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KdSettings {
    pub iters: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub temperature: f64,
    pub batch_per_teacher: usize,
}

/// The student, the teacher models and the KD steps both distillers share.
pub struct KdCore {
    pub settings: KdSettings,
    pub student: Model,
    pub teachers: Vec<Model>,
    /// The teachers as one stacked model (issue 10): on a GPU, where it turns T forwards into
    /// one; on CPU the teachers run one by one (no gain there: CPU convolutions run client by
    /// client inside a stack anyway), so CPU results stay those of separate teachers.
    pub stack_teachers: bool,
    stacked: Option<StackedModel>,
    pub normalize: Normalize,
    pub device: Device,
    /// FedRevive's stabiliser of the KD loss (DD-FedRevive has none).
    stabilizer: Option<LossStabilizer>,
    kind: ModelKind,
    input: InputSpec,
}

impl KdCore {
    pub fn new(
        settings: KdSettings,
        kind: ModelKind,
        input: InputSpec,
        normalize: Normalize,
        device: Device,
        stabilizer: Option<LossStabilizer>,
    ) -> Self {
        KdCore {
            settings,
            student: Model::new(kind, input, device),
            teachers: Vec::new(),
            stack_teachers: device.is_cuda(),
            stacked: None,
            normalize,
            device,
            stabilizer,
            kind,
            input,
        }
    }

    /// Sets what the student's and the teachers' forward passes compute in (run.precision).
    pub fn set_precision(&mut self, precision: Precision) {
        self.student.precision = precision;
        self.teachers.iter_mut().for_each(|t| t.precision = precision);
        if let Some(stacked) = &mut self.stacked {
            stacked.precision = precision;
        }
    }

    /// What the student's, the teachers' (and the generator's) forward passes compute in: the
    /// student's, which [`KdCore::set_precision`] sets with the teachers'.
    pub fn precision(&self) -> Precision {
        self.student.precision
    }

    /// The KD loss stabiliser's windows (empty without one), for a checkpoint.
    pub fn save(&self) -> crate::saved::SavedState {
        self.stabilizer.as_ref().map(LossStabilizer::save).unwrap_or_default()
    }

    pub fn restore(&mut self, state: crate::saved::SavedState) -> Result<(), crate::saved::StateError> {
        match &mut self.stabilizer {
            Some(stabilizer) => stabilizer.restore(state),
            None => Ok(()),
        }
    }

    /// Loads the teachers' weights into (frozen) teacher models. On CPU the caller's libtorch
    /// thread count applies (the executor sets the coordinating thread's to run.server_threads).
    pub fn load_teachers<W: TorchWeights>(&mut self, teachers: &[&Teacher<W>]) {
        if self.stack_teachers {
            if self.stacked.as_ref().is_none_or(|s| s.clients() != teachers.len()) {
                let mut stacked = StackedModel::new(self.kind, self.input, teachers.len(), self.device);
                stacked.freeze();
                stacked.precision = self.student.precision;
                self.stacked = Some(stacked);
            }
            let weights: Vec<&W> = teachers.iter().map(|t| &*t.weights).collect();
            self.stacked.as_mut().expect("made above").load(&weights);
            return;
        }
        while self.teachers.len() < teachers.len() {
            let mut model = Model::new(self.kind, self.input, self.device);
            model.vs.freeze();
            model.precision = self.student.precision;
            self.teachers.push(model);
        }
        for (model, teacher) in self.teachers.iter_mut().zip(teachers) {
            model.load_weights(&*teacher.weights);
        }
    }

    /// `iters` Adam steps of the student (from `current`) towards the loaded teachers. Per
    /// teacher, `draw(q, count, rng)` returns `iters x batch_per_teacher` images (uint8-scale
    /// pixels, `[count, C, H, W]`, on the device) drawn by class proportions q; step i uses the
    /// i-th batch of each. Returns delta_KD.
    pub fn distill<W: TorchWeights>(
        &mut self,
        current: &W,
        teachers: &[&Teacher<W>],
        rng: &mut Rng,
        mut draw: impl FnMut(&[f64], usize, &mut Rng) -> Tensor,
    ) -> Result<W, NnError> {
        self.student.load_weights(current);
        let s = self.settings;
        let mut optimizer =
            nn::Adam { wd: s.weight_decay, ..Default::default() }.build(&self.student.vs, s.lr)?;
        let per = s.batch_per_teacher as i64;
        let drawn: Vec<Tensor> =
            teachers.iter().map(|t| draw(&t.class_proportions, s.iters * s.batch_per_teacher, rng)).collect();
        for step in 0..s.iters as i64 {
            let images =
                Tensor::cat(&drawn.iter().map(|d| d.narrow(0, step * per, per)).collect::<Vec<_>>(), 0);
            let inputs = self.normalize.apply(&Augment::reflect().apply(&images, rng));
            let student_log_probs =
                (self.student.forward_t(&inputs, false) / s.temperature).log_softmax(-1, Kind::Float);
            let mut loss = Tensor::zeros([], (Kind::Float, self.device));
            let all_logits = tch::no_grad(|| self.teacher_logits_split(&inputs, teachers.len()));
            for (i, logits) in all_logits.into_iter().enumerate() {
                let teacher_probs = (logits / s.temperature).softmax(-1, Kind::Float);
                loss += student_log_probs.narrow(0, i as i64 * per, per).kl_div(
                    &teacher_probs,
                    Reduction::Sum,
                    false,
                );
            }
            let loss = loss * (s.temperature * s.temperature / (per * teachers.len() as i64) as f64);
            let value = loss.double_value(&[]);
            if let Some(stabilizer) = &mut self.stabilizer {
                if !stabilizer.admit(0, value) {
                    continue;
                }
            }
            // Adam normalises gradients, so the float noise of a zero KL (a teacher that equals
            // the student) would still move the student by about lr a step: skip such steps.
            if value < NOISE_LEVEL_KL {
                continue;
            }
            optimizer.backward_step(&loss);
        }
        Ok(crate::params::delta(&W::from_flat(self.student.flat_weights()), current))
    }

    /// Each of the `count` loaded teachers' scores of its own equal share of `inputs` (teacher
    /// i sees rows i*b..(i+1)*b), in evaluation mode.
    pub fn teacher_logits_split(&self, inputs: &Tensor, count: usize) -> Vec<Tensor> {
        let per = inputs.size()[0] / count as i64;
        match &self.stacked {
            Some(stacked) if self.stack_teachers => {
                let logits = stacked.forward_split(inputs);
                (0..count as i64).map(|i| logits.get(i)).collect()
            }
            _ => self
                .teachers
                .iter()
                .take(count)
                .enumerate()
                .map(|(i, t)| t.forward_t(&inputs.narrow(0, i as i64 * per, per), false))
                .collect(),
        }
    }

    /// Each of the `count` loaded teachers' scores of the whole batch `inputs` with its
    /// trackers' batch statistics (differentiable), in evaluation mode: FedRevive's synthesis.
    pub fn teacher_logits_probed(&self, inputs: &Tensor, count: usize) -> Vec<(Tensor, Vec<BatchStats>)> {
        match &self.stacked {
            Some(stacked) if self.stack_teachers => {
                let (logits, stats) = stacked.forward_shared(inputs);
                (0..count as i64)
                    .map(|k| (logits.get(k), stats.iter().map(|st| st.row(k)).collect()))
                    .collect()
            }
            _ => self
                .teachers
                .iter()
                .take(count)
                .map(|t| {
                    t.probe.arm();
                    let logits = t.forward_t(inputs, false);
                    (logits, t.probe.take())
                })
                .collect(),
        }
    }
}

/// Draws `count` indices by class proportions `q` from per-class lists, as the reference draws
/// KD images: all `count` labels at once from q (uniform where q has no mass), then per class
/// as many images as it has labels, without replacement where the class has enough of them,
/// with replacement where it has fewer, and from the whole pool where it has none. The images
/// stand in the order of their labels.
pub fn draw_by_class(by_class: &[Vec<i64>], q: &[f64], count: usize, rng: &mut Rng) -> Vec<i64> {
    let everything: Vec<i64> = by_class.concat();
    if everything.is_empty() {
        return Vec::new();
    }
    let classes = by_class.len();
    let labels = draw_labels(q, classes, count, rng);
    let mut out = vec![0i64; count];
    for (class, images) in by_class.iter().enumerate() {
        let positions: Vec<usize> = (0..count).filter(|&i| labels[i] == class as i64).collect();
        if positions.is_empty() {
            continue;
        }
        let source = if images.is_empty() { &everything } else { images };
        let picked: Vec<i64> = if source.len() >= positions.len() {
            rand::seq::index::sample(rng, source.len(), positions.len())
                .into_iter()
                .map(|i| source[i])
                .collect()
        } else {
            (0..positions.len()).map(|_| source[rng.random_range(0..source.len())]).collect()
        };
        for (position, index) in positions.into_iter().zip(picked) {
            out[position] = index;
        }
    }
    out
}

/// Draws `count` class labels of `classes` by proportions `q` (uniformly where q has no mass):
/// the synthesis targets, and the labels KD images are matched to.
pub fn draw_labels(q: &[f64], classes: usize, count: usize, rng: &mut Rng) -> Vec<i64> {
    let weight = |c: usize| q.get(c).copied().unwrap_or(0.0);
    let mass: f64 = (0..classes).map(weight).sum();
    let last_with_mass = (0..classes).rev().find(|&c| weight(c) > 0.0).unwrap_or(0);
    (0..count)
        .map(|_| {
            let class = if mass > 0.0 {
                let mut u = rng.random::<f64>() * mass;
                (0..classes)
                    .find(|&c| {
                        u -= weight(c);
                        u < 0.0
                    })
                    .unwrap_or(last_with_mass)
            } else {
                rng.random_range(0..classes)
            };
            class as i64
        })
        .collect()
}

/// DD-FedRevive's distiller: KD on a held-out split of real training images.
pub struct RealDataDistiller {
    pub core: KdCore,
    dataset: std::sync::Arc<Dataset>,
    /// KD-split indices (into the training set) of each class.
    by_class: Vec<Vec<i64>>,
    seed: u64,
}

impl RealDataDistiller {
    pub fn new(
        settings: KdSettings,
        kind: ModelKind,
        dataset: std::sync::Arc<Dataset>,
        kd_split: &[u32],
        device: Device,
        seed: u64,
    ) -> Self {
        let input = InputSpec::of(&dataset);
        let mut by_class = vec![Vec::new(); dataset.num_classes()];
        for &i in kd_split {
            by_class[dataset.train.host_labels[i as usize] as usize].push(i as i64);
        }
        let (mean, std) = dataset.kind.normalization();
        let core = KdCore::new(settings, kind, input, Normalize::new(&mean, &std, device), device, None);
        RealDataDistiller { core, dataset, by_class, seed }
    }
}

impl<W: TorchWeights> Distiller<W> for RealDataDistiller {
    fn distill(&mut self, current: &W, teachers: &[&Teacher<W>], arrival: u64) -> Result<W, ServerError> {
        self.core.load_teachers(teachers);
        let mut rng = rng::stream(self.seed, Purpose::Distill, arrival);
        let (images, by_class, device) = (&self.dataset.train.images, &self.by_class, self.core.device);
        self.core
            .distill(current, teachers, &mut rng, |q, count, rng| {
                let index = Tensor::from_slice(&draw_by_class(by_class, q, count, rng)).to_device(device);
                images.index_select(0, &index)
            })
            .map_err(ServerError::from)
    }

    fn save(&self) -> Result<crate::saved::SavedState, ServerError> {
        Ok(self.core.save())
    }

    fn restore(&mut self, state: crate::saved::SavedState) -> Result<(), ServerError> {
        Ok(self.core.restore(state)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sim::rng::stream;

    #[test]
    fn kd_draws_take_a_class_without_replacement_when_it_has_enough_images() {
        // Class 0 has 6 images, class 1 has 2, class 2 none.
        let by_class = vec![vec![0, 1, 2, 3, 4, 5], vec![10, 11], vec![]];
        let mut rng = stream(1, Purpose::Distill, 0);
        let only_zero = draw_by_class(&by_class, &[1.0, 0.0, 0.0], 6, &mut rng);
        let mut sorted = only_zero.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4, 5], "6 labels of class 0: each of its 6 images once");
        let ones = draw_by_class(&by_class, &[0.0, 1.0, 0.0], 5, &mut rng);
        assert!(ones.iter().all(|i| [10, 11].contains(i)), "too few: with replacement from the class");
        let lacking = draw_by_class(&by_class, &[0.0, 0.0, 1.0], 8, &mut rng);
        let distinct: std::collections::HashSet<_> = lacking.iter().collect();
        assert_eq!(distinct.len(), 8, "a class the pool lacks falls back to the whole pool: {lacking:?}");
    }

    #[test]
    fn kd_draws_follow_the_labels_drawn_all_at_once() {
        let by_class: Vec<Vec<i64>> = (0..3).map(|c| (0..1000).map(|i| c * 1000 + i).collect()).collect();
        let q = [0.2, 0.3, 0.5];
        let drawn = draw_by_class(&by_class, &q, 3000, &mut stream(2, Purpose::Distill, 0));
        for (c, &p) in q.iter().enumerate() {
            let n = drawn.iter().filter(|&&i| i / 1000 == c as i64).count() as f64 / 3000.0;
            assert!((n - p).abs() < 0.04, "class {c}: share {n}, q {p}");
        }
        // The same stream gives the same draw; labels from draw_labels are classes.
        assert_eq!(drawn, draw_by_class(&by_class, &q, 3000, &mut stream(2, Purpose::Distill, 0)));
        assert!(draw_labels(&q, 3, 50, &mut stream(3, Purpose::Synthesis, 0))
            .iter()
            .all(|&l| (0..3).contains(&l)));
    }

    #[test]
    fn settings_round_trip_through_serde() {
        let s =
            KdSettings { iters: 10, lr: 1e-4, weight_decay: 1e-5, temperature: 2.0, batch_per_teacher: 32 };
        let text = toml::to_string(&s).unwrap();
        assert_eq!(toml::from_str::<KdSettings>(&text).unwrap(), s);
    }
}
