//! `fedsim sweep SWEEP.toml`: one or more base configs over a grid of config keys (workers,
//! seed, any key), each point run into its own directory under `runs/<sweep name>/`, then a
//! table of what each cost and reached. Runs that differ only in `run.workers` must agree bit
//! for bit; the table says whether they do.
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
use crate::record::RunInfo;

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
}

impl Point {
    /// The point without its worker count: runs with equal keys must give identical results.
    fn without_workers(&self) -> (PathBuf, Vec<String>) {
        (
            self.config.clone(),
            self.overrides.iter().filter(|o| !o.starts_with("run.workers=")).cloned().collect(),
        )
    }
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
            Config::load(&config, &overrides)
                .with_context(|| format!("sweep point {} {}", config.display(), overrides.join(" ")))?;
            points.push(Point { config: config.clone(), overrides });
        }
    }
    let name =
        file.name.unwrap_or_else(|| path.file_stem().and_then(|s| s.to_str()).unwrap_or("sweep").to_owned());
    Ok((name, points))
}

pub fn run(dirs: &DataDirs, path: &Path, out: &Option<PathBuf>) -> Result<()> {
    let (name, points) = load(path)?;
    let out = out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&name));
    println!("sweep {name}: {} runs into {}", points.len(), out.display());
    let mut finished = Vec::new();
    for (i, point) in points.iter().enumerate() {
        println!("\n[{}/{}] {} {}", i + 1, points.len(), point.config.display(), point.overrides.join(" "));
        let run_dir = crate::run_command::run(dirs, &point.config, &point.overrides, &out)?;
        finished.push((point.clone(), run_dir));
    }
    println!("\n{}", summary(&finished)?);
    Ok(())
}

/// A markdown table of the sweep's runs: cost, speed-up against the 1-worker run of the same
/// point, final accuracy, and whether worker counts changed any result.
pub fn summary(runs: &[(Point, PathBuf)]) -> Result<String> {
    let infos: Vec<RunInfo> = runs
        .iter()
        .map(|(_, dir)| {
            let text = std::fs::read_to_string(dir.join("run.json"))
                .with_context(|| format!("{}: no run.json", dir.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: run.json is not a fedsim run", dir.display()))
        })
        .collect::<Result<_>>()?;
    let mut table = String::from(
        "| run | overrides | workers | wall s | versions | updates/s | speed-up | stop | final weights |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut verdicts = Vec::new();
    for (i, ((point, _), info)) in runs.iter().zip(&infos).enumerate() {
        let key = point.without_workers();
        let siblings: Vec<usize> = (0..runs.len()).filter(|&j| runs[j].0.without_workers() == key).collect();
        let baseline = siblings.iter().map(|&j| &infos[j]).find(|other| other.workers == 1);
        let speedup = baseline
            .map_or("-".to_owned(), |b| format!("{:.2}x", b.wall_seconds / info.wall_seconds.max(1e-9)));
        table.push_str(&format!(
            "| {} | {} | {} | {:.1} | {} | {:.1} | {} | {} | {} |\n",
            info.name,
            point.without_workers().1.join(" "),
            info.workers,
            info.wall_seconds,
            info.versions,
            info.updates_applied as f64 / info.wall_seconds.max(1e-9),
            speedup,
            info.stop_reason,
            &info.final_weights_sha256[..16],
        ));
        if siblings.len() > 1 && siblings[0] == i {
            let same = siblings.iter().all(|&j| infos[j].final_weights_sha256 == info.final_weights_sha256);
            let workers: Vec<String> = siblings.iter().map(|&j| infos[j].workers.to_string()).collect();
            verdicts.push(format!(
                "{} ({} workers): final weights {}",
                info.name,
                workers.join(", "),
                if same { "identical" } else { "DIFFER" }
            ));
        }
    }
    for verdict in verdicts {
        table.push_str(&format!("\n{verdict}"));
    }
    Ok(table)
}
