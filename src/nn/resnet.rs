//! The CIFAR ResNet-18 of the reference: 3x3 stem (stride 1, no max-pool), basic blocks
//! [2, 2, 2, 2] of 64/128/256/512 channels, bias-free convolutions, 4x4 average pool and a
//! bias-free linear head (11,164,352 parameters). Every BatchNorm is replaced by a
//! feature-statistic tracker, so the network has no normalisation of its own.

use tch::Tensor;

use super::layers::{LayerSpec, Layers};
use super::InputSpec;

/// Each basic block: its name, input and output channels and stride.
fn blocks() -> Vec<(String, i64, i64, i64)> {
    let mut blocks = Vec::new();
    let mut cin = 64;
    for (stage, (cout, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].into_iter().enumerate() {
        for (i, s) in [stride, 1].into_iter().enumerate() {
            blocks.push((format!("layer{}.{i}", stage + 1), cin, cout, s));
            cin = cout;
        }
    }
    blocks
}

/// A block changes shape, so its skip connection needs a 1x1 convolution.
fn has_shortcut(cin: i64, cout: i64, stride: i64) -> bool {
    stride != 1 || cin != cout
}

pub fn layers(input: InputSpec) -> Vec<LayerSpec> {
    let mut layers =
        vec![LayerSpec::conv("stem", input.channels, 64, 3, false), LayerSpec::track("stem_track", 64)];
    for (name, cin, cout, stride) in blocks() {
        layers.extend([
            LayerSpec::conv(format!("{name}.conv1"), cin, cout, 3, false),
            LayerSpec::track(format!("{name}.track1"), cout),
            LayerSpec::conv(format!("{name}.conv2"), cout, cout, 3, false),
            LayerSpec::track(format!("{name}.track2"), cout),
        ]);
        if has_shortcut(cin, cout, stride) {
            layers.extend([
                LayerSpec::conv(format!("{name}.shortcut_conv"), cin, cout, 1, false),
                LayerSpec::track(format!("{name}.shortcut_track"), cout),
            ]);
        }
    }
    layers.push(LayerSpec::linear("head", 512, input.classes, false));
    layers
}

pub fn forward(l: &dyn Layers, xs: &Tensor) -> Tensor {
    let mut out = l.track("stem_track", &l.conv("stem", xs, 1, 1)).relu();
    for (name, cin, cout, stride) in blocks() {
        let layer = |part: &str| format!("{name}.{part}");
        let residual = l.track(&layer("track1"), &l.conv(&layer("conv1"), &out, stride, 1)).relu();
        let residual = l.track(&layer("track2"), &l.conv(&layer("conv2"), &residual, 1, 1));
        let skip = if has_shortcut(cin, cout, stride) {
            l.track(&layer("shortcut_track"), &l.conv(&layer("shortcut_conv"), &out, stride, 0))
        } else {
            out.shallow_clone()
        };
        out = (residual + skip).relu();
    }
    // 32x32 inputs arrive here as 4x4 maps; average them to one feature vector.
    let side = out.size()[2];
    let pooled = out.avg_pool2d([side, side], [side, side], [0, 0], false, true, None);
    l.linear("head", &l.flatten(&pooled))
}
