//! `[kd]`, `[simple_kd]` and `[dfkd]`: the server's distillation. An algorithm reads [kd] (with
//! FedRevive's gates) or [simple_kd] (DD-FedRevive's, without), as its row of [`ALGORITHMS`]
//! says, and refuses the other; [dfkd] sets FedRevive's image synthesis.

use crate::config::*;

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

/// Validated distillation settings: FedRevive's ([kd], with gates) or DD-FedRevive's
/// ([simple_kd], without).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KdConfig {
    pub buffer_size: usize,
    pub settings: KdSettings,
    pub gates: Option<Gates>,
}

/// The distillation table `algorithm` reads, validated; the other table must be left out.
pub fn validate_kd(
    kd: RawKd,
    simple_kd: RawSimpleKd,
    algorithm: AlgorithmKind,
) -> Result<KdConfig, ConfigError> {
    match algorithm.row().distillation {
        Distillation::RealData => {
            if kd != RawKd::default() {
                return Err(invalid(
                    "kd",
                    "a [kd] table",
                    "[kd] configures FedRevive's data-free distillation; DD-FedRevive reads [simple_kd] (buffer_size, iters, lr, weight_decay, temperature, batch_per_teacher) and has no gates",
                ));
            }
            simple_kd.validate()
        }
        Distillation::DataFree | Distillation::None => {
            if simple_kd != RawSimpleKd::default() {
                return Err(invalid(
                    "simple_kd",
                    "a [simple_kd] table",
                    format!("[simple_kd] configures dd_fedrevive only; {} reads [kd]", algorithm.name()),
                ));
            }
            kd.validate()
        }
    }
}

impl RawKd {
    /// FedRevive's values: lr 1e-4, weight decay 1e-5, T 1, gates at 50 and 100 versions.
    pub fn validate(self) -> Result<KdConfig, ConfigError> {
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
    pub fn validate(self) -> Result<KdConfig, ConfigError> {
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

impl RawDfkd {
    pub fn validate(self) -> Result<DfkdSettings, ConfigError> {
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
