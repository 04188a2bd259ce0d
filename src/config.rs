//! Experiment configuration: the TOML file as written ([`RawConfig`], every key optional
//! with the reference's default), `--set key=value` overrides, and validation into a typed
//! [`Config`]. Every check lives here and runs before anything is written.

use crate::data::trace_file::{read_availability_trace, read_device_trace};
use crate::sim::availability::AvailabilityModel;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::partition::PartitionKind;
use crate::data::DatasetKind;
use crate::fl::revive::Gates;
use crate::fl::{BetaSchedule, ClientWeighting, StalenessWeight};
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

// ---------------------------------------------------------------------------------------
// The file as written.

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub name: Option<String>,
    /// The master seed: both seeds below unless they are given.
    pub seed: Option<u64>,
    /// The reference's setup_random_seed: data split, partition, delay profiles.
    pub setup_seed: Option<u64>,
    /// The reference's run_random_seed: everything that runs (delay draws, selection, model
    /// initialisation, training, distillation).
    pub run_seed: Option<u64>,
    #[serde(default)]
    pub data: RawData,
    #[serde(default)]
    pub model: RawModel,
    #[serde(default)]
    pub train: RawTrain,
    #[serde(default)]
    pub algorithm: RawAlgorithm,
    #[serde(default)]
    pub kd: RawKd,
    #[serde(default)]
    pub simple_kd: RawSimpleKd,
    #[serde(default)]
    pub dfkd: RawDfkd,
    #[serde(default)]
    pub delays: RawDelays,
    /// When clients are online: `{ kind = "always" }` (the default) or
    /// `{ kind = "on_off", mean_on = .., mean_off = .. }` (virtual time units).
    pub availability: Option<AvailabilityModel>,
    /// Leaf aggregators between clients and server (the NVFlare port's edge topology).
    pub topology: Option<RawTopology>,
    #[serde(default)]
    pub eval: RawEval,
    #[serde(default)]
    pub stop: RawStop,
    #[serde(default)]
    pub run: RawRun,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawData {
    pub dataset: Option<DatasetKind>,
    pub num_clients: Option<usize>,
    pub client_data_size: Option<usize>,
    /// "dirichlet" or "iid".
    pub partition: Option<String>,
    pub alpha: Option<f64>,
    /// Shares of the training images held out as validation (unused) and KD split.
    pub val_split: Option<f64>,
    pub kd_split: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub kind: Option<ModelKind>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrain {
    pub optimizer: Option<OptimizerKind>,
    pub lr: Option<f64>,
    /// SGD's momentum (the reference's local_momentum).
    pub momentum: Option<f64>,
    pub local_iters: Option<usize>,
    pub batch_size: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlgorithm {
    /// "sync_fl" (FedAvg), "async_fl" (FedBuff) or "afl_dw".
    pub kind: Option<String>,
    /// K: client jobs in flight (`nb_of_active_jobs`; the port's device_selection_size).
    #[serde(alias = "device_selection_size")]
    pub active_jobs: Option<usize>,
    /// B: updates per aggregation (async only).
    pub buffer_size: Option<usize>,
    /// Async only: updates staler than this are dropped (their jobs never train).
    pub max_staleness: Option<u64>,
    /// sync_fl only: dispatch ceil(f K) clients a round, aggregate the first K, cancel the rest.
    pub over_commitment: Option<f64>,
    /// Async only: refill freed slots this many at a time (the NVFlare port's min_hole_to_fill).
    pub min_hole_to_fill: Option<usize>,
    /// A client may take part again after its job (the port's device_reuse; default true).
    #[serde(alias = "device_reuse")]
    pub client_reuse: Option<bool>,
    /// Versions the server keeps; updates based on an older one are refused (the port's
    /// max_model_history).
    pub max_model_history: Option<u64>,
    /// Virtual time the server waits for a job; slower jobs time out and never train (the
    /// port's update_timeout).
    pub update_timeout: Option<f64>,
    /// sync_fl only: virtual time from a round's start after which it aggregates what arrived.
    pub round_deadline: Option<f64>,
    /// What the deadline does to jobs still out: "drop" (the default; they never train) or
    /// "carry" (their updates join the next round).
    pub late_updates: Option<String>,
    pub server_lr: Option<f64>,
    pub client_weighting: Option<ClientWeighting>,
    pub staleness_weight: Option<StalenessWeight>,
    pub beta: Option<BetaSchedule>,
}

/// FedRevive's server-side distillation and gates (the KD part of the reference's
/// dfkd_settings).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKd {
    /// Teachers: the most recent client models (kd_buffer_size).
    pub buffer_size: Option<usize>,
    /// Student steps per arrival (kd_nb_of_iters).
    pub iters: Option<usize>,
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub temperature: Option<f64>,
    pub batch_per_teacher: Option<usize>,
    /// Versions before which updates are applied raw.
    pub freeze_rounds: Option<u64>,
    /// Versions before which distillation does not train.
    pub warmup_rounds: Option<u64>,
    /// Reproduce the reference's quirk: (1 - beta) delta between freeze and warm-up.
    pub quirk_down_weight_during_warmup: Option<bool>,
}

/// DD-FedRevive's distillation on the real KD split (the reference's simple_kd_settings): no
/// gates, KD on every arrival whose beta > 0.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSimpleKd {
    pub buffer_size: Option<usize>,
    pub iters: Option<usize>,
    /// The reference's learning_rate.
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub temperature: Option<f64>,
    /// The reference's batch_size (per teacher).
    pub batch_per_teacher: Option<usize>,
}

/// FedRevive's image synthesis (the generator part of the reference's dfkd_settings).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDfkd {
    pub nz: Option<i64>,
    /// Generator width (the reference's ngf, 128).
    pub ngf: Option<i64>,
    pub synthetic_batch: Option<usize>,
    pub g_steps: Option<usize>,
    pub lr_g: Option<f64>,
    pub lr_z: Option<f64>,
    pub bn_weight: Option<f64>,
    pub oh_weight: Option<f64>,
    pub adv_weight: Option<f64>,
    pub adv_after: Option<u64>,
    pub embedding_scale: Option<f64>,
    pub pool_size: Option<usize>,
}

