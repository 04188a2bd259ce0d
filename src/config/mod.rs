//! Experiment configuration, in stages: the TOML file as written ([`raw`], every key
//! optional with the reference's default), `--set key=value` overrides (`overrides.rs`),
//! validation into the typed [`Config`] defined here (`validate.rs`), the reverse mapping back
//! to the input format (`input.rs`) and the reference's JSON configs ([`import`]). Every check
//! runs before anything is written.

use crate::data::trace_file::{read_availability_trace, read_device_trace};
use crate::sim::availability::AvailabilityModel;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::partition::PartitionKind;
use crate::data::DatasetKind;
use crate::fl::lr_schedule::LrSchedule;
use crate::fl::optimizer::OptimizerRow;
use crate::fl::revive::Gates;
use crate::fl::{
    BetaSchedule, ClientWeighting, ServerOptimizerKind, ServerOptimizerSettings, StalenessWeight,
};
use crate::nn::dfkd::DfkdSettings;
use crate::nn::kd::KdSettings;
use crate::nn::train::OptimizerKind;
use crate::nn::ModelKind;
use crate::sim::delay::{Component, DelayModel, DelaySpec, Distribution};

/// A configuration problem; always fatal, reported before a run starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("--set {0}: expected key=value, e.g. --set algorithm.buffer_size=2")]
    BadOverride(String),
    #[error("--set {key}: {message}")]
    Override { key: String, message: String },
    #[error("{key} = {value}: {allowed}")]
    Invalid { key: String, value: String, allowed: String },
}

fn invalid(key: &str, value: impl std::fmt::Display, allowed: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), value: value.to_string(), allowed: allowed.into() }
}

fn positive(key: &str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(invalid(key, v, "must be a positive number"))
    }
}

fn positive_time(key: &str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(invalid(key, v, "must be a positive, finite virtual time"))
    }
}

fn non_negative(key: &str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(invalid(key, v, "must be >= 0"))
    }
}

fn at_least_one(key: &str, v: usize) -> Result<usize, ConfigError> {
    if v >= 1 {
        Ok(v)
    } else {
        Err(invalid(key, v, "must be at least 1"))
    }
}

pub mod algorithms;
pub mod import;
mod input;
mod overrides;
pub mod raw;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use algorithms::{AlgorithmKind, ALGORITHMS};
use algorithms::{Arrival, BufferDefault, Distillation};
use overrides::apply_override;
pub use raw::*;
pub use sections::*;

/// Upper bounds that keep a typo from exhausting memory or threads; each is far above any
/// experiment fedsim is meant for.
pub const MAX_CLIENTS: usize = 1_000_000;
/// Shard indices held at once: num_clients x client_data_size (8 bytes each).
pub const MAX_SHARD_SAMPLES: usize = 100_000_000;
pub const MAX_THREADS: usize = 1024;
pub const MAX_LOOKAHEAD: usize = 1_000_000;

// ---------------------------------------------------------------------------------------
// The validated configuration.

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    pub name: String,
    /// The master seed as given (names the run).
    pub seed: u64,
    pub setup_seed: u64,
    pub run_seed: u64,
    pub dataset: DatasetKind,
    pub num_clients: usize,
    pub client_data_size: usize,
    pub partition: PartitionKind,
    pub val_split: f64,
    pub kd_split: f64,
    pub model: ModelKind,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    /// FedProx's mu (train.prox_mu); 0 trains without the proximal term.
    pub prox_mu: f64,
    /// The clients' learning rate by base version (train.lr_schedule).
    pub lr_schedule: LrSchedule,
    pub local_iters: usize,
    pub batch_size: usize,
    pub algorithm: AlgorithmKind,
    pub active_jobs: usize,
    pub buffer_size: usize,
    pub max_staleness: Option<u64>,
    pub over_commitment: f64,
    pub min_hole_to_fill: usize,
    pub client_reuse: bool,
    pub max_model_history: Option<u64>,
    pub update_timeout: Option<f64>,
    pub round_deadline: Option<f64>,
    pub late_updates: LateUpdatesConfig,
    pub server_lr: f64,
    /// algorithm.server_optimizer with its beta1, beta2 and tau.
    pub server_optimizer: ServerOptimizerSettings,
    /// server_lr by the version an aggregation makes (algorithm.server_lr_schedule).
    pub server_lr_schedule: LrSchedule,
    pub client_weighting: ClientWeighting,
    pub staleness_weight: StalenessWeight,
    pub beta: BetaSchedule,
    pub kd: KdConfig,
    pub dfkd: DfkdSettings,
    pub delays: DelayModel,
    pub availability: AvailabilityModel,
    pub topology: Option<TopologyConfig>,
    pub eval_interval: u64,
    pub max_versions: Option<u64>,
    pub max_virtual_time: Option<f64>,
    pub target_accuracy: Option<f64>,
    pub early_stop: Vec<(u64, f64)>,
    pub workers: usize,
    pub device: String,
    pub lookahead: usize,
    pub server_threads: usize,
    pub cohort_size: CohortSize,
    pub cpu_kernels: CpuKernels,
    pub precision: crate::nn::precision::Precision,
    pub checkpoint_every: u64,
    pub checkpoint_minutes: f64,
}

