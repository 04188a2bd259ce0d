//! Cohort training: the local updates of G clients as one computation. The G models are one
//! stacked model, running the model's own forward pass ([`super::layers`]): every variable gains a leading client axis; a convolution over the stack is
//! one grouped convolution (groups = G, client g's channels are group g), a linear layer one
//! batched matmul, and each tracker keeps per-client statistics. The loss is the sum of the
//! clients' mean losses, so each client's gradient is its own, and Adam and SGD are elementwise,
//! so each client's optimizer state is its own too. Each client draws its batches and
//! augmentation from its own stream in the order the single path does; batches of different
//! sizes (an epoch's last batch, shards of different lengths) are padded and masked.
//!
//! On a GPU this turns G launch-bound jobs into one that fills the device. The result differs
//! from training each client alone only by float rounding, which is why a run's cohort size is
//! part of its config.

use std::collections::HashMap;
use std::time::Instant;

use tch::{nn, Device, Kind, Tensor};

use super::device_weights::TorchWeights;
use super::layers::Layers;
use super::train::{
    augmented_batch, single_threaded_torch, BatchOrder, Proximal, TrainContext, TrainOutcome, TrainSpec,
};
use super::{tracker, InputSpec, Layout, Model, ModelKind};
use crate::sim::rng::Rng;

/// G copies of a model as stacked variables, named as the single model's.
pub struct StackedModel {
    kind: ModelKind,
    clients: i64,
    vs: nn::VarStore,
    vars: HashMap<String, Tensor>,
    /// The single model's layout: where each variable lies in one client's flat weights.
    layout: Layout,
    /// While armed, every tracker reports its batch statistics here (evaluation forwards), as
    /// [`tracker::BatchStats`] with `[G, C]` tensors: one row per stacked model.
    probe: std::cell::RefCell<Option<Vec<tracker::BatchStats>>>,
    /// What its forward passes compute in (run.precision).
    pub precision: super::precision::Precision,
}

/// Which rows of a padded batch are real, per client.
struct Mask {
    /// `[B, G, 1, 1]` of 0 and 1, for trackers over `[B, G*C, H, W]` activations.
    rows: Tensor,
    /// `[G, 1]`: each client's real rows.
    counts: Tensor,
}

impl StackedModel {
    pub fn new(kind: ModelKind, input: InputSpec, clients: usize, device: Device) -> Self {
        assert!(clients >= 1, "a cohort holds at least one client");
        let layout = Model::new(kind, input, Device::Cpu).layout;
        let vs = nn::VarStore::new(device);
        let mut vars = HashMap::new();
        for entry in &layout.entries {
            let (prefix, leaf) = entry.name.rsplit_once('.').unwrap_or(("", &entry.name));
            let path = prefix.split('.').filter(|p| !p.is_empty()).fold(vs.root(), |p, part| p / part);
            let shape: Vec<i64> =
                std::iter::once(clients as i64).chain(entry.shape.iter().copied()).collect();
            let var = if entry.trainable {
                path.var(leaf, &shape, nn::Init::Const(0.0))
            } else {
                path.zeros_no_train(leaf, &shape)
            };
            vars.insert(entry.name.clone(), var);
        }
        StackedModel {
            kind,
            clients: clients as i64,
            vs,
            vars,
            layout,
            probe: Default::default(),
            precision: super::precision::Precision::Fp32,
        }
    }

    /// How many models the stack holds.
    pub fn clients(&self) -> usize {
        self.clients as usize
    }

    /// No gradients reach the variables (teachers).
    pub fn freeze(&mut self) {
        self.vs.freeze();
    }

