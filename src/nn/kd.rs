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

/// DD-FedRevive's distiller: KD on a held-out split of real training images.
pub struct RealDataDistiller {
    settings: KdSettings,
    dataset: std::sync::Arc<Dataset>,
    /// KD-split indices (into the training set) of each class.
    by_class: Vec<Vec<u32>>,
    normalize: Normalize,
    device: Device,
    seed: u64,
    student: Model,
    teachers: Vec<Model>,
    kind: ModelKind,
    input: InputSpec,
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
            by_class[dataset.train.host_labels[i as usize] as usize].push(i);
        }
        let (mean, std) = dataset.kind.normalization();
        RealDataDistiller {
            settings,
            normalize: Normalize::new(&mean, &std, device),
            student: Model::new(kind, input, device),
            teachers: Vec::new(),
            dataset,
            by_class,
            device,
            seed,
            kind,
            input,
        }
    }

    /// Indices of `count` KD images drawn by class proportions `q` (uniform over the split's
    /// classes where q has no mass on any class that has images).
    fn sample(&self, q: &[f64], count: usize, rng: &mut Rng) -> Vec<i64> {
        let available: Vec<usize> =
            (0..self.by_class.len()).filter(|&c| !self.by_class[c].is_empty()).collect();
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
                        .unwrap_or(available.last().expect("the KD split is not empty"))
                } else {
                    available[rng.random_range(0..available.len())]
                };
                let pool = &self.by_class[class];
                pool[rng.random_range(0..pool.len())] as i64
            })
            .collect()
    }
}

impl Distiller for RealDataDistiller {
    fn distill(&mut self, current: &[f32], teachers: &[&Teacher], version: u64) -> anyhow::Result<Vec<f32>> {
        if self.device == Device::Cpu {
            single_threaded_torch();
        }
        while self.teachers.len() < teachers.len() {
            self.teachers.push(Model::new(self.kind, self.input, self.device));
        }
        for (model, teacher) in self.teachers.iter_mut().zip(teachers) {
            model.load(&teacher.weights);
        }
        self.student.load(current);
        let mut rng = rng::stream(self.seed, Purpose::Distill, version);
        let s = self.settings;
        let mut optimizer =
            nn::Adam { wd: s.weight_decay, ..Default::default() }.build(&self.student.vs, s.lr)?;
        let per = s.batch_per_teacher as i64;
        for _ in 0..s.iters {
            let indices: Vec<i64> = teachers
                .iter()
                .flat_map(|t| self.sample(&t.class_proportions, s.batch_per_teacher, &mut rng))
                .collect();
            let index = Tensor::from_slice(&indices).to_device(self.device);
            let images =
                Augment::default().apply(&self.dataset.train.images.index_select(0, &index), &mut rng);
            let inputs = self.normalize.apply(&images);
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
            let loss = loss / indices.len() as f64;
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