impl RawDfkd {
    fn validate(self) -> Result<DfkdSettings, ConfigError> {
        let r = DfkdSettings::reference();
        let s = DfkdSettings {
            nz: self.nz.unwrap_or(r.nz),
            ngf: self.ngf.unwrap_or(r.ngf),
            synthetic_batch: self.synthetic_batch.unwrap_or(r.synthetic_batch),
            g_steps: self.g_steps.unwrap_or(r.g_steps),
            lr_g: self.lr_g.unwrap_or(r.lr_g),
            lr_z: self.lr_z.unwrap_or(r.lr_z),
            bn_weight: self.bn_weight.unwrap_or(r.bn_weight),
            oh_weight: self.oh_weight.unwrap_or(r.oh_weight),
            adv_weight: self.adv_weight.unwrap_or(r.adv_weight),
            adv_after: self.adv_after.unwrap_or(r.adv_after),
            embedding_scale: self.embedding_scale.unwrap_or(r.embedding_scale),
            pool_size: self.pool_size.unwrap_or(r.pool_size),
        };
        for (key, value) in [("dfkd.nz", s.nz), ("dfkd.ngf", s.ngf)] {
            if value < 1 {
                return Err(invalid(key, value, "must be at least 1"));
            }
        }
        for (key, value) in [("dfkd.synthetic_batch", s.synthetic_batch), ("dfkd.g_steps", s.g_steps)] {
            if value < 1 {
                return Err(invalid(key, value, "must be at least 1"));
            }
        }
        if s.pool_size < s.synthetic_batch {
            return Err(invalid(
                "dfkd.pool_size",
                s.pool_size,
                format!("must hold at least one synthetic batch ({})", s.synthetic_batch),
            ));
        }
        for (key, value) in [("dfkd.lr_g", s.lr_g), ("dfkd.lr_z", s.lr_z)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(key, value, "must be a positive number"));
            }
        }
        for (key, value) in [
            ("dfkd.bn_weight", s.bn_weight),
            ("dfkd.oh_weight", s.oh_weight),
            ("dfkd.adv_weight", s.adv_weight),
            ("dfkd.embedding_scale", s.embedding_scale),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(key, value, "must be >= 0"));
            }
        }
        Ok(s)
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelays {
    /// "default" or "shifted": the reference's worlds; the tables below override parts.
    pub schedule: Option<String>,
    pub download: Option<RawDelay>,
    pub train: Option<RawDelay>,
    pub upload: Option<RawDelay>,
    /// NVFlare spelling: per-client compute delay, one (mean, std) pair picked uniformly per
    /// client, then one normal draw (clamped at 0) per task.
    pub device_speed: Option<RawMeanStdLists>,
    /// NVFlare spelling: one communication delay per task, normal (clamped at 0); it takes the
    /// download's place and the upload becomes 0, as the port draws it once per task.
    pub communication_delay: Option<RawMeanStd>,
    /// A device trace (CSV or Parquet: client, speed, bandwidth): each client's delay means
    /// come from its factors instead of a mixture draw.
    pub trace: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelay {
    pub distribution: Option<Distribution>,
    /// A single mean (time units) ...
    pub mean: Option<f64>,
    /// ... or a mixture of [probability, mean] pairs (sharing `std`) ...
    pub mixture: Option<Vec<[f64; 2]>>,
    /// ... or of [probability, mean, std] triples (as the NVFlare port's device_speed has).
    pub components: Option<Vec<[f64; 3]>>,
    pub std: Option<f64>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeanStdLists {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeanStd {
    pub mean: f64,
    pub std: f64,
}

/// `[topology]`: leaf aggregators.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopology {
    pub num_leaf_nodes: Option<usize>,
    /// "blocks" (contiguous clients, the port's devices_per_leaf) or "seeded".
    pub assignment: Option<String>,
    /// Updates a leaf combines before forwarding (1: each passes through).
    pub leaf_buffer_size: Option<usize>,
    /// Instead: forward at every multiple of this virtual-time period.
    pub flush_period: Option<f64>,
    /// The leaf-to-server delay of one message, as a delay table (default: none).
    pub hop_delay: Option<RawDelay>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEval {
    /// Versions between evaluations (the port's eval_frequency).
    #[serde(alias = "eval_frequency")]
    pub interval: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStop {
    /// The port's max_model_version.
    #[serde(alias = "max_model_version")]
    pub max_versions: Option<u64>,
    pub max_virtual_time: Option<f64>,
    pub target_accuracy: Option<f64>,
    /// [[version, accuracy], ...]: stop once the version count is >= `version` and the best
    /// accuracy so far is <= `accuracy` (the reference's early_stop, checked after every event).
    pub early_stop: Option<Vec<(u64, f64)>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRun {
    pub workers: Option<usize>,
    /// "auto", "cpu" or "cuda".
    pub device: Option<String>,
    /// Extra planned tasks beyond K that the executor may hold (default K).
    pub lookahead: Option<usize>,
    /// libtorch threads of the server's distillation on CPU (default 1). Part of the
    /// experiment: CPU kernels split their sums by thread, so the count changes the floats.
    pub server_threads: Option<usize>,
    /// Tasks trained together as one stacked model: a count, or "auto" (the default): sized
    /// from free device memory on a GPU, 1 (each task alone) on CPU. Part of the experiment:
    /// stacked training differs from single training by float rounding.
    pub cohort_size: Option<RawCohortSize>,
    /// CPU kernels: "native" (the default: the best this machine has) or "avx2" (pinned in
    /// libtorch, MKL and oneDNN, so that x86-64 machines with AVX2 agree). Part of the
    /// experiment: kernels of another width round differently.
    pub cpu_kernels: Option<CpuKernels>,
    /// A checkpoint every this many versions (default 1000; 0: none by versions).
    pub checkpoint_every: Option<u64>,
    /// And every this many minutes of wall time (default 10; 0: none by time).
    pub checkpoint_minutes: Option<f64>,
}

/// Which CPU kernels a run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuKernels {
    #[default]
    Native,
    Avx2,
}

/// `run.cohort_size` as written: a number or a word.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawCohortSize {
    Count(i64),
    Word(String),
}

/// How many tasks train as one stacked model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortSize {
    /// From free device memory on a GPU ([`crate::exec::sizing`]); 1 on CPU.
    Auto,
    Fixed(usize),
}

impl Serialize for CohortSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CohortSize::Auto => serializer.serialize_str("auto"),
            CohortSize::Fixed(n) => serializer.serialize_u64(*n as u64),
        }
    }
}

/// Upper bounds that keep a typo from exhausting memory or threads; each is far above any
/// experiment fedsim is meant for.
pub const MAX_CLIENTS: usize = 1_000_000;
/// Shard indices held at once: num_clients x client_data_size (8 bytes each).
pub const MAX_SHARD_SAMPLES: usize = 100_000_000;
pub const MAX_THREADS: usize = 1024;
pub const MAX_LOOKAHEAD: usize = 1_000_000;

// ---------------------------------------------------------------------------------------
// The validated configuration.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmKind {
    SyncFl,
    AsyncFl,
    AflDw,
    FedRevive,
    DdFedRevive,
}

impl AlgorithmKind {
    const NAMES: &'static str = "sync_fl, async_fl, afl_dw, fedrevive, dd_fedrevive";

    pub fn name(self) -> &'static str {
        match self {
            AlgorithmKind::SyncFl => "sync_fl",
            AlgorithmKind::AsyncFl => "async_fl",
            AlgorithmKind::AflDw => "afl_dw",
            AlgorithmKind::FedRevive => "fedrevive",
            AlgorithmKind::DdFedRevive => "dd_fedrevive",
        }
    }

    pub fn is_sync(self) -> bool {
        self == AlgorithmKind::SyncFl
    }
}

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
    pub checkpoint_every: u64,
    pub checkpoint_minutes: f64,
}

/// Validated leaf aggregators, as the run directory's config.toml shows them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopologyConfig {
    pub num_leaf_nodes: usize,
    pub assignment: LeafAssignmentConfig,
    pub leaf_buffer_size: usize,
    pub flush_period: Option<f64>,
    pub hop_delay: DelaySpec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeafAssignmentConfig {
    Blocks,
    Seeded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LateUpdatesConfig {
    Drop,
    Carry,
}

impl TopologyConfig {
    /// The scheduler's view.
    pub fn topology(&self) -> crate::sched::Topology {
        use crate::sched::{LeafAssignment, LeafFlush};
        crate::sched::Topology {
            num_leaves: self.num_leaf_nodes,
            assignment: match self.assignment {
                LeafAssignmentConfig::Blocks => LeafAssignment::Blocks,
                LeafAssignmentConfig::Seeded => LeafAssignment::Seeded,
            },
            flush: match self.flush_period {
                Some(period) => LeafFlush::Period(crate::sim::time::SimDuration::from_units(period)),
                None => LeafFlush::Buffer(self.leaf_buffer_size),
            },
            hop: self.hop_delay.clone(),
        }
    }
}

/// Validated distillation settings: FedRevive's ([kd], with gates) or DD-FedRevive's
/// ([simple_kd], without).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KdConfig {
    pub buffer_size: usize,
    pub settings: KdSettings,
    pub gates: Option<Gates>,
}

impl Config {
    /// Reads, overrides and validates a config file: fedsim's TOML, or (a `.json` file) one of
    /// the reference simulator's configs, imported ([`crate::import`]) with a note on stderr
    /// listing the keys that only steer the reference's logging, plots or devices.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
        let origin = path.display().to_string();
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            let imported = crate::import::reference_config(&text)
                .map_err(|e| ConfigError::Parse { path: origin.clone(), message: e.to_string() })?;
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

