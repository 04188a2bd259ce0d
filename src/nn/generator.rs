//! FedRevive's image generator (DCGAN-style, as in the reference's data-free distillation):
//! latent z (nz) -> linear to 2 ngf maps of side/4 -> BatchNorm -> upsample x2 -> conv 3x3
//! (2 ngf) -> BatchNorm -> LeakyReLU(0.2) -> upsample x2 -> conv 3x3 (ngf) -> BatchNorm ->
//! LeakyReLU(0.2) -> conv 3x3 (channels) -> sigmoid: images in [0, 1] of the dataset's size.
//! Its weights, like every model's, start from a ChaCha stream.

use tch::{nn, nn::ModuleT, Device, Tensor};

use super::{default_init, zero_init_conv, zero_init_linear, InputSpec, Layout};
use crate::sim::rng::{self, Purpose};

#[derive(Debug)]
pub struct Generator {
    side: i64,
    ngf: i64,
    project: nn::Linear,
    norm0: nn::BatchNorm,
    conv1: nn::Conv2D,
    norm1: nn::BatchNorm,
    conv2: nn::Conv2D,
    norm2: nn::BatchNorm,
    conv3: nn::Conv2D,
}

fn batch_norm(p: nn::Path, channels: i64) -> nn::BatchNorm {
    // tch's default scale init draws from torch's global RNG; default_init sets it instead.
    nn::batch_norm2d(p, channels, nn::BatchNormConfig { ws_init: nn::Init::Const(1.0), ..Default::default() })
}

impl Generator {
    pub fn new(p: &nn::Path, nz: i64, ngf: i64, image: InputSpec) -> Self {
        let side = image.height / 4;
        let conv = |name: &str, cin, cout, bias| {
            nn::conv2d(p / name, cin, cout, 3, nn::ConvConfig { padding: 1, bias, ..zero_init_conv() })
        };
        Generator {
            side,
            ngf,
            project: nn::linear(p / "project", nz, 2 * ngf * side * side, zero_init_linear()),
            norm0: batch_norm(p / "norm0", 2 * ngf),
            conv1: conv("conv1", 2 * ngf, 2 * ngf, false),
            norm1: batch_norm(p / "norm1", 2 * ngf),
            conv2: conv("conv2", 2 * ngf, ngf, false),
            norm2: batch_norm(p / "norm2", ngf),
            conv3: conv("conv3", ngf, image.channels, true),
        }
    }

    /// A generator with its variables on `device`, initialised from (seed, ModelInit, 1).
    pub fn build(
        nz: i64,
        ngf: i64,
        image: InputSpec,
        seed: u64,
        device: Device,
    ) -> (nn::VarStore, Generator) {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let generator = Generator::new(&vs.root(), nz, ngf, image);
        let layout = Layout::of(&vs);
        let mut weights = layout.read(&vs);
        let variables = vs.variables();
        default_init(&layout, &mut weights, &mut rng::stream(seed, Purpose::ModelInit, 1));
        tch::no_grad(|| {
            for entry in &layout.entries {
                let source = Tensor::from_slice(&weights[entry.offset..entry.offset + entry.numel])
                    .view(entry.shape.as_slice());
                variables[&entry.name].shallow_clone().copy_(&source);
            }
        });
        vs.set_device(device);
        (vs, generator)
    }
}

/// The reference's activation, LeakyReLU(0.2); tch's `leaky_relu` has libtorch's default
/// slope 0.01. Written as torch computes it, gradient included: x where x > 0, else 0.2 x.
pub const LEAKY_SLOPE: f64 = 0.2;

pub fn leaky_relu(x: &Tensor) -> Tensor {
    x.where_self(&x.gt(0.0), &(x * LEAKY_SLOPE))
}

impl ModuleT for Generator {
    fn forward_t(&self, z: &Tensor, train: bool) -> Tensor {
        let batch = z.size()[0];
        let up = |x: Tensor| {
            let s = x.size();
            x.upsample_nearest2d([s[2] * 2, s[3] * 2], None, None)
        };
        let x = z
            .apply(&self.project)
            .view([batch, 2 * self.ngf, self.side, self.side])
            .apply_t(&self.norm0, train);
        let x = leaky_relu(&up(x).apply(&self.conv1).apply_t(&self.norm1, train));
        let x = leaky_relu(&up(x).apply(&self.conv2).apply_t(&self.norm2, train));
        x.apply(&self.conv3).sigmoid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    const CIFAR: InputSpec = InputSpec { channels: 3, height: 32, width: 32, classes: 10 };

    fn flat(vs: &nn::VarStore) -> Vec<f32> {
        Layout::of(vs).read(vs)
    }

    #[test]
    fn the_generator_is_reproducible_from_its_seed() {
        let (a, _) = Generator::build(16, 8, CIFAR, 3, Device::Cpu);
        let (b, _) = Generator::build(16, 8, CIFAR, 3, Device::Cpu);
        let (c, _) = Generator::build(16, 8, CIFAR, 4, Device::Cpu);
        assert_eq!(flat(&a), flat(&b));
        assert_ne!(flat(&a), flat(&c));
    }

    #[test]
    fn it_makes_images_of_the_dataset_shape_in_the_unit_range() {
        let (_vs, generator) = Generator::build(256, 16, CIFAR, 1, Device::Cpu);
        let z = Tensor::ones([4, 256], (Kind::Float, Device::Cpu)) * 0.5;
        let images = generator.forward_t(&z, true);
        assert_eq!(images.size(), [4, 3, 32, 32]);
        let (lo, hi) = (images.min().double_value(&[]), images.max().double_value(&[]));
        assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && hi > lo);
    }

    #[test]
    fn the_activation_has_slope_one_fifth_below_zero() {
        let x = Tensor::from_slice(&[-2.0f32, -0.5, 0.0, 1.5]).set_requires_grad(true);
        let y = leaky_relu(&x);
        assert_eq!(Vec::<f32>::try_from(&y).unwrap(), [-0.4, -0.1, 0.0, 1.5]);
        y.sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(x.grad()).unwrap(), [0.2, 0.2, 0.2, 1.0]);
    }

    #[test]
    fn the_reference_width_has_the_expected_size() {
        // nz 256, ngf 128: linear 256 -> 256*8*8 (+ bias), convs 256->256, 256->128, 128->3, three BatchNorms.
        let vs = nn::VarStore::new(Device::Cpu);
        let _g = Generator::new(&vs.root(), 256, 128, CIFAR);
        let params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        let expected =
            256 * 16_384 + 16_384 + 256 * 256 * 9 + 256 * 128 * 9 + 128 * 3 * 9 + 3 + 2 * (256 + 256 + 128);
        assert_eq!(params, expected);
    }
}
