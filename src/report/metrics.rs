//! The numbers of a report, computed with polars from the runs' logs: cost and speed per run,
//! speed-up and parallel efficiency against the 1-worker run of the same experiment, accuracy
//! at fixed virtual times, time to target accuracies, staleness, and whether runs that differ
//! only in their worker count agree bit for bit (and, if not, which rows differ).

use polars::prelude::*;

use super::logs::{RunLogs, WALL_CLOCK_COLUMNS};

/// Where a run's wall time went, in seconds, seen from both sides: the workers train (the
/// mean per worker: the tasks' training time over the worker count) or sit idle; meanwhile
/// the coordinating thread aggregates (server), evaluates, or does the rest (waits for
/// workers, plans, logs). Each side sums to the wall time.
#[derive(Clone, Debug, PartialEq)]
pub struct WallBreakdown {
    pub wall: f64,
    pub training: f64,
    pub workers_idle: f64,
    pub server: f64,
    pub evaluation: f64,
    pub coordinator_other: f64,
}

/// Staleness of the applied client updates, in versions.
#[derive(Clone, Debug, PartialEq)]
pub struct Staleness {
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub max: u64,
}

/// The first evaluation at or above a target accuracy.
#[derive(Clone, Debug, PartialEq)]
pub struct Reached {
    pub virtual_time: f64,
    pub version: u64,
    /// Wall-clock seconds into the run; none for a resumed run, whose evaluations count from
    /// the start of the process that made them.
    pub wall_s: Option<f64>,
}

/// Everything a report says about one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunStats {
    pub label: String,
    pub algorithm: String,
    pub workers: usize,
    /// The version a resumed run continued from: its wall time, and the speeds derived from it,
    /// cover only the versions after it (run.json describes the last process).
    pub resumed_from: Option<u64>,
    pub wall_seconds: f64,
    pub versions: u64,
    pub updates: u64,
    pub virtual_time: f64,
    pub ms_per_version: f64,
    /// A round is K (active_jobs) client updates.
    pub seconds_per_round: f64,
    pub updates_per_second: f64,
    /// Mean wall time of one client's local training: when it grows with the worker count,
    /// the cores are contended, not the simulator.
    pub ms_per_task: f64,
    pub breakdown: WallBreakdown,
    pub final_accuracy: f64,
    pub final_version: u64,
    pub staleness: Staleness,
    /// Against the 1-worker run of the same experiment, when the report has one.
    pub speedup: Option<f64>,
    pub efficiency: Option<f64>,
    /// Accuracy and version of the latest evaluation at or before each requested time.
    pub accuracy_at: Vec<Option<(f64, u64)>>,
    pub time_to: Vec<Option<Reached>>,
    pub stop_reason: String,
    pub final_weights_sha256: String,
}

/// Runs whose configs differ only in `workers`: they must agree bit for bit.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerGroup {
    /// Indices into the report's runs, by worker count.
    pub members: Vec<usize>,
    /// Rows of evals.parquet or updates.parquet (wall-clock columns aside) and final weights
    /// that differ from the first member; empty when the runs are identical.
    pub differences: Vec<String>,
    pub differing_rows: usize,
}

impl WorkerGroup {
    pub fn identical(&self) -> bool {
        self.differing_rows == 0
    }
}

/// At most this many differing rows are spelled out per pair of runs.
const LISTED_DIFFERENCES: usize = 10;

