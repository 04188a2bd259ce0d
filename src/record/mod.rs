//! The run directory `runs/<name>-<timestamp>/`: the resolved config, `run.json`,
//! `updates.parquet` (a row per applied client update), `evals.parquet` (a row per
//! evaluation), `jobs.parquet` (a row per dispatched job and its fate) and the final weights (`final.safetensors`). Every file is written to a
//! temporary name and renamed into place, so a crash never leaves a half-written one.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

pub use crate::data::parquet::read_parquet;
pub mod checkpoint;

/// Why a run's record could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A full disk or a file over the size limit: the rows flushed before are kept.
    #[error("writing the run's log segments in {}", folder.display())]
    Segments {
        folder: PathBuf,
        #[source]
        source: PolarsError,
    },
    #[error("writing the checkpoint {}", path.display())]
    WriteCheckpoint {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("reading the checkpoint {}", path.display())]
    ReadCheckpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What is wrong is a description, not a cause, so it is part of the message.
    #[error("{} is not a fedsim checkpoint this version can read: {problem}", path.display())]
    NotACheckpoint { path: PathBuf, problem: checkpoint::FormatError },
}
pub mod rows;
pub mod stream;

use crate::sched::{Fate, JobRecord};
use rows::{EvalRecord, UpdateRecord, VecSink};

/// A run's folder.
pub struct RunDir {
    pub path: PathBuf,
}

/// The layout of run.json and the Parquet tables. Raise it when a column or field changes
/// meaning, so `fedsim report` refuses runs it would misread instead of guessing.
pub const LOG_FORMAT: u32 = 1;

/// run.json: what a run was and how it ended.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct RunInfo {
    /// [`LOG_FORMAT`] of the fedsim that wrote the run (runs from before the field are format 1).
    #[serde(default = "first_log_format")]
    pub log_format: u32,
    pub name: String,
    pub algorithm: String,
    pub seed: u64,
    /// The seeds of the data and of the run (runs from before the fields had `seed` for both).
    #[serde(default)]
    pub setup_seed: Option<u64>,
    #[serde(default)]
    pub run_seed: Option<u64>,
    /// libtorch threads of the server step and evaluation (1 before the field existed).
    #[serde(default = "one")]
    pub server_threads: usize,
    pub fedsim_version: String,
    pub git_commit: String,
    pub libtorch: String,
    pub device: String,
    /// The machine's CPU and thread count (runs from before the field say "unknown").
    #[serde(default = "unknown")]
    pub host: String,
    /// The host's widest vector extension that changes CPU results ("avx512", "avx2").
    #[serde(default)]
    pub cpu_vector_extensions: Option<String>,
    /// The CPU kernels libtorch dispatched to ("AVX512", "AVX2", ...).
    #[serde(default)]
    pub cpu_capability: Option<String>,
    /// run.cpu_kernels: "native", or "avx2" (pinned in libtorch, MKL and oneDNN).
    #[serde(default)]
    pub cpu_kernels: Option<String>,
    /// run.precision: "fp32" or "bf16" (runs from before the field: fp32).
    #[serde(default)]
    pub precision: Option<String>,
    /// OMP_WAIT_POLICY as the run found it (None: libgomp's default; fedsim sets "PASSIVE"
    /// where run.server_threads > 1 and the environment names no policy). It never changes
    /// results, only how fast idle libtorch threads give their cores back.
    #[serde(default)]
    pub omp_wait_policy: Option<String>,
    pub workers: usize,
    /// Tasks per cohort and cohorts trained at once, as resolved (runs from before cohorts
    /// trained every task alone: 1, and `workers` at once).
    #[serde(default = "one")]
    pub cohort_size: usize,
    #[serde(default)]
    pub concurrent_cohorts: Option<usize>,
    /// The GPU allocator's peak while the run trained, in bytes (None on CPU).
    #[serde(default)]
    pub device_memory_peak_bytes: Option<u64>,
    pub versions: u64,
    pub virtual_time: f64,
    pub wall_seconds: f64,
    pub stop_reason: String,
    pub final_weights_sha256: String,
    pub tasks_trained: u64,
    pub updates_applied: u64,
    pub train_seconds: f64,
    pub server_seconds: f64,
    pub eval_seconds: f64,
    /// Checkpoints this process wrote and the wall time they took (None before the fields).
    #[serde(default)]
    pub checkpoints_written: Option<u64>,
    #[serde(default)]
    pub checkpoint_seconds: Option<f64>,
    /// The checkpoint's version this process resumed from (None: it ran from the start; the
    /// wall-clock figures are then of the whole run, else of the resumed part).
    #[serde(default)]
    pub resumed_from_version: Option<u64>,
    /// The training ranks of a run over MPI (rank 0 only coordinated), with what each did;
    /// absent for a single process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranks: Vec<crate::record::rows::RankLoad>,
}

fn first_log_format() -> u32 {
    1
}

fn one() -> usize {
    1
}

fn unknown() -> String {
    "unknown".to_owned()
}

