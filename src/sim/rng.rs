//! Seeded random streams: every consumer of randomness gets its own ChaCha stream, derived
//! from (master seed, purpose, id), so that no two consumers share state and the draws of one
//! never depend on how often another drew.

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use sha2::{Digest, Sha256};

/// The random generator fedsim uses everywhere.
pub type Rng = ChaCha12Rng;

/// What a stream is for. The tag is part of the key, so streams of different purposes never
/// coincide even for equal ids. Tags are stable: changing one changes every result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Train / validation / KD split of the training set.
    DataSplit,
    /// Client data shards (Dirichlet draws and per-class sampling).
    Partition,
    /// Model initialisation.
    ModelInit,
    /// One local-training task: batch order and augmentation (id = task id).
    TrainTask,
    /// Centralised training: epoch order and augmentation (id = epoch).
    CentralTrain,
    /// A client's delay profile: which mixture component each delay kind uses (id = client).
    DelayProfile,
    /// The per-event delay draws of one client and kind (id = 3 * client + kind).
    DelayDraw,
    /// Which idle clients the scheduler dispatches.
    ClientSelection,
    /// Server-side distillation of one arrival: sampling and augmentation (id = its task id).
    Distill,
    /// FedRevive's image synthesis for one arrival: targets, latents, embeddings, augmentation
    /// (id = its task id).
    Synthesis,
    /// A client's online and offline spans (id = client).
    Availability,
    /// Which leaf each client sits under, when the assignment is seeded.
    LeafAssignment,
    /// A leaf's hop profile: the mixture component its hop delays use (id = leaf).
    HopProfile,
    /// The hop delay draws of one leaf's messages (id = leaf).
    HopDraw,
}

impl Purpose {
    fn tag(self) -> &'static str {
        match self {
            Purpose::DataSplit => "data-split",
            Purpose::Partition => "partition",
            Purpose::ModelInit => "model-init",
            Purpose::TrainTask => "train-task",
            Purpose::CentralTrain => "central-train",
            Purpose::DelayProfile => "delay-profile",
            Purpose::DelayDraw => "delay-draw",
            Purpose::ClientSelection => "client-selection",
            Purpose::Distill => "distill",
            Purpose::Synthesis => "synthesis",
            Purpose::Availability => "availability",
            Purpose::LeafAssignment => "leaf-assignment",
            Purpose::HopProfile => "hop-profile",
            Purpose::HopDraw => "hop-draw",
        }
    }
}

/// The stream for (master seed, purpose, id): the key hashes seed and purpose, the ChaCha
/// stream number is the id, so a stream costs nothing to derive.
pub fn stream(master_seed: u64, purpose: Purpose, id: u64) -> Rng {
    let mut hasher = Sha256::new();
    hasher.update(b"fedsim-rng-v1");
    hasher.update(master_seed.to_le_bytes());
    hasher.update(purpose.tag().as_bytes());
    let key: [u8; 32] = hasher.finalize().into();
    let mut rng = Rng::from_seed(key);
    rng.set_stream(id);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    fn first(rng: &mut Rng) -> [u64; 4] {
        [rng.random(), rng.random(), rng.random(), rng.random()]
    }

    #[test]
    fn same_triple_gives_same_stream() {
        let a = first(&mut stream(10, Purpose::TrainTask, 7));
        let b = first(&mut stream(10, Purpose::TrainTask, 7));
        assert_eq!(a, b);
    }

    #[test]
    fn any_change_in_the_triple_gives_another_stream() {
        let base = first(&mut stream(10, Purpose::TrainTask, 7));
        assert_ne!(base, first(&mut stream(11, Purpose::TrainTask, 7)));
        assert_ne!(base, first(&mut stream(10, Purpose::Partition, 7)));
        assert_ne!(base, first(&mut stream(10, Purpose::TrainTask, 8)));
    }
}
