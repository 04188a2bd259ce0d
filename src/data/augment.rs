//! Augmentation as batched tensor operations: random crop with zero padding (local training,
//! as torchvision's `RandomCrop(padding=4)`) or reflect padding (FedRevive's synthesis and
//! distillation, as the reference's `padding_mode="reflect"`), horizontal flip, then
//! per-channel normalisation. The random choices come from the task's
//! own ChaCha stream (never torch's global RNG), so a task augments identically on any thread.

use rand::Rng as _;
use tch::{Device, Tensor};

use crate::sim::rng::Rng;

/// Per-channel normalisation, kept as `[1, C, 1, 1]` scale and shift tensors on the training
/// device so that it costs one conversion and one fused multiply-add.
pub struct Normalize {
    scale: Tensor,
    shift: Tensor,
}

impl Normalize {
    pub fn new(mean: &[f32], std: &[f32], device: Device) -> Self {
        let shape = [1, mean.len() as i64, 1, 1];
        // (x / 255 - mean) / std = x * scale + shift
        let scale: Vec<f32> = std.iter().map(|s| 1.0 / (255.0 * s)).collect();
        let shift: Vec<f32> = mean.iter().zip(std).map(|(m, s)| -m / s).collect();
        Normalize {
            scale: Tensor::from_slice(&scale).view(shape).to_device(device),
            shift: Tensor::from_slice(&shift).view(shape).to_device(device),
        }
    }

    /// uint8 images `[B, C, H, W]` -> normalised float images.
    pub fn apply(&self, images: &Tensor) -> Tensor {
        // uint8 * float promotes to float: the conversion and the scaling are one pass.
        let mut scaled = images * &self.scale;
        let _ = scaled.g_add_(&self.shift);
        scaled
    }
}

/// What a crop sees beyond the image's border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Zeros (torchvision's default `padding_mode="constant"`).
    Zero,
    /// The image mirrored at its border, the edge pixel not repeated (`padding_mode="reflect"`).
    Reflect,
}

/// Random crop (padding `pad`) and horizontal flip, as in torchvision's
/// `RandomCrop(size, padding=pad, padding_mode=...)` + `RandomHorizontalFlip()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    pub pad: i64,
    pub flip: bool,
    pub padding: Padding,
}

impl Default for Augment {
    /// Local training's augmentation: zero padding 4 and flips.
    fn default() -> Self {
        Augment { pad: 4, flip: true, padding: Padding::Zero }
    }
}

impl Augment {
    /// The augmentation of FedRevive's synthesis and distillation: reflect padding 4 and flips.
    pub fn reflect() -> Self {
        Augment { padding: Padding::Reflect, ..Augment::default() }
    }

    /// Crops and flips a batch `[B, C, H, W]` (any dtype); draws 2 offsets and a coin per image.
    /// Two gathers: `index_select` picks each image's H rows (starting at its dy) for every
    /// channel, then `gather` picks its W columns (starting at its dx, reversed when flipped)
    /// through an index expanded over channels and rows. Zero padding gathers from the padded
    /// batch; reflect padding maps padded coordinates back into the image instead.
    pub fn apply(&self, images: &Tensor, rng: &mut Rng) -> Tensor {
        let (batch, channels, height, width) = images.size4().expect("images are [B, C, H, W]");
        let (source, source_h, source_w) = match self.padding {
            Padding::Zero => (
                images.constant_pad_nd([self.pad, self.pad, self.pad, self.pad]),
                height + 2 * self.pad,
                width + 2 * self.pad,
            ),
            Padding::Reflect => (images.shallow_clone(), height, width),
        };
        let to_source = |padded: i64, size: i64| match self.padding {
            Padding::Zero => padded,
            Padding::Reflect => reflect_index(padded, self.pad, size),
        };
        let mut rows = Vec::with_capacity((batch * channels * height) as usize);
        let mut cols = Vec::with_capacity((batch * width) as usize);
        for b in 0..batch {
            let dy = rng.random_range(0..=2 * self.pad);
            let dx = rng.random_range(0..=2 * self.pad);
            let flipped = self.flip && rng.random_bool(0.5);
            for c in 0..channels {
                rows.extend((0..height).map(|r| (b * channels + c) * source_h + to_source(dy + r, height)));
            }
            cols.extend((0..width).map(|x| {
                let column = dx + if flipped { width - 1 - x } else { x };
                to_source(column, width)
            }));
        }
        let device = images.device();
        let rows = Tensor::from_slice(&rows).to_device(device);
        let cols = Tensor::from_slice(&cols).view([batch, 1, 1, width]).to_device(device);
        let picked_rows = source
            .reshape([batch * channels * source_h, source_w])
            .index_select(0, &rows)
            .view([batch, channels, height, source_w]);
        picked_rows.gather(3, &cols.expand([batch, channels, height, width], false), false)
    }
}

