//! `[model]` and `[train]`: the model and the clients' local training.

use crate::config::*;

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
    /// FedProx's mu: local training adds mu/2 ||w - w_base||^2 (default 0: plain training).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prox_mu: Option<f64>,
    /// The clients' learning rate by the version a task trains from (default constant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_schedule: Option<LrSchedule>,
}

/// `[train]` validated.
pub struct TrainSection {
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    pub local_iters: usize,
    pub batch_size: usize,
    pub prox_mu: f64,
    pub lr_schedule: LrSchedule,
}

impl RawTrain {
    /// `client_data_size`: data.client_data_size, which bounds a batch.
    pub fn validate(self, client_data_size: usize) -> Result<TrainSection, ConfigError> {
        let lr = self.lr.unwrap_or(3e-4);
        if !(lr.is_finite() && lr > 0.0) {
            return Err(invalid("train.lr", lr, "must be a positive number"));
        }
        let momentum = self.momentum.unwrap_or(0.9);
        if !(momentum.is_finite() && (0.0..1.0).contains(&momentum)) {
            return Err(invalid("train.momentum", momentum, "must lie in [0, 1)"));
        }
        let local_iters = self.local_iters.unwrap_or(25);
        let batch_size = self.batch_size.unwrap_or(32);
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
        let prox_mu = self.prox_mu.unwrap_or(0.0);
        if !(prox_mu.is_finite() && prox_mu >= 0.0) {
            return Err(invalid(
                "train.prox_mu",
                prox_mu,
                "must be a finite number >= 0 (FedProx's mu; 0: plain local training)",
            ));
        }
        let lr_schedule = self.lr_schedule.unwrap_or_default();
        lr_schedule.validate().map_err(|m| invalid("train.lr_schedule", format!("{lr_schedule:?}"), m))?;
        Ok(TrainSection {
            prox_mu,
            lr_schedule,
            optimizer: self.optimizer.unwrap_or(OptimizerKind::Adam),
            lr,
            momentum,
            local_iters,
            batch_size,
        })
    }
}
