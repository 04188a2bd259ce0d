//! The simulation core that knows no tensors: seeded random streams (and, later, the event
//! queue and delay models). Everything here builds and tests without libtorch.

pub mod rng;