    /// Copies client g's weights `bases[g]` into slice g of every variable. Each distinct base
    /// (by address: a FedAvg cohort shares one) is read once, as a flat tensor on the device
    /// (where device weights already are), then repeated there.
    pub fn load<W: TorchWeights>(&mut self, bases: &[&W]) {
        assert_eq!(bases.len() as i64, self.clients, "one base per client");
        let device = self.vs.device();
        let mut distinct: Vec<&W> = Vec::new();
        let slots: Vec<i64> = bases
            .iter()
            .map(|&base| {
                let found = distinct.iter().position(|&d| std::ptr::eq(d, base));
                found.unwrap_or_else(|| {
                    distinct.push(base);
                    distinct.len() - 1
                }) as i64
            })
            .collect();
        let slots = Tensor::from_slice(&slots).to_device(device);
        let flats: Vec<Tensor> = distinct.iter().map(|base| base.flat_on(device)).collect();
        tch::no_grad(|| {
            let unique = Tensor::stack(&flats, 0);
            for entry in &self.layout.entries {
                let shape: Vec<i64> =
                    std::iter::once(self.clients).chain(entry.shape.iter().copied()).collect();
                let source = unique
                    .narrow(1, entry.offset as i64, entry.numel as i64)
                    .index_select(0, &slots)
                    .view(shape.as_slice());
                self.vars[&entry.name].shallow_clone().copy_(&source);
            }
        });
    }

    /// Every client's weights, read from the device once as a `[G, numel]` tensor.
    pub fn weights<W: TorchWeights>(&self) -> Vec<W> {
        let parts: Vec<Tensor> = self
            .layout
            .entries
            .iter()
            .map(|e| self.vars[&e.name].detach().reshape([self.clients, e.numel as i64]))
            .collect();
        let all = tch::no_grad(|| Tensor::cat(&parts, 1));
        (0..self.clients).map(|g| W::from_flat(all.get(g))).collect()
    }

    /// Class scores `[G, B, classes]` of images `[B, G*C, H, W]` (client g's images are
    /// channels g*C..(g+1)*C); in training mode the trackers record each client's statistics
    /// over the rows `mask` marks real.
    fn forward(&self, xs: &Tensor, mask: Option<&Mask>, train: bool) -> Tensor {
        self.precision
            .forward(self.vs.device(), || self.kind.forward(&Stack { model: self, mask, train }, xs))
    }

    /// Evaluation-mode class scores `[G, B, classes]` of one batch `[B, C, H, W]` shown to every
    /// model, and each tracker's per-model batch statistics (differentiable, for synthesis).
    pub fn forward_shared(&self, xs: &Tensor) -> (Tensor, Vec<tracker::BatchStats>) {
        *self.probe.borrow_mut() = Some(Vec::new());
        let logits = self.forward(&xs.repeat([1, self.clients, 1, 1]), None, false);
        let stats = self.probe.borrow_mut().take().unwrap_or_default();
        (logits, stats)
    }

    /// Evaluation-mode class scores `[G, b, classes]` where model g sees its own rows
    /// `g*b..(g+1)*b` of `xs` (`[G*b, C, H, W]`), as the KD steps show each teacher its images.
    pub fn forward_split(&self, xs: &Tensor) -> Tensor {
        let [rows, c, h, w] = xs.size()[..] else { unreachable!("images are 4-D") };
        let per = rows / self.clients;
        let stacked =
            xs.view([self.clients, per, c, h, w]).transpose(0, 1).reshape([per, self.clients * c, h, w]);
        self.forward(&stacked, None, false)
    }

    /// The stacked convolution `name`: one grouped convolution on a GPU; on CPU client by
    /// client within the stack, since libtorch's CPU grouped convolution was measured 10-60%
    /// slower than the same convolutions apart (ConvNet, cohort of 8, one thread).
    fn conv(&self, name: &str, xs: &Tensor, stride: i64, padding: i64) -> Tensor {
        let weight = &self.vars[&format!("{name}.weight")];
        let bias = self.vars.get(&format!("{name}.bias"));
        if self.vs.device() == Device::Cpu {
            let outputs: Vec<Tensor> = xs
                .chunk(self.clients, 1)
                .iter()
                .enumerate()
                .map(|(g, x)| {
                    let g = g as i64;
                    x.conv2d(
                        &weight.get(g),
                        bias.map(|b| b.get(g)),
                        [stride, stride],
                        [padding, padding],
                        [1, 1],
                        1,
                    )
                })
                .collect();
            return Tensor::cat(&outputs, 1);
        }
        let [g, o, c, kh, kw] = weight.size()[..] else { unreachable!("stacked conv weights are 5-D") };
        let weight = weight.view([g * o, c, kh, kw]);
        let bias = bias.map(|b| b.view([-1]));
        xs.conv2d(&weight, bias.as_ref(), [stride, stride], [padding, padding], [1, 1], self.clients)
    }

