//! The layers fedsim's models are written in. A model's file declares its layers that hold
//! variables ([`LayerSpec`]: names and shapes) and writes its forward pass once, against
//! [`Layers`]. Two implementations run it: [`SingleNet`], one model with the operations of
//! tch's own modules, and the cohort's stacked model ([`super::cohort::StackedModel`]), G
//! models as grouped convolutions, batched matmuls and per-client trackers. Cohort and single
//! training therefore run the same model code; a new model is one file and one
//! [`ModelKind`] arm.

use std::collections::HashMap;

use tch::{nn, Tensor};

use super::tracker::{Probe, StatTracker};
use super::ModelKind;

/// A layer that holds variables, as a model declares it. Variables start at zero (trackers:
/// mean 0, variance 1); the initial weights come from [`super::initial_weights`].
#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    /// `name.weight` `[cout, cin, kernel, kernel]` and, with a bias, `name.bias` `[cout]`.
    Conv { name: String, cin: i64, cout: i64, kernel: i64, bias: bool },
    /// A feature-statistic tracker: `name.running_mean` and `name.running_var` `[channels]`.
    Track { name: String, channels: i64 },
    /// `name.weight` `[outputs, inputs]` and, with a bias, `name.bias` `[outputs]`.
    Linear { name: String, inputs: i64, outputs: i64, bias: bool },
}

impl LayerSpec {
    pub fn conv(name: impl Into<String>, cin: i64, cout: i64, kernel: i64, bias: bool) -> Self {
        LayerSpec::Conv { name: name.into(), cin, cout, kernel, bias }
    }

    pub fn track(name: impl Into<String>, channels: i64) -> Self {
        LayerSpec::Track { name: name.into(), channels }
    }

    pub fn linear(name: impl Into<String>, inputs: i64, outputs: i64, bias: bool) -> Self {
        LayerSpec::Linear { name: name.into(), inputs, outputs, bias }
    }
}

/// The operations a model's forward pass is written in; each layer is named as declared.
pub trait Layers {
    /// The convolution `name` with square stride and zero padding.
    fn conv(&self, name: &str, xs: &Tensor, stride: i64, padding: i64) -> Tensor;
    /// The tracker `name`: identity; in training mode it records the batch's statistics.
    fn track(&self, name: &str, xs: &Tensor) -> Tensor;
    /// The linear layer `name`.
    fn linear(&self, name: &str, xs: &Tensor) -> Tensor;
    /// Feature maps to the rows a linear layer takes, each flattened channel-major.
    fn flatten(&self, xs: &Tensor) -> Tensor;
}

/// One model: its layers' variables on a `VarStore` path, run with the operations tch's
/// `Conv2D`, `Linear` and the [`StatTracker`] use.
#[derive(Debug)]
pub struct SingleNet {
    kind: ModelKind,
    params: HashMap<String, Tensor>,
    trackers: HashMap<String, StatTracker>,
}

impl SingleNet {
    /// Declares `kind`'s layers under `root`; its trackers report to `probe`.
    pub fn new(root: &nn::Path, kind: ModelKind, input: super::InputSpec, probe: &Probe) -> Self {
        let at = |name: &str| name.split('.').fold(root.clone(), |p, part| p / part);
        let zero = nn::Init::Const(0.0);
        let mut params = HashMap::new();
        let mut trackers = HashMap::new();
        for layer in kind.layers(input) {
            let (name, weight_shape, bias) = match layer {
                LayerSpec::Track { name, channels } => {
                    trackers.insert(name.clone(), StatTracker::new(at(&name), channels, probe));
                    continue;
                }
                LayerSpec::Conv { name, cin, cout, kernel, bias } => {
                    (name, vec![cout, cin, kernel, kernel], bias.then_some(cout))
                }
                LayerSpec::Linear { name, inputs, outputs, bias } => {
                    (name, vec![outputs, inputs], bias.then_some(outputs))
                }
            };
            let path = at(&name);
            params.insert(format!("{name}.weight"), path.var("weight", &weight_shape, zero));
            if let Some(outputs) = bias {
                params.insert(format!("{name}.bias"), path.var("bias", &[outputs], zero));
            }
        }
        SingleNet { kind, params, trackers }
    }

    fn param(&self, name: &str, leaf: &str) -> Option<&Tensor> {
        self.params.get(&format!("{name}.{leaf}"))
    }
}

impl nn::ModuleT for SingleNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.kind.forward(&Single { net: self, train }, xs)
    }
}

/// A [`SingleNet`] in one forward pass, training or not.
struct Single<'a> {
    net: &'a SingleNet,
    train: bool,
}

impl Layers for Single<'_> {
    fn conv(&self, name: &str, xs: &Tensor, stride: i64, padding: i64) -> Tensor {
        let weight = self.net.param(name, "weight").unwrap_or_else(|| panic!("{name}: no such convolution"));
        xs.conv2d(weight, self.net.param(name, "bias"), [stride, stride], [padding, padding], [1, 1], 1)
    }

    fn track(&self, name: &str, xs: &Tensor) -> Tensor {
        let tracker = self.net.trackers.get(name).unwrap_or_else(|| panic!("{name}: no such tracker"));
        tracker.track(xs, self.train)
    }

    fn linear(&self, name: &str, xs: &Tensor) -> Tensor {
        let weight = self.net.param(name, "weight").unwrap_or_else(|| panic!("{name}: no such linear layer"));
        xs.linear(weight, self.net.param(name, "bias"))
    }

    fn flatten(&self, xs: &Tensor) -> Tensor {
        xs.flatten(1, -1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{InputSpec, Model};
    use tch::Device;

    const CIFAR: InputSpec = InputSpec { channels: 3, height: 32, width: 32, classes: 10 };

    /// Every declared layer is a variable of the model and every variable a declared layer's.
    #[test]
    fn the_declared_layers_are_the_models_variables() {
        for kind in ModelKind::ALL {
            let layout = Model::new(kind, CIFAR, Device::Cpu).layout;
            let mut declared: Vec<(String, Vec<i64>)> = Vec::new();
            for layer in kind.layers(CIFAR) {
                match layer {
                    LayerSpec::Conv { name, cin, cout, kernel, bias } => {
                        declared.push((format!("{name}.weight"), vec![cout, cin, kernel, kernel]));
                        if bias {
                            declared.push((format!("{name}.bias"), vec![cout]));
                        }
                    }
                    LayerSpec::Linear { name, inputs, outputs, bias } => {
                        declared.push((format!("{name}.weight"), vec![outputs, inputs]));
                        if bias {
                            declared.push((format!("{name}.bias"), vec![outputs]));
                        }
                    }
                    LayerSpec::Track { name, channels } => {
                        declared.push((format!("{name}.running_mean"), vec![channels]));
                        declared.push((format!("{name}.running_var"), vec![channels]));
                    }
                }
            }
            declared.sort();
            let variables: Vec<(String, Vec<i64>)> =
                layout.entries.iter().map(|e| (e.name.clone(), e.shape.clone())).collect();
            assert_eq!(variables, declared, "{kind}");
        }
    }
}
