//! Client data shards (FEDREVIVE.md section 4). Each client gets `client_data_size` samples:
//! `iid` draws them uniformly from the training pool; `dirichlet` draws class proportions
//! p ~ Dir(alpha), takes counts = round(p * size) with the rounding remainder on the largest
//! class, and takes each class's samples from a shuffled per-class pool shared by all
//! clients, reshuffling and wrapping around when a pool runs out (so shards overlap once
//! 1,000 clients x 350 samples exceed the pool).

use rand::seq::SliceRandom;
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
            let mut shards = Vec::with_capacity(clients);
            let mut histograms = Vec::with_capacity(clients);
            for _ in 0..clients {
                // Without replacement inside a shard where the pool allows it.
                let take = client_data_size.min(pool.len());
                let mut shard: Vec<u32> = rand::seq::index::sample(&mut rng, pool.len(), take)
                    .into_iter()
                    .map(|i| pool[i])
                    .collect();
                while shard.len() < client_data_size {
                    shard.push(pool[shard.len() % pool.len()]);
                }
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
                let counts = dirichlet_counts(&weights, client_data_size);
                let mut shard = Vec::with_capacity(client_data_size);
                for (class, &count) in counts.iter().enumerate() {
                    for _ in 0..count {
                        if cursors[class] == pools[class].len() {
                            pools[class].shuffle(&mut rng);
                            cursors[class] = 0;
                        }
                        shard.push(pools[class][cursors[class]]);
                        cursors[class] += 1;
                    }
                }
                histograms.push(counts);
                shards.push(shard);
            }
            Ok(Partition { shards, histograms })
        }
    }
}

/// counts = round(p * size) for p = weights / sum, the remainder on the largest weight.
fn dirichlet_counts(weights: &[f64], size: usize) -> Vec<u32> {
    let total: f64 = weights.iter().sum();
    let largest = weights.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
    let (proportions, largest): (Vec<f64>, usize) = if total > 0.0 && total.is_finite() {
        (weights.iter().map(|w| w / total).collect(), largest)
    } else {
        // Every gamma draw underflowed (tiny alpha): all mass on one class.
        (vec![0.0; weights.len()], largest)
    };
    let mut counts: Vec<i64> = proportions.iter().map(|p| (p * size as f64).round() as i64).collect();
    let remainder = size as i64 - counts.iter().sum::<i64>();
    counts[largest] += remainder;
    // Tiny shards can round up more than the largest class holds: move the deficit on.
    while let Some(negative) = counts.iter().position(|&c| c < 0) {
        let deficit = -counts[negative];
        counts[negative] = 0;
        let fullest = (0..counts.len()).max_by_key(|&i| counts[i]).unwrap_or(0);
        counts[fullest] -= deficit;
    }
    counts.into_iter().map(|c| c as u32).collect()
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
        fn rounding_keeps_the_total(weights in prop::collection::vec(0.0f64..10.0, 10), size in 1usize..1_000) {
            let counts = dirichlet_counts(&weights, size);
            prop_assert_eq!(counts.iter().map(|&c| c as usize).sum::<usize>(), size);
        }
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
