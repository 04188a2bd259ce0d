//! FedRevive's data-free distillation (FEDREVIVE.md section 3). Per arrival, a fast copy of
//! a persistent generator and its latents take `g_steps` Adam steps so that the teachers
//! (the recent client models) recognise the synthetic images as the drawn targets:
//! loss = bn_weight L_bn + oh_weight L_oh + adv_weight L_adv, where L_bn matches each
//! teacher's recorded feature statistics, L_oh is the teacher-weighted cross-entropy of the
//! targets, and L_adv (from the `adv_after`-th synthesis call on, counting from 1) rewards
//! images on which teachers and student agree yet diverge. The latents z and the class
//! embeddings are trained with lr_z, the fast generator with lr_g; images are augmented with a
//! reflect-padded crop and a flip. The [`LossStabilizer`] drops a NaN, infinite or spiking
//! term; L_adv is judged only once it is on. A Reptile step then moves the persistent generator
//! towards the fast copy, and the lowest-loss batch joins a FIFO image pool, from which the
//! student is distilled ([`KdCore`]). Every random draw of one arrival comes from that
//! arrival's own streams (keyed by its task id).
//!
//! Differences from the reference: the Reptile step's Adam uses eps 1e-8, not 0, since a
//! parameter the fast copy left unchanged would divide 0 by 0; pool images are kept as uint8.

use rand::Rng as _;
use rand_distr::StandardNormal;
use tch::{nn, nn::ModuleT, nn::OptimizerConfig, Device, Kind, Reduction, Tensor};

use super::adam::{host_array, SavableAdam};
use super::device_weights::TorchWeights;
use super::generator::Generator;
use super::kd::{draw_by_class, draw_labels, KdCore, KdSettings};
use super::{InputSpec, ModelKind, NnError};
use crate::data::augment::{Augment, Normalize};
use crate::data::DatasetKind;
use crate::fl::revive::{Distiller, Teacher};
use crate::fl::stabilizer::LossStabilizer;
use crate::fl::ServerError;
use crate::saved::{Array, SavedState, StateError};
use crate::sim::rng::{self, Purpose, Rng};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DfkdSettings {
    pub nz: i64,
    pub ngf: i64,
    pub synthetic_batch: usize,
    pub g_steps: usize,
    pub lr_g: f64,
    pub lr_z: f64,
    pub bn_weight: f64,
    pub oh_weight: f64,
    pub adv_weight: f64,
    /// L_adv is on from this synthesis call on, counting calls from 1 (the reference's 100).
    pub adv_after: u64,
    pub embedding_scale: f64,
    pub pool_size: usize,
}

impl DfkdSettings {
    /// The reference's values.
    pub fn reference() -> Self {
        DfkdSettings {
            nz: 256,
            ngf: 128,
            synthetic_batch: 64,
            g_steps: 2,
            lr_g: 3e-3,
            lr_z: 1e-3,
            bn_weight: 0.003,
            oh_weight: 1.0,
            adv_weight: 0.1,
            adv_after: 100,
            embedding_scale: 0.2,
            pool_size: 16_000,
        }
    }
}

/// Synthetic images (uint8 pixels) with their target labels, first in first out.
struct ImagePool {
    images: Tensor,
    labels: Vec<u8>,
    next: usize,
    filled: usize,
}

impl ImagePool {
    fn new(capacity: usize, input: InputSpec, device: Device) -> Self {
        let images = Tensor::zeros(
            [capacity as i64, input.channels, input.height, input.width],
            (Kind::Uint8, device),
        );
        ImagePool { images, labels: vec![0; capacity], next: 0, filled: 0 }
    }

    fn push(&mut self, batch: &Tensor, labels: &[i64]) {
        let capacity = self.labels.len();
        for (row, &label) in labels.iter().enumerate() {
            self.images.get(self.next as i64).copy_(&batch.get(row as i64));
            self.labels[self.next] = label as u8;
            self.next = (self.next + 1) % capacity;
            self.filled = (self.filled + 1).min(capacity);
        }
    }

    fn by_class(&self, classes: usize) -> Vec<Vec<i64>> {
        let mut out = vec![Vec::new(); classes];
        for (i, &l) in self.labels[..self.filled].iter().enumerate() {
            out[l as usize].push(i as i64);
        }
        out
    }
}

