//! Knowledge distillation on the server: the student starts from the current global model
//! and takes `iters` Adam steps (lr 1e-4, weight decay 1e-5) towards the teachers. Each step
//! draws, per teacher, `batch_per_teacher` images by that teacher's class proportions; the
//! loss is the sum over teachers of KL_T(teacher || student), divided by the whole batch.
//! delta_KD = theta_student - theta_current.
//!
//! [`RealDataDistiller`] draws its images from the real KD split (DD-FedRevive). The student
//! runs in evaluation mode, so distillation never moves the trackers' statistics of client
//! data (the networks have no normalisation, so the forward pass is the same either way).

use rand::Rng as _;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Reduction, Tensor};

use super::train::single_threaded_torch;
use super::{InputSpec, Model, ModelKind};
use crate::data::augment::{Augment, Normalize};
use crate::data::Dataset;
use crate::fl::revive::{Distiller, Teacher};
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
    pub normalize: Normalize,
    pub device: Device,
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
    ) -> Self {
        KdCore {
            settings,
            student: Model::new(kind, input, device),
            teachers: Vec::new(),
            normalize,
            device,
            kind,
            input,
        }
    }

    /// Loads the teachers' weights into (frozen) teacher models.
    pub fn load_teachers(&mut self, teachers: &[&Teacher]) {
        if self.device == Device::Cpu {
            single_threaded_torch();
        }
        while self.teachers.len() < teachers.len() {
            let mut model = Model::new(self.kind, self.input, self.device);
            model.vs.freeze();
            self.teachers.push(model);
        }
        for (model, teacher) in self.teachers.iter_mut().zip(teachers) {
            model.load(&teacher.weights);
        }
    }

    /// `iters` Adam steps of the student (from `current`) towards the loaded teachers on
    /// images that `sample(q, count, rng)` draws by class proportions q (uint8-scale pixels,
    /// `[count, C, H, W]`, on the device). Returns delta_KD.
    pub fn distill(
        &mut self,
        current: &[f32],
        teachers: &[&Teacher],
        rng: &mut Rng,
        mut sample: impl FnMut(&[f64], usize, &mut Rng) -> Tensor,
    ) -> anyhow::Result<Vec<f32>> {
        self.student.load(current);
        let s = self.settings;
        let mut optimizer =
            nn::Adam { wd: s.weight_decay, ..Default::default() }.build(&self.student.vs, s.lr)?;
        let per = s.batch_per_teacher as i64;
        for _ in 0..s.iters {
            let images = Tensor::cat(
                &teachers
                    .iter()
                    .map(|t| sample(&t.class_proportions, s.batch_per_teacher, rng))
                    .collect::<Vec<_>>(),
                0,
            );
            let inputs = self.normalize.apply(&Augment::default().apply(&images, rng));
            let student_log_probs =
                (self.student.net.forward_t(&inputs, false) / s.temperature).log_softmax(-1, Kind::Float);
            let mut loss = Tensor::zeros([], (Kind::Float, self.device));
            for (i, teacher) in self.teachers.iter().take(teachers.len()).enumerate() {
                let slice = inputs.narrow(0, i as i64 * per, per);
                let teacher_probs = tch::no_grad(|| {
                    (teacher.net.forward_t(&slice, false) / s.temperature).softmax(-1, Kind::Float)
                });
                loss += student_log_probs.narrow(0, i as i64 * per, per).kl_div(
                    &teacher_probs,
                    Reduction::Sum,
                    false,
                );
            }
            let loss = loss / (per * teachers.len() as i64) as f64;
            // Adam normalises gradients, so the float noise of a zero KL (a teacher that equals
            // the student) would still move the student by about lr a step: skip such steps.
            if loss.double_value(&[]) < NOISE_LEVEL_KL {
                continue;
            }
            optimizer.backward_step(&loss);
        }
        Ok(crate::params::delta(&self.student.weights(), current))
    }
}

/// Draws `count` indices by class proportions `q` from per-class lists (uniformly over the
/// non-empty classes where q puts no mass on them).
pub fn sample_by_class(by_class: &[Vec<i64>], q: &[f64], count: usize, rng: &mut Rng) -> Vec<i64> {
    let available: Vec<usize> = (0..by_class.len()).filter(|&c| !by_class[c].is_empty()).collect();
    if available.is_empty() {
        return Vec::new();
    }
    let mass: f64 = available.iter().map(|&c| q.get(c).copied().unwrap_or(0.0)).sum();
    (0..count)
        .map(|_| {
            let class = if mass > 0.0 {
                let mut u = rng.random::<f64>() * mass;
                *available
                    .iter()
                    .find(|&&c| {
                        u -= q.get(c).copied().unwrap_or(0.0);
                        u < 0.0
                    })
                    .unwrap_or(available.last().expect("not empty"))
            } else {
                available[rng.random_range(0..available.len())]
            };
            let pool = &by_class[class];
            pool[rng.random_range(0..pool.len())]
        })
        .collect()
}

/// DD-FedRevive's distiller: KD on a held-out split of real training images.
pub struct RealDataDistiller {
    core: KdCore,
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
        let core = KdCore::new(settings, kind, input, Normalize::new(&mean, &std, device), device);
        RealDataDistiller { core, dataset, by_class, seed }
    }
}

impl Distiller for RealDataDistiller {
    fn distill(&mut self, current: &[f32], teachers: &[&Teacher], version: u64) -> anyhow::Result<Vec<f32>> {
        self.core.load_teachers(teachers);
        let mut rng = rng::stream(self.seed, Purpose::Distill, version);
        let (images, by_class, device) = (&self.dataset.train.images, &self.by_class, self.core.device);
        self.core.distill(current, teachers, &mut rng, |q, count, rng| {
            let index = Tensor::from_slice(&sample_by_class(by_class, q, count, rng)).to_device(device);
            images.index_select(0, &index)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_serde() {
        let s =
            KdSettings { iters: 10, lr: 1e-4, weight_decay: 1e-5, temperature: 2.0, batch_per_teacher: 32 };
        let text = toml::to_string(&s).unwrap();
        assert_eq!(toml::from_str::<KdSettings>(&text).unwrap(), s);
    }
}
