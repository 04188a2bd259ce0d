//! Reading one run directory back for a report: run.json, config.toml and the Parquet tables
//! (updates, evaluations, and jobs where the run wrote them), each checked before use. Every failure names the file and what is wrong with it,
//! so one unreadable run can be skipped while the others still report.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::record::{read_parquet, RunInfo, LOG_FORMAT};
use crate::sched::Fate;

/// What a report needs from one run.
#[derive(Clone, Debug)]
pub struct RunLogs {
    pub dir: PathBuf,
    pub info: RunInfo,
    /// The resolved config the run was started with (config.toml).
    pub config: toml::Table,
    /// Client jobs in flight (K): a round is K client updates.
    pub active_jobs: u64,
    pub updates: DataFrame,
    pub evals: DataFrame,
    /// Every dispatched job and its fate (runs from before the jobs table have none).
    pub jobs: Option<DataFrame>,
}

/// A file of a run directory that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct LogError {
    pub file: PathBuf,
    pub problem: String,
}

/// Columns every updates.parquet has, with their types.
pub const UPDATE_COLUMNS: [(&str, DataType); 12] = [
    ("task", DataType::UInt64),
    ("client", DataType::UInt32),
    ("base_version", DataType::UInt64),
    ("applied_version", DataType::UInt64),
    ("staleness", DataType::UInt64),
    ("dispatched_at", DataType::Float64),
    ("arrived_at", DataType::Float64),
    ("first_loss", DataType::Float32),
    ("last_loss", DataType::Float32),
    ("train_ms", DataType::Float64),
    ("worker", DataType::UInt32),
    ("server_ms", DataType::Float64),
];

/// Columns every evals.parquet has (per-class accuracies follow, one per class).
pub const EVAL_COLUMNS: [(&str, DataType); 5] = [
    ("version", DataType::UInt64),
    ("virtual_time", DataType::Float64),
    ("accuracy", DataType::Float64),
    ("loss", DataType::Float64),
    ("wall_s", DataType::Float64),
];

/// Columns every jobs.parquet has.
pub const JOB_COLUMNS: [(&str, DataType); 8] = [
    ("task", DataType::UInt64),
    ("client", DataType::UInt32),
    ("dispatched_at", DataType::Float64),
    ("download_end", DataType::Float64),
    ("train_end", DataType::Float64),
    ("upload_end", DataType::Float64),
    ("at_server", DataType::Float64),
    ("fate", DataType::String),
];

/// Columns that measure the machine, not the simulation: they may differ between otherwise
/// identical runs and are left out of determinism checks.
pub const WALL_CLOCK_COLUMNS: [&str; 4] = ["train_ms", "worker", "server_ms", "wall_s"];

impl RunLogs {
    pub fn load(dir: &Path) -> Result<RunLogs, LogError> {
        let error = |file: &str, problem: String| LogError { file: dir.join(file), problem };
        if !dir.is_dir() {
            return Err(LogError { file: dir.to_owned(), problem: "not a folder".into() });
        }
        let info = read_info(&dir.join("run.json"))?;
        let config_text = std::fs::read_to_string(dir.join("config.toml"))
            .map_err(|e| error("config.toml", format!("cannot be read ({e})")))?;
        let config = flat_config(&config_text).map_err(|problem| error("config.toml", problem))?;
        let active_jobs = config
            .get("active_jobs")
            .and_then(toml::Value::as_integer)
            .filter(|&k| k > 0)
            .ok_or_else(|| error("config.toml", "has no positive active_jobs".into()))?
            as u64;
        let updates = read_table(&dir.join("updates.parquet"), &UPDATE_COLUMNS)?;
        let evals = read_table(&dir.join("evals.parquet"), &EVAL_COLUMNS)?;
        if evals.height() == 0 {
            return Err(error("evals.parquet", "has no evaluations".into()));
        }
        let jobs_path = dir.join("jobs.parquet");
        let jobs = jobs_path.exists().then(|| read_table(&jobs_path, &JOB_COLUMNS)).transpose()?;
        Ok(RunLogs { dir: dir.to_owned(), info, config, active_jobs, updates, evals, jobs })
    }