    /// `[B, G*C, H, W]` feature maps -> `[G, B, C*H*W]` rows, each client's flattened as the
    /// single model flattens them (channel-major).
    fn to_rows(&self, xs: &Tensor) -> Tensor {
        let batch = xs.size()[0];
        xs.view([batch, self.clients, -1]).transpose(0, 1)
    }

    /// The stacked linear layer `name`: `[G, B, I]` -> `[G, B, O]`.
    fn linear(&self, name: &str, xs: &Tensor) -> Tensor {
        let weight = &self.vars[&format!("{name}.weight")];
        let out = xs.bmm(&weight.transpose(1, 2));
        match self.vars.get(&format!("{name}.bias")) {
            Some(bias) => out + bias.unsqueeze(1),
            None => out,
        }
    }

    /// Each client's batch mean and biased variance `[G, C]` of `[B, G*C, H, W]` activations.
    fn batch_stats(&self, xs: &Tensor) -> (Tensor, Tensor) {
        let dims = [0i64, 2, 3];
        let channels = xs.size()[1] / self.clients;
        (
            xs.mean_dim(dims.as_slice(), false, None).view([self.clients, channels]),
            xs.var_correction(dims.as_slice(), 0, false).view([self.clients, channels]),
        )
    }

    /// Identity; in training mode folds each client's batch statistics (real rows only) into
    /// its running mean and biased variance, as [`tracker::StatTracker`] does for one model.
    fn track(&self, name: &str, xs: &Tensor, mask: Option<&Mask>, train: bool) -> Tensor {
        let activations = xs;
        // Statistics in float32 whatever the activations' precision (a no-op in fp32).
        let xs = &xs.to_kind(Kind::Float);
        if let Some(collected) = self.probe.borrow_mut().as_mut() {
            let (mean, var) = self.batch_stats(xs);
            collected.push(tracker::BatchStats {
                mean,
                var,
                running_mean: self.vars[&format!("{name}.running_mean")].shallow_clone(),
                running_var: self.vars[&format!("{name}.running_var")].shallow_clone(),
            });
        }
        if train {
            tch::no_grad(|| {
                let (batch, channels, height, width) = xs.size4().expect("trackers follow convolutions");
                let (g, c) = (self.clients, channels / self.clients);
                let (mean, var) = match mask {
                    None => self.batch_stats(xs),
                    Some(mask) => {
                        let grouped = xs.view([batch, g, c, height * width]);
                        let count = &mask.counts * (height * width) as f64;
                        let mean =
                            (&grouped * &mask.rows).sum_dim_intlist([0i64, 3].as_slice(), false, Kind::Float)
                                / &count;
                        let centred = &grouped - mean.view([1, g, c, 1]);
                        let var = (centred.square() * &mask.rows).sum_dim_intlist(
                            [0i64, 3].as_slice(),
                            false,
                            Kind::Float,
                        ) / count;
                        (mean, var)
                    }
                };
                let mut running_mean = self.vars[&format!("{name}.running_mean")].shallow_clone();
                let mut running_var = self.vars[&format!("{name}.running_var")].shallow_clone();
                running_mean.copy_(&(&running_mean * (1.0 - tracker::MOMENTUM) + mean * tracker::MOMENTUM));
                running_var.copy_(&(&running_var * (1.0 - tracker::MOMENTUM) + var * tracker::MOMENTUM));
            });
        }
        activations.shallow_clone()
    }
}

/// A [`StackedModel`] in one forward pass: the model's layers over the stack.
struct Stack<'a> {
    model: &'a StackedModel,
    mask: Option<&'a Mask>,
    train: bool,
}

