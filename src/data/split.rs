//! The seeded split of the training images into train / validation / KD parts
//! (FEDREVIVE.md section 4: 37,500 / 7,500 / 5,000 of CIFAR-10's 50,000, the same fractions
//! for other datasets). The validation part is kept aside and unused, as in the reference.

use rand::seq::SliceRandom;

use crate::sim::rng::{self, Purpose};

/// Indices into the full training set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainSplit {
    pub train: Vec<u32>,
    pub validation: Vec<u32>,
    pub kd: Vec<u32>,
}

/// Splits `n` training images 75% / 15% / 10% after a seeded shuffle.
pub fn split(n: usize, seed: u64) -> TrainSplit {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng::stream(seed, Purpose::DataSplit, 0));
    let train_len = n * 3 / 4;
    let validation_len = n * 3 / 20;
    let kd = order.split_off(train_len + validation_len);
    let validation = order.split_off(train_len);
    TrainSplit { train: order, validation, kd }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar_sizes_match_the_reference() {
        let s = split(50_000, 10);
        assert_eq!((s.train.len(), s.validation.len(), s.kd.len()), (37_500, 7_500, 5_000));
    }

    #[test]
    fn parts_are_disjoint_and_cover_everything() {
        let s = split(1_000, 3);
        let mut all: Vec<u32> = s.train.iter().chain(&s.validation).chain(&s.kd).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1_000).collect::<Vec<_>>());
    }

    #[test]
    fn seed_decides_the_split() {
        assert_eq!(split(1_000, 3), split(1_000, 3));
        assert_ne!(split(1_000, 3), split(1_000, 4));
    }
}
