//! `fedsim sweep SWEEP.toml`: one or more base configs over a grid of config keys (workers,
//! seed, any key), each point run into its own directory under `runs/<sweep name>/`, then the
//! report of them all in `reports/<sweep name>/` (see [`crate::report`]): runs that differ
//! only in `run.workers` must agree bit for bit, and the report says whether they do. A sweep
//! started again continues where it stopped: a point's run finished by this build is kept, an
//! interrupted one resumes from its checkpoint. In an MPI job (feature `mpi`) the points are
//! spread over the ranks, each a whole run on one.
//!
//! ```toml
//! name = "sweep-workers"
//! configs = ["quickstart.toml"]          # relative to the sweep file
//! [set]                                  # overrides for every point
//! "stop.max_versions" = 200
//! [grid]                                 # the cartesian product of these values
//! "run.workers" = [1, 2, 4]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::config::Config;
use crate::data::DataDirs;
use crate::report::ReportOptions;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    name: Option<String>,
    configs: Vec<PathBuf>,
    #[serde(default)]
    set: BTreeMap<String, toml::Value>,
    #[serde(default)]
    grid: BTreeMap<String, Vec<toml::Value>>,
}

/// One run of a sweep: a config file and its overrides.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub config: PathBuf,
    pub overrides: Vec<String>,
    /// The point's run.cpu_kernels and run.server_threads, read when its config was checked.
    pub cpu_kernels: crate::config::CpuKernels,
    pub server_threads: usize,
}

/// Reads a sweep file and validates every point's config before anything runs.
pub fn load(path: &Path) -> Result<(String, Vec<Point>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: SweepFile =
        toml::from_str(&text).with_context(|| format!("{}: not a sweep file", path.display()))?;
    anyhow::ensure!(
        !file.configs.is_empty(),
        "{}: configs must name at least one config file",
        path.display()
    );
    if let Some((key, _)) = file.grid.iter().find(|(_, values)| values.is_empty()) {
        anyhow::bail!("{}: grid key \"{key}\" has no values", path.display());
    }
    let folder = path.parent().unwrap_or(Path::new("."));
    let fixed: Vec<String> = file.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut combos: Vec<Vec<String>> = vec![Vec::new()];
    for (key, values) in &file.grid {
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |v| {
                    let mut next = combo.clone();
                    next.push(format!("{key}={v}"));
                    next
                })
            })
            .collect();
    }
    let mut points = Vec::new();
    for config in &file.configs {
        let config = folder.join(config);
        for combo in &combos {
            let overrides: Vec<String> = fixed.iter().chain(combo).cloned().collect();
            let checked = Config::load(&config, &overrides)
                .with_context(|| format!("sweep point {} {}", config.display(), overrides.join(" ")))?;
            points.push(Point {
                config: config.clone(),
                overrides,
                cpu_kernels: checked.cpu_kernels,
                server_threads: checked.server_threads,
            });
        }
    }
    let name =
        file.name.unwrap_or_else(|| path.file_stem().and_then(|s| s.to_str()).unwrap_or("sweep").to_owned());
    Ok((name, points))
}

/// A sweep ready to run: its points, each checked, and where their runs and the report go.
pub struct Sweep {
    pub name: String,
    pub points: Vec<Point>,
    out: PathBuf,
    report: PathBuf,
    file: PathBuf,
}

