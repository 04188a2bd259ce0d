//! The config file as written: every key optional, with the reference's default where it has
//! one; serde reads it and rejects unknown keys.

use super::*;

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