impl Layers for Stack<'_> {
    fn conv(&self, name: &str, xs: &Tensor, stride: i64, padding: i64) -> Tensor {
        self.model.conv(name, xs, stride, padding)
    }

    fn track(&self, name: &str, xs: &Tensor) -> Tensor {
        self.model.track(name, xs, self.mask, self.train)
    }

    fn linear(&self, name: &str, xs: &Tensor) -> Tensor {
        self.model.linear(name, xs)
    }

    fn flatten(&self, xs: &Tensor) -> Tensor {
        self.model.to_rows(xs)
    }
}

/// One cohort member's input: its base weights, shard and stream.
pub struct Member<'a, W = Vec<f32>> {
    pub base: &'a W,
    pub shard: &'a [u32],
    pub rng: Rng,
}

/// Trains every member as the single path would ([`super::train::train_local`]), all in one
/// stacked model; returns the outcomes in member order. Each outcome's `wall` is its share of
/// the cohort's time.
pub fn train_cohort<W: TorchWeights>(
    spec: &TrainSpec,
    members: Vec<Member<W>>,
    ctx: &TrainContext,
) -> Result<Vec<TrainOutcome<W>>, tch::TchError> {
    let started = Instant::now();
    if ctx.device == Device::Cpu {
        single_threaded_torch();
    }
    let clients = members.len();
    let mut model = StackedModel::new(spec.model, spec.input, clients, ctx.device);
    model.precision = spec.precision;
    let bases: Vec<&W> = members.iter().map(|m| m.base).collect();
    model.load(&bases);
    let mut optimizer = spec.optimizer.build(&model.vs, spec.lr, spec.momentum)?;
    let proximal = Proximal::anchored(&model.vs, spec.prox_mu);
    let mut orders: Vec<BatchOrder> = members.iter().map(|m| BatchOrder::new(m.shard)).collect();
    let mut rngs: Vec<Rng> = members.into_iter().map(|m| m.rng).collect();
    let mut samples = vec![0usize; clients];
    let mut first_losses = Tensor::new();
    let mut last_losses = Tensor::new();
    for step in 0..spec.local_iters {
        let mut images = Vec::with_capacity(clients);
        let mut labels = Vec::with_capacity(clients);
        for (g, (order, rng)) in orders.iter_mut().zip(&mut rngs).enumerate() {
            let batch = order.next_batch(spec.batch_size, rng);
            samples[g] += batch.len();
            let (inputs, targets) = augmented_batch(ctx, spec, &batch, rng);
            images.push(inputs);
            labels.push(targets);
        }
        let losses = cohort_step(&model, &mut optimizer, images, labels, proximal.as_ref())?;
        if step == 0 {
            first_losses = losses.shallow_clone();
        }
        last_losses = losses;
    }
    let values = |t: &Tensor| -> Vec<f32> {
        if t.defined() {
            Vec::<f32>::try_from(t.to_device(Device::Cpu)).unwrap_or_else(|_| vec![f32::NAN; clients])
        } else {
            vec![f32::NAN; clients]
        }
    };
    let (first, last) = (values(&first_losses), values(&last_losses));
    let share = started.elapsed() / clients as u32;
    Ok(model
        .weights::<W>()
        .into_iter()
        .enumerate()
        .map(|(g, trained)| TrainOutcome {
            delta: crate::params::delta(&trained, bases[g]),
            model: spec.return_model.then_some(trained),
            first_loss: first[g],
            last_loss: last[g],
            samples: samples[g],
            wall: share,
        })
        .collect())
}

