//! Weights where training happens. [`DeviceWeights`] is a model's flat weights as one tensor on
//! a device: on a GPU, model versions, the server's aggregation and the bases of cohorts stay
//! there, and the host sees weights only to log, hash or save them. [`TorchWeights`] is what
//! training asks of a weights type: a flat tensor to load into a model on a device, and weights
//! back from a trained model's flat tensor. Host vectors implement it too (CPU runs keep them:
//! their floats are those of plain Rust loops, which the reports were measured with).

use std::borrow::Cow;
use std::ops::Range;

use tch::{Device, Kind, Tensor};

use crate::params::Weights;

/// What local training and evaluation need of a weights type.
pub trait TorchWeights: Weights {
    /// The weights as a flat f32 tensor on `device` (the same tensor where they already lie
    /// there; read it, never write it).
    fn flat_on(&self, device: Device) -> Tensor;
    /// Weights from a flat f32 tensor: kept where it lies, or copied to the host.
    fn from_flat(flat: Tensor) -> Self;
    /// Host values placed where weights of this kind live when training on `device`.
    fn from_host(host: &[f32], device: Device) -> Self {
        Self::from_flat(Tensor::from_slice(host).to_device(device))
    }
}

impl TorchWeights for Vec<f32> {
    fn flat_on(&self, device: Device) -> Tensor {
        Tensor::from_slice(self).to_device(device)
    }
    fn from_flat(flat: Tensor) -> Self {
        host_vector(&flat)
    }
}

/// A model's flat weights as one 1-D f32 tensor on a device. Cloning copies the values (the
/// operations of [`Weights`] write in place).
#[derive(Debug)]
pub struct DeviceWeights(Tensor);

// SAFETY: a Tensor is not Sync because some tch methods that take &self write through it.
// DeviceWeights writes only through &mut self; through &self its tensor is only read (copied,
// viewed, reduced), and libtorch's reads of a tensor from several threads are safe (reference
// counts are atomic, the storage is not written). Cross-stream ordering on a GPU is kept by
// `settle` before weights are handed to another thread.
unsafe impl Sync for DeviceWeights {}

impl DeviceWeights {
    pub fn device(&self) -> Device {
        self.0.device()
    }
}

impl Clone for DeviceWeights {
    fn clone(&self) -> Self {
        DeviceWeights(tch::no_grad(|| self.0.copy()))
    }
}

impl Weights for DeviceWeights {
    fn len(&self) -> usize {
        self.0.numel()
    }
    fn zeros_like(&self) -> Self {
        DeviceWeights(self.0.zeros_like())
    }
    fn like(&self, host: &[f32]) -> Self {
        DeviceWeights::from_host(host, self.device())
    }
    fn axpy(&mut self, alpha: f32, x: &Self) {
        assert_eq!(self.len(), x.len(), "weight vectors differ in length");
        tch::no_grad(|| {
            let _ = self.0.g_add_(&(&x.0 * alpha as f64));
        });
    }
    fn scale(&mut self, alpha: f32) {
        tch::no_grad(|| {
            let _ = self.0.g_mul_scalar_(alpha as f64);
        });
    }
    fn fill(&mut self, range: Range<usize>, value: f32) {
        tch::no_grad(|| {
            let _ = self.0.narrow(0, range.start as i64, range.len() as i64).fill_(value as f64);
        });
    }
    fn add_squares(&mut self, alpha: f32, x: &Self) {
        assert_eq!(self.len(), x.len(), "weight vectors differ in length");
        tch::no_grad(|| {
            let _ = self.0.g_add_(&(x.0.square() * alpha as f64));
        });
    }
    fn add_yogi_squares(&mut self, alpha: f32, x: &Self) {
        assert_eq!(self.len(), x.len(), "weight vectors differ in length");
        tch::no_grad(|| {
            let square = x.0.square();
            let sign = (&self.0 - &square).sign();
            let _ = self.0.g_sub_(&(square * alpha as f64 * sign));
        });
    }
    fn add_adaptive_step(&mut self, lr: f32, m: &Self, v: &Self, tau: f32) {
        assert!(self.len() == m.len() && m.len() == v.len(), "weight vectors differ in length");
        tch::no_grad(|| {
            let _ = self.0.g_add_(&(&m.0 * lr as f64 / (v.0.sqrt() + tau as f64)));
        });
    }
    fn all_finite(&self) -> bool {
        self.0.isfinite().all().int64_value(&[]) != 0
    }
    fn to_host(&self) -> Cow<'_, [f32]> {
        Cow::Owned(host_vector(&self.0))
    }
    fn settle(&self) {
        crate::runtime::sync_current_stream(self.device());
    }
}

impl TorchWeights for DeviceWeights {
    fn flat_on(&self, device: Device) -> Tensor {
        if self.device() == device {
            self.0.shallow_clone()
        } else {
            self.0.to_device(device)
        }
    }
    fn from_flat(flat: Tensor) -> Self {
        DeviceWeights(flat.detach())
    }
}

/// A flat f32 tensor's values on the host.
fn host_vector(flat: &Tensor) -> Vec<f32> {
    let host = flat.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    Vec::<f32>::try_from(&host).expect("a flat f32 tensor converts to a vector")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params;

    /// The device operations are the host ones (on CPU, to float rounding: libtorch's vector
    /// kernels may fuse the multiply-add).
    #[test]
    fn device_weights_do_what_host_weights_do() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let (mut host, mut device) = (a.clone(), DeviceWeights::from_host(&a, Device::Cpu));
        let (host_b, device_b) = (b.clone(), device.like(&b));
        host.axpy(0.3, &host_b);
        device.axpy(0.3, &device_b);
        host.scale(-1.5);
        device.scale(-1.5);
        host.fill(3..9, 1.0);
        device.fill(3..9, 1.0);
        // The server optimizers' operations (v must be >= 0 for the adaptive step).
        host.add_squares(0.1, &host_b);
        device.add_squares(0.1, &device_b);
        host.add_yogi_squares(0.2, &host_b);
        device.add_yogi_squares(0.2, &device_b);
        let host_v: Vec<f32> = a.iter().map(|x| x * x).collect();
        let device_v = device.like(&host_v);
        host.add_adaptive_step(0.5, &host_b, &host_v, 1e-3);
        device.add_adaptive_step(0.5, &device_b, &device_v, 1e-3);
        let host_delta = params::delta(&host, &host_b);
        let device_delta = params::delta(&device, &device_b);
        for (h, d) in host_delta.iter().zip(device_delta.to_host().iter()) {
            assert!((h - d).abs() <= 1e-6 * (1.0 + h.abs()), "{h} vs {d}");
        }
        assert_eq!(device.zeros_like().to_host().iter().filter(|v| **v != 0.0).count(), 0);
        assert!(device.all_finite());
        device.axpy(1.0, &device.like(&[f32::NAN; 37]));
        assert!(!device.all_finite());
    }

    #[test]
    fn clones_are_copies_and_flat_tensors_round_trip() {
        let a = DeviceWeights::from_host(&[1.0, 2.0, 3.0], Device::Cpu);
        let mut b = a.clone();
        b.scale(2.0);
        assert_eq!(&*a.to_host(), [1.0, 2.0, 3.0]);
        assert_eq!(&*b.to_host(), [2.0, 4.0, 6.0]);
        let host = vec![4.0f32, 5.0];
        assert_eq!(Vec::<f32>::from_flat(host.flat_on(Device::Cpu)), host);
        assert_eq!(&*DeviceWeights::from_flat(host.flat_on(Device::Cpu)).to_host(), host.as_slice());
    }
}