impl RunDir {
    /// Creates `<out>/<name>-<UTC timestamp>/` (`-2`, `-3`, ... appended when runs start in
    /// the same second), or `<out>` itself when `exact` is set.
    pub fn create(out: &Path, name: &str, exact: bool) -> std::io::Result<RunDir> {
        if exact {
            std::fs::create_dir_all(out)?;
            return Ok(RunDir { path: out.to_path_buf() });
        }
        std::fs::create_dir_all(out)?;
        let stem = format!("{name}-{}", timestamp());
        for attempt in 1.. {
            let path = if attempt == 1 { out.join(&stem) } else { out.join(format!("{stem}-{attempt}")) };
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(RunDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    pub fn write_config(&self, toml: &str) -> std::io::Result<()> {
        write_atomically(&self.path.join("config.toml"), toml.as_bytes())
    }

    pub fn write_info(&self, info: &RunInfo) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(info).map_err(std::io::Error::other)?;
        write_atomically(&self.path.join("run.json"), json.as_bytes())
    }

    /// Saves the rows a run collected.
    pub fn write_tables(&self, recorder: &VecSink) -> PolarsResult<()> {
        write_parquet(&self.path.join("updates.parquet"), &mut updates_frame(&recorder.updates)?)?;
        write_parquet(&self.path.join("evals.parquet"), &mut evals_frame(&recorder.evals)?)?;
        write_parquet(&self.path.join("jobs.parquet"), &mut jobs_frame(&recorder.jobs)?)
    }

    /// Where the final weights go; [`crate::nn::Model::save`] writes them.
    pub fn weights_path(&self) -> PathBuf {
        self.path.join("final.safetensors")
    }
}

pub fn updates_frame(rows: &[UpdateRecord]) -> PolarsResult<DataFrame> {
    let col = |name: &str, values: Vec<u64>| Column::new(name.into(), values);
    let float = |name: &str, values: Vec<f64>| Column::new(name.into(), values);
    DataFrame::new(
        rows.len(),
        vec![
            col("task", rows.iter().map(|r| r.task).collect()),
            Column::new("client".into(), rows.iter().map(|r| r.client).collect::<Vec<u32>>()),
            Column::new("leaf".into(), rows.iter().map(|r| r.leaf).collect::<Vec<Option<u32>>>()),
            col("base_version", rows.iter().map(|r| r.base_version).collect()),
            col("applied_version", rows.iter().map(|r| r.applied_version).collect()),
            col("staleness", rows.iter().map(|r| r.staleness).collect()),
            float("dispatched_at", rows.iter().map(|r| r.dispatched_at).collect()),
            float("arrived_at", rows.iter().map(|r| r.arrived_at).collect()),
            Column::new("first_loss".into(), rows.iter().map(|r| r.first_loss).collect::<Vec<f32>>()),
            Column::new("last_loss".into(), rows.iter().map(|r| r.last_loss).collect::<Vec<f32>>()),
            float("train_ms", rows.iter().map(|r| r.train_ms).collect()),
            Column::new("worker".into(), rows.iter().map(|r| r.worker).collect::<Vec<u32>>()),
            float("server_ms", rows.iter().map(|r| r.server_ms).collect()),
        ],
    )
}

/// Every dispatched job: its client and leaf, its spans in virtual time (download, training and
/// upload end where they would, had the job run to the end), when its update reached the
/// server, its fate and when that was known.
pub fn jobs_frame(rows: &[JobRecord]) -> PolarsResult<DataFrame> {
    let time = |name: &str, f: &dyn Fn(&JobRecord) -> f64| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<f64>>())
    };
    let maybe_time = |name: &str, f: &dyn Fn(&JobRecord) -> Option<f64>| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<Option<f64>>>())
    };
    DataFrame::new(
        rows.len(),
        vec![
            Column::new("task".into(), rows.iter().map(|r| r.task).collect::<Vec<u64>>()),
            Column::new("client".into(), rows.iter().map(|r| r.client).collect::<Vec<u32>>()),
            Column::new("leaf".into(), rows.iter().map(|r| r.leaf).collect::<Vec<Option<u32>>>()),
            Column::new("base_version".into(), rows.iter().map(|r| r.base_version).collect::<Vec<u64>>()),
            time("dispatched_at", &|r| r.dispatched_at.units()),
            time("download_end", &|r| (r.dispatched_at + r.download).units()),
            time("train_end", &|r| (r.dispatched_at + r.download + r.train).units()),
            time("upload_end", &|r| r.upload_ends_at().units()),
            maybe_time("at_server", &|r| r.at_server.map(|t| t.units())),
            Column::new("fate".into(), rows.iter().map(|r| r.fate.name()).collect::<Vec<&str>>()),
            Column::new(
                "applied_version".into(),
                rows.iter()
                    .map(|r| if let Fate::Applied { version } = r.fate { Some(version) } else { None })
                    .collect::<Vec<Option<u64>>>(),
            ),
            maybe_time("settled_at", &|r| r.settled_at.map(|t| t.units())),
        ],
    )
}

