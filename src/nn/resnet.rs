//! The CIFAR ResNet-18 of the reference: 3x3 stem (stride 1, no max-pool), basic blocks
//! [2, 2, 2, 2] of 64/128/256/512 channels, bias-free convolutions, 4x4 average pool and a
//! bias-free linear head (11,164,352 parameters). Every BatchNorm is replaced by a
//! feature-statistic tracker, so the network has no normalisation of its own.

use tch::{nn, nn::ModuleT, Tensor};

use super::tracker::{Probe, StatTracker};
use super::{zero_init_conv, zero_init_linear, InputSpec};

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv2D {
    let config = nn::ConvConfig { stride, padding: k / 2, bias: false, ..zero_init_conv() };
    nn::conv2d(p, cin, cout, k, config)
}

#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    track1: StatTracker,
    conv2: nn::Conv2D,
    track2: StatTracker,
    shortcut: Option<(nn::Conv2D, StatTracker)>,
}

impl BasicBlock {
    fn new(p: nn::Path, cin: i64, cout: i64, stride: i64, probe: &Probe) -> Self {
        let shortcut = (stride != 1 || cin != cout).then(|| {
            (
                conv(&p / "shortcut_conv", cin, cout, 1, stride),
                StatTracker::new(&p / "shortcut_track", cout, probe),
            )
        });
        BasicBlock {
            conv1: conv(&p / "conv1", cin, cout, 3, stride),
            track1: StatTracker::new(&p / "track1", cout, probe),
            conv2: conv(&p / "conv2", cout, cout, 3, 1),
            track2: StatTracker::new(&p / "track2", cout, probe),
            shortcut,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = self.track1.track(&xs.apply(&self.conv1), train).relu();
        let out = self.track2.track(&out.apply(&self.conv2), train);
        let skip = match &self.shortcut {
            Some((conv, track)) => track.track(&xs.apply(conv), train),
            None => xs.shallow_clone(),
        };
        (out + skip).relu()
    }
}

#[derive(Debug)]
pub struct ResNet18 {
    stem: nn::Conv2D,
    stem_track: StatTracker,
    blocks: Vec<BasicBlock>,
    head: nn::Linear,
}

impl ResNet18 {
    pub fn new(p: &nn::Path, input: InputSpec, probe: &Probe) -> Self {
        let mut blocks = Vec::new();
        let mut cin = 64;
        for (stage, (cout, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].into_iter().enumerate() {
            for (i, s) in [stride, 1].into_iter().enumerate() {
                blocks.push(BasicBlock::new(p / format!("layer{}", stage + 1) / i, cin, cout, s, probe));
                cin = cout;
            }
        }
        ResNet18 {
            stem: conv(p / "stem", input.channels, 64, 3, 1),
            stem_track: StatTracker::new(p / "stem_track", 64, probe),
            blocks,
            head: nn::linear(
                p / "head",
                512,
                input.classes,
                nn::LinearConfig { bias: false, ..zero_init_linear() },
            ),
        }
    }
}

impl ModuleT for ResNet18 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut out = self.stem_track.track(&xs.apply(&self.stem), train).relu();
        for block in &self.blocks {
            out = block.forward_t(&out, train);
        }
        // 32x32 inputs arrive here as 4x4 maps; average them to one feature vector.
        let side = out.size()[2];
        out.avg_pool2d([side, side], [side, side], [0, 0], false, true, None).flatten(1, -1).apply(&self.head)
    }
}
