//! The simulation core that knows no tensors and no federated learning: virtual time, the
//! event queue, seeded random streams and delay distributions. Everything here builds and
//! tests without libtorch.

pub mod availability;
pub mod delay;
pub mod queue;
pub mod rng;
pub mod time;
pub mod trace;
