//! fedsim: a deterministic discrete-event simulator for federated learning whose clients
//! train real models with libtorch.
//!
//! Layers, from the bottom: [`sim`] (virtual time, event queue, random streams, delays; no
//! tensors), [`params`] and [`fl`] (weight maths and server rules on plain vectors),
//! [`sched`] (policies that plan who trains when), [`data`] and [`nn`] (datasets, models,
//! local training, evaluation), [`exec`] (carries out a plan on worker threads), [`record`]
//! (run directories), [`report`] (tables and figures from run directories), [`simulation`]
//! (a config wired into a simulation), and on top the [`commands`], which [`cli`] parses for.

pub mod cli;
#[cfg(feature = "mpi")]
pub mod cluster;
pub mod commands;
pub mod config;
pub mod data;
pub mod exec;
pub mod faults;
pub mod fl;

pub mod nn;
pub mod params;
pub mod record;
pub mod report;
pub mod runtime;
pub mod saved;
pub mod sched;
pub mod sim;
pub mod simulation;
