//! `[data]`: the dataset, its clients and how it is split and partitioned.

use crate::config::*;

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

/// `[data]` validated.
pub struct DataSection {
    pub dataset: DatasetKind,
    pub num_clients: usize,
    pub client_data_size: usize,
    pub partition: PartitionKind,
    pub val_split: f64,
    pub kd_split: f64,
}

impl RawData {
    pub fn validate(self) -> Result<DataSection, ConfigError> {
        let num_clients = self.num_clients.unwrap_or(1000);
        if num_clients == 0 || num_clients > MAX_CLIENTS {
            return Err(invalid(
                "data.num_clients",
                num_clients,
                format!("must be between 1 and {MAX_CLIENTS}"),
            ));
        }
        let client_data_size = self.client_data_size.unwrap_or(350);
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
        let alpha = self.alpha.unwrap_or(0.5);
        let partition = match self.partition.as_deref().unwrap_or("dirichlet") {
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
        let val_split = self.val_split.unwrap_or(0.15);
        let kd_split = self.kd_split.unwrap_or(0.1);
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
        Ok(DataSection {
            dataset: self.dataset.unwrap_or(DatasetKind::Cifar10),
            num_clients,
            client_data_size,
            partition,
            val_split,
            kd_split,
        })
    }
}