    /// A float column of the evaluations as a vector (columns are checked when loading).
    pub fn eval_column(&self, name: &str) -> Vec<f64> {
        self.evals.column(name).and_then(|c| c.f64().cloned()).map_or_else(|_| Vec::new(), collect_f64)
    }

    pub fn eval_versions(&self) -> Vec<u64> {
        collect_u64(&self.evals, "version")
    }

    pub fn staleness(&self) -> Vec<u64> {
        collect_u64(&self.updates, "staleness")
    }

    /// The server's wall time per applied update (server_ms), averaged over windows of
    /// `width` versions: (window index, mean ms); window w holds versions w*width+1 ..= (w+1)*width.
    pub fn server_ms_by_window(&self, width: u64) -> std::collections::BTreeMap<u64, f64> {
        let versions = collect_u64(&self.updates, "applied_version");
        let ms = self
            .updates
            .column("server_ms")
            .and_then(|c| c.f64().cloned())
            .map_or_else(|_| Vec::new(), collect_f64);
        let mut sums = std::collections::BTreeMap::<u64, (f64, u64)>::new();
        for (&version, &ms) in versions.iter().zip(&ms) {
            let entry = sums.entry(version.saturating_sub(1) / width.max(1)).or_default();
            *entry = (entry.0 + ms, entry.1 + 1);
        }
        sums.into_iter().map(|(window, (sum, count))| (window, sum / count as f64)).collect()
    }

    /// The virtual time the run covered: its horizon when it ran into it (the last event may
    /// come earlier, e.g. a FedAvg round that would end past the horizon), else its last event.
    pub fn end_time(&self) -> f64 {
        let horizon = self.config.get("max_virtual_time").and_then(toml::Value::as_float);
        match horizon {
            Some(horizon) if self.info.stop_reason == "max_virtual_time" => {
                horizon.max(self.info.virtual_time)
            }
            _ => self.info.virtual_time,
        }
    }