/// Indices of equal keys, grouped, in order of first appearance.
pub fn group_equal<K: PartialEq>(keys: &[K]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match groups.iter_mut().find(|g| &keys[g[0]] == key) {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

/// Partitions runs into experiments that differ only in their worker counts.
pub fn worker_groups(runs: &[RunLogs]) -> PolarsResult<Vec<WorkerGroup>> {
    let keys: Vec<toml::Table> = runs.iter().map(RunLogs::config_without_workers).collect();
    group_equal(&keys)
        .into_iter()
        .map(|mut members| {
            members.sort_by_key(|&i| runs[i].info.workers);
            let mut differences = Vec::new();
            let mut total = 0;
            let first = &runs[members[0]];
            for &other in &members[1..] {
                let other = &runs[other];
                let pair = format!("workers {} vs {}", first.info.workers, other.info.workers);
                let mut listed = Vec::new();
                let mut count = 0;
                if first.info.final_weights_sha256 != other.info.final_weights_sha256 {
                    count += 1;
                    listed.push(format!(
                        "final weights sha256 {} vs {}",
                        first.short_hash(),
                        other.short_hash()
                    ));
                }
                for (name, a, b, key) in [
                    ("evals.parquet", &first.evals, &other.evals, "version"),
                    ("updates.parquet", &first.updates, &other.updates, "task"),
                ] {
                    let (rows, lines) = differing_rows(name, a, b, key)?;
                    count += rows;
                    listed.extend(lines);
                }
                total += count;
                let shown = listed.len().min(LISTED_DIFFERENCES);
                differences.extend(listed.drain(..shown).map(|l| format!("{pair}: {l}")));
                if !listed.is_empty() {
                    differences.push(format!("{pair}: ... and {} more", listed.len()));
                }
            }
            Ok(WorkerGroup { members, differences, differing_rows: total })
        })
        .collect()
}

/// Rows of two tables that differ in any column but the wall-clock ones, described by row
/// index, key column and the differing values.
pub fn differing_rows(
    table: &str,
    a: &DataFrame,
    b: &DataFrame,
    key: &str,
) -> PolarsResult<(usize, Vec<String>)> {
    let mut lines = Vec::new();
    let compared: Vec<&Column> =
        a.columns().iter().filter(|c| !WALL_CLOCK_COLUMNS.contains(&c.name().as_str())).collect();
    let rows = a.height().min(b.height());
    let mut by_row: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for column in compared {
        let Ok(other) = b.column(column.name()) else {
            lines.push(format!("{table}: column {} missing in one run", column.name()));
            continue;
        };
        let left = column.as_materialized_series().slice(0, rows);
        let right = other.as_materialized_series().slice(0, rows);
        if left.dtype() != right.dtype() {
            lines.push(format!("{table}: column {} is {} vs {}", column.name(), left.dtype(), right.dtype()));
            continue;
        }
        let same = left.equal_missing(&right)?;
        for (row, equal) in same.iter().enumerate() {
            if equal != Some(true) {
                by_row.entry(row).or_default().push(format!(
                    "{} {} vs {}",
                    column.name(),
                    left.get(row)?,
                    right.get(row)?
                ));
            }
        }
    }
    let mut count = by_row.len() + lines.len();
    for (row, cells) in &by_row {
        let key_value =
            a.column(key).ok().and_then(|c| c.get(*row).ok()).map_or("?".into(), |v| v.to_string());
        lines.push(format!("{table} row {row} ({key} {key_value}): {}", cells.join(", ")));
    }
    if a.height() != b.height() {
        count += a.height().abs_diff(b.height());
        lines.push(format!("{table}: {} rows vs {}", a.height(), b.height()));
    }
    Ok((count, lines))
}

/// Accuracy and version of the latest evaluation at or before virtual time `t`.
pub fn accuracy_at(evals: &DataFrame, t: f64) -> PolarsResult<Option<(f64, u64)>> {
    let row = evals
        .clone()
        .lazy()
        .filter(col("virtual_time").lt_eq(lit(t + 1e-9)))
        .select([col("accuracy").last(), col("version").last()])
        .collect()?;
    Ok(row.column("accuracy")?.f64()?.get(0).zip(row.column("version")?.u64()?.get(0)))
}

/// The first evaluation whose accuracy reaches `target`.
pub fn time_to_accuracy(evals: &DataFrame, target: f64) -> PolarsResult<Option<Reached>> {
    let row = evals
        .clone()
        .lazy()
        .filter(col("accuracy").gt_eq(lit(target)))
        .select([col("virtual_time").first(), col("version").first(), col("wall_s").first()])
        .collect()?;
    let virtual_time = row.column("virtual_time")?.f64()?.get(0);
    let version = row.column("version")?.u64()?.get(0);
    let wall_s = row.column("wall_s")?.f64()?.get(0);
    Ok(match (virtual_time, version, wall_s) {
        (Some(virtual_time), Some(version), wall_s) => Some(Reached { virtual_time, version, wall_s }),
        _ => None,
    })
}

/// How many updates a run applied to make the versions after `version`.
fn updates_after(updates: &DataFrame, version: u64) -> PolarsResult<u64> {
    let after = updates.clone().lazy().filter(col("applied_version").gt(lit(version))).collect()?;
    Ok(after.height() as u64)
}

pub fn staleness(updates: &DataFrame) -> PolarsResult<Staleness> {
    let s = || col("staleness").cast(DataType::Float64);
    let row = updates
        .clone()
        .lazy()
        .select([
            s().mean().alias("mean"),
            s().median().alias("median"),
            s().quantile(lit(0.9), QuantileMethod::Linear).alias("p90"),
            col("staleness").max().alias("max"),
        ])
        .collect()?;
    let float = |name: &str| -> PolarsResult<f64> { Ok(row.column(name)?.f64()?.get(0).unwrap_or(0.0)) };
    Ok(Staleness {
        mean: float("mean")?,
        median: float("median")?,
        p90: float("p90")?,
        max: row.column("max")?.u64()?.get(0).unwrap_or(0),
    })
}

/// Computes every run's statistics; `labels` name the runs, `groups` come from
/// [`worker_groups`].
pub fn run_stats(
    runs: &[RunLogs],
    labels: &[String],
    groups: &[WorkerGroup],
    times: &[f64],
    targets: &[f64],
) -> PolarsResult<Vec<RunStats>> {
    runs.iter()
        .enumerate()
        .map(|(i, run)| {
            let info = &run.info;
            let wall = info.wall_seconds.max(1e-9);
            // What the wall time paid for: a resumed run's last process made the versions after
            // the checkpoint it started from, and applied the updates that made them.
            let resumed_from = info.resumed_from_version;
            let (versions_timed, updates_timed) = match resumed_from {
                Some(from) => (info.versions.saturating_sub(from), updates_after(&run.updates, from)?),
                None => (info.versions, info.updates_applied),
            };
            // A speed-up compares whole runs, so runs that were resumed take no part.
            let baseline = groups
                .iter()
                .find(|g| g.members.contains(&i))
                .and_then(|g| g.members.iter().find(|&&j| runs[j].info.workers == 1))
                .filter(|&&j| runs[j].info.resumed_from_version.is_none())
                .map(|&j| runs[j].info.wall_seconds);
            let speedup = baseline.filter(|_| resumed_from.is_none()).map(|b| b / wall);
            let training = info.train_seconds / info.workers.max(1) as f64;
            let breakdown = WallBreakdown {
                wall: info.wall_seconds,
                training,
                workers_idle: (info.wall_seconds - training).max(0.0),
                server: info.server_seconds,
                evaluation: info.eval_seconds,
                coordinator_other: (info.wall_seconds - info.server_seconds - info.eval_seconds).max(0.0),
            };
            let accuracy = run.eval_column("accuracy");
            let versions = run.eval_versions();
            let rounds = updates_timed as f64 / run.active_jobs as f64;
            Ok(RunStats {
                label: labels[i].clone(),
                algorithm: method_name(&info.algorithm, &run.config),
                workers: info.workers,
                resumed_from,
                wall_seconds: info.wall_seconds,
                versions: info.versions,
                updates: info.updates_applied,
                virtual_time: info.virtual_time,
                ms_per_version: info.wall_seconds * 1e3 / versions_timed.max(1) as f64,
                seconds_per_round: if rounds > 0.0 { info.wall_seconds / rounds } else { f64::NAN },
                updates_per_second: updates_timed as f64 / wall,
                ms_per_task: info.train_seconds * 1e3 / info.tasks_trained.max(1) as f64,
                breakdown,
                final_accuracy: accuracy.last().copied().unwrap_or(f64::NAN),
                final_version: versions.last().copied().unwrap_or(0),
                staleness: staleness(&run.updates)?,
                speedup,
                efficiency: speedup.map(|s| s / info.workers.max(1) as f64),
                accuracy_at: times
                    .iter()
                    .map(|&t| accuracy_at(&run.evals, t))
                    .collect::<PolarsResult<_>>()?,
                time_to: targets
                    .iter()
                    .map(|&target| {
                        let reached = time_to_accuracy(&run.evals, target)?;
                        Ok(reached
                            .map(|r| Reached { wall_s: r.wall_s.filter(|_| resumed_from.is_none()), ..r }))
                    })
                    .collect::<PolarsResult<_>>()?,
                stop_reason: info.stop_reason.clone(),
                final_weights_sha256: info.final_weights_sha256.clone(),
            })
        })
        .collect()
}

/// What a run's algorithm is called in a report: its kind, named by the paper where a server
/// optimizer or FedProx's term makes it another method on rounds (`sync_fl` with adam is
/// FedAdam, with prox_mu > 0 FedProx), and with `+ adam`, `+ prox` after the kind otherwise.
/// Runs from before optimizers (no such keys) keep their kind.
pub fn method_name(algorithm: &str, config: &toml::Table) -> String {
    use crate::fl::ServerOptimizerKind;
    let optimizer = config
        .get("server_optimizer")
        .and_then(|o| o.get("kind"))
        .and_then(toml::Value::as_str)
        .and_then(ServerOptimizerKind::by_name)
        .filter(|&kind| kind != ServerOptimizerKind::Sgd);
    let prox = config.get("prox_mu").and_then(toml::Value::as_float).is_some_and(|mu| mu > 0.0);
    let mut parts: Vec<String> = match (algorithm, optimizer) {
        ("sync_fl", Some(kind)) => vec![kind.row().paper_name.to_owned()],
        ("sync_fl", None) if prox => return "FedProx".to_owned(),
        (_, Some(kind)) => vec![algorithm.to_owned(), kind.name().to_owned()],
        (_, None) => vec![algorithm.to_owned()],
    };
    if prox {
        parts.push("prox".to_owned());
    }
    parts.join(" + ")
}

/// Names for the runs: the config name, plus the config keys that tell runs of the same name
/// apart (e.g. `quickstart, workers 2`).
pub fn labels(runs: &[RunLogs]) -> Vec<String> {
    runs.iter()
        .map(|run| {
            let twins: Vec<&RunLogs> = runs.iter().filter(|r| r.info.name == run.info.name).collect();
            if twins.len() == 1 {
                return run.info.name.clone();
            }
            let mut keys: Vec<&String> = run
                .config
                .keys()
                .filter(|k| {
                    // A setup or run seed equal to the master seed says nothing new. Keys are
                    // compared among the twins run by the same commit: another fedsim may write
                    // other keys, and the commit already tells its runs apart.
                    let echoes_seed = ["setup_seed", "run_seed"].contains(&k.as_str())
                        && run.config.get(*k) == run.config.get("seed");
                    let same_commit = twins.iter().filter(|t| t.info.git_commit == run.info.git_commit);
                    k.as_str() != "name"
                        && !echoes_seed
                        && same_commit.clone().all(|t| t.config.contains_key(*k))
                        && same_commit.clone().any(|t| t.config.get(*k) != run.config.get(*k))
                })
                .collect();
            keys.sort_by_key(|k| match k.as_str() {
                "workers" => 0,
                "seed" => 1,
                _ => 2,
            });
            let mut parts: Vec<String> = Vec::new();
            if twins.iter().any(|t| t.info.git_commit != run.info.git_commit) {
                parts.push(format!("@{}", run.info.git_commit.chars().take(7).collect::<String>()));
            }
            parts.extend(
                keys.iter()
                    .take(3 - parts.len())
                    .map(|k| format!("{} {}", k.replace('_', " "), short_value(&run.config[k.as_str()]))),
            );
            if parts.is_empty() {
                format!(
                    "{} ({})",
                    run.info.name,
                    run.dir.file_name().map_or("".into(), |n| n.to_string_lossy())
                )
            } else {
                format!("{}, {}", run.info.name, parts.join(", "))
            }
        })
        .collect()
}

/// What a label says of a table it cannot name in a few words.
pub const CHANGED: &str = "(changed)";

/// A config value in a few words, for labels.
pub fn short_value(value: &toml::Value) -> String {
    let number = |t: &toml::Table, key: &str| t.get(key).map_or(String::new(), short_value);
    match value {
        toml::Value::String(s) => s.clone(),
        // The world's tables by what tells them apart: leaves, or the availability model.
        toml::Value::Table(t) if t.contains_key("num_leaf_nodes") => {
            format!("{} leaves", number(t, "num_leaf_nodes"))
        }
        toml::Value::Table(t) if t.get("kind").and_then(toml::Value::as_str) == Some("on_off") => {
            format!("on {} off {}", number(t, "mean_on"), number(t, "mean_off"))
        }
        toml::Value::Table(t) if t.contains_key("kind") => number(t, "kind"),
        toml::Value::Table(_) | toml::Value::Array(_) => CHANGED.into(),
        other => other.to_string(),
    }
}

/// Round virtual times from 0 to the longest run's horizon.
pub fn default_times(runs: &[RunLogs]) -> Vec<f64> {
    times_up_to(runs.iter().map(|r| r.info.virtual_time).fold(0.0, f64::max))
}

/// About six round steps from 0, then the horizon itself (rounded up to 0.01, so that the
/// last evaluation is at or before it).
fn times_up_to(horizon: f64) -> Vec<f64> {
    if horizon <= 0.0 {
        return vec![0.0];
    }
    let step = nice_step(horizon / 6.0);
    let mut times: Vec<f64> = (0..).map(|i| i as f64 * step).take_while(|&t| t <= horizon + 1e-9).collect();
    if times.last().is_some_and(|&t| t < horizon - 1e-9) {
        times.push((horizon * 100.0).ceil() / 100.0);
    }
    times
}

/// 1, 2, 2.5 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&s| s >= raw - 1e-12).unwrap_or(raw)
}

/// Accuracy targets above chance on ten classes: 0.2, 0.3, ... (0.15, 0.2, ... when no run
/// reaches 0.3) up to the best accuracy any run reached.
pub fn default_targets(runs: &[RunLogs]) -> Vec<f64> {
    let best = runs.iter().flat_map(|r| r.eval_column("accuracy")).fold(0.0, f64::max);
    let step = if best >= 0.3 { 0.1 } else { 0.05 };
    (2..).map(|k| (k as f64 * step * 100.0).round() / 100.0).take_while(|&t| t <= best).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_times_are_round_and_end_after_the_last_evaluation() {
        assert_eq!(times_up_to(15.0), [0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0]);
        assert_eq!(times_up_to(642.0222), [0.0, 200.0, 400.0, 600.0, 642.03]);
        assert_eq!(times_up_to(0.0), [0.0]);
    }

    #[test]
    fn methods_are_named_as_their_papers_name_them() {
        let flat = |keys: &str| -> toml::Table { keys.parse().unwrap() };
        let adam = "prox_mu = 0.0\n[server_optimizer]\nkind = \"adam\"";
        assert_eq!(method_name("sync_fl", &flat("")), "sync_fl");
        assert_eq!(method_name("sync_fl", &flat("[server_optimizer]\nkind = \"sgd\"")), "sync_fl");
        assert_eq!(method_name("sync_fl", &flat(adam)), "FedAdam");
        assert_eq!(method_name("sync_fl", &flat("[server_optimizer]\nkind = \"momentum\"")), "FedAvgM");
        assert_eq!(method_name("sync_fl", &flat("prox_mu = 0.01")), "FedProx");
        assert_eq!(method_name("async_fl", &flat(adam)), "async_fl + adam");
        let both = "prox_mu = 0.01\n[server_optimizer]\nkind = \"yogi\"";
        assert_eq!(method_name("sync_fl", &flat(both)), "FedYogi + prox");
        assert_eq!(method_name("afl_dw", &flat("prox_mu = 0.01")), "afl_dw + prox");
    }

    #[test]
    fn round_steps() {
        assert_eq!(nice_step(2.5), 2.5);
        assert_eq!(nice_step(107.0), 200.0);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(40.0), 50.0);
    }
}
