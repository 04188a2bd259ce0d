//! Models, local training and evaluation on libtorch. Each model is one file written against
//! [`layers::Layers`], run alone or stacked in cohorts. A model's weights travel between
//! threads as plain `Vec<f32>` in a fixed layout (variables sorted by name); each job builds
//! its own `VarStore`, since a tensor must not be shared across threads.

pub mod adam;
pub mod central;
pub mod cohort;
pub mod convnet;
pub mod device_weights;
pub mod dfkd;
pub mod eval;
pub mod generator;
pub mod kd;
pub mod layers;
pub mod precision;
pub mod resnet;
pub mod tracker;
pub mod train;

use std::fmt;
use std::str::FromStr;

use rand::Rng as _;
use tch::{nn, Device, Kind, Tensor};

use crate::sim::rng::{self, Purpose};

/// The models fedsim can train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    ConvNet,
    ResNet18,
}

/// A model name that is not one of [`ModelKind::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown model '{0}'; valid models: convnet, resnet18")]
pub struct UnknownModel(pub String);

impl ModelKind {
    pub const ALL: [ModelKind; 2] = [ModelKind::ConvNet, ModelKind::ResNet18];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::ConvNet => "convnet",
            ModelKind::ResNet18 => "resnet18",
        }
    }

    /// The model's layers that hold variables, for inputs of `input`'s shape.
    pub fn layers(self, input: InputSpec) -> Vec<layers::LayerSpec> {
        match self {
            ModelKind::ConvNet => convnet::layers(input),
            ModelKind::ResNet18 => resnet::layers(input),
        }
    }

    /// The model's forward pass on one model or a stack ([`layers::Layers`]).
    pub fn forward(self, l: &dyn layers::Layers, xs: &Tensor) -> Tensor {
        match self {
            ModelKind::ConvNet => convnet::forward(l, xs),
            ModelKind::ResNet18 => resnet::forward(l, xs),
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = UnknownModel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| UnknownModel(s.to_owned()))
    }
}

/// What can fail in model code: libtorch, or saved state that does not fit the model.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A libtorch call outside tch's wrappers (the savable Adam), with libtorch's message.
    #[error("libtorch: {0}")]
    Libtorch(String),
    #[error(transparent)]
    State(#[from] crate::saved::StateError),
}

impl From<NnError> for crate::fl::ServerError {
    fn from(error: NnError) -> Self {
        match error {
            NnError::State(state) => crate::fl::ServerError::State(state),
            other => crate::fl::ServerError::Distiller(Box::new(other)),
        }
    }
}

/// What a model takes and predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputSpec {
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    pub classes: i64,
}

impl InputSpec {
    pub fn of(dataset: &crate::data::Dataset) -> Self {
        let [channels, height, width] = dataset.train.image_shape();
        InputSpec { channels, height, width, classes: dataset.num_classes() as i64 }
    }
}

/// Layers start at zero: the real initial weights come from a ChaCha stream
/// ([`initial_weights`]), so building a model never touches torch's global RNG.
pub(crate) fn zero_init_conv() -> nn::ConvConfig {
    nn::ConvConfig { ws_init: nn::Init::Const(0.0), bs_init: nn::Init::Const(0.0), ..Default::default() }
}

pub(crate) fn zero_init_linear() -> nn::LinearConfig {
    nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: Some(nn::Init::Const(0.0)), bias: true }
}

/// One variable's place in the flat weight vector.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutEntry {
    pub name: String,
    pub shape: Vec<i64>,
    pub offset: usize,
    pub numel: usize,
    pub trainable: bool,
}

/// The order and shapes of a model's variables (parameters and tracker buffers).
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub entries: Vec<LayoutEntry>,
    pub numel: usize,
}

impl Layout {
    pub(crate) fn of(vs: &nn::VarStore) -> Self {
        let variables = vs.variables();
        let mut names: Vec<&String> = variables.keys().collect();
        names.sort();
        let mut offset = 0;
        let entries = names
            .into_iter()
            .map(|name| {
                let tensor = &variables[name];
                let numel = tensor.numel();
                let entry = LayoutEntry {
                    name: name.clone(),
                    shape: tensor.size(),
                    offset,
                    numel,
                    trainable: tensor.requires_grad(),
                };
                offset += numel;
                entry
            })
            .collect();
        Layout { entries, numel: offset }
    }

    /// The tracker buffers' places in the flat weights and their reset values (mean 0,
    /// variance 1): what the server writes into the global model after every aggregation.
    pub fn tracker_resets(&self) -> Vec<(std::ops::Range<usize>, f32)> {
        self.entries
            .iter()
            .filter(|e| !e.trainable)
            .filter_map(|e| tracker::reset_values(&e.name).map(|v| (e.offset..e.offset + e.numel, v)))
            .collect()
    }