/// The reference's `continue_exp_from`: it continues the experiment saved in that folder, and
/// ignores the key ("if not a valid exp path, it will be ignored") when the folder holds none,
/// as on any fresh machine, where its shipped CIFAR-10 files name "./ExperimentOuts/...".
/// fedsim cannot continue the reference's saved state, so a folder with files in it is
/// refused by name; a missing or empty one is noted and the run starts afresh, as there.
fn continue_from(folder: &str, origin: &str) -> Result<(), ConfigError> {
    let holds_files = std::fs::read_dir(folder).is_ok_and(|mut entries| entries.next().is_some());
    if holds_files {
        return Err(ConfigError::Parse {
            path: origin.to_owned(),
            message: format!(
                "continue_exp_from: \"{folder}\" holds files, which would be the reference's saved experiment; \
                 fedsim cannot continue the reference's saved state: set it to null to start afresh"
            ),
        });
    }
    eprintln!(
        "note: {origin}: continue_exp_from \"{folder}\" holds no experiment here; the reference ignores it then, \
         and this run starts afresh"
    );
    Ok(())
}

impl Config {
    /// Reads, overrides and validates a config file: fedsim's TOML, or (a `.json` file) one of
    /// the reference simulator's configs, imported ([`import`]) with a note on stderr
    /// listing the keys that only steer the reference's logging, plots or devices.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
        let origin = path.display().to_string();
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            let imported = crate::config::import::reference_config(&text)
                .map_err(|e| ConfigError::Parse { path: origin.clone(), message: e.to_string() })?;
            if let Some(folder) = &imported.continue_from {
                continue_from(folder, &origin)?;
            }
            if !imported.ignored.is_empty() {
                eprintln!(
                    "note: {origin}: accepted without effect on results (they steer the reference's logging, plots, devices or saving): {}",
                    imported.ignored.join(", ")
                );
            }
            return Self::from_value(toml::Value::Table(imported.config), &origin, stem, overrides);
        }
        Self::from_toml(&text, &origin, stem, overrides)
    }

    pub fn from_toml(
        text: &str,
        origin: &str,
        default_name: &str,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let parse_error =
            |e: toml::de::Error| ConfigError::Parse { path: origin.to_owned(), message: e.to_string() };
        let value: toml::Value = toml::from_str(text).map_err(parse_error)?;
        Self::from_value(value, origin, default_name, overrides)
    }

    fn from_value(
        mut value: toml::Value,
        origin: &str,
        default_name: &str,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let read = |value: &toml::Value| RawConfig::deserialize(value.clone());
        let mut raw = read(&value)
            .map_err(|e| ConfigError::Parse { path: origin.to_owned(), message: e.to_string() })?;
        // Each override is checked as it is applied, so a bad one is blamed, not the file.
        for item in overrides {
            apply_override(&mut value, item)?;
            raw = read(&value)
                .map_err(|e| ConfigError::Override { key: item.clone(), message: e.to_string() })?;
        }
        raw.validate(default_name)
    }

    /// The resolved configuration as one flat table (every field by its own name), as
    /// reports compare runs by it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not serialise the config: {e}\n"))
    }

    /// The resolved configuration in the input format, every value spelled out: the run
    /// directory's config.toml, which `fedsim run` reads back into an equal config.
    pub fn to_input_toml(&self) -> String {
        toml::to_string_pretty(&self.to_input())
            .unwrap_or_else(|e| format!("# could not serialise the config: {e}\n"))
    }

    /// What decides a run's results, as text: the config in the input format without the
    /// settings that only change speed or bookkeeping (workers, lookahead, checkpoints).
    /// A checkpoint records its hash, so that a resume refuses another experiment.
    pub fn results_fingerprint(&self) -> String {
        let mut config = self.clone();
        (config.workers, config.lookahead) = (1, 0);
        (config.checkpoint_every, config.checkpoint_minutes) = (0, 0.0);
        crate::params::sha256_hex(config.to_input_toml().as_bytes())
    }
}
