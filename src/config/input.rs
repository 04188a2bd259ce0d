//! The reverse mapping: a validated config back in the input format, every value spelled out
//! (the run directory's config.toml, which validates into an equal config).

use super::*;

impl Config {
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
        let optimizer = self.server_optimizer;
        let optimizer_row = optimizer.kind.row();
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
                // Left out at 0, so configs without FedProx keep their text and fingerprint.
                prox_mu: (self.prox_mu != 0.0).then_some(self.prox_mu),
                lr_schedule: (self.lr_schedule != LrSchedule::Constant).then_some(self.lr_schedule),
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
                // Written only where they are read, so configs without an optimizer keep
                // their text and fingerprint, and the file validates back.
                server_optimizer: (optimizer.kind != ServerOptimizerKind::Sgd)
                    .then(|| optimizer.kind.name().to_owned()),
                server_beta1: optimizer_row.uses_beta1.then_some(optimizer.beta1),
                server_beta2: optimizer_row.uses_beta2.then_some(optimizer.beta2),
                server_tau: optimizer_row.uses_tau.then_some(optimizer.tau),
                server_lr_schedule: (self.server_lr_schedule != LrSchedule::Constant)
                    .then_some(self.server_lr_schedule),
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
                precision: (self.precision != crate::nn::precision::Precision::Fp32)
                    .then_some(self.precision),
                checkpoint_every: Some(self.checkpoint_every),
                checkpoint_minutes: Some(self.checkpoint_minutes),
            },
        }
    }
}
