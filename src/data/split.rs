//! The seeded split of the training images into train / validation / KD parts (FEDREVIVE.md
//! sections 4 and 8: val_split 0.15 and kd_split 0.1 give 37,500 / 7,500 / 5,000 of CIFAR-10's
//! 50,000). The validation part is kept aside and unused, as in the reference.

use rand::seq::SliceRandom;

use crate::sim::rng::{self, Purpose};

/// Indices into the full training set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainSplit {
    pub train: Vec<u32>,
    pub validation: Vec<u32>,
    pub kd: Vec<u32>,
}

/// The reference's shares of the training images: validation and KD.
pub const VAL_SPLIT: f64 = 0.15;
pub const KD_SPLIT: f64 = 0.1;

/// Splits `n` training images after a seeded shuffle: `floor(val_split n)` validation and
/// `floor(kd_split n)` KD images, the rest for the clients.
pub fn split(n: usize, val_split: f64, kd_split: f64, seed: u64) -> TrainSplit {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng::stream(seed, Purpose::DataSplit, 0));
    let validation_len = (val_split * n as f64 + 1e-9).floor() as usize;
    let kd_len = (kd_split * n as f64 + 1e-9).floor() as usize;
    let train_len = n.saturating_sub(validation_len + kd_len);
    let kd = order.split_off(train_len + validation_len);
    let validation = order.split_off(train_len);
    TrainSplit { train: order, validation, kd }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar_sizes_match_the_reference() {
        let s = split(50_000, VAL_SPLIT, KD_SPLIT, 10);
        assert_eq!((s.train.len(), s.validation.len(), s.kd.len()), (37_500, 7_500, 5_000));
        let other = split(50_000, 0.1, 0.2, 10);
        assert_eq!((other.train.len(), other.validation.len(), other.kd.len()), (35_000, 5_000, 10_000));
    }

    #[test]
    fn parts_are_disjoint_and_cover_everything() {
        let s = split(1_000, VAL_SPLIT, KD_SPLIT, 3);
        let mut all: Vec<u32> = s.train.iter().chain(&s.validation).chain(&s.kd).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1_000).collect::<Vec<_>>());
    }

    #[test]
    fn seed_decides_the_split() {
        assert_eq!(split(1_000, 0.15, 0.1, 3), split(1_000, 0.15, 0.1, 3));
        assert_ne!(split(1_000, 0.15, 0.1, 3), split(1_000, 0.15, 0.1, 4));
    }
}
