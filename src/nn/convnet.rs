//! The NVFlare port's small ConvNet: conv(C->6, k5, s2) ReLU, conv(6->16, k5, s2) ReLU,
//! flatten, fc 120, fc 84, fc classes (62,006 parameters on CIFAR-10). A feature-statistic
//! tracker follows each convolution so that FedRevive can match its statistics.

use tch::Tensor;

use super::layers::{LayerSpec, Layers};
use super::InputSpec;

pub fn layers(input: InputSpec) -> Vec<LayerSpec> {
    // Spatial size after two 5x5 stride-2 convolutions without padding.
    let side = |s: i64| ((s - 5) / 2 + 1 - 5) / 2 + 1;
    let flat = 16 * side(input.height) * side(input.width);
    vec![
        LayerSpec::conv("conv1", input.channels, 6, 5, true),
        LayerSpec::track("track1", 6),
        LayerSpec::conv("conv2", 6, 16, 5, true),
        LayerSpec::track("track2", 16),
        LayerSpec::linear("fc1", flat, 120, true),
        LayerSpec::linear("fc2", 120, 84, true),
        LayerSpec::linear("fc3", 84, input.classes, true),
    ]
}

pub fn forward(l: &dyn Layers, xs: &Tensor) -> Tensor {
    let xs = l.track("track1", &l.conv("conv1", xs, 2, 0)).relu();
    let xs = l.track("track2", &l.conv("conv2", &xs, 2, 0)).relu();
    let xs = l.linear("fc1", &l.flatten(&xs)).relu();
    let xs = l.linear("fc2", &xs).relu();
    l.linear("fc3", &xs)
}
