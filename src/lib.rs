//! fedsim: a deterministic discrete-event simulator for federated learning whose clients
//! train real models with libtorch.
//!
//! Layers, from the bottom: [`sim`] (random streams; no tensors), [`params`] (weight maths on
//! plain vectors), [`data`] (datasets, splits, partitions, augmentation), [`nn`] (models,
//! local training, evaluation), [`runtime`] (devices and libtorch facts), and the commands in
//! [`cli`].

pub mod central;
pub mod cli;
pub mod data;
pub mod nn;
pub mod params;
pub mod runtime;
pub mod sim;
