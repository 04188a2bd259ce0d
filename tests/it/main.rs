//! fedsim's integration tests: one binary, one file per behaviour. Tests that read CIFAR-10
//! need the prepared copy in data/ (`just setup` makes it).

mod bad_input;
mod cohort;
mod configs;
mod data;
mod determinism;
mod fuzz;
mod layering;
#[cfg(feature = "mpi")]
mod mpi;
mod precision;
mod report;
mod resume;
mod revive;
mod server_rules;
mod simulate;
mod training;

use std::path::PathBuf;
use std::sync::OnceLock;

use fedsim::data::{DataDirs, Dataset, DatasetKind};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn dirs() -> DataDirs {
    DataDirs { root: repo().join("data"), ..DataDirs::default() }
}

/// CIFAR-10 on the CPU, loaded once per test process.
pub fn cifar() -> &'static Dataset {
    static CIFAR: OnceLock<Dataset> = OnceLock::new();
    CIFAR.get_or_init(|| {
        fedsim::data::load(DatasetKind::Cifar10, &dirs())
            .expect("prepared CIFAR-10 in data/ (run `just setup`)")
    })
}

/// Runs the fedsim binary; returns (exit code, stdout, stderr).
pub fn fedsim(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("fedsim binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends SIGINT (what Ctrl-C sends) to a running fedsim.
pub fn send_sigint(child: &std::process::Child) {
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -INT {}", child.id());
}

/// The largest |x| of a weight vector (the scale tolerances are stated against).
pub fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// The largest |a - b| over two weight vectors.
pub fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// max |a - b| / max |b|: a weight vector's difference from a reference, against its scale.
pub fn relative_difference(a: &[f32], reference: &[f32]) -> f64 {
    max_abs_difference(a, reference) as f64 / (max_abs(reference) as f64).max(1e-12)
}

/// What a run applied, in order: (task, applied version) per update.
pub fn applied_updates(sink: &fedsim::exec::VecSink) -> Vec<(u64, u64)> {
    sink.updates.iter().map(|u| (u.task, u.applied_version)).collect()
}

/// A fresh empty folder under target/ for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = repo().join("target").join("test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
