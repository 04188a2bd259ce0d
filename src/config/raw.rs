//! The config file as written: its top-level keys and one table per section, each defined
//! with its checks in `sections/`. serde reads it and rejects unknown keys.

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
