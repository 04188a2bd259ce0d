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
    /// eta of the server optimizer (sgd: theta + eta Delta; negative: interpolation).
    pub server_lr: Option<f64>,
    /// How the server steps from the mean delta: "sgd" (the default), "momentum" (FedAvgM),
    /// "adam", "yogi" or "adagrad" (Reddi et al. 2021).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_optimizer: Option<String>,
    /// The server optimizer's beta1 (momentum, adam, yogi, adagrad; default 0.9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_beta1: Option<f64>,
    /// The server optimizer's beta2 (adam, yogi; default 0.99).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_beta2: Option<f64>,
    /// The adaptive optimizers' tau (adam, yogi, adagrad; default 1e-3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_tau: Option<f64>,
    /// server_lr by the version an aggregation makes (default constant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_lr_schedule: Option<LrSchedule>,
    pub client_weighting: Option<ClientWeighting>,
    pub staleness_weight: Option<StalenessWeight>,
    pub beta: Option<BetaSchedule>,
}

/// Which parameters an optimizer row reads (one of its `uses_*` flags).
type RowFlag = fn(&OptimizerRow) -> bool;

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
    pub server_optimizer: ServerOptimizerSettings,
    pub server_lr_schedule: LrSchedule,
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

    /// algorithm.server_optimizer and the parameters it reads; a parameter it does not read
    /// is refused, so that a config never sets what has no effect.
    fn server_optimizer(&self) -> Result<ServerOptimizerSettings, ConfigError> {
        let kind = match self.server_optimizer.as_deref() {
            None => ServerOptimizerKind::Sgd,
            Some(name) => ServerOptimizerKind::by_name(name).ok_or_else(|| {
                invalid(
                    "algorithm.server_optimizer",
                    format!("\"{name}\""),
                    format!("valid optimizers: {}", ServerOptimizerKind::names()),
                )
            })?,
        };
        let row = kind.row();
        let readers = |uses: RowFlag| {
            let names: Vec<&str> =
                ServerOptimizerKind::ALL.iter().filter(|r| uses(r)).map(|r| r.name).collect();
            names.join(", ")
        };
        let parameters: [(&str, Option<f64>, RowFlag); 3] = [
            ("algorithm.server_beta1", self.server_beta1, |r| r.uses_beta1),
            ("algorithm.server_beta2", self.server_beta2, |r| r.uses_beta2),
            ("algorithm.server_tau", self.server_tau, |r| r.uses_tau),
        ];
        for (key, value, uses) in parameters {
            if let Some(value) = value.filter(|_| !uses(row)) {
                return Err(invalid(
                    key,
                    value,
                    format!(
                        "is not read by server_optimizer \"{}\"; it is a parameter of {}",
                        row.name,
                        readers(uses)
                    ),
                ));
            }
        }
        let defaults = ServerOptimizerSettings::sgd();
        let beta1 = self.server_beta1.unwrap_or(defaults.beta1);
        let beta2 = self.server_beta2.unwrap_or(defaults.beta2);
        for (key, beta) in [("algorithm.server_beta1", beta1), ("algorithm.server_beta2", beta2)] {
            if !(beta.is_finite() && (0.0..1.0).contains(&beta)) {
                return Err(invalid(key, beta, "must lie in [0, 1)"));
            }
        }
        let tau = self.server_tau.unwrap_or(defaults.tau);
        if !(tau.is_finite() && tau > 0.0) {
            return Err(invalid(
                "algorithm.server_tau",
                tau,
                "must be a positive number (the adaptive optimizers' floor under sqrt(v))",
            ));
        }
        Ok(ServerOptimizerSettings { kind, beta1, beta2, tau })
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
        let server_optimizer = self.server_optimizer()?;
        let optimizer_row = server_optimizer.kind.row();
        let server_lr = self.server_lr.or(optimizer_row.default_lr).unwrap_or(row.defaults.server_lr);
        if !server_lr.is_finite() || server_lr == 0.0 || server_lr < -1.0 {
            return Err(invalid(
                "algorithm.server_lr",
                server_lr,
                "must be a non-zero number; negative values in [-1, 0) interpolate towards the client models",
            ));
        }
        if server_lr < 0.0 && server_optimizer.kind != ServerOptimizerKind::Sgd {
            return Err(invalid(
                "algorithm.server_lr",
                server_lr,
                format!(
                    "must be positive with server_optimizer \"{}\": interpolation (a negative server_lr) is sgd's",
                    optimizer_row.name
                ),
            ));
        }
        let server_lr_schedule = self.server_lr_schedule.unwrap_or_default();
        server_lr_schedule
            .validate()
            .map_err(|m| invalid("algorithm.server_lr_schedule", format!("{server_lr_schedule:?}"), m))?;
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
            server_optimizer,
            server_lr_schedule,
            client_weighting: self.client_weighting.unwrap_or(ClientWeighting::Equal),
            staleness_weight,
            beta,
        })
    }
}