/// One optimizer step of the cohort on each client's normalised images `[b_g, C, H, W]` and
/// labels `[b_g]`; returns each client's detached mean loss `[G]`.
fn cohort_step(
    model: &StackedModel,
    optimizer: &mut nn::Optimizer,
    images: Vec<Tensor>,
    labels: Vec<Tensor>,
    proximal: Option<&Proximal>,
) -> Result<Tensor, tch::TchError> {
    let sizes: Vec<i64> = images.iter().map(|i| i.size()[0]).collect();
    let rows = *sizes.iter().max().expect("a cohort is never empty");
    let padded = sizes.iter().any(|&s| s != rows);
    let device = images[0].device();
    let (images, labels): (Vec<Tensor>, Vec<Tensor>) = images
        .into_iter()
        .zip(labels)
        .zip(&sizes)
        .map(|((image, label), &size)| {
            if size == rows {
                return (image, label);
            }
            // Padded rows: zero images, and labels that cross entropy ignores.
            let image = image.constant_pad_nd([0, 0, 0, 0, 0, 0, 0, rows - size]);
            let filler = Tensor::full([rows - size], -100, (Kind::Int64, device));
            (image, Tensor::cat(&[label, filler], 0))
        })
        .unzip();
    let clients = images.len() as i64;
    let [_, c, h, w] = images[0].size()[..] else { unreachable!("images are 4-D") };
    let xs = Tensor::stack(&images, 1).view([rows, clients * c, h, w]);
    let ys = Tensor::stack(&labels, 0);
    let mask = padded.then(|| {
        let real: Vec<f32> =
            (0..rows).flat_map(|r| sizes.iter().map(move |&s| if r < s { 1.0 } else { 0.0 })).collect();
        let counts: Vec<f32> = sizes.iter().map(|&s| s as f32).collect();
        Mask {
            rows: Tensor::from_slice(&real).view([rows, clients, 1, 1]).to_device(device),
            counts: Tensor::from_slice(&counts).view([clients, 1]).to_device(device),
        }
    });
    let logits = model.forward(&xs, mask.as_ref(), true);
    let classes = logits.size()[2];
    let per_sample = logits.reshape([clients * rows, classes]).f_cross_entropy_loss(
        &ys.view([-1]),
        None::<Tensor>,
        tch::Reduction::None,
        -100,
        0.0,
    )?;
    let per_sample = per_sample.view([clients, rows]);
    let losses = match &mask {
        None => per_sample.mean_dim([1i64].as_slice(), false, None),
        Some(mask) => {
            per_sample.sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / mask.counts.view([-1])
        }
    };
    match proximal {
        Some(proximal) => optimizer.backward_step(&(losses.sum(Kind::Float) + proximal.term())),
        None => optimizer.backward_step(&losses.sum(Kind::Float)),
    }
    Ok(losses.detach())
}