pub fn evals_frame(rows: &[EvalRecord]) -> PolarsResult<DataFrame> {
    let classes = rows.first().map_or(0, |r| r.per_class_accuracy.len());
    let mut columns = vec![
        Column::new("version".into(), rows.iter().map(|r| r.version).collect::<Vec<u64>>()),
        Column::new("virtual_time".into(), rows.iter().map(|r| r.virtual_time).collect::<Vec<f64>>()),
        Column::new("accuracy".into(), rows.iter().map(|r| r.accuracy).collect::<Vec<f64>>()),
        Column::new("loss".into(), rows.iter().map(|r| r.loss).collect::<Vec<f64>>()),
    ];
    for class in 0..classes {
        columns.push(Column::new(
            format!("accuracy_class_{class}").into(),
            rows.iter()
                .map(|r| r.per_class_accuracy.get(class).copied().unwrap_or(f64::NAN))
                .collect::<Vec<f64>>(),
        ));
    }
    columns.push(Column::new("wall_s".into(), rows.iter().map(|r| r.wall_s).collect::<Vec<f64>>()));
    DataFrame::new(rows.len(), columns)
}

pub fn write_parquet(path: &Path, frame: &mut DataFrame) -> PolarsResult<()> {
    let staging = staging_path(path);
    let file = std::fs::File::create(&staging)?;
    ParquetWriter::new(file).finish(frame)?;
    std::fs::rename(&staging, path)?;
    Ok(())
}

/// Writes a file under a temporary name in the same folder, then renames it into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let staging = staging_path(path);
    std::fs::write(&staging, bytes)?;
    std::fs::rename(&staging, path)
}

pub fn staging_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.partial"))
}

/// UTC `YYYYMMDD-HHMMSS`, from the system clock (no time-zone database needed).
fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The git commit of the checkout that holds this binary (its `target/` folder), or "unknown":
/// asked from the binary's own folder, so a run started from another directory (or another
/// checkout) records the commit of the code that runs, not of the working directory.
pub fn git_commit() -> String {
    let mut git = std::process::Command::new("git");
    if let Some(folder) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        git.arg("-C").arg(folder);
    }
    git.args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::time::{SimDuration, SimTime};

    #[test]
    fn runs_started_in_the_same_second_get_their_own_folders() {
        let dir = std::env::temp_dir().join(format!("fedsim-rundir-test-{}", std::process::id()));
        let a = RunDir::create(&dir, "x", false).unwrap();
        let b = RunDir::create(&dir, "x", false).unwrap();
        assert_ne!(a.path, b.path);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn timestamps_look_like_dates() {
        let t = timestamp();
        assert_eq!(t.len(), 15);
        assert!(t.starts_with("20") && t.as_bytes()[8] == b'-');
    }

    #[test]
    fn tables_round_trip_through_parquet() {
        let dir = std::env::temp_dir().join(format!("fedsim-record-test-{}", std::process::id()));
        let run = RunDir::create(&dir, "t", true).unwrap();
        let recorder = VecSink {
            updates: vec![UpdateRecord {
                task: 3,
                client: 7,
                leaf: Some(2),
                base_version: 1,
                applied_version: 2,
                staleness: 1,
                dispatched_at: 0.5,
                arrived_at: 1.75,
                first_loss: 2.3,
                last_loss: 1.9,
                train_ms: 12.0,
                worker: 1,
                server_ms: 0.2,
            }],
            evals: vec![EvalRecord {
                version: 2,
                virtual_time: 1.75,
                accuracy: 0.25,
                loss: 2.0,
                per_class_accuracy: vec![0.5, 0.0],
                wall_s: 1.0,
            }],
            jobs: vec![JobRecord {
                task: 3,
                client: 7,
                leaf: None,
                base_version: 1,
                dispatched_at: SimTime::from_units(0.5),
                download: SimDuration::from_units(0.1),
                train: SimDuration::from_units(1.0),
                upload: SimDuration::from_units(0.15),
                at_server: Some(SimTime::from_units(1.75)),
                fate: Fate::Applied { version: 2 },
                settled_at: Some(SimTime::from_units(1.75)),
            }],
        };
        run.write_tables(&recorder).unwrap();
        let updates = read_parquet(&run.path.join("updates.parquet")).unwrap();
        assert_eq!(updates.height(), 1);
        assert_eq!(updates.column("client").unwrap().u32().unwrap().get(0), Some(7));
        assert_eq!(updates.column("leaf").unwrap().u32().unwrap().get(0), Some(2));
        let jobs = read_parquet(&run.path.join("jobs.parquet")).unwrap();
        assert_eq!(jobs.column("fate").unwrap().str().unwrap().get(0), Some("applied"));
        assert_eq!(jobs.column("upload_end").unwrap().f64().unwrap().get(0), Some(1.75));
        assert_eq!(jobs.column("leaf").unwrap().u32().unwrap().get(0), None);
        let evals = read_parquet(&run.path.join("evals.parquet")).unwrap();
        assert_eq!(evals.column("accuracy_class_0").unwrap().f64().unwrap().get(0), Some(0.5));
        assert!(!staging_path(&run.path.join("evals.parquet")).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
