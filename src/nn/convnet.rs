//! The NVFlare port's small ConvNet: conv(C->6, k5, s2) ReLU, conv(6->16, k5, s2) ReLU,
//! flatten, fc 120, fc 84, fc classes (62,006 parameters on CIFAR-10). A feature-statistic
//! tracker follows each convolution so that FedRevive can match its statistics.

use tch::{nn, nn::ModuleT, Tensor};

use super::tracker::{Probe, StatTracker};
use super::{zero_init_conv, zero_init_linear, InputSpec};

#[derive(Debug)]
pub struct ConvNet {
    conv1: nn::Conv2D,
    track1: StatTracker,
    conv2: nn::Conv2D,
    track2: StatTracker,
    fc1: nn::Linear,
    fc2: nn::Linear,
    fc3: nn::Linear,
}

impl ConvNet {
    pub fn new(p: &nn::Path, input: InputSpec, probe: &Probe) -> Self {
        let conv = |name: &str, i, o| {
            nn::conv2d(p / name, i, o, 5, nn::ConvConfig { stride: 2, ..zero_init_conv() })
        };
        // Spatial size after two 5x5 stride-2 convolutions without padding.
        let side = |s: i64| ((s - 5) / 2 + 1 - 5) / 2 + 1;
        let flat = 16 * side(input.height) * side(input.width);
        ConvNet {
            conv1: conv("conv1", input.channels, 6),
            track1: StatTracker::new(p / "track1", 6, probe),
            conv2: conv("conv2", 6, 16),
            track2: StatTracker::new(p / "track2", 16, probe),
            fc1: nn::linear(p / "fc1", flat, 120, zero_init_linear()),
            fc2: nn::linear(p / "fc2", 120, 84, zero_init_linear()),
            fc3: nn::linear(p / "fc3", 84, input.classes, zero_init_linear()),
        }
    }
}

impl ModuleT for ConvNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = self.track1.track(&xs.apply(&self.conv1), train).relu();
        let xs = self.track2.track(&xs.apply(&self.conv2), train).relu();
        xs.flatten(1, -1).apply(&self.fc1).relu().apply(&self.fc2).relu().apply(&self.fc3)
    }
}
