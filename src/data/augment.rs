//! Training augmentation as batched tensor operations: random crop with zero padding,
//! horizontal flip, then per-channel normalisation. The random choices come from the task's
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

/// Random crop (padding `pad`) and horizontal flip, as in torchvision's
/// `RandomCrop(size, padding=pad)` + `RandomHorizontalFlip()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    pub pad: i64,
    pub flip: bool,
}

impl Default for Augment {
    fn default() -> Self {
        Augment { pad: 4, flip: true }
    }
}

impl Augment {
    /// Crops and flips a uint8 batch `[B, C, H, W]`; draws 2 offsets and a coin per image.
    /// Two gathers from the zero-padded batch: `index_select` picks each image's H rows
    /// (starting at its dy) for every channel, then `gather` picks its W columns (starting at
    /// its dx, reversed when flipped) through an index expanded over channels and rows.
    pub fn apply(&self, images: &Tensor, rng: &mut Rng) -> Tensor {
        let (batch, channels, height, width) = images.size4().expect("images are [B, C, H, W]");
        let (padded_h, padded_w) = (height + 2 * self.pad, width + 2 * self.pad);
        let mut rows = Vec::with_capacity((batch * channels * height) as usize);
        let mut cols = Vec::with_capacity((batch * width) as usize);
        for b in 0..batch {
            let dy = rng.random_range(0..=2 * self.pad);
            let dx = rng.random_range(0..=2 * self.pad);
            let flipped = self.flip && rng.random_bool(0.5);
            for c in 0..channels {
                rows.extend((0..height).map(|r| (b * channels + c) * padded_h + dy + r));
            }
            cols.extend((0..width).map(|x| dx + if flipped { width - 1 - x } else { x }));
        }
        let device = images.device();
        let rows = Tensor::from_slice(&rows).to_device(device);
        let cols = Tensor::from_slice(&cols).view([batch, 1, 1, width]).to_device(device);
        let padded = images.constant_pad_nd([self.pad, self.pad, self.pad, self.pad]);
        let picked_rows = padded
            .view([batch * channels * padded_h, padded_w])
            .index_select(0, &rows)
            .view([batch, channels, height, padded_w]);
        picked_rows.gather(3, &cols.expand([batch, channels, height, width], false), false)
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
        let out = Augment { pad: 0, flip: false }.apply(&images, &mut stream(1, Purpose::TrainTask, 0));
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