/// Device bytes that one more stacked client takes while training: the allocator's peak over
/// two steps (the optimizer state exists from the first) for a cohort of two minus that for a
/// cohort of one, both trained on `shard`. None on CPU or where the figures cannot be read.
pub fn measure_client_footprint(spec: &TrainSpec, shard: &[u32], ctx: &TrainContext) -> Option<u64> {
    use crate::runtime::{device_memory, reset_peak_memory};
    let spec = TrainSpec { local_iters: 2, return_model: false, ..*spec };
    // The base lies on the device, as a run's versions do.
    let zeros = vec![0f32; Model::new(spec.model, spec.input, Device::Cpu).layout.numel];
    let base = <super::device_weights::DeviceWeights as TorchWeights>::from_host(&zeros, ctx.device);
    let peak = |clients: u64| -> Option<u64> {
        reset_peak_memory(ctx.device);
        let before = device_memory(ctx.device)?.allocated;
        let members = (0..clients)
            .map(|task| Member {
                base: &base,
                shard,
                rng: crate::sim::rng::stream(0, crate::sim::rng::Purpose::TrainTask, task),
            })
            .collect();
        train_cohort(&spec, members, ctx).ok()?;
        Some(device_memory(ctx.device)?.peak_allocated.saturating_sub(before))
    };
    let one = peak(1)?;
    let two = peak(2)?;
    Some(two.saturating_sub(one).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::initial_weights;

    const CIFAR: InputSpec = InputSpec { channels: 3, height: 32, width: 32, classes: 10 };

    #[test]
    fn shared_and_distinct_bases_load_into_their_slices() {
        let a = initial_weights(ModelKind::ConvNet, CIFAR, 1);
        let b = initial_weights(ModelKind::ConvNet, CIFAR, 2);
        let mut stacked = StackedModel::new(ModelKind::ConvNet, CIFAR, 3, Device::Cpu);
        stacked.load(&[&a, &b, &a]);
        assert_eq!(stacked.weights::<Vec<f32>>(), [a.clone(), b, a]);
    }

    /// FedRevive's teachers as one stacked model: the same scores and tracker statistics as
    /// each teacher alone, for a batch shown to all and for a batch split among them.
    #[test]
    fn stacked_teachers_score_and_report_statistics_as_each_teacher_alone() {
        for kind in ModelKind::ALL {
            let teachers = 3i64;
            let bases: Vec<Vec<f32>> =
                (0..teachers).map(|s| initial_weights(kind, CIFAR, 20 + s as u64)).collect();
            let mut stacked = StackedModel::new(kind, CIFAR, teachers as usize, Device::Cpu);
            let refs: Vec<&Vec<f32>> = bases.iter().collect();
            stacked.load(&refs);
            // Synthesis differentiates the statistics with respect to the images.
            let images = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let (logits, stats) = stacked.forward_shared(&images);
            assert!(
                stats[0].mean.requires_grad() && logits.requires_grad(),
                "{kind}: the graph reaches the images"
            );
            let split = Tensor::randn([teachers * 2, 3, 32, 32], (Kind::Float, Device::Cpu));
            let split_logits = stacked.forward_split(&split);
            assert_eq!(split_logits.size(), [teachers, 2, 10]);
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let diff = (a - b).abs().max().double_value(&[]);
                let scale = b.abs().max().double_value(&[]).max(1.0);
                assert!(diff <= 1e-5 * scale, "{kind} {what}: {diff:e} of {scale:e}");
            };
            for (g, base) in bases.iter().enumerate() {
                let mut single = Model::new(kind, CIFAR, Device::Cpu);
                single.load(base);
                single.probe.arm();
                let expected = single.net.forward_t(&images, false);
                let single_stats = single.probe.take();
                close(&logits.get(g as i64), &expected, "shared logits");
                assert_eq!(single_stats.len(), stats.len(), "{kind}: one entry per tracker");
                for (one, all) in single_stats.iter().zip(&stats) {
                    close(&all.mean.get(g as i64), &one.mean, "batch mean");
                    close(&all.var.get(g as i64), &one.var, "batch variance");
                    close(&all.running_var.get(g as i64), &one.running_var, "running variance");
                }
                let own = single.net.forward_t(&split.narrow(0, 2 * g as i64, 2), false);
                close(&split_logits.get(g as i64), &own, "split logits");
            }
        }
    }

    #[test]
    fn the_stacked_forward_is_each_models_forward() {
        for kind in ModelKind::ALL {
            let bases: Vec<Vec<f32>> = (0..2).map(|s| initial_weights(kind, CIFAR, 10 + s)).collect();
            let mut stacked = StackedModel::new(kind, CIFAR, 2, Device::Cpu);
            stacked.load(&[&bases[0], &bases[1]]);
            let images: Vec<Tensor> = (0..2)
                .map(|s| Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu)) + s as f64)
                .collect();
            let xs = Tensor::stack(&images, 1).view([4, 6, 32, 32]);
            let out = tch::no_grad(|| stacked.forward(&xs, None, false));
            assert_eq!(out.size(), [2, 4, 10]);
            for (g, (base, image)) in bases.iter().zip(&images).enumerate() {
                let mut single = Model::new(kind, CIFAR, Device::Cpu);
                single.load(base);
                let expected = tch::no_grad(|| single.net.forward_t(image, false));
                let diff = (out.get(g as i64) - &expected).abs().max().double_value(&[]);
                let scale = expected.abs().max().double_value(&[]);
                assert!(diff <= 1e-5 * scale.max(1.0), "{kind} client {g}: {diff:e} of {scale:e}");
            }
        }
    }
}
