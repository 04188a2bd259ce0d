//! Validation: the file as written into the typed [`Config`], each key checked with a message
//! that names it and what is allowed.

use super::*;

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
