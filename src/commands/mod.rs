//! The commands: what each `fedsim` subcommand does, called by [`crate::cli`] once it has
//! parsed the arguments. They print for the user; nothing in the library calls up into them
//! (`tests/it/layering.rs` checks).

pub mod bench;
pub mod info;
pub mod plan;
pub mod prepare;
pub mod report;
pub mod run;
pub mod sweep;
pub mod train_central;

use std::time::Instant;

use anyhow::Result;

use crate::data::{self, DataDirs, DatasetKind};

/// Loads a dataset onto `device`, saying how long it took.
pub(crate) fn load_dataset(dirs: &DataDirs, kind: DatasetKind, device: tch::Device) -> Result<data::Dataset> {
    let started = Instant::now();
    let dataset = data::load(kind, dirs)?.to_device(device);
    eprintln!(
        "loaded {kind}: {} training and {} test images in {:.2} s",
        dataset.train.len(),
        dataset.test.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(dataset)
}