impl Sweep {
    /// Loads a sweep file and makes every check that can fail before a point runs. Where the
    /// points pin the CPU kernels or run several server threads this restarts the process with
    /// what libtorch must find when it loads (so call it before anything starts that a restart
    /// would lose, such as MPI).
    pub fn prepare(path: &Path, out: Option<PathBuf>, report: Option<PathBuf>) -> Result<Sweep> {
        let (name, points) = load(path)?;
        let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&name));
        let report = report.unwrap_or_else(|| PathBuf::from("reports").join(&name));
        // One process runs every point: the CPU kernels are pinned (or not) for all of them.
        let kernels: std::collections::BTreeSet<_> = points.iter().map(|p| p.cpu_kernels).collect();
        anyhow::ensure!(
            kernels.len() <= 1,
            "{}: points differ in run.cpu_kernels; a sweep runs them in one process, so give them one value",
            path.display()
        );
        // And what libtorch reads when it loads is set once, before the first point.
        let server_threads = points.iter().map(|p| p.server_threads).max().unwrap_or(1);
        crate::runtime::restart_unless_set_for_libtorch(
            kernels.contains(&crate::config::CpuKernels::Avx2),
            server_threads,
        )?;
        // Folders that cannot be used fail now, not after every point has trained.
        for (flag, folder) in [("--out", &out), ("--report", &report)] {
            anyhow::ensure!(
                !folder.exists() || folder.is_dir(),
                "{flag} {}: exists and is not a folder; name a folder (it is created if missing)",
                folder.display()
            );
        }
        Ok(Sweep { name, points, out, report, file: path.to_path_buf() })
    }

    /// "sweep NAME: N runs into OUT, report in REPORT".
    fn headline(&self) -> String {
        format!(
            "sweep {}: {} runs into {}, report in {}",
            self.name,
            self.points.len(),
            self.out.display(),
            self.report.display()
        )
    }

    /// "[i/N] CONFIG OVERRIDES" for point `index`.
    fn describe(&self, index: usize) -> String {
        let point = &self.points[index];
        format!(
            "[{}/{}] {} {}",
            index + 1,
            self.points.len(),
            point.config.display(),
            point.overrides.join(" ")
        )
    }

    /// Runs point `index` in this process, or keeps or continues its run from an earlier
    /// attempt at the sweep ([`super::run::run_or_continue`]); returns its run directory.
    pub fn run_point(&self, dirs: &DataDirs, index: usize) -> Result<PathBuf> {
        let point = &self.points[index];
        super::run::run_or_continue(dirs, &point.config, &point.overrides, &self.out)
    }

    /// The report of the points' runs (in point order); `launcher` goes before `fedsim` in
    /// the command it names ("mpirun -np 4 ", or nothing).
    pub fn report(&self, runs: &[PathBuf], launcher: &str) -> Result<()> {
        let options = ReportOptions {
            out: self.report.clone(),
            times: None,
            targets: None,
            command: format!("{launcher}fedsim sweep {}", self.file.display()),
        };
        super::report::report(runs, &options)
    }

    /// Every point, one after another in this process, then the report.
    fn run_here(&self, dirs: &DataDirs) -> Result<()> {
        println!("{}", self.headline());
        let mut finished = Vec::new();
        for index in 0..self.points.len() {
            println!("\n{}", self.describe(index));
            finished.push(self.run_point(dirs, index)?);
        }
        println!();
        self.report(&finished, "")
    }
}

#[cfg(feature = "mpi")]
impl crate::cluster::Points for Sweep {
    fn count(&self) -> usize {
        self.points.len()
    }
    fn headline(&self) -> String {
        Sweep::headline(self)
    }
    fn describe(&self, index: usize) -> String {
        Sweep::describe(self, index)
    }
}

/// Runs every point of a sweep, then writes the report of all its runs.
pub fn run(dirs: &DataDirs, path: &Path, out: Option<PathBuf>, report: Option<PathBuf>) -> Result<()> {
    Sweep::prepare(path, out, report)?.run_here(dirs)
}

/// `fedsim sweep` in an MPI job (feature `mpi`): each point is a whole run on one of ranks
/// 1..N-1, handed out by rank 0, which then reports them all ([`crate::cluster::hand_out_points`]).
/// One rank runs the sweep as a single process would.
#[cfg(feature = "mpi")]
pub fn run_in_job(dirs: &DataDirs, path: &Path, out: Option<PathBuf>, report: Option<PathBuf>) -> Result<()> {
    let sweep = Sweep::prepare(path, out, report)?;
    let cluster = match crate::cluster::join()? {
        Some(cluster) if cluster.size > 1 => cluster,
        _ => return sweep.run_here(dirs),
    };
    let result = if cluster.rank == 0 {
        crate::cluster::hand_out_points(&cluster, &sweep)
            .map_err(anyhow::Error::from)
            .and_then(|runs| sweep.report(&runs, &format!("mpirun -np {} ", cluster.size)))
    } else {
        crate::cluster::run_points_given(&cluster, |index| sweep.run_point(dirs, index)).map_err(Into::into)
    };
    cluster.finish(result)
}