pub struct DataFreeDistiller {
    settings: DfkdSettings,
    pub core: KdCore,
    augment_normalize: Normalize,
    /// The persistent generator's weights (each synthesis call builds its fast copy).
    generator_vs: nn::VarStore,
    meta_optimizer: SavableAdam,
    stabilizer: LossStabilizer,
    pool: ImagePool,
    synthesis_calls: u64,
    input: InputSpec,
    seed: u64,
}

impl DataFreeDistiller {
    pub fn new(
        kd: KdSettings,
        settings: DfkdSettings,
        kind: ModelKind,
        dataset: DatasetKind,
        input: InputSpec,
        device: Device,
        seed: u64,
    ) -> Result<Self, NnError> {
        let (mean, std) = dataset.normalization();
        let (generator_vs, _) = Generator::build(settings.nz, settings.ngf, input, seed, device);
        let meta_optimizer = SavableAdam::new(&generator_vs, settings.lr_g, 0.5, 0.999)?;
        Ok(DataFreeDistiller {
            core: KdCore::new(
                kd,
                kind,
                input,
                Normalize::new(&mean, &std, device),
                device,
                Some(LossStabilizer::reference(1)),
            ),
            augment_normalize: Normalize::new(&mean, &std, device),
            pool: ImagePool::new(settings.pool_size, input, device),
            stabilizer: LossStabilizer::reference(3),
            generator_vs,
            meta_optimizer,
            synthesis_calls: 0,
            settings,
            input,
            seed,
        })
    }

    pub fn pool_len(&self) -> usize {
        self.pool.filled
    }

    /// The values of L_bn, L_oh and L_adv the stabiliser has kept so far (term 0, 1, 2).
    pub fn kept_terms(&self, term: usize) -> Vec<f64> {
        self.stabilizer.history(term).iter().copied().collect()
    }

    /// The persistent generator's weights, in layout order.
    pub fn generator_weights(&self) -> Vec<f32> {
        super::Layout::of(&self.generator_vs).read(&self.generator_vs)
    }

