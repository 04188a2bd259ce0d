//! `[run]`: how a run executes (workers, device, cohorts, kernels, checkpoints). Only the
//! device, cohort size, kernels, precision and server threads can change results; the rest
//! changes speed.

use crate::config::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRun {
    pub workers: Option<usize>,
    /// "auto", "cpu" or "cuda".
    pub device: Option<String>,
    /// Extra planned tasks beyond K that the executor may hold (default K).
    pub lookahead: Option<usize>,
    /// libtorch threads of the server's distillation on CPU (default 1). Part of the
    /// experiment: CPU kernels split their sums by thread, so the count changes the floats.
    pub server_threads: Option<usize>,
    /// Tasks trained together as one stacked model: a count, or "auto" (the default): sized
    /// from free device memory on a GPU, 1 (each task alone) on CPU. Part of the experiment:
    /// stacked training differs from single training by float rounding.
    pub cohort_size: Option<RawCohortSize>,
    /// CPU kernels: "native" (the default: the best this machine has) or "avx2" (pinned in
    /// libtorch, MKL and oneDNN, so that x86-64 machines with AVX2 agree). Part of the
    /// experiment: kernels of another width round differently.
    pub cpu_kernels: Option<CpuKernels>,
    /// What training, evaluation and distillation compute in: "fp32" (the default) or "bf16"
    /// (autocast; weights, optimizer state and aggregation stay fp32). Part of the experiment.
    /// Written to config.toml only when bf16, so fp32 runs keep their config's text and hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<crate::nn::precision::Precision>,
    /// A checkpoint every this many versions (default 1000; 0: none by versions).
    pub checkpoint_every: Option<u64>,
    /// And every this many minutes of wall time (default 10; 0: none by time).
    pub checkpoint_minutes: Option<f64>,
}

/// Which CPU kernels a run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuKernels {
    #[default]
    Native,
    Avx2,
}

/// `run.cohort_size` as written: a number or a word.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawCohortSize {
    Count(i64),
    Word(String),
}

/// How many tasks train as one stacked model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortSize {
    /// From free device memory on a GPU ([`crate::exec::sizing`]); 1 on CPU.
    Auto,
    Fixed(usize),
}

impl Serialize for CohortSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CohortSize::Auto => serializer.serialize_str("auto"),
            CohortSize::Fixed(n) => serializer.serialize_u64(*n as u64),
        }
    }
}

/// `[run]` validated.
pub struct RunSection {
    pub workers: usize,
    pub device: String,
    pub lookahead: usize,
    pub server_threads: usize,
    pub cohort_size: CohortSize,
    pub cpu_kernels: CpuKernels,
    pub precision: crate::nn::precision::Precision,
    pub checkpoint_every: u64,
    pub checkpoint_minutes: f64,
}

impl RawRun {
    /// `active_jobs`: algorithm.active_jobs, the default lookahead.
    pub fn validate(self, active_jobs: usize) -> Result<RunSection, ConfigError> {
        let workers = self.workers.unwrap_or(1);
        if workers == 0 || workers > MAX_THREADS {
            return Err(invalid(
                "run.workers",
                workers,
                format!("must be between 1 and {MAX_THREADS} (threads)"),
            ));
        }
        let server_threads = self.server_threads.unwrap_or(1);
        if server_threads == 0 || server_threads > MAX_THREADS {
            return Err(invalid(
                "run.server_threads",
                server_threads,
                format!("must be between 1 and {MAX_THREADS} (libtorch threads of the server step)"),
            ));
        }
        let lookahead = self.lookahead.unwrap_or(active_jobs);
        if lookahead > MAX_LOOKAHEAD {
            return Err(invalid(
                "run.lookahead",
                lookahead,
                format!("must be at most {MAX_LOOKAHEAD} planned tasks"),
            ));
        }
        let checkpoint_every = self.checkpoint_every.unwrap_or(1000);
        let checkpoint_minutes = self.checkpoint_minutes.unwrap_or(10.0);
        if !(checkpoint_minutes.is_finite() && checkpoint_minutes >= 0.0) {
            return Err(invalid(
                "run.checkpoint_minutes",
                checkpoint_minutes,
                "must be a finite number of minutes >= 0 (0: no checkpoints by wall time)",
            ));
        }
        let cohort_size = match self.cohort_size {
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
        let device = self.device.unwrap_or_else(|| "auto".to_owned());
        device
            .parse::<crate::runtime::DeviceChoice>()
            .map_err(|e| invalid("run.device", format!("\"{device}\""), e.to_string()))?;
        let cpu_kernels = self.cpu_kernels.unwrap_or_default();
        let precision = self.precision.unwrap_or_default();
        if precision == crate::nn::precision::Precision::Bf16 && cpu_kernels == CpuKernels::Avx2 {
            return Err(invalid(
                "run.precision",
                "\"bf16\"",
                "cannot run with run.cpu_kernels = \"avx2\": the reproducible mode pins float32 kernels that AVX2 machines share, and AVX2 has no bf16 units; use \"fp32\" there, or bf16 with run.cpu_kernels = \"native\"",
            ));
        }
        Ok(RunSection {
            workers,
            device,
            lookahead,
            server_threads,
            cohort_size,
            cpu_kernels,
            precision,
            checkpoint_every,
            checkpoint_minutes,
        })
    }
}