    /// The variables of `vs` (laid out as this layout says) as flat weights on the host.
    pub fn read(&self, vs: &nn::VarStore) -> Vec<f32> {
        let variables = vs.variables();
        let mut out = vec![0f32; self.numel];
        for entry in &self.entries {
            let host = variables[&entry.name].to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            host.copy_data(&mut out[entry.offset..entry.offset + entry.numel], entry.numel);
        }
        out
    }

    /// Number of trainable parameters (tracker buffers excluded).
    pub fn parameter_count(&self) -> usize {
        self.entries.iter().filter(|e| e.trainable).map(|e| e.numel).sum()
    }
}

/// A network with its variables on one device.
pub struct Model {
    pub kind: ModelKind,
    pub vs: nn::VarStore,
    pub net: Box<dyn nn::ModuleT>,
    pub layout: Layout,
    /// Collects the trackers' batch statistics while armed (FedRevive's synthesis).
    pub probe: tracker::Probe,
    /// What its forward passes compute in (run.precision).
    pub precision: precision::Precision,
}

impl Model {
    pub fn new(kind: ModelKind, input: InputSpec, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let probe = tracker::Probe::default();
        let net: Box<dyn nn::ModuleT> = Box::new(layers::SingleNet::new(&root, kind, input, &probe));
        let layout = Layout::of(&vs);
        Model { kind, vs, net, layout, probe, precision: precision::Precision::Fp32 }
    }

    /// Class scores of `xs` (float32), computed in the model's precision.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.precision.forward(self.vs.device(), || self.net.forward_t(xs, train))
    }

    /// Copies flat host weights into the variables.
    pub fn load(&mut self, weights: &[f32]) {
        self.load_flat(&Tensor::from_slice(weights));
    }

    /// Copies a flat f32 tensor of weights (on any device) into the variables.
    pub fn load_flat(&mut self, flat: &Tensor) {
        assert_eq!(flat.numel(), self.layout.numel, "weights do not fit the {} layout", self.kind);
        let flat = flat.to_device(self.vs.device());
        let variables = self.vs.variables();
        tch::no_grad(|| {
            for entry in &self.layout.entries {
                let source =
                    flat.narrow(0, entry.offset as i64, entry.numel as i64).view(entry.shape.as_slice());
                variables[&entry.name].shallow_clone().copy_(&source);
            }
        });
    }

    /// The variables as one flat f32 tensor on the model's device.
    pub fn flat_weights(&self) -> Tensor {
        let variables = self.vs.variables();
        let parts: Vec<Tensor> =
            self.layout.entries.iter().map(|e| variables[&e.name].detach().reshape([-1])).collect();
        tch::no_grad(|| Tensor::cat(&parts, 0))
    }

    /// Loads any kind of weights.
    pub fn load_weights<W: device_weights::TorchWeights>(&mut self, weights: &W) {
        self.load_flat(&weights.flat_on(self.vs.device()));
    }

    /// Saves `weights` as safetensors (named by variable), through a temporary file so that
    /// a crash never leaves half a file.
    pub fn save(&mut self, weights: &[f32], path: &std::path::Path) -> Result<(), tch::TchError> {
        self.load(weights);
        let staging = path.with_extension("partial.safetensors");
        if let Err(error) = self.vs.save(&staging) {
            // Nothing half-written stays behind.
            let _ = std::fs::remove_file(&staging);
            return Err(error);
        }
        std::fs::rename(&staging, path)
            .map_err(|e| tch::TchError::FileFormat(format!("{}: {e}", path.display())))
    }

    /// The variables as flat weights on the host.
    pub fn weights(&self) -> Vec<f32> {
        self.layout.read(&self.vs)
    }
}

/// The initial global model, drawn from the ChaCha stream (seed, ModelInit, 0) with
/// PyTorch's default initialisation: weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
/// the fan-in being that of the layer's weight; tracker buffers keep mean 0, variance 1.
pub fn initial_weights(kind: ModelKind, input: InputSpec, seed: u64) -> Vec<f32> {
    let model = Model::new(kind, input, Device::Cpu);
    let mut weights = model.weights();
    default_init(&model.layout, &mut weights, &mut rng::stream(seed, Purpose::ModelInit, 0));
    weights
}