    /// One arrival's random inputs to synthesis, from its own stream: targets drawn from the
    /// teachers' mean class proportions, latents z ~ N(0, I) and class embeddings ~ N(0, I).
    /// The stream goes on to drive the augmentation.
    pub fn draw_inputs<W>(&self, teachers: &[&Teacher<W>], arrival: u64) -> (Vec<i64>, Tensor, Tensor, Rng) {
        let s = self.settings;
        let classes = self.input.classes as usize;
        let mut rng = rng::stream(self.seed, Purpose::Synthesis, arrival);
        let mean_q: Vec<f64> = (0..classes)
            .map(|c| teachers.iter().map(|t| t.class_proportions[c]).sum::<f64>() / teachers.len() as f64)
            .collect();
        let targets = draw_labels(&mean_q, classes, s.synthetic_batch, &mut rng);
        let mut normal =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.sample::<f32, _>(StandardNormal)).collect() };
        let z0 = Tensor::from_slice(&normal(s.synthetic_batch * s.nz as usize))
            .view([s.synthetic_batch as i64, s.nz])
            .to_device(self.core.device);
        let embeddings = Tensor::from_slice(&normal(classes * s.nz as usize))
            .view([classes as i64, s.nz])
            .to_device(self.core.device);
        (targets, z0, embeddings, rng)
    }

    /// One synthesis call; its best batch joins the pool.
    fn synthesize<W: TorchWeights>(
        &mut self,
        current: &W,
        teachers: &[&Teacher<W>],
        arrival: u64,
    ) -> Result<(), NnError> {
        self.core.load_teachers(teachers);
        let s = self.settings;
        let device = self.core.device;
        let classes = self.input.classes as usize;
        let (targets, z0, embeddings0, mut rng) = self.draw_inputs(teachers, arrival);
        let y = Tensor::from_slice(&targets).to_device(device);
        // Teacher weight per class, w_k(j) = q_k(j) / sum_t q_t(j); per sample, [T, B].
        let mut weights = Vec::with_capacity(teachers.len() * classes);
        for t in teachers {
            for c in 0..classes {
                let total: f64 = teachers.iter().map(|u| u.class_proportions[c]).sum();
                weights.push(if total > 0.0 { (t.class_proportions[c] / total) as f32 } else { 0.0 });
            }
        }
        let per_sample = Tensor::from_slice(&weights)
            .view([teachers.len() as i64, classes as i64])
            .to_device(device)
            .index_select(1, &y);

        let mut fast_vs = nn::VarStore::new(device);
        let fast = Generator::new(&fast_vs.root(), s.nz, s.ngf, self.input);
        fast_vs.copy(&self.generator_vs)?;
        // z and the class embeddings: one Adam parameter group with lr_z, as in the reference.
        let z_vs = nn::VarStore::new(device);
        let z = z_vs.root().var_copy("z", &z0);
        let embeddings = z_vs.root().var_copy("embeddings", &embeddings0);
        let mut fast_optimizer =
            nn::Adam { beta1: 0.5, beta2: 0.999, ..Default::default() }.build(&fast_vs, s.lr_g)?;
        let mut z_optimizer =
            nn::Adam { beta1: 0.5, beta2: 0.999, ..Default::default() }.build(&z_vs, s.lr_z)?;
        let call = self.synthesis_calls + 1;
        let adversarial = call >= s.adv_after;
        self.core.student.load_weights(current);
        self.core.student.vs.freeze();
        let mut best: Option<(f64, Tensor)> = None;
        for _ in 0..s.g_steps {
            let latent = &z + embeddings.index_select(0, &y) * s.embedding_scale;
            let images = self.core.precision().forward(device, || fast.forward_t(&latent, true));
            let inputs =
                self.augment_normalize.apply(&Augment::reflect().apply(&(&images * 255.0), &mut rng));
            let student_probs =
                adversarial.then(|| self.core.student.forward_t(&inputs, false).softmax(-1, Kind::Float));
            let mut bn = Tensor::zeros([], (Kind::Float, device));
            let mut one_hot = Tensor::zeros([], (Kind::Float, device));
            let mut adv = Tensor::zeros([], (Kind::Float, device));
            for (k, (logits, stats)) in
                self.core.teacher_logits_probed(&inputs, teachers.len()).into_iter().enumerate()
            {
                let w = per_sample.get(k as i64);
                let mut teacher_bn = Tensor::zeros([], (Kind::Float, device));
                for st in stats {
                    teacher_bn += (st.var - st.running_var).norm() + (st.mean - st.running_mean).norm();
                }
                bn += teacher_bn * w.mean(Kind::Float);
                let ce = logits.cross_entropy_loss(&y, None::<Tensor>, Reduction::None, -100, 0.0);
                one_hot += (&w * ce).mean(Kind::Float);
                if let Some(student) = &student_probs {
                    let teacher_probs = logits.softmax(-1, Kind::Float);
                    let kl = (&teacher_probs
                        * (teacher_probs.clamp_min(1e-12).log() - student.clamp_min(1e-12).log()))
                    .sum_dim_intlist(1, false, Kind::Float);
                    let agree = teacher_probs
                        .argmax(1, false)
                        .eq_tensor(&student.argmax(1, false))
                        .to_kind(Kind::Float);
                    adv -= (&w * kl * agree).mean(Kind::Float);
                }
            }
            // A term is judged only once it is on: L_adv's values enter the stabiliser from its gate.
            let mut loss = Tensor::zeros([], (Kind::Float, device));
            for (index, (term, weight)) in
                [bn, one_hot, adv].into_iter().zip([s.bn_weight, s.oh_weight, s.adv_weight]).enumerate()
            {
                let on = index != 2 || adversarial;
                if on && self.stabilizer.admit(index, term.double_value(&[])) {
                    loss += term * weight;
                }
            }
            let value = loss.double_value(&[]);
            if loss.requires_grad() {
                fast_optimizer.zero_grad();
                z_optimizer.zero_grad();
                loss.backward();
                fast_optimizer.step();
                z_optimizer.step();
            }
            if value.is_finite() && best.as_ref().is_none_or(|(b, _)| value < *b) {
                best = Some((value, images.detach()));
            }
        }
        self.core.student.vs.unfreeze();
        // Reptile: the gradient of 0.5 ||p - f||^2 is p - f.
        let fast_variables = fast_vs.variables();
        let mut pull = Tensor::zeros([], (Kind::Float, device));
        for (name, p) in self.generator_vs.variables() {
            if p.requires_grad() {
                pull += (&p - fast_variables[&name].detach()).square().sum(Kind::Float) * 0.5;
            }
        }
        self.meta_optimizer.backward_step(&pull)?;
        self.synthesis_calls += 1;
        if let Some((_, images)) = best {
            let pixels = (images * 255.0).round().clamp(0.0, 255.0).to_kind(Kind::Uint8);
            self.pool.push(&pixels, &targets);
        }
        Ok(())
    }
}

