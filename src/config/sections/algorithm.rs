//! `[algorithm]`: which algorithm runs (a row of [`ALGORITHMS`]) and its server-side settings.
//! The defaults an algorithm changes come from its row.

use crate::config::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlgorithm {
    /// A name from [`ALGORITHMS`]: "sync_fl" (FedAvg), "async_fl" (FedBuff), "afl_dw",
    /// "fedrevive" or "dd_fedrevive".
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LateUpdatesConfig {
    Drop,
    Carry,
}

/// `[algorithm]` validated.
pub struct AlgorithmSection {
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
}

impl RawAlgorithm {
    /// algorithm.kind: a name or alias from the table (async_fl when left out).
    pub fn kind(&self) -> Result<AlgorithmKind, ConfigError> {
        let written = self.kind.as_deref().unwrap_or("async_fl");
        AlgorithmKind::by_name(written).ok_or_else(|| {
            invalid(
                "algorithm.kind",
                format!("\"{written}\""),
                format!("valid kinds: {}", AlgorithmKind::names()),
            )
        })
    }

    /// `num_clients`: data.num_clients, which bounds the clients in flight.
    pub fn validate(
        self,
        algorithm: AlgorithmKind,
        num_clients: usize,
    ) -> Result<AlgorithmSection, ConfigError> {
        let row = algorithm.row();
        let rounds = row.arrival == Arrival::Rounds;
        let active_jobs = self.active_jobs.unwrap_or(100);
        if active_jobs == 0 || active_jobs > num_clients {
            return Err(invalid(
                "algorithm.active_jobs",
                active_jobs,
                format!("must be between 1 and data.num_clients ({num_clients})"),
            ));
        }
        let buffer_size = self.buffer_size.unwrap_or(match row.defaults.buffer_size {
            BufferDefault::ActiveJobs => active_jobs,
            BufferDefault::Updates(n) => n,
        });
        if buffer_size == 0 {
            return Err(invalid("algorithm.buffer_size", 0, "must be at least 1 (updates per aggregation)"));
        }
        if rounds && buffer_size != active_jobs {
            return Err(invalid(
                "algorithm.buffer_size",
                buffer_size,
                format!("sync_fl aggregates all active_jobs ({active_jobs}) updates; leave buffer_size out"),
            ));
        }
        let max_staleness = self.max_staleness;
        if rounds && max_staleness.is_some() {
            return Err(invalid(
                "algorithm.max_staleness",
                max_staleness.unwrap_or_default(),
                "applies to asynchronous algorithms; sync_fl rounds have staleness 0",
            ));
        }
        let over_commitment = self.over_commitment.unwrap_or(1.0);
        if !rounds && over_commitment != 1.0 {
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
        let min_hole_to_fill = self.min_hole_to_fill.unwrap_or(1);
        if min_hole_to_fill == 0 || min_hole_to_fill > active_jobs {
            return Err(invalid(
                "algorithm.min_hole_to_fill",
                min_hole_to_fill,
                format!("must be between 1 and algorithm.active_jobs ({active_jobs})"),
            ));
        }
        if rounds && min_hole_to_fill != 1 {
            return Err(invalid(
                "algorithm.min_hole_to_fill",
                min_hole_to_fill,
                "applies to asynchronous algorithms; sync_fl refills whole rounds",
            ));
        }
        let max_model_history = self.max_model_history;
        if max_model_history == Some(0) {
            return Err(invalid(
                "algorithm.max_model_history",
                0,
                "must be at least 1 (the current version)",
            ));
        }
        let update_timeout =
            self.update_timeout.map(|t| positive_time("algorithm.update_timeout", t)).transpose()?;
        let round_deadline =
            self.round_deadline.map(|t| positive_time("algorithm.round_deadline", t)).transpose()?;
        if !rounds && round_deadline.is_some() {
            return Err(invalid(
                "algorithm.round_deadline",
                round_deadline.unwrap_or_default(),
                "applies to sync_fl rounds; asynchronous algorithms have algorithm.update_timeout",
            ));
        }
        let late_updates = match self.late_updates.as_deref() {
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
        let server_lr = self.server_lr.unwrap_or(row.defaults.server_lr);
        if !server_lr.is_finite() || server_lr == 0.0 || server_lr < -1.0 {
            return Err(invalid(
                "algorithm.server_lr",
                server_lr,
                "must be a non-zero number; negative values in [-1, 0) interpolate towards the client models",
            ));
        }
        let staleness_weight = self.staleness_weight.unwrap_or(StalenessWeight::Constant);
        staleness_weight
            .validate()
            .map_err(|m| invalid("algorithm.staleness_weight", format!("{staleness_weight:?}"), m))?;
        let beta = self.beta.unwrap_or(row.defaults.beta);
        beta.validate().map_err(|m| invalid("algorithm.beta", format!("{beta:?}"), m))?;
        let beta = beta.resolve(active_jobs, buffer_size);
        Ok(AlgorithmSection {
            active_jobs,
            buffer_size,
            max_staleness,
            over_commitment,
            min_hole_to_fill,
            client_reuse: self.client_reuse.unwrap_or(true),
            max_model_history,
            update_timeout,
            round_deadline,
            late_updates,
            server_lr,
            client_weighting: self.client_weighting.unwrap_or(ClientWeighting::Equal),
            staleness_weight,
            beta,
        })
    }
}