/// PyTorch's default initialisation, drawn from `rng` in layout order: convolution and linear
/// weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); BatchNorm (1-D weights) scale 1,
/// shift 0. Non-trainable buffers keep their values.
pub fn default_init(layout: &Layout, weights: &mut [f32], rng: &mut crate::sim::rng::Rng) {
    let sibling_weight = |name: &str| -> Option<&LayoutEntry> {
        let weight_name = format!("{}.weight", name.rsplit_once('.')?.0);
        layout.entries.iter().find(|e| e.name == weight_name)
    };
    for entry in layout.entries.iter().filter(|e| e.trainable) {
        let values = &mut weights[entry.offset..entry.offset + entry.numel];
        let layer_weight = sibling_weight(&entry.name);
        if layer_weight.is_some_and(|w| w.shape.len() == 1) {
            let is_scale = entry.name.ends_with(".weight");
            values.iter_mut().for_each(|v| *v = if is_scale { 1.0 } else { 0.0 });
            continue;
        }
        let fan: i64 = layer_weight.map_or(1, |w| w.shape[1..].iter().product()).max(1);
        let bound = 1.0 / (fan as f32).sqrt();
        for w in values {
            *w = rng.random_range(-bound..bound);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CIFAR: InputSpec = InputSpec { channels: 3, height: 32, width: 32, classes: 10 };

    #[test]
    fn parameter_counts_match_the_reference() {
        assert_eq!(Model::new(ModelKind::ConvNet, CIFAR, Device::Cpu).layout.parameter_count(), 62_006);
        assert_eq!(Model::new(ModelKind::ResNet18, CIFAR, Device::Cpu).layout.parameter_count(), 11_164_352);
    }

    #[test]
    fn weights_round_trip_through_a_model() {
        let weights = initial_weights(ModelKind::ConvNet, CIFAR, 4);
        let mut model = Model::new(ModelKind::ConvNet, CIFAR, Device::Cpu);
        model.load(&weights);
        assert_eq!(model.weights(), weights);
    }

    #[test]
    fn initial_weights_follow_the_seed_and_the_default_bounds() {
        let a = initial_weights(ModelKind::ConvNet, CIFAR, 1);
        assert_eq!(a, initial_weights(ModelKind::ConvNet, CIFAR, 1));
        assert_ne!(a, initial_weights(ModelKind::ConvNet, CIFAR, 2));
        let layout = Model::new(ModelKind::ConvNet, CIFAR, Device::Cpu).layout;
        let fc1 = layout.entries.iter().find(|e| e.name == "fc1.weight").unwrap();
        let bound = 1.0 / 400f32.sqrt();
        let values = &a[fc1.offset..fc1.offset + fc1.numel];
        assert!(values.iter().all(|w| w.abs() <= bound));
        assert!(values.iter().any(|w| w.abs() > 0.9 * bound));
        let var = layout.entries.iter().find(|e| e.name == "track1.running_var").unwrap();
        assert!(a[var.offset..var.offset + var.numel].iter().all(|&v| v == 1.0));
    }

    #[test]
    fn tracker_resets_cover_every_tracker_buffer() {
        for kind in ModelKind::ALL {
            let layout = Model::new(kind, CIFAR, Device::Cpu).layout;
            let resets = layout.tracker_resets();
            let buffers = layout.entries.iter().filter(|e| !e.trainable).count();
            assert_eq!(resets.len(), buffers, "{kind}: every buffer is a tracker's mean or variance");
            let ones: usize = resets.iter().filter(|(_, v)| *v == 1.0).map(|(r, _)| r.len()).sum();
            let zeros: usize = resets.iter().filter(|(_, v)| *v == 0.0).map(|(r, _)| r.len()).sum();
            assert_eq!(ones, zeros, "{kind}: as many variances as means");
            assert!(ones > 0);
        }
    }

    #[test]
    fn unknown_model_names_list_the_valid_ones() {
        let err = "resnet50".parse::<ModelKind>().unwrap_err().to_string();
        assert!(err.contains("resnet50") && err.contains("convnet") && err.contains("resnet18"), "{err}");
    }

    #[test]
    fn models_map_images_to_class_scores() {
        for kind in ModelKind::ALL {
            let mut model = Model::new(kind, CIFAR, Device::Cpu);
            model.load(&initial_weights(kind, CIFAR, 0));
            let out = tch::no_grad(|| {
                model.net.forward_t(&Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu)), false)
            });
            assert_eq!(out.size(), [2, 10]);
        }
        let fashion = InputSpec { channels: 1, height: 28, width: 28, classes: 10 };
        let model = Model::new(ModelKind::ConvNet, fashion, Device::Cpu);
        let out = tch::no_grad(|| {
            model.net.forward_t(&Tensor::zeros([1, 1, 28, 28], (Kind::Float, Device::Cpu)), false)
        });
        assert_eq!(out.size(), [1, 10]);
    }
}