impl<W: TorchWeights> Distiller<W> for DataFreeDistiller {
    fn warm_up(&mut self, current: &W, teachers: &[&Teacher<W>], arrival: u64) -> Result<(), ServerError> {
        Ok(self.synthesize(current, teachers, arrival)?)
    }

    fn distill(&mut self, current: &W, teachers: &[&Teacher<W>], arrival: u64) -> Result<W, ServerError> {
        self.synthesize(current, teachers, arrival)?;
        crate::faults::reached("distill");
        let by_class = self.pool.by_class(self.input.classes as usize);
        let mut rng = rng::stream(self.seed, Purpose::Distill, arrival);
        let (images, device) = (&self.pool.images, self.core.device);
        self.core
            .distill(current, teachers, &mut rng, |q, count, rng| {
                let index = Tensor::from_slice(&draw_by_class(&by_class, q, count, rng)).to_device(device);
                images.index_select(0, &index)
            })
            .map_err(ServerError::from)
    }

    fn save(&self) -> Result<SavedState, ServerError> {
        let mut state = SavedState::default();
        for (name, variable) in self.generator_vs.variables() {
            state.put_array(format!("generator.{name}"), host_array(&variable)?);
        }
        state.nest("meta_optimizer", self.meta_optimizer.save()?);
        state.nest("stabilizer", self.stabilizer.save());
        state.nest("kd", self.core.save());
        let pool = &self.pool;
        let shape: Vec<usize> = pool.images.size().iter().map(|&d| d as usize).collect();
        let pixels = pool.images.to_device(Device::Cpu).contiguous().view(-1);
        state.put_array(
            "pool.images",
            Array::U8 { shape, data: Vec::<u8>::try_from(&pixels).map_err(NnError::from)? },
        );
        state.put_array(
            "pool.labels",
            Array::U8 { shape: vec![pool.labels.len()], data: pool.labels.clone() },
        );
        state.put_value("pool.next", pool.next)?;
        state.put_value("pool.filled", pool.filled)?;
        state.put_value("synthesis_calls", self.synthesis_calls)?;
        Ok(state)
    }

    fn restore(&mut self, mut state: SavedState) -> Result<(), ServerError> {
        tch::no_grad(|| -> Result<(), StateError> {
            for (name, mut variable) in self.generator_vs.variables() {
                let values = state.take_f32(&format!("generator.{name}"), variable.numel())?;
                let restored = Tensor::from_slice(&values).view(variable.size().as_slice());
                variable.copy_(&restored.to_device(variable.device()));
            }
            Ok(())
        })?;
        self.meta_optimizer.restore(state.unnest("meta_optimizer"))?;
        self.stabilizer.restore(state.unnest("stabilizer"))?;
        self.core.restore(state.unnest("kd"))?;
        let capacity = self.pool.labels.len();
        let (next, filled): (usize, usize) = (state.value("pool.next")?, state.value("pool.filled")?);
        crate::saved::ensure(next < capacity.max(1) && filled <= capacity, || {
            format!("the checkpoint's image pool does not fit dfkd.pool_size = {capacity}")
        })?;
        match (state.take_array("pool.images")?, state.take_array("pool.labels")?) {
            (Array::U8 { shape, data }, Array::U8 { data: labels, .. })
                if labels.len() == capacity && shape.iter().map(|&d| d as i64).collect::<Vec<_>>() == self.pool.images.size() =>
            {
                let images = Tensor::from_slice(&data).view(self.pool.images.size().as_slice());
                self.pool.images.copy_(&images.to_device(self.core.device));
                self.pool.labels = labels;
            }
            _ => {
                return Err(StateError::Mismatch(format!(
                    "the checkpoint's image pool does not fit dfkd.pool_size = {capacity} and the dataset's image size"
                ))
                .into())
            }
        }
        (self.pool.next, self.pool.filled) = (next, filled);
        self.synthesis_calls = state.value("synthesis_calls")?;
        Ok(())
    }
}
