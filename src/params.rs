//! Flat model weights as plain data: the maths every algorithm shares (delta, hashing), free
//! of libtorch so that it can be tested directly.

use sha2::{Digest, Sha256};

/// theta_after - theta_before, element-wise.
pub fn delta(after: &[f32], before: &[f32]) -> Vec<f32> {
    assert_eq!(after.len(), before.len(), "weight vectors differ in length");
    after.iter().zip(before).map(|(a, b)| a - b).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_subtracts_elementwise() {
        assert_eq!(delta(&[3.0, 1.0], &[1.0, 1.5]), [2.0, -0.5]);
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
