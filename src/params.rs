//! Flat model weights: the [`Weights`] trait through which the executor and the server touch a
//! model's weights wherever they live, its host implementation on plain vectors, and the maths
//! every algorithm shares (delta, hashing), free of libtorch so that it can be tested directly.
//! On a GPU the weights are device tensors (`nn::device_weights`): versions, aggregation and
//! the bases of cohorts then stay on the device, and the host sees weights only to log, hash or
//! save them.

use std::borrow::Cow;
use std::ops::Range;

use sha2::{Digest, Sha256};

/// A model's flat weights (parameters and tracker buffers in the model's layout). Every
/// operation is element-wise, so the host implementation gives the same floats as the plain
/// loops it replaced; a device implementation gives its device's floats.
pub trait Weights: Clone + Send + Sync + 'static {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Zeros where `self` lives.
    fn zeros_like(&self) -> Self;
    /// Host values placed where `self` lives.
    fn like(&self, host: &[f32]) -> Self;
    /// self <- self + alpha x.
    fn axpy(&mut self, alpha: f32, x: &Self);
    /// self <- alpha self.
    fn scale(&mut self, alpha: f32);
    /// Sets `range` to `value` (tracker resets).
    fn fill(&mut self, range: Range<usize>, value: f32);
    /// self <- self + alpha x^2 (a second moment: Adam, Adagrad).
    fn add_squares(&mut self, alpha: f32, x: &Self);
    /// self <- self - alpha x^2 sign(self - x^2) (Yogi's second moment).
    fn add_yogi_squares(&mut self, alpha: f32, x: &Self);
    /// self <- self + lr m / (sqrt(v) + tau) (an adaptive optimizer's step).
    fn add_adaptive_step(&mut self, lr: f32, m: &Self, v: &Self, tau: f32);
    fn all_finite(&self) -> bool;
    /// The values on the host (borrowed where they already are there).
    fn to_host(&self) -> Cow<'_, [f32]>;
    /// Waits until the device work that wrote these weights is done, so that another thread
    /// (on its own stream) may read them and the inputs they were made from may be freed.
    /// Nothing to wait for on the host.
    fn settle(&self) {}
}

impl Weights for Vec<f32> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn zeros_like(&self) -> Self {
        vec![0.0; self.len()]
    }
    fn like(&self, host: &[f32]) -> Self {
        host.to_vec()
    }
    fn axpy(&mut self, alpha: f32, x: &Self) {
        axpy(self, alpha, x);
    }
    fn scale(&mut self, alpha: f32) {
        self.iter_mut().for_each(|v| *v *= alpha);
    }
    fn fill(&mut self, range: Range<usize>, value: f32) {
        self[range].fill(value);
    }
    fn add_squares(&mut self, alpha: f32, x: &Self) {
        assert_eq!(self.len(), x.len(), "weight vectors differ in length");
        for (y, x) in self.iter_mut().zip(x) {
            *y += alpha * (x * x);
        }
    }
    fn add_yogi_squares(&mut self, alpha: f32, x: &Self) {
        assert_eq!(self.len(), x.len(), "weight vectors differ in length");
        for (y, x) in self.iter_mut().zip(x) {
            let square = x * x;
            *y -= alpha * square * sign(*y - square);
        }
    }
    fn add_adaptive_step(&mut self, lr: f32, m: &Self, v: &Self, tau: f32) {
        assert!(self.len() == m.len() && m.len() == v.len(), "weight vectors differ in length");
        for ((y, m), v) in self.iter_mut().zip(m).zip(v) {
            *y += lr * m / (v.sqrt() + tau);
        }
    }
    fn all_finite(&self) -> bool {
        self.iter().all(|v| v.is_finite())
    }
    fn to_host(&self) -> Cow<'_, [f32]> {
        Cow::Borrowed(self)
    }
}

/// y <- y + a x.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "weight vectors differ in length");
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// -1, 0 or 1 as torch's sign (0 at 0, unlike f32::signum).
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// theta_after - theta_before, element-wise.
pub fn delta<W: Weights>(after: &W, before: &W) -> W {
    let mut delta = after.clone();
    // a + (-1) b is a - b exactly.
    delta.axpy(-1.0, before);
    delta
}

/// SHA-256 of the weights' little-endian bytes, in hex: the oracle of determinism tests.
/// Bit-exact: -0.0 and 0.0, or two NaN payloads, hash differently.
pub fn weights_hash(weights: &[f32]) -> String {
    let mut hasher = Sha256::new();
    for w in weights {
        hasher.update(w.to_le_bytes());
    }
    format!("{:x}", hasher.finalize())
}

/// The SHA-256 of some bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delta_subtracts_elementwise() {
        assert_eq!(delta(&vec![3.0, 1.0], &vec![1.0, 1.5]), [2.0, -0.5]);
    }

    proptest! {
        /// The trait's operations are the plain loops they replaced, bit for bit.
        #[test]
        fn host_weights_do_the_plain_loops(a in prop::collection::vec(-1e3f32..1e3, 9), b in prop::collection::vec(-1e3f32..1e3, 9), alpha in -4f32..4.0) {
            let loop_delta: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
            prop_assert_eq!(delta(&a, &b), loop_delta);
            let mut y = a.clone();
            y.axpy(alpha, &b);
            let loop_axpy: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + alpha * y).collect();
            prop_assert_eq!(&y, &loop_axpy);
            y.scale(alpha);
            prop_assert_eq!(y, loop_axpy.iter().map(|v| v * alpha).collect::<Vec<f32>>());
        }
    }

    #[test]
    fn fill_finite_and_host_view() {
        let mut w = vec![1.0f32; 5];
        w.fill(1..3, 0.0);
        assert_eq!(w, [1.0, 0.0, 0.0, 1.0, 1.0]);
        assert!(w.all_finite());
        assert_eq!(&*w.to_host(), w.as_slice());
        w.axpy(1.0, &vec![0.0, 0.0, f32::INFINITY, 0.0, 0.0]);
        assert!(!w.all_finite());
        assert_eq!(w.zeros_like(), [0.0; 5]);
    }

    #[test]
    fn hash_sees_every_bit() {
        let a = weights_hash(&[1.0, 2.0]);
        assert_eq!(a, weights_hash(&[1.0, 2.0]));
        assert_ne!(a, weights_hash(&[1.0, f32::from_bits(2.0f32.to_bits() + 1)]));
        assert_ne!(weights_hash(&[0.0]), weights_hash(&[-0.0]));
        assert_eq!(a.len(), 64);
    }
}
