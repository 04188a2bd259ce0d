//! Client data shards (FEDREVIVE.md sections 4 and 8). Each client gets `client_data_size`
//! samples. `iid`: the pool is shuffled once and client i takes the i-th contiguous block of
//! it (cyclically, once the blocks pass the end). `dirichlet`: class proportions
//! p ~ Dir(alpha), counts = round(p * size); a rounding shortfall goes to one class chosen at
//! random, an excess is taken away one sample at a time from the currently largest class.
//! Each class's samples come from a shuffled per-class pool shared by all clients; when
//! `used + count` would pass the pool's end, it is reshuffled and restarted, so one shard
//! never repeats a sample (shards of different clients overlap once 1,000 clients x 350
//! samples exceed the pool).

use rand::seq::SliceRandom;
use rand::Rng as _;
use rand_distr::{Distribution, Gamma};

use crate::sim::rng::{self, Purpose};

/// How the training pool is divided among clients.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartitionKind {
    Iid,
    Dirichlet { alpha: f64 },
}

/// Bad partition parameters.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PartitionError {
    #[error("dirichlet alpha must be a positive finite number, got {0}")]
    BadAlpha(f64),
    #[error("client_data_size must be at least 1")]
    EmptyShard,
    #[error("the training pool is empty or has a class with no samples while Dirichlet weights need it: class {0}")]
    EmptyClass(usize),
}

/// The shards of all clients: `shards[c]` are indices into the pool's labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    pub shards: Vec<Vec<u32>>,
    /// The drawn class counts of each shard.
    pub histograms: Vec<Vec<u32>>,
}

impl Partition {
    /// A client's class proportions q_k (used to weight teachers in FedRevive).
    pub fn class_proportions(&self, client: usize) -> Vec<f64> {
        let counts = &self.histograms[client];
        let total: u32 = counts.iter().sum();
        counts.iter().map(|&c| c as f64 / total.max(1) as f64).collect()
    }
}

/// Partitions `pool` (indices into `labels`) among `clients` clients.
pub fn partition(
    labels: &[u8],
    pool: &[u32],
    num_classes: usize,
    clients: usize,
    client_data_size: usize,
    kind: PartitionKind,
    seed: u64,
) -> Result<Partition, PartitionError> {
    if client_data_size == 0 {
        return Err(PartitionError::EmptyShard);
    }
    let mut rng = rng::stream(seed, Purpose::Partition, 0);
    match kind {
        PartitionKind::Iid => {
            if pool.is_empty() {
                return Err(PartitionError::EmptyClass(0));
            }
            let mut order = pool.to_vec();
            order.shuffle(&mut rng);
            let mut cursor = 0;
            let mut shards = Vec::with_capacity(clients);
            let mut histograms = Vec::with_capacity(clients);
            for _ in 0..clients {
                // As the reference: a block that would run past the end reshuffles the whole
                // pool and starts over, so no shard repeats a sample (FEDREVIVE.md section 8).
                if cursor + client_data_size > order.len() {
                    order.shuffle(&mut rng);
                    cursor = 0;
                }
                // A shard larger than the pool (tiny pools only) wraps within it.
                let shard: Vec<u32> =
                    (0..client_data_size).map(|i| order[(cursor + i) % order.len()]).collect();
                cursor += client_data_size;
                histograms.push(histogram(labels, &shard, num_classes));
                shards.push(shard);
            }
            Ok(Partition { shards, histograms })
        }
        PartitionKind::Dirichlet { alpha } => {
            if !(alpha.is_finite() && alpha > 0.0) {
                return Err(PartitionError::BadAlpha(alpha));
            }
            let gamma = Gamma::new(alpha, 1.0).map_err(|_| PartitionError::BadAlpha(alpha))?;
            let mut pools: Vec<Vec<u32>> = vec![Vec::new(); num_classes];
            for &i in pool {
                pools[labels[i as usize] as usize].push(i);
            }
            if let Some(empty) = pools.iter().position(Vec::is_empty) {
                return Err(PartitionError::EmptyClass(empty));
            }
            for class_pool in &mut pools {
                class_pool.shuffle(&mut rng);
            }
            let mut cursors = vec![0usize; num_classes];
            let mut shards = Vec::with_capacity(clients);
            let mut histograms = Vec::with_capacity(clients);
            for _ in 0..clients {
                let weights: Vec<f64> = (0..num_classes).map(|_| gamma.sample(&mut rng)).collect();
                let counts = dirichlet_counts(&weights, client_data_size, &mut rng);
                let mut shard = Vec::with_capacity(client_data_size);
                for (class, &count) in counts.iter().enumerate() {
                    let (class_pool, cursor) = (&mut pools[class], &mut cursors[class]);
                    if *cursor + count as usize > class_pool.len() {
                        class_pool.shuffle(&mut rng);
                        *cursor = 0;
                    }
                    // A count above the class's size (tiny pools only) wraps within the pool.
                    shard.extend((0..count as usize).map(|i| class_pool[(*cursor + i) % class_pool.len()]));
                    *cursor += count as usize;
                }
                histograms.push(counts);
                shards.push(shard);
            }
            Ok(Partition { shards, histograms })
        }
    }
}

