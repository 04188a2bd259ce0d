//! `fedsim data prepare`: CIFAR-10 in its official binary layout, checked.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use crate::data::{prepare, DataDirs};

/// Prepares CIFAR-10 from `from` (default: the shared tarball); a no-op when it is there.
pub fn prepare(dirs: &DataDirs, from: Option<&Path>) -> Result<()> {
    let started = Instant::now();
    match prepare::prepare(&dirs.root, from)? {
        prepare::Outcome::AlreadyPrepared(dir) => println!("CIFAR-10 already prepared in {}", dir.display()),
        prepare::Outcome::Prepared { dir, train, test } => println!(
            "CIFAR-10 prepared in {}: {train} training and {test} test images, checksums in {} ({:.1} s)",
            dir.display(),
            prepare::MANIFEST,
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}
