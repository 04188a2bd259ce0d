//! Validation: the file as written into the typed [`Config`]. Each section checks its own keys
//! (`sections/`); here they run in order, and the checks that span sections (the run's name,
//! zero delays without a version limit) sit between them.

use super::*;

impl RawConfig {
    pub fn validate(self, default_name: &str) -> Result<Config, ConfigError> {
        let algorithm = self.algorithm.kind()?;
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
        let data = self.data.validate()?;
        let num_clients = data.num_clients;
        let train = self.train.validate(data.client_data_size)?;
        let server = self.algorithm.validate(algorithm, num_clients)?;
        let topology = self.topology.map(|t| t.validate(num_clients)).transpose()?;
        let kd = validate_kd(self.kd, self.simple_kd, algorithm)?;
        let dfkd = self.dfkd.validate()?;
        let delays = self.delays.resolve(num_clients)?;
        let availability = validate_availability(self.availability, num_clients)?;
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
        let stop = self.stop.validate(self.eval, algorithm)?;
        let run = self.run.validate(server.active_jobs)?;
        let seed = self.seed.unwrap_or(10);
        Ok(Config {
            name,
            seed,
            setup_seed: self.setup_seed.unwrap_or(seed),
            run_seed: self.run_seed.unwrap_or(seed),
            dataset: data.dataset,
            num_clients,
            client_data_size: data.client_data_size,
            partition: data.partition,
            val_split: data.val_split,
            kd_split: data.kd_split,
            model: self.model.kind.unwrap_or(ModelKind::ConvNet),
            optimizer: train.optimizer,
            lr: train.lr,
            momentum: train.momentum,
            prox_mu: train.prox_mu,
            lr_schedule: train.lr_schedule,
            local_iters: train.local_iters,
            batch_size: train.batch_size,
            algorithm,
            active_jobs: server.active_jobs,
            buffer_size: server.buffer_size,
            max_staleness: server.max_staleness,
            over_commitment: server.over_commitment,
            min_hole_to_fill: server.min_hole_to_fill,
            client_reuse: server.client_reuse,
            max_model_history: server.max_model_history,
            update_timeout: server.update_timeout,
            round_deadline: server.round_deadline,
            late_updates: server.late_updates,
            server_lr: server.server_lr,
            server_optimizer: server.server_optimizer,
            server_lr_schedule: server.server_lr_schedule,
            client_weighting: server.client_weighting,
            staleness_weight: server.staleness_weight,
            beta: server.beta,
            kd,
            dfkd,
            delays,
            availability,
            topology,
            eval_interval: stop.eval_interval,
            max_versions: stop.max_versions,
            max_virtual_time: stop.max_virtual_time,
            target_accuracy: stop.target_accuracy,
            early_stop: stop.early_stop,
            workers: run.workers,
            device: run.device,
            lookahead: run.lookahead,
            server_threads: run.server_threads,
            cohort_size: run.cohort_size,
            cpu_kernels: run.cpu_kernels,
            precision: run.precision,
            checkpoint_every: run.checkpoint_every,
            checkpoint_minutes: run.checkpoint_minutes,
        })
    }
}