/// Padded coordinate -> image coordinate under reflect padding (`size` > `pad`).
fn reflect_index(padded: i64, pad: i64, size: i64) -> i64 {
    let x = padded - pad;
    if x < 0 {
        -x
    } else if x >= size {
        2 * (size - 1) - x
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rng::{stream, Purpose};
    use tch::Kind;

    fn batch() -> Tensor {
        Tensor::arange(2 * 3 * 8 * 8, (Kind::Int64, Device::Cpu))
            .remainder(251)
            .to_kind(Kind::Uint8)
            .view([2, 3, 8, 8])
    }

    #[test]
    fn no_padding_and_no_flip_is_the_identity() {
        let images = batch();
        let out = Augment { pad: 0, flip: false, padding: Padding::Zero }
            .apply(&images, &mut stream(1, Purpose::TrainTask, 0));
        assert!(out.equal(&images));
    }

    #[test]
    fn every_output_is_a_shifted_or_flipped_window_of_its_image() {
        let images = batch();
        let out = Augment::default().apply(&images, &mut stream(2, Purpose::TrainTask, 0));
        assert_eq!(out.size(), [2, 3, 8, 8]);
        let padded = images.constant_pad_nd([4, 4, 4, 4]);
        for b in 0..2 {
            let found = (0..=8).any(|dy| {
                (0..=8).any(|dx| {
                    let window = padded.get(b).narrow(1, dy, 8).narrow(2, dx, 8);
                    out.get(b).equal(&window) || out.get(b).equal(&window.flip([2]))
                })
            });
            assert!(found, "image {b} is not a crop of its padded source");
        }
    }

    #[test]
    fn reflect_padding_mirrors_the_border_without_repeating_it() {
        let images = batch();
        let out = Augment::reflect().apply(&images, &mut stream(4, Purpose::Synthesis, 0));
        // The reference's padding: torch's reflection pad of the float image.
        let padded = images.to_kind(Kind::Float).reflection_pad2d([4, 4, 4, 4]).to_kind(Kind::Uint8);
        for b in 0..2 {
            let found = (0..=8).any(|dy| {
                (0..=8).any(|dx| {
                    let window = padded.get(b).narrow(1, dy, 8).narrow(2, dx, 8);
                    out.get(b).equal(&window) || out.get(b).equal(&window.flip([2]))
                })
            });
            assert!(found, "image {b} is not a crop of its reflect-padded source");
        }
        assert_eq!((reflect_index(0, 4, 8), reflect_index(3, 4, 8), reflect_index(12, 4, 8)), (4, 1, 6));
        // Float images (synthesis) go through the same path.
        let float = images.to_kind(Kind::Float);
        let out = Augment::reflect().apply(&float, &mut stream(4, Purpose::Synthesis, 0));
        assert_eq!(out.kind(), Kind::Float);
    }

    #[test]
    fn the_stream_decides_the_augmentation() {
        let images = batch();
        let a = Augment::default().apply(&images, &mut stream(3, Purpose::TrainTask, 0));
        let b = Augment::default().apply(&images, &mut stream(3, Purpose::TrainTask, 0));
        let c = Augment::default().apply(&images, &mut stream(3, Purpose::TrainTask, 1));
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
    }

    #[test]
    fn normalize_maps_the_mean_to_zero() {
        let norm = Normalize::new(&[0.5], &[0.25], Device::Cpu);
        let out = norm.apply(&Tensor::from_slice(&[0u8, 255]).view([2, 1, 1, 1]));
        let values = Vec::<f32>::try_from(out.flatten(0, -1)).unwrap();
        assert!((values[0] + 2.0).abs() < 1e-6 && (values[1] - 2.0).abs() < 1e-6);
    }
}