    /// The input that validates into this config.
    pub fn to_input(&self) -> RawConfig {
        let delay = |spec: &DelaySpec| RawDelay {
            distribution: Some(spec.distribution),
            components: Some(spec.components.iter().map(|c| [c.probability, c.mean, c.std]).collect()),
            ..RawDelay::default()
        };
        let (partition, alpha) = match self.partition {
            PartitionKind::Iid => ("iid", None),
            PartitionKind::Dirichlet { alpha } => ("dirichlet", Some(alpha)),
        };
        let kd = self.kd.settings;
        let (raw_kd, raw_simple_kd) = match self.kd.gates {
            Some(gates) => (
                RawKd {
                    buffer_size: Some(self.kd.buffer_size),
                    iters: Some(kd.iters),
                    lr: Some(kd.lr),
                    weight_decay: Some(kd.weight_decay),
                    temperature: Some(kd.temperature),
                    batch_per_teacher: Some(kd.batch_per_teacher),
                    freeze_rounds: Some(gates.freeze_rounds),
                    warmup_rounds: Some(gates.warmup_rounds),
                    quirk_down_weight_during_warmup: Some(gates.quirk_down_weight_during_warmup),
                },
                RawSimpleKd::default(),
            ),
            None => (
                RawKd::default(),
                RawSimpleKd {
                    buffer_size: Some(self.kd.buffer_size),
                    iters: Some(kd.iters),
                    lr: Some(kd.lr),
                    weight_decay: Some(kd.weight_decay),
                    temperature: Some(kd.temperature),
                    batch_per_teacher: Some(kd.batch_per_teacher),
                },
            ),
        };
        let d = self.dfkd;
        RawConfig {
            name: Some(self.name.clone()),
            seed: Some(self.seed),
            setup_seed: Some(self.setup_seed),
            run_seed: Some(self.run_seed),
            data: RawData {
                dataset: Some(self.dataset),
                num_clients: Some(self.num_clients),
                client_data_size: Some(self.client_data_size),
                partition: Some(partition.to_owned()),
                alpha,
                val_split: Some(self.val_split),
                kd_split: Some(self.kd_split),
            },
            model: RawModel { kind: Some(self.model) },
            train: RawTrain {
                optimizer: Some(self.optimizer),
                lr: Some(self.lr),
                momentum: Some(self.momentum),
                local_iters: Some(self.local_iters),
                batch_size: Some(self.batch_size),
            },
            algorithm: RawAlgorithm {
                kind: Some(self.algorithm.name().to_owned()),
                active_jobs: Some(self.active_jobs),
                buffer_size: Some(self.buffer_size),
                max_staleness: self.max_staleness,
                over_commitment: Some(self.over_commitment),
                min_hole_to_fill: Some(self.min_hole_to_fill),
                client_reuse: Some(self.client_reuse),
                max_model_history: self.max_model_history,
                update_timeout: self.update_timeout,
                round_deadline: self.round_deadline,
                late_updates: self.round_deadline.map(|_| {
                    match self.late_updates {
                        LateUpdatesConfig::Drop => "drop",
                        LateUpdatesConfig::Carry => "carry",
                    }
                    .to_owned()
                }),
                server_lr: Some(self.server_lr),
                client_weighting: Some(self.client_weighting),
                staleness_weight: Some(self.staleness_weight),
                beta: Some(self.beta),
            },
            kd: raw_kd,
            simple_kd: raw_simple_kd,
            dfkd: RawDfkd {
                nz: Some(d.nz),
                ngf: Some(d.ngf),
                synthetic_batch: Some(d.synthetic_batch),
                g_steps: Some(d.g_steps),
                lr_g: Some(d.lr_g),
                lr_z: Some(d.lr_z),
                bn_weight: Some(d.bn_weight),
                oh_weight: Some(d.oh_weight),
                adv_weight: Some(d.adv_weight),
                adv_after: Some(d.adv_after),
                embedding_scale: Some(d.embedding_scale),
                pool_size: Some(d.pool_size),
            },
            delays: RawDelays {
                download: Some(delay(&self.delays.download)),
                train: Some(delay(&self.delays.train)),
                upload: Some(delay(&self.delays.upload)),
                trace: self.delays.trace.as_ref().map(|t| t.file.clone()),
                ..RawDelays::default()
            },
            availability: Some(self.availability.clone()),
            topology: self.topology.as_ref().map(|t| RawTopology {
                num_leaf_nodes: Some(t.num_leaf_nodes),
                assignment: Some(
                    match t.assignment {
                        LeafAssignmentConfig::Blocks => "blocks",
                        LeafAssignmentConfig::Seeded => "seeded",
                    }
                    .to_owned(),
                ),
                leaf_buffer_size: Some(t.leaf_buffer_size),
                flush_period: t.flush_period,
                hop_delay: Some(delay(&t.hop_delay)),
            }),
            eval: RawEval { interval: Some(self.eval_interval) },
            stop: RawStop {
                max_versions: self.max_versions,
                max_virtual_time: self.max_virtual_time,
                target_accuracy: self.target_accuracy,
                early_stop: Some(self.early_stop.clone()),
            },
            run: RawRun {
                workers: Some(self.workers),
                device: Some(self.device.clone()),
                lookahead: Some(self.lookahead),
                server_threads: Some(self.server_threads),
                cohort_size: Some(match self.cohort_size {
                    CohortSize::Auto => RawCohortSize::Word("auto".into()),
                    CohortSize::Fixed(n) => RawCohortSize::Count(n as i64),
                }),
                cpu_kernels: Some(self.cpu_kernels),
                checkpoint_every: Some(self.checkpoint_every),
                checkpoint_minutes: Some(self.checkpoint_minutes),
            },
        }
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

/// `a.b.c=value`: the value is TOML (numbers, booleans, arrays, inline tables), else a string.
fn apply_override(root: &mut toml::Value, item: &str) -> Result<(), ConfigError> {
    let (key, raw_value) = item.split_once('=').ok_or_else(|| ConfigError::BadOverride(item.to_owned()))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(ConfigError::BadOverride(item.to_owned()));
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {}", raw_value.trim()))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw_value.trim().to_owned()));
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let table = node.as_table_mut().ok_or_else(|| ConfigError::Override {
            key: key.to_owned(),
            message: format!("'{}' is not a table", parts[..i].join(".")),
        })?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        node = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    Ok(())
}

impl RawConfig {
    pub fn validate(self, default_name: &str) -> Result<Config, ConfigError> {
        let algorithm = match self.algorithm.kind.as_deref().unwrap_or("async_fl") {
            "sync_fl" | "fedavg" => AlgorithmKind::SyncFl,
            "async_fl" | "fedbuff" => AlgorithmKind::AsyncFl,
            "afl_dw" => AlgorithmKind::AflDw,
            "fedrevive" => AlgorithmKind::FedRevive,
            "dd_fedrevive" => AlgorithmKind::DdFedRevive,
            other => {
                return Err(invalid(
                    "algorithm.kind",
                    format!("\"{other}\""),
                    format!("valid kinds: {}", AlgorithmKind::NAMES),
                ))
            }
        };
        let name = self.name.unwrap_or_else(|| default_name.to_owned());
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 100
                && !n.starts_with('.')
                && n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if !name_ok(&name) {
            return Err(invalid(
                "name",
                format!("{name:?}"),
                "names the run folder: 1 to 100 letters, digits, '.', '_' or '-', not starting with '.'",
            ));
        }
        let num_clients = self.data.num_clients.unwrap_or(1000);
        if num_clients == 0 || num_clients > MAX_CLIENTS {
            return Err(invalid(
                "data.num_clients",
                num_clients,
                format!("must be between 1 and {MAX_CLIENTS}"),
            ));
        }
        let client_data_size = self.data.client_data_size.unwrap_or(350);
        if client_data_size == 0 {
            return Err(invalid("data.client_data_size", 0, "must be at least 1"));
        }
        if num_clients.saturating_mul(client_data_size) > MAX_SHARD_SAMPLES {
            return Err(invalid(
                "data.client_data_size",
                client_data_size,
                format!(
                    "with data.num_clients = {num_clients}, the shards would hold more than {MAX_SHARD_SAMPLES} samples"
                ),
            ));
        }
        let alpha = self.data.alpha.unwrap_or(0.5);
        let partition = match self.data.partition.as_deref().unwrap_or("dirichlet") {
            "dirichlet" | "non_iid_dirichlet" => {
                if !(alpha.is_finite() && alpha > 0.0) {
                    return Err(invalid("data.alpha", alpha, "must be a positive number"));
                }
                PartitionKind::Dirichlet { alpha }
            }
            "iid" => PartitionKind::Iid,
            other => {
                return Err(invalid(
                    "data.partition",
                    format!("\"{other}\""),
                    "valid partitions: dirichlet, iid",
                ))
            }
        };
        let val_split = self.data.val_split.unwrap_or(0.15);
        let kd_split = self.data.kd_split.unwrap_or(0.1);
        for (key, share) in [("data.val_split", val_split), ("data.kd_split", kd_split)] {
            if !(share.is_finite() && (0.0..1.0).contains(&share)) {
                return Err(invalid(key, share, "must be a share of the training images in [0, 1)"));
            }
        }
        if val_split + kd_split >= 1.0 {
            return Err(invalid(
                "data.kd_split",
                kd_split,
                format!("with data.val_split ({val_split}) it must leave training images: the sum must be below 1"),
            ));
        }
        let lr = self.train.lr.unwrap_or(3e-4);
        if !(lr.is_finite() && lr > 0.0) {
            return Err(invalid("train.lr", lr, "must be a positive number"));
        }
        let momentum = self.train.momentum.unwrap_or(0.9);
        if !(momentum.is_finite() && (0.0..1.0).contains(&momentum)) {
            return Err(invalid("train.momentum", momentum, "must lie in [0, 1)"));
        }
        let local_iters = self.train.local_iters.unwrap_or(25);
        let batch_size = self.train.batch_size.unwrap_or(32);
        if local_iters == 0 {
            return Err(invalid("train.local_iters", 0, "must be at least 1"));
        }
        if batch_size == 0 || batch_size > client_data_size {
            return Err(invalid(
                "train.batch_size",
                batch_size,
                format!("must be between 1 and data.client_data_size ({client_data_size}): a batch is drawn from one client's shard"),
            ));
        }
        let active_jobs = self.algorithm.active_jobs.unwrap_or(100);
        if active_jobs == 0 || active_jobs > num_clients {
            return Err(invalid(
                "algorithm.active_jobs",
                active_jobs,
                format!("must be between 1 and data.num_clients ({num_clients})"),
            ));
        }
        let buffer_size = self.algorithm.buffer_size.unwrap_or(match algorithm {
            AlgorithmKind::SyncFl => active_jobs,
            AlgorithmKind::AsyncFl => 2,
            AlgorithmKind::AflDw | AlgorithmKind::FedRevive | AlgorithmKind::DdFedRevive => 1,
        });
        if buffer_size == 0 {
            return Err(invalid("algorithm.buffer_size", 0, "must be at least 1 (updates per aggregation)"));
        }
        if algorithm.is_sync() && buffer_size != active_jobs {
            return Err(invalid(
                "algorithm.buffer_size",
                buffer_size,
                format!("sync_fl aggregates all active_jobs ({active_jobs}) updates; leave buffer_size out"),
            ));
        }
        let max_staleness = self.algorithm.max_staleness;
        if algorithm.is_sync() && max_staleness.is_some() {
            return Err(invalid(
                "algorithm.max_staleness",
                max_staleness.unwrap_or_default(),
                "applies to asynchronous algorithms; sync_fl rounds have staleness 0",
            ));
        }
        let over_commitment = self.algorithm.over_commitment.unwrap_or(1.0);
        if !algorithm.is_sync() && over_commitment != 1.0 {
            return Err(invalid(
                "algorithm.over_commitment",
                over_commitment,
                "applies to sync_fl rounds; asynchronous algorithms keep active_jobs in flight",
            ));
        }
        if !(1.0..=1000.0).contains(&over_commitment) {
            return Err(invalid("algorithm.over_commitment", over_commitment, "must lie in [1, 1000]"));
        }
        let per_round = crate::sched::sync::dispatched_per_round(active_jobs, over_commitment);
        if per_round > num_clients {
            return Err(invalid(
                "algorithm.over_commitment",
                over_commitment,
                format!(
                    "dispatches {per_round} clients a round (ceil(over_commitment x active_jobs)), more than data.num_clients ({num_clients})"
                ),
            ));
        }
        let min_hole_to_fill = self.algorithm.min_hole_to_fill.unwrap_or(1);
        if min_hole_to_fill == 0 || min_hole_to_fill > active_jobs {
            return Err(invalid(
                "algorithm.min_hole_to_fill",
                min_hole_to_fill,
                format!("must be between 1 and algorithm.active_jobs ({active_jobs})"),
            ));
        }
        if algorithm.is_sync() && min_hole_to_fill != 1 {
            return Err(invalid(
                "algorithm.min_hole_to_fill",
                min_hole_to_fill,
                "applies to asynchronous algorithms; sync_fl refills whole rounds",
            ));
        }
        let max_model_history = self.algorithm.max_model_history;
        if max_model_history == Some(0) {
            return Err(invalid(
                "algorithm.max_model_history",
                0,
                "must be at least 1 (the current version)",
            ));
        }
        let update_timeout = self
            .algorithm
            .update_timeout
            .map(|t| positive_time("algorithm.update_timeout", t))
            .transpose()?;
        let round_deadline = self
            .algorithm
            .round_deadline
            .map(|t| positive_time("algorithm.round_deadline", t))
            .transpose()?;
        if !algorithm.is_sync() && round_deadline.is_some() {
            return Err(invalid(
                "algorithm.round_deadline",
                round_deadline.unwrap_or_default(),
                "applies to sync_fl rounds; asynchronous algorithms have algorithm.update_timeout",
            ));
        }
        let late_updates = match self.algorithm.late_updates.as_deref() {
            None | Some("drop") => LateUpdatesConfig::Drop,
            Some("carry") => LateUpdatesConfig::Carry,
            Some(other) => {
                return Err(invalid(
                    "algorithm.late_updates",
                    format!("\"{other}\""),
                    "valid values: drop, carry",
                ))
            }
        };
        if late_updates == LateUpdatesConfig::Carry && round_deadline.is_none() {
            return Err(invalid(
                "algorithm.late_updates",
                "\"carry\"",
                "says what a round deadline does to late updates; set algorithm.round_deadline too",
            ));
        }
        let topology = self.topology.map(|t| t.validate(num_clients)).transpose()?;
        let server_lr = self.algorithm.server_lr.unwrap_or(match algorithm {
            AlgorithmKind::SyncFl => 1.4,
            AlgorithmKind::AsyncFl => 0.05,
            AlgorithmKind::AflDw => 0.1,
            AlgorithmKind::FedRevive => 0.1,
            AlgorithmKind::DdFedRevive => 0.2,
        });
        if !server_lr.is_finite() || server_lr == 0.0 || server_lr < -1.0 {
            return Err(invalid(
                "algorithm.server_lr",
                server_lr,
                "must be a non-zero number; negative values in [-1, 0) interpolate towards the client models",
            ));
        }
        let staleness_weight = self.algorithm.staleness_weight.unwrap_or(StalenessWeight::Constant);
        staleness_weight
            .validate()
            .map_err(|m| invalid("algorithm.staleness_weight", format!("{staleness_weight:?}"), m))?;
        let beta = self.algorithm.beta.unwrap_or(match algorithm {
            AlgorithmKind::DdFedRevive => BetaSchedule::Constant { beta: 0.5 },
            _ => BetaSchedule::Cosine { factor: 75.0 },
        });
        beta.validate().map_err(|m| invalid("algorithm.beta", format!("{beta:?}"), m))?;
        let beta = beta.resolve(active_jobs, buffer_size);
        let kd = match algorithm {
            AlgorithmKind::DdFedRevive => {
                if self.kd != RawKd::default() {
                    return Err(invalid(
                        "kd",
                        "a [kd] table",
                        "[kd] configures FedRevive's data-free distillation; DD-FedRevive reads [simple_kd] (buffer_size, iters, lr, weight_decay, temperature, batch_per_teacher) and has no gates",
                    ));
                }
                self.simple_kd.validate()?
            }
            _ => {
                if self.simple_kd != RawSimpleKd::default() {
                    return Err(invalid(
                        "simple_kd",
                        "a [simple_kd] table",
                        format!("[simple_kd] configures dd_fedrevive only; {} reads [kd]", algorithm.name()),
                    ));
                }
                self.kd.validate()?
            }
        };
        let dfkd = self.dfkd.validate()?;
        let delays = self.delays.resolve(num_clients)?;
        let availability = match self.availability.unwrap_or_default() {
            AvailabilityModel::Trace { file, .. } => {
                let windows = read_availability_trace(&file, num_clients)
                    .map_err(|message| invalid("availability.file", &file, message))?;
                AvailabilityModel::Trace { file, windows: std::sync::Arc::new(windows) }
            }
            model => model,
        };
        match availability {
            AvailabilityModel::Always | AvailabilityModel::Trace { .. } => {}
            AvailabilityModel::OnOff { mean_on, mean_off } => {
                positive_time("availability.mean_on", mean_on)?;
                positive_time("availability.mean_off", mean_off)?;
            }
            AvailabilityModel::Daily { period, online_fraction } => {
                positive_time("availability.period", period)?;
                if !(online_fraction > 0.0 && online_fraction < 1.0) {
                    return Err(invalid(
                        "availability.online_fraction",
                        online_fraction,
                        "must lie strictly between 0 and 1 (use kind = \"always\" for 1)",
                    ));
                }
            }
        }
        let zero_delays = [&delays.download, &delays.train, &delays.upload].iter().all(|spec| {
            // Draws around a zero mean are zero, but for a normal with a spread.
            spec.components
                .iter()
                .all(|c| c.mean == 0.0 && (spec.distribution != Distribution::Normal || c.std == 0.0))
        });
        if zero_delays && self.stop.max_versions.is_none() {
            return Err(invalid(
                "stop.max_versions",
                "(not set)",
                "every delay is zero, so virtual time never advances and stop.max_virtual_time never comes; set stop.max_versions",
            ));
        }
        let eval_interval = self.eval.interval.unwrap_or(if algorithm.is_sync() { 1 } else { 10 });
        if eval_interval == 0 {
            return Err(invalid("eval.interval", 0, "must be at least 1 (versions between evaluations)"));
        }
        let stop = self.stop;
        if let Some(t) = stop.max_virtual_time {
            if !(t.is_finite() && t > 0.0) {
                return Err(invalid("stop.max_virtual_time", t, "must be a positive number of time units"));
            }
        }
        if stop.max_versions == Some(0) {
            return Err(invalid("stop.max_versions", 0, "must be at least 1"));
        }
        if stop.max_versions.is_none() && stop.max_virtual_time.is_none() {
            return Err(invalid(
                "stop",
                "{}",
                "set stop.max_versions or stop.max_virtual_time (or both), so that the run ends",
            ));
        }
        if let Some(a) = stop.target_accuracy {
            if !(0.0..=1.0).contains(&a) {
                return Err(invalid("stop.target_accuracy", a, "must lie in [0, 1]"));
            }
        }
        let early_stop = stop.early_stop.unwrap_or_default();
        if let Some((v, a)) = early_stop.iter().find(|(_, a)| !(0.0..=1.0).contains(a)) {
            return Err(invalid(
                "stop.early_stop",
                format!("[{v}, {a}]"),
                "minimum accuracies must lie in [0, 1]",
            ));
        }
        let workers = self.run.workers.unwrap_or(1);
        if workers == 0 || workers > MAX_THREADS {
            return Err(invalid(
                "run.workers",
                workers,
                format!("must be between 1 and {MAX_THREADS} (threads)"),
            ));
        }
        let server_threads = self.run.server_threads.unwrap_or(1);
        if server_threads == 0 || server_threads > MAX_THREADS {
            return Err(invalid(
                "run.server_threads",
                server_threads,
                format!("must be between 1 and {MAX_THREADS} (libtorch threads of the server step)"),
            ));
        }
        let lookahead = self.run.lookahead.unwrap_or(active_jobs);
        if lookahead > MAX_LOOKAHEAD {
            return Err(invalid(
                "run.lookahead",
                lookahead,
                format!("must be at most {MAX_LOOKAHEAD} planned tasks"),
            ));
        }
        let checkpoint_every = self.run.checkpoint_every.unwrap_or(1000);
        let checkpoint_minutes = self.run.checkpoint_minutes.unwrap_or(10.0);
        if !(checkpoint_minutes.is_finite() && checkpoint_minutes >= 0.0) {
            return Err(invalid(
                "run.checkpoint_minutes",
                checkpoint_minutes,
                "must be a finite number of minutes >= 0 (0: no checkpoints by wall time)",
            ));
        }
        let cohort_size = match self.run.cohort_size {
            None => CohortSize::Auto,
            Some(RawCohortSize::Word(w)) if w == "auto" => CohortSize::Auto,
            Some(RawCohortSize::Count(n)) if n >= 1 => CohortSize::Fixed(n as usize),
            Some(other) => {
                let shown = match other {
                    RawCohortSize::Count(n) => n.to_string(),
                    RawCohortSize::Word(w) => format!("\"{w}\""),
                };
                return Err(invalid(
                    "run.cohort_size",
                    shown,
                    "must be a positive number of tasks trained as one stacked model, or \"auto\"",
                ));
            }
        };
        let device = self.run.device.unwrap_or_else(|| "auto".to_owned());
        device
            .parse::<crate::runtime::DeviceChoice>()
            .map_err(|e| invalid("run.device", format!("\"{device}\""), e.to_string()))?;
        let seed = self.seed.unwrap_or(10);
        Ok(Config {
            name,
            seed,
            setup_seed: self.setup_seed.unwrap_or(seed),
            run_seed: self.run_seed.unwrap_or(seed),
            dataset: self.data.dataset.unwrap_or(DatasetKind::Cifar10),
            num_clients,
            client_data_size,
            partition,
            val_split,
            kd_split,
            model: self.model.kind.unwrap_or(ModelKind::ConvNet),
            optimizer: self.train.optimizer.unwrap_or(OptimizerKind::Adam),
            lr,
            momentum,
            local_iters,
            batch_size,
            algorithm,
            active_jobs,
            buffer_size,
            max_staleness,
            over_commitment,
            min_hole_to_fill,
            client_reuse: self.algorithm.client_reuse.unwrap_or(true),
            max_model_history,
            update_timeout,
            round_deadline,
            late_updates,
            server_lr,
            client_weighting: self.algorithm.client_weighting.unwrap_or(ClientWeighting::Equal),
            staleness_weight,
            beta,
            kd,
            dfkd,
            delays,
            availability,
            topology,
            eval_interval,
            max_versions: stop.max_versions,
            max_virtual_time: stop.max_virtual_time,
            target_accuracy: stop.target_accuracy,
            early_stop,
            workers,
            device,
            lookahead,
            server_threads,
            cohort_size,
            cpu_kernels: self.run.cpu_kernels.unwrap_or_default(),
            checkpoint_every,
            checkpoint_minutes,
        })
    }
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

impl RawKd {
    /// FedRevive's values: lr 1e-4, weight decay 1e-5, T 1, gates at 50 and 100 versions.
    fn validate(self) -> Result<KdConfig, ConfigError> {
        let freeze_rounds = self.freeze_rounds.unwrap_or(50);
        let warmup_rounds = self.warmup_rounds.unwrap_or(100);
        if warmup_rounds < freeze_rounds {
            return Err(invalid(
                "kd.warmup_rounds",
                warmup_rounds,
                format!("must be >= kd.freeze_rounds ({freeze_rounds})"),
            ));
        }
        Ok(KdConfig {
            buffer_size: at_least_one("kd.buffer_size", self.buffer_size.unwrap_or(8))?,
            settings: KdSettings {
                iters: at_least_one("kd.iters", self.iters.unwrap_or(10))?,
                lr: positive("kd.lr", self.lr.unwrap_or(1e-4))?,
                weight_decay: non_negative("kd.weight_decay", self.weight_decay.unwrap_or(1e-5))?,
                temperature: positive("kd.temperature", self.temperature.unwrap_or(1.0))?,
                batch_per_teacher: at_least_one(
                    "kd.batch_per_teacher",
                    self.batch_per_teacher.unwrap_or(32),
                )?,
            },
            gates: Some(Gates {
                freeze_rounds,
                warmup_rounds,
                quirk_down_weight_during_warmup: self.quirk_down_weight_during_warmup.unwrap_or(false),
            }),
        })
    }
}

impl RawSimpleKd {
    /// DD-FedRevive's values (simple_kd_settings): lr 3e-4, no weight decay, T 2, no gates.
    fn validate(self) -> Result<KdConfig, ConfigError> {
        Ok(KdConfig {
            buffer_size: at_least_one("simple_kd.buffer_size", self.buffer_size.unwrap_or(8))?,
            settings: KdSettings {
                iters: at_least_one("simple_kd.iters", self.iters.unwrap_or(10))?,
                lr: positive("simple_kd.lr", self.lr.unwrap_or(3e-4))?,
                weight_decay: non_negative("simple_kd.weight_decay", self.weight_decay.unwrap_or(0.0))?,
                temperature: positive("simple_kd.temperature", self.temperature.unwrap_or(2.0))?,
                batch_per_teacher: at_least_one(
                    "simple_kd.batch_per_teacher",
                    self.batch_per_teacher.unwrap_or(32),
                )?,
            },
            gates: None,
        })
    }
}

impl RawTopology {
    fn validate(self, num_clients: usize) -> Result<TopologyConfig, ConfigError> {
        let num_leaf_nodes = self.num_leaf_nodes.unwrap_or(1);
        if num_leaf_nodes == 0 || num_leaf_nodes > num_clients {
            return Err(invalid(
                "topology.num_leaf_nodes",
                num_leaf_nodes,
                format!("must be between 1 and data.num_clients ({num_clients})"),
            ));
        }
        let assignment = match self.assignment.as_deref().unwrap_or("blocks") {
            "blocks" => LeafAssignmentConfig::Blocks,
            "seeded" => LeafAssignmentConfig::Seeded,
            other => {
                return Err(invalid(
                    "topology.assignment",
                    format!("\"{other}\""),
                    "valid values: blocks, seeded",
                ))
            }
        };
        let leaf_buffer_size = at_least_one("topology.leaf_buffer_size", self.leaf_buffer_size.unwrap_or(1))?;
        let flush_period =
            self.flush_period.map(|p| positive_time("topology.flush_period", p)).transpose()?;
        if flush_period.is_some() && leaf_buffer_size != 1 {
            return Err(invalid(
                "topology.flush_period",
                flush_period.unwrap_or_default(),
                "a leaf forwards either every leaf_buffer_size updates or every flush_period, not both",
            ));
        }
        let hop_delay = match self.hop_delay {
            Some(raw) => raw.resolve("topology.hop_delay", &DelaySpec::constant(0.0))?,
            None => DelaySpec::constant(0.0),
        };
        check_spec("topology.hop_delay", &hop_delay)?;
        Ok(TopologyConfig { num_leaf_nodes, assignment, leaf_buffer_size, flush_period, hop_delay })
    }
}

impl RawDelays {
    fn resolve(self, num_clients: usize) -> Result<DelayModel, ConfigError> {
        let mut model = match self.schedule.as_deref().unwrap_or("default") {
            "default" => DelayModel::reference_default(),
            "shifted" => DelayModel::reference_shifted(),
            other => {
                return Err(invalid(
                    "delays.schedule",
                    format!("\"{other}\""),
                    "valid schedules: default, shifted",
                ))
            }
        };
        if let Some(speed) = self.device_speed {
            if speed.mean.is_empty() || speed.mean.len() != speed.std.len() {
                return Err(invalid(
                    "delays.device_speed",
                    format!("mean {:?}, std {:?}", speed.mean, speed.std),
                    "mean and std must be non-empty lists of equal length",
                ));
            }
            let p = 1.0 / speed.mean.len() as f64;
            let components = speed
                .mean
                .iter()
                .zip(&speed.std)
                .map(|(&mean, &std)| Component { probability: p, mean, std })
                .collect();
            model.train = DelaySpec { distribution: Distribution::Normal, components };
        }
        if let Some(RawMeanStd { mean, std }) = self.communication_delay {
            model.download = DelaySpec {
                distribution: Distribution::Normal,
                components: vec![Component { probability: 1.0, mean, std }],
            };
            model.upload = DelaySpec::constant(0.0);
        }
        for (key, raw, slot) in [
            ("delays.download", self.download, &mut model.download),
            ("delays.train", self.train, &mut model.train),
            ("delays.upload", self.upload, &mut model.upload),
        ] {
            if let Some(raw) = raw {
                *slot = raw.resolve(key, slot)?;
            }
        }
        for (key, spec) in [
            ("delays.download", &model.download),
            ("delays.train", &model.train),
            ("delays.upload", &model.upload),
        ] {
            check_spec(key, spec)?;
        }
        if let Some(file) = self.trace {
            let factors = read_device_trace(&file, num_clients)
                .map_err(|message| invalid("delays.trace", &file, message))?;
            model.trace =
                Some(crate::sim::delay::DeviceTrace { file, factors: std::sync::Arc::new(factors) });
        }
        Ok(model)
    }
}

impl RawDelay {
    /// Overrides the parts it names of `base`.
    fn resolve(self, key: &str, base: &DelaySpec) -> Result<DelaySpec, ConfigError> {
        let distribution = self.distribution.unwrap_or(base.distribution);
        let base_std = base.components.first().map_or(0.0, |c| c.std);
        let std = self.std.unwrap_or(base_std);
        let components = match (self.mean, self.mixture, self.components) {
            (Some(mean), None, None) => vec![Component { probability: 1.0, mean, std }],
            (None, Some(mixture), None) => {
                mixture.into_iter().map(|[probability, mean]| Component { probability, mean, std }).collect()
            }
            (None, None, Some(components)) => {
                if self.std.is_some() {
                    return Err(invalid(
                        &format!("{key}.std"),
                        std,
                        "components give each its own std ([probability, mean, std]); leave std out",
                    ));
                }
                components
                    .into_iter()
                    .map(|[probability, mean, std]| Component { probability, mean, std })
                    .collect()
            }
            (None, None, None) => base.components.iter().map(|c| Component { std, ..*c }).collect(),
            _ => {
                return Err(invalid(
                    &format!("{key}.mean"),
                    "more than one of mean, mixture, components",
                    "give one of mean, mixture or components",
                ))
            }
        };
        Ok(DelaySpec { distribution, components })
    }
}

fn check_spec(key: &str, spec: &DelaySpec) -> Result<(), ConfigError> {
    if spec.components.is_empty() {
        return Err(invalid(&format!("{key}.mixture"), "[]", "needs at least one [probability, mean] pair"));
    }
    for c in &spec.components {
        if !(c.mean.is_finite() && c.mean >= 0.0) {
            return Err(invalid(
                &format!("{key}.mean"),
                c.mean,
                "delay means must be finite and >= 0 (time units)",
            ));
        }
        if !(c.std.is_finite() && c.std >= 0.0) {
            return Err(invalid(&format!("{key}.std"), c.std, "must be finite and >= 0"));
        }
        if !(c.probability.is_finite() && c.probability >= 0.0) {
            return Err(invalid(&format!("{key}.mixture"), c.probability, "probabilities must be >= 0"));
        }
        if spec.distribution == Distribution::LogNormal && c.mean == 0.0 && c.std > 0.0 {
            return Err(invalid(&format!("{key}.mean"), 0, "a lognormal delay needs a positive mean"));
        }
    }
    let total: f64 = spec.components.iter().map(|c| c.probability).sum();
    if (total - 1.0).abs() > 1e-6 {
        return Err(invalid(
            &format!("{key}.mixture"),
            format!("probabilities summing to {total}"),
            "mixture probabilities must sum to 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml", "test", &[])
    }

    const MINIMAL: &str = "[stop]\nmax_versions = 10\n";

    #[test]
    fn a_bad_availability_trace_is_named_with_its_row_and_column() {
        let path = std::env::temp_dir().join(format!("fedsim-config-trace-{}.csv", std::process::id()));
        std::fs::write(&path, "client,start,end\n0,0,1\n3,x,2\n").unwrap();
        let text = format!(
            "[data]\nnum_clients = 4\n[algorithm]\nactive_jobs = 2\n[availability]\nkind = \"trace\"\nfile = \"{}\"\n[stop]\nmax_versions = 1",
            path.display()
        );
        let message = load(&text).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert!(
            message.starts_with("availability.file = ") && message.contains("row 3, column start: 'x'"),
            "{message}"
        );
        let missing =
            load(&text.replace(&path.display().to_string(), "/no/such.csv")).unwrap_err().to_string();
        assert!(missing.contains("availability.file = /no/such.csv"), "{missing}");
    }

    #[test]
    fn a_device_trace_replaces_the_mixture_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("fedsim-device-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("devices.csv");
        let text = format!(
            "[data]\nnum_clients = 3\n[algorithm]\nactive_jobs = 2\n[delays]\ntrace = \"{}\"\n[stop]\nmax_versions = 1",
            path.display()
        );
        std::fs::write(&path, "client,speed,bandwidth\n0,1,1\n1,2,0.5\n2,0.5,4\n").unwrap();
        let delays = load(&text).unwrap().delays;
        let clients = delays.clients(1, 1, 3);
        let train = DelayModel::reference_default().train.expected();
        assert!((clients[1].component(crate::sim::delay::DelayKind::Train).mean - train / 2.0).abs() < 1e-12);
        assert!(
            (clients[2].component(crate::sim::delay::DelayKind::Download).mean - 0.1 / 4.0).abs() < 1e-12
        );
        for (contents, expected) in [
            (
                "client,speed,bandwidth\n0,1,1\n1,0,1\n2,1,1\n",
                "row 3, column speed: '0' is not a positive factor",
            ),
            ("client,speed,bandwidth\n0,1,1\n2,1,1\n", "1 of 3 clients have no row (first: 1)"),
            (
                "client,speed,bandwidth\n0,1,1\n1,1,1\n1,1,1\n2,1,1\n",
                "row 4, column client: client 1 has a row already",
            ),
            ("client,speed\n0,1\n", "row 1: the header must be client,speed,bandwidth"),
        ] {
            std::fs::write(&path, contents).unwrap();
            let message = load(&text).unwrap_err().to_string();
            assert!(message.starts_with("delays.trace = ") && message.contains(expected), "{message}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults_are_the_reference_values() {
        let c = load(MINIMAL).unwrap();
        assert_eq!((c.num_clients, c.client_data_size, c.active_jobs, c.buffer_size), (1000, 350, 100, 2));
        assert_eq!((c.local_iters, c.batch_size, c.lr, c.seed), (25, 32, 3e-4, 10));
        assert_eq!(c.partition, PartitionKind::Dirichlet { alpha: 0.5 });
        assert_eq!(c.delays, DelayModel::reference_default());
        assert_eq!(c.algorithm, AlgorithmKind::AsyncFl);
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_allowed() {
        let cases = [
            ("[data]\nnum_clent = 3\n[stop]\nmax_versions = 1", "unknown field `num_clent`"),
            (
                "[algorithm]\nkind = \"sync_fl\"\nmax_staleness = 3\n[stop]\nmax_versions = 1",
                "algorithm.max_staleness = 3: applies to asynchronous algorithms",
            ),
            (
                "[algorithm]\nmin_hole_to_fill = 0\n[stop]\nmax_versions = 1",
                "algorithm.min_hole_to_fill = 0: must be between 1 and algorithm.active_jobs (100)",
            ),
            (
                "[availability]\nkind = \"on_off\"\nmean_on = 0.0\nmean_off = 1.0\n[stop]\nmax_versions = 1",
                "availability.mean_on = 0: must be a positive, finite virtual time",
            ),
            (
                "[availability]\nkind = \"weekly\"\n[stop]\nmax_versions = 1",
                "unknown variant `weekly`",
            ),
            (
                "[availability]\nkind = \"daily\"\nperiod = 24.0\nonline_fraction = 1.5\n[stop]\nmax_versions = 1",
                "availability.online_fraction = 1.5: must lie strictly between 0 and 1",
            ),
            (
                "[algorithm]\nupdate_timeout = -1.0\n[stop]\nmax_versions = 1",
                "algorithm.update_timeout = -1: must be a positive, finite virtual time",
            ),
            (
                "[algorithm]\nmax_model_history = 0\n[stop]\nmax_versions = 1",
                "algorithm.max_model_history = 0: must be at least 1",
            ),
            (
                "[algorithm]\nover_commitment = 1.5\n[stop]\nmax_versions = 1",
                "algorithm.over_commitment = 1.5: applies to sync_fl rounds",
            ),
            (
                "[algorithm]\nkind = \"sync_fl\"\nover_commitment = 0.5\n[stop]\nmax_versions = 1",
                "algorithm.over_commitment = 0.5: must lie in [1, 1000]",
            ),
            (
                "[algorithm]\nkind = \"sync_fl\"\nover_commitment = nan\n[stop]\nmax_versions = 1",
                "algorithm.over_commitment = NaN: ",
            ),
            (
                "[data]\nnum_clients = 120\n[algorithm]\nkind = \"sync_fl\"\nover_commitment = 1.3\n[stop]\nmax_versions = 1",
                "dispatches 130 clients a round (ceil(over_commitment x active_jobs)), more than data.num_clients (120)",
            ),
            (
                "[algorithm]\nkind = \"fedprox\"\n[stop]\nmax_versions = 1",
                "algorithm.kind = \"fedprox\": valid kinds: sync_fl, async_fl, afl_dw",
            ),
            (
                "[delays.train]\nmean = -1.0\n[stop]\nmax_versions = 1",
                "delays.train.mean = -1: delay means must be finite and >= 0",
            ),
            (
                "[delays.upload]\nmixture = [[0.5, 0.1], [0.4, 0.2]]\n[stop]\nmax_versions = 1",
                "mixture probabilities must sum to 1",
            ),
            (
                "[algorithm]\nactive_jobs = 2000\n[stop]\nmax_versions = 1",
                "algorithm.active_jobs = 2000: must be between 1 and data.num_clients (1000)",
            ),
            (
                "[algorithm]\nbuffer_size = 0\n[stop]\nmax_versions = 1",
                "algorithm.buffer_size = 0: must be at least 1",
            ),
            ("[delays.train]\ndistribution = \"gamma\"\n[stop]\nmax_versions = 1", "unknown variant `gamma`"),
            ("seed = 1", "set stop.max_versions or stop.max_virtual_time"),
            (
                "[model]\nkind = \"vgg\"\n[stop]\nmax_versions = 1",
                "unknown variant `vgg`, expected `convnet` or `resnet18`",
            ),
            (
                "[data]\nkd_split = 0.9\n[stop]\nmax_versions = 1",
                "data.kd_split = 0.9: with data.val_split (0.15) it must leave training images",
            ),
            ("[data]\nval_split = -0.1\n[stop]\nmax_versions = 1", "data.val_split = -0.1: must be a share"),
            ("[train]\nmomentum = 1.5\n[stop]\nmax_versions = 1", "train.momentum = 1.5: must lie in [0, 1)"),
            (
                "[run]\nserver_threads = 0\n[stop]\nmax_versions = 1",
                "run.server_threads = 0: must be between 1 and 1024",
            ),
            ("[run]\ncohort_size = 0\n[stop]\nmax_versions = 1", "run.cohort_size = 0: must be a positive number"),
            (
                "[run]\ncohort_size = \"big\"\n[stop]\nmax_versions = 1",
                "run.cohort_size = \"big\": must be a positive number of tasks trained as one stacked model, or \"auto\"",
            ),
            (
                "[algorithm]\nbeta = { kind = \"linear\", factor = 0.0 }\n[stop]\nmax_versions = 1",
                "factor (the reference's adaptive_beta_factor) must be a positive number",
            ),
            (
                "[topology]\nnum_leaf_nodes = 0\n[stop]\nmax_versions = 1",
                "topology.num_leaf_nodes = 0: must be between 1 and data.num_clients (1000)",
            ),
            (
                "[topology]\nnum_leaf_nodes = 4\nassignment = \"random\"\n[stop]\nmax_versions = 1",
                "topology.assignment = \"random\": valid values: blocks, seeded",
            ),
            (
                "[topology]\nleaf_buffer_size = 4\nflush_period = 0.5\n[stop]\nmax_versions = 1",
                "topology.flush_period = 0.5: a leaf forwards either every leaf_buffer_size updates or every flush_period",
            ),
            (
                "[topology]\nflush_period = 0.0\n[stop]\nmax_versions = 1",
                "topology.flush_period = 0: must be a positive, finite virtual time",
            ),
            (
                "[topology]\nhop_delay = { mean = -0.1 }\n[stop]\nmax_versions = 1",
                "topology.hop_delay.mean = -0.1: delay means must be finite and >= 0",
            ),
            (
                "[algorithm]\nround_deadline = 2.0\n[stop]\nmax_versions = 1",
                "algorithm.round_deadline = 2: applies to sync_fl rounds",
            ),
            (
                "[algorithm]\nkind = \"sync_fl\"\nlate_updates = \"carry\"\n[stop]\nmax_versions = 1",
                "algorithm.late_updates = \"carry\": says what a round deadline does to late updates",
            ),
            (
                "[algorithm]\nkind = \"sync_fl\"\nround_deadline = 2.0\nlate_updates = \"keep\"\n[stop]\nmax_versions = 1",
                "algorithm.late_updates = \"keep\": valid values: drop, carry",
            ),
        ];
        for (text, expected) in cases {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(expected), "for {text:?}: {err}");
        }
    }

    #[test]
    fn the_ports_key_names_are_accepted_and_a_topology_resolves() {
        let c = load(
            "[algorithm]\ndevice_selection_size = 200\ndevice_reuse = false\n[eval]\neval_frequency = 5\n[stop]\nmax_model_version = 40\n[topology]\nnum_leaf_nodes = 20\nhop_delay = { distribution = \"normal\", mean = 0.05, std = 0.01 }",
        )
        .unwrap();
        assert_eq!(
            (c.active_jobs, c.client_reuse, c.eval_interval, c.max_versions),
            (200, false, 5, Some(40))
        );
        let topology = c.topology.as_ref().unwrap().topology();
        assert_eq!(topology.num_leaves, 20);
        assert_eq!(topology.flush, crate::sched::LeafFlush::Buffer(1));
        assert_eq!(topology.hop.distribution, Distribution::Normal);
        assert_eq!((topology.hop.components[0].mean, topology.hop.components[0].std), (0.05, 0.01));
    }

    #[test]
    fn setup_and_run_seeds_default_to_the_seed_and_can_be_set_apart() {
        let c = load("seed = 7\n[stop]\nmax_versions = 1").unwrap();
        assert_eq!((c.seed, c.setup_seed, c.run_seed), (7, 7, 7));
        let c = load("seed = 7\nrun_seed = 9\n[stop]\nmax_versions = 1").unwrap();
        assert_eq!((c.setup_seed, c.run_seed), (7, 9));
        assert_eq!((c.val_split, c.kd_split, c.momentum, c.server_threads), (0.15, 0.1, 0.9, 1));
        assert_eq!(c.cohort_size, CohortSize::Auto, "auto by default: 1 on CPU, sized on a GPU");
        let fixed = load("[run]\ncohort_size = 8\n[stop]\nmax_versions = 1").unwrap();
        assert_eq!(fixed.cohort_size, CohortSize::Fixed(8));
        assert!(
            fixed.to_toml().contains("cohort_size = 8") && c.to_toml().contains("cohort_size = \"auto\"")
        );
        // Stepwise beta is resolved on K / B: factor 0.5, K 100, B 2 -> base 25.
        let c = load("[algorithm]\nbeta = { kind = \"stepwise\", factor = 0.5 }\n[stop]\nmax_versions = 1")
            .unwrap();
        assert_eq!(c.beta, BetaSchedule::Stepwise { factor: 0.5, base: 25.0 });
    }

    #[test]
    fn overrides_set_nested_keys_with_toml_values() {
        let overrides = [
            "algorithm.buffer_size=1".to_owned(),
            "data.partition=iid".to_owned(),
            "stop.max_virtual_time=5.5".to_owned(),
        ];
        let c = Config::from_toml(MINIMAL, "t", "t", &overrides).unwrap();
        assert_eq!(c.buffer_size, 1);
        assert_eq!(c.partition, PartitionKind::Iid);
        assert_eq!(c.max_virtual_time, Some(5.5));
        let err = Config::from_toml(MINIMAL, "t", "t", &["nonsense".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("expected key=value"), "{err}");
        let err = Config::from_toml(MINIMAL, "t", "t", &["algorithm.bufer_size=1".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `bufer_size`"), "{err}");
    }

    #[test]
    fn nvflare_spelling_becomes_normal_delays() {
        let text = "[delays]\ndevice_speed = { mean = [1.0, 2.0], std = [0.1, 0.2] }\ncommunication_delay = { mean = 0.05, std = 0.01 }\n[stop]\nmax_versions = 1";
        let c = load(text).unwrap();
        assert_eq!(c.delays.train.distribution, Distribution::Normal);
        assert_eq!(c.delays.train.components.len(), 2);
        assert_eq!(c.delays.train.components[1], Component { probability: 0.5, mean: 2.0, std: 0.2 });
        // One communication draw per task: the download carries it, the upload is 0.
        assert_eq!(c.delays.download.components[0].mean, 0.05);
        assert_eq!(c.delays.download.distribution, Distribution::Normal);
        assert_eq!(c.delays.upload, DelaySpec::constant(0.0));
    }

    #[test]
    fn a_delay_table_overrides_only_what_it_names() {
        let c = load("[delays.upload]\nstd = 0.05\n[stop]\nmax_versions = 1").unwrap();
        assert_eq!(c.delays.upload.distribution, Distribution::Uniform);
        assert!(c.delays.upload.components.iter().all(|c| c.std == 0.05));
        assert_eq!(c.delays.upload.components[1].mean, 0.25);
    }
}