    /// How many jobs met each fate, in [`Fate::NAMES`] order (None without a jobs table).
    pub fn job_fates(&self) -> Option<Vec<(&'static str, u64)>> {
        let fates = self.jobs.as_ref()?.column("fate").ok()?.str().ok()?.clone();
        let mut counts: Vec<(&'static str, u64)> = Fate::NAMES.iter().map(|&name| (name, 0)).collect();
        for fate in fates.iter().flatten() {
            if let Some(entry) = counts.iter_mut().find(|(name, _)| *name == fate) {
                entry.1 += 1;
            }
        }
        Some(counts)
    }

    /// The `lanes` clients with the most jobs (ties: the lower id), each with its jobs in
    /// dispatch order, for the timeline figure.
    pub fn timeline_lanes(&self, lanes: usize) -> Vec<(u32, Vec<JobSpan>)> {
        let Some(jobs) = &self.jobs else { return Vec::new() };
        let f64s = |name: &str| jobs.column(name).ok().and_then(|c| c.f64().ok().cloned());
        let (Ok(clients), Ok(fates)) = (jobs.column("client"), jobs.column("fate")) else {
            return Vec::new();
        };
        let (Ok(clients), Ok(fates)) = (clients.u32(), fates.str()) else { return Vec::new() };
        let (Some(dispatched), Some(download), Some(train), Some(upload), Some(at_server)) = (
            f64s("dispatched_at"),
            f64s("download_end"),
            f64s("train_end"),
            f64s("upload_end"),
            f64s("at_server"),
        ) else {
            return Vec::new();
        };
        let settled = f64s("settled_at");
        let mut by_client: std::collections::BTreeMap<u32, Vec<JobSpan>> = Default::default();
        for i in 0..jobs.height() {
            let (Some(client), Some(fate)) = (clients.get(i), fates.get(i)) else { continue };
            let trains = fate == "applied" || fate == "open";
            by_client.entry(client).or_default().push(JobSpan {
                dispatched_at: dispatched.get(i).unwrap_or(0.0),
                download_end: download.get(i).unwrap_or(0.0),
                train_end: train.get(i).unwrap_or(0.0),
                upload_end: upload.get(i).unwrap_or(0.0),
                at_server: at_server.get(i),
                cut_at: if trains { None } else { settled.as_ref().and_then(|s| s.get(i)).or(Some(0.0)) },
            });
        }
        let mut lanes_by_count: Vec<(u32, Vec<JobSpan>)> = by_client.into_iter().collect();
        lanes_by_count.sort_by_key(|(client, jobs)| (std::cmp::Reverse(jobs.len()), *client));
        lanes_by_count.truncate(lanes);
        for (_, jobs) in &mut lanes_by_count {
            jobs.sort_by(|a, b| a.dispatched_at.total_cmp(&b.dispatched_at));
        }
        lanes_by_count
    }

    /// The first 16 characters of the final-weight hash, as tables show it.
    pub fn short_hash(&self) -> String {
        self.info.final_weights_sha256.chars().take(16).collect()
    }

    /// The config without the worker count: runs with equal keys must agree bit for bit.
    pub fn config_without_workers(&self) -> toml::Table {
        let mut config = self.config.clone();
        config.remove("workers");
        config
    }
}

fn collect_u64(frame: &DataFrame, name: &str) -> Vec<u64> {
    frame
        .column(name)
        .and_then(|c| c.u64().cloned())
        .map_or_else(|_| Vec::new(), |c| c.iter().map(|v| v.unwrap_or(0)).collect())
}

fn collect_f64(column: Float64Chunked) -> Vec<f64> {
    column.iter().map(|v| v.unwrap_or(f64::NAN)).collect()
}

fn read_info(path: &Path) -> Result<RunInfo, LogError> {
    let error = |problem: String| LogError { file: path.to_owned(), problem };
    let text = std::fs::read_to_string(path).map_err(|e| {
        error(if e.kind() == std::io::ErrorKind::NotFound {
            "missing: not a fedsim run directory, or the run did not finish".into()
        } else {
            format!("cannot be read ({e})")
        })
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| error(format!("is not JSON ({e})")))?;
    let format = json.get("log_format").map_or(Some(1), serde_json::Value::as_u64);
    if format != Some(u64::from(LOG_FORMAT)) {
        let version = json.get("fedsim_version").and_then(|v| v.as_str()).unwrap_or("unknown");
        return Err(error(format!(
            "written by fedsim {version} in log format {}; this fedsim {} reads log format {LOG_FORMAT} \
             only (rerun the experiment, or report it with the fedsim that wrote it)",
            json.get("log_format").map_or("1".into(), |f| f.to_string()),
            env!("CARGO_PKG_VERSION"),
        )));
    }
    serde_json::from_value(json).map_err(|e| error(format!("is not a fedsim run description ({e})")))
}

/// The resolved config as one flat table, as reports compare runs by it: config.toml holds it
/// in the input format (validated back into a config here), or, in runs from before that,
/// flat already.
fn flat_config(text: &str) -> Result<toml::Table, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("is not TOML ({e})"))?;
    if table.contains_key("active_jobs") {
        return Ok(table);
    }
    let config = crate::config::Config::from_toml(text, "config.toml", "run", &[])
        .map_err(|e| format!("is not a valid fedsim config ({e})"))?;
    config.to_toml().parse().map_err(|e| format!("cannot be flattened ({e})"))
}

fn read_table(path: &Path, expected: &[(&str, DataType)]) -> Result<DataFrame, LogError> {
    let error = |problem: String| LogError { file: path.to_owned(), problem };
    if !path.exists() {
        return Err(error("missing: the run wrote no logs (it did not finish)".into()));
    }
    let frame = read_parquet(path).map_err(|e| error(format!("is not a readable Parquet file ({e})")))?;
    for (name, dtype) in expected {
        match frame.column(name) {
            Err(_) => return Err(error(format!("has no column {name} ({dtype})"))),
            Ok(column) if column.dtype() != dtype => {
                return Err(error(format!("column {name} is {}, expected {dtype}", column.dtype())))
            }
            Ok(_) => {}
        }
    }
    Ok(frame)
}
/// One job on a client's lane, in virtual time.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpan {
    pub dispatched_at: f64,
    pub download_end: f64,
    pub train_end: f64,
    pub upload_end: f64,
    /// When the update reached the server, after its leaf and hop.
    pub at_server: Option<f64>,
    /// Where the job ended if it never trained (dropped, cancelled, timed out, went offline).
    pub cut_at: Option<f64>,
}
