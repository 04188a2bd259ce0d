//! The simulated world: `[delays]` (download, training and upload delays, or a device trace),
//! `availability` (when clients are online) and `[topology]` (leaf aggregators). Trace files
//! are read here, at validation, so the event engine does no I/O.

use crate::config::*;

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

/// `availability` validated; a trace's windows are read from its file.
pub fn validate_availability(
    availability: Option<AvailabilityModel>,
    num_clients: usize,
) -> Result<AvailabilityModel, ConfigError> {
    let availability = match availability.unwrap_or_default() {
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
    Ok(availability)
}

impl RawTopology {
    pub fn validate(self, num_clients: usize) -> Result<TopologyConfig, ConfigError> {
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
    pub fn resolve(self, num_clients: usize) -> Result<DelayModel, ConfigError> {
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