/// counts = round(p * size) for p = weights / sum; a shortfall goes to one class chosen at
/// random, an excess is removed one sample at a time from the currently largest class.
fn dirichlet_counts(weights: &[f64], size: usize, rng: &mut crate::sim::rng::Rng) -> Vec<u32> {
    let total: f64 = weights.iter().sum();
    let proportions: Vec<f64> = if total > 0.0 && total.is_finite() {
        weights.iter().map(|w| w / total).collect()
    } else {
        // Every gamma draw underflowed (tiny alpha): the shortfall below puts all on one class.
        vec![0.0; weights.len()]
    };
    let mut counts: Vec<u32> = proportions.iter().map(|p| (p * size as f64).round() as u32).collect();
    let assigned: usize = counts.iter().map(|&c| c as usize).sum();
    if assigned < size {
        let receiver = rng.random_range(0..counts.len());
        counts[receiver] += (size - assigned) as u32;
    }
    for _ in size..assigned {
        let largest = (0..counts.len()).fold(0, |best, i| if counts[i] > counts[best] { i } else { best });
        counts[largest] -= 1;
    }
    counts
}

pub fn histogram(labels: &[u8], shard: &[u32], num_classes: usize) -> Vec<u32> {
    let mut counts = vec![0u32; num_classes];
    for &i in shard {
        counts[labels[i as usize] as usize] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(n: usize, classes: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % classes) as u8).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn every_shard_has_the_size_and_the_drawn_histogram(
            seed in 0u64..1_000, clients in 1usize..40, size in 1usize..400,
            alpha in 0.05f64..5.0, iid in any::<bool>(),
        ) {
            let labels = labels(2_000, 10);
            let pool: Vec<u32> = (0..1_500).collect();
            let kind = if iid { PartitionKind::Iid } else { PartitionKind::Dirichlet { alpha } };
            let p = partition(&labels, &pool, 10, clients, size, kind, seed).unwrap();
            prop_assert_eq!(p.shards.len(), clients);
            for (shard, drawn) in p.shards.iter().zip(&p.histograms) {
                prop_assert_eq!(shard.len(), size);
                prop_assert_eq!(&histogram(&labels, shard, 10), drawn);
                prop_assert!(shard.iter().all(|i| pool.contains(i)));
            }
        }

        #[test]
        fn the_seed_decides_the_shards(seed in 0u64..1_000, alpha in 0.1f64..2.0) {
            let labels = labels(1_000, 10);
            let pool: Vec<u32> = (0..1_000).collect();
            let kind = PartitionKind::Dirichlet { alpha };
            let a = partition(&labels, &pool, 10, 20, 50, kind, seed).unwrap();
            let b = partition(&labels, &pool, 10, 20, 50, kind, seed).unwrap();
            let c = partition(&labels, &pool, 10, 20, 50, kind, seed + 1).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_ne!(&a, &c);
        }

        #[test]
        fn rounding_keeps_the_total(weights in prop::collection::vec(0.0f64..10.0, 10), size in 1usize..1_000, seed in 0u64..100) {
            let counts = dirichlet_counts(&weights, size, &mut rng::stream(seed, Purpose::Partition, 0));
            prop_assert_eq!(counts.iter().map(|&c| c as usize).sum::<usize>(), size);
        }
    }

    #[test]
    fn a_rounding_shortfall_goes_to_a_random_class_and_an_excess_leaves_the_largest() {
        // 3 x round(10/3 = 3.33) = 9: one short, given to one class; which one follows the stream.
        let even = [1.0, 1.0, 1.0];
        let mut receivers = std::collections::HashSet::new();
        for seed in 0..30 {
            let counts = dirichlet_counts(&even, 10, &mut rng::stream(seed, Purpose::Partition, 0));
            let mut sorted = counts.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [3, 3, 4]);
            receivers.insert(counts.iter().position(|&c| c == 4).unwrap());
        }
        assert_eq!(receivers.len(), 3, "every class can receive the shortfall");
        // round(2.5) + round(2.5) + round(5) = 3 + 3 + 5 = 11 of 10: the largest (5) gives one up.
        let counts = dirichlet_counts(&[0.25, 0.25, 0.5], 10, &mut rng::stream(0, Purpose::Partition, 0));
        assert_eq!(counts, [3, 3, 4]);
        // 6 x round(1.5) = 12 of 9: three removed one at a time from the currently largest.
        let counts = dirichlet_counts(&[1.0; 6], 9, &mut rng::stream(0, Purpose::Partition, 0));
        assert_eq!(counts, [1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn a_dirichlet_shard_never_repeats_a_sample() {
        let labels = labels(1_000, 10); // 100 samples per class
        let pool: Vec<u32> = (0..1_000).collect();
        let p = partition(&labels, &pool, 10, 200, 90, PartitionKind::Dirichlet { alpha: 0.3 }, 4).unwrap();
        for shard in &p.shards {
            let distinct: std::collections::HashSet<_> = shard.iter().collect();
            assert_eq!(distinct.len(), shard.len(), "a class pool restarts instead of wrapping into a shard");
        }
    }

    #[test]
    fn iid_shards_are_contiguous_blocks_reshuffled_when_the_pool_runs_out() {
        let labels = labels(100, 10);
        let pool: Vec<u32> = (0..100).collect();
        let p = partition(&labels, &pool, 10, 4, 30, PartitionKind::Iid, 2).unwrap();
        // Blocks 0..2 are positions 0..90 of one shuffle, 90 distinct samples; block 3 would run
        // past position 100, so the pool is reshuffled and block 3 is its first 30.
        let mut first: Vec<u32> = p.shards[..3].concat();
        first.sort_unstable();
        first.dedup();
        assert_eq!(first.len(), 90);
        for shard in &p.shards {
            let distinct: std::collections::HashSet<_> = shard.iter().collect();
            assert_eq!(distinct.len(), 30, "a shard repeats a sample");
        }
        assert_ne!(p.shards[3][10..], p.shards[0][..20], "block 3 wrapped around the first shuffle");
        // A shard larger than the pool still gets its size.
        let big = partition(&labels, &pool, 10, 2, 150, PartitionKind::Iid, 2).unwrap();
        assert!(big.shards.iter().all(|s| s.len() == 150));
        assert_ne!(
            p.shards[0],
            partition(&labels, &pool, 10, 4, 30, PartitionKind::Iid, 3).unwrap().shards[0]
        );
    }

    #[test]
    fn dirichlet_shards_wrap_around_a_small_class_pool() {
        let labels = labels(100, 10); // 10 samples per class
        let pool: Vec<u32> = (0..100).collect();
        let p = partition(&labels, &pool, 10, 50, 35, PartitionKind::Dirichlet { alpha: 0.5 }, 1).unwrap();
        assert!(p.shards.iter().all(|s| s.len() == 35));
    }

    #[test]
    fn small_alpha_gives_skewed_shards_and_large_alpha_balanced_ones() {
        let labels = labels(10_000, 10);
        let pool: Vec<u32> = (0..10_000).collect();
        let max_share = |alpha| {
            let p = partition(&labels, &pool, 10, 200, 350, PartitionKind::Dirichlet { alpha }, 5).unwrap();
            p.histograms.iter().map(|h| *h.iter().max().unwrap() as f64 / 350.0).sum::<f64>() / 200.0
        };
        assert!(max_share(0.1) > 0.6);
        assert!(max_share(100.0) < 0.2);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let labels = labels(100, 10);
        let pool: Vec<u32> = (0..100).collect();
        let d = |alpha| PartitionKind::Dirichlet { alpha };
        assert_eq!(partition(&labels, &pool, 10, 1, 10, d(0.0), 1), Err(PartitionError::BadAlpha(0.0)));
        assert_eq!(partition(&labels, &pool, 10, 1, 0, d(0.5), 1), Err(PartitionError::EmptyShard));
        assert_eq!(partition(&labels, &pool[..5], 10, 1, 10, d(0.5), 1), Err(PartitionError::EmptyClass(2)));
    }
}
