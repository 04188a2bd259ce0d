//! `fedsim report RUN_DIR... --out reports/NAME`: turns run directories into a comparison:
//! `summary.md` (tables of cost, speed-up, accuracy at fixed virtual times, time to target
//! accuracies, staleness, the worker-count determinism check, and results over seeds for runs
//! that differ only in their seeds) and figures as PNG and SVG.
//! A run that cannot be read is named with its file and reason and left out; the others
//! still report.

pub mod figures;
pub mod logs;
pub mod metrics;
pub mod seeds;
mod summary;

use std::path::{Path, PathBuf};

use polars::prelude::PolarsError;

use self::figures::{
    render, FigureError, Line, Lines, Speedup, StalenessHistograms, Timeline, TimelinePanel, WallTime,
};
use self::logs::{LogError, RunLogs};
use self::metrics::{RunStats, WorkerGroup};
use self::seeds::SeedGroup;

/// Why no report was written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: given twice; a report compares different runs, each once", .0.display())]
    GivenTwice(PathBuf),
    #[error("--out {}: exists and is not a folder; name a folder for the report", .0.display())]
    OutNotAFolder(PathBuf),
    #[error("no run could be read, so no report was written:\n{}", reasons(.0))]
    NoRun(Vec<LogError>),
    #[error("comparing runs that differ only in workers")]
    Groups(#[source] PolarsError),
    #[error("computing the report")]
    Stats(#[source] PolarsError),
    #[error("creating the report folder {}", path.display())]
    CreateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Figure(#[from] FigureError),
}

/// The runs left out and why, one indented line each.
fn reasons(skipped: &[LogError]) -> String {
    skipped.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
}

type Result<T, E = ReportError> = std::result::Result<T, E>;

/// What to report and where.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub out: PathBuf,
    /// Virtual times for the accuracy table (default: round steps up to the longest run).
    pub times: Option<Vec<f64>>,
    /// Target accuracies for the time-to-accuracy table (default: multiples of 0.1).
    pub targets: Option<Vec<f64>>,
    /// The command that regenerates the report, quoted in summary.md.
    pub command: String,
}

/// A written report.
#[derive(Debug)]
pub struct Report {
    pub summary: PathBuf,
    pub runs: Vec<RunStats>,
    pub groups: Vec<WorkerGroup>,
    /// Experiments repeated over seeds.
    pub seed_groups: Vec<SeedGroup>,
    pub times: Vec<f64>,
    pub targets: Vec<f64>,
    pub figures: Vec<PathBuf>,
    /// Runs left out, each with the file that could not be used.
    pub skipped: Vec<LogError>,
}

/// The figures every report draws (stems; each is written as .png and .svg).
pub const FIGURES: [&str; 6] =
    ["accuracy_vs_time", "accuracy_vs_version", "speedup", "staleness", "wall_time", "server_time"];

/// The per-client timeline figure, drawn when runs have a jobs table: up to this many runs,
/// this many clients each.
pub const TIMELINE: &str = "timeline";
const TIMELINE_RUNS: usize = 4;
const TIMELINE_LANES: usize = 6;

/// Reads the runs, computes the tables, draws the figures and writes summary.md.
pub fn write(run_dirs: &[PathBuf], options: &ReportOptions) -> Result<Report> {
    let mut seen = std::collections::HashSet::new();
    for dir in run_dirs {
        let key = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        if !seen.insert(key) {
            return Err(ReportError::GivenTwice(dir.clone()));
        }
    }
    if options.out.exists() && !options.out.is_dir() {
        return Err(ReportError::OutNotAFolder(options.out.clone()));
    }
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for dir in run_dirs {
        match RunLogs::load(dir) {
            Ok(run) => runs.push(run),
            Err(error) => skipped.push(error),
        }
    }
    if runs.is_empty() {
        return Err(ReportError::NoRun(skipped));
    }
    let labels = metrics::labels(&runs);
    let groups = metrics::worker_groups(&runs).map_err(ReportError::Groups)?;
    let times = options.times.clone().unwrap_or_else(|| metrics::default_times(&runs));
    let targets = options.targets.clone().unwrap_or_else(|| metrics::default_targets(&runs));
    let stats = metrics::run_stats(&runs, &labels, &groups, &times, &targets).map_err(ReportError::Stats)?;

    let seed_groups = seeds::seed_groups(&runs, &stats, targets.len());

    std::fs::create_dir_all(&options.out)
        .map_err(|source| ReportError::CreateFolder { path: options.out.clone(), source })?;
    let figures = draw_figures(&runs, &stats, &groups, &seed_groups, &options.out)?;
    let report = Report {
        summary: options.out.join("summary.md"),
        runs: stats,
        groups,
        seed_groups,
        times,
        targets,
        figures,
        skipped,
    };
    let markdown = summary::markdown(&report, &runs, options);
    crate::record::write_atomically(&report.summary, markdown.as_bytes())
        .map_err(|source| ReportError::Write { path: report.summary.clone(), source })?;
    Ok(report)
}

impl Report {
    /// A few lines for the terminal: each run's cost and accuracy, the determinism verdicts,
    /// where the report is, and which runs were left out.
    pub fn brief(&self) -> String {
        let mut lines: Vec<String> = self
            .runs
            .iter()
            .map(|s| {
                format!(
                    "  {}: workers {}, wall {:.1} s, {:.1} updates/s{}, final accuracy {:.4} (v{})",
                    s.label,
                    s.workers,
                    s.wall_seconds,
                    s.updates_per_second,
                    s.speedup.map_or(String::new(), |x| format!(", speed-up {x:.2}x")),
                    s.final_accuracy,
                    s.final_version
                )
            })
            .collect();
        for group in self.groups.iter().filter(|g| g.members.len() > 1) {
            let names: Vec<&str> = group.members.iter().map(|&i| self.runs[i].label.as_str()).collect();
            lines.push(if group.identical() {
                format!("  identical results: {}", names.join(" = "))
            } else {
                format!("  DIFFERENT results ({} rows): {}", group.differing_rows, names.join(" vs "))
            });
        }
        for group in &self.seed_groups {
            if let Some(Some(last)) = group.accuracy_at.last() {
                lines.push(format!(
                    "  {} over seeds {}: accuracy at {} {:.4} [{:.4}, {:.4}]",
                    group.name,
                    group.seed_list(),
                    self.times.last().copied().unwrap_or(0.0),
                    last.mean,
                    last.min,
                    last.max
                ));
            }
        }
        for error in &self.skipped {
            lines.push(format!("  left out: {error}"));
        }
        lines.push(format!("report in {}", self.summary.display()));
        lines.join("\n")
    }
}

/// Server ms per arrival in windows of versions (about 60 over the longest run): one line per
/// run, or per experiment over seeds (the mean line in its min-max band).
fn server_time_series(runs: &[RunLogs], stats: &[RunStats], seed_groups: &[SeedGroup]) -> Vec<Line> {
    let longest = runs.iter().map(|r| r.info.versions).max().unwrap_or(1);
    let width = longest.div_ceil(60).max(1);
    let middle = |window: u64| (window as f64 + 0.5) * width as f64;
    let grouped = seed_groups.iter().map(|group| {
        let windows: Vec<_> = group.members.iter().map(|&i| runs[i].server_ms_by_window(width)).collect();
        let all: std::collections::BTreeSet<u64> = windows.iter().flat_map(|w| w.keys().copied()).collect();
        let spreads: Vec<(f64, seeds::Spread)> = all
            .into_iter()
            .filter_map(|w| {
                let values: Vec<f64> = windows.iter().filter_map(|m| m.get(&w).copied()).collect();
                seeds::Spread::of(&values).map(|s| (middle(w), s))
            })
            .collect();
        Line {
            name: format!("{} (mean, min-max of seeds {})", group.name, group.seed_list()),
            points: spreads.iter().map(|(x, s)| (*x, s.mean)).collect(),
            width: 2,
            band: spreads.iter().map(|(x, s)| (*x, s.min, s.max)).collect(),
        }
    });
    let single = runs.iter().zip(stats).enumerate().filter(|(i, _)| !seeds::in_any(seed_groups, *i)).map(
        |(_, (run, s))| Line {
            name: s.label.clone(),
            points: run.server_ms_by_window(width).into_iter().map(|(w, ms)| (middle(w), ms)).collect(),
            width: 2,
            band: Vec::new(),
        },
    );
    grouped.chain(single).collect()
}

fn draw_figures(
    runs: &[RunLogs],
    stats: &[RunStats],
    groups: &[WorkerGroup],
    seed_groups: &[SeedGroup],
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    // Runs that differ only in workers must draw the same curve: thick first, thin last.
    let width = |i: usize| {
        let group = groups.iter().find(|g| g.members.contains(&i)).map_or(&[][..], |g| &g.members[..]);
        let later = group.iter().filter(|&&j| j > i).count() as u32;
        (2 + 2 * later).min(8)
    };
    // An experiment repeated over seeds is one mean line in its band (min to max); every
    // other run is its own line.
    let series = |x: &dyn Fn(&RunLogs) -> Vec<f64>, end: &dyn Fn(&RunLogs) -> f64| -> Vec<Line> {
        let bands = seed_groups.iter().map(|group| {
            let band = seeds::band(runs, group, x, end, 300);
            Line {
                name: format!("{} (mean, min-max of seeds {})", group.name, group.seed_list()),
                points: band.iter().map(|p| (p[0], p[1])).collect(),
                width: 2,
                band: band.iter().map(|p| (p[0], p[2], p[3])).collect(),
            }
        });
        let single = runs.iter().zip(stats).enumerate().filter(|(i, _)| !seeds::in_any(seed_groups, *i)).map(
            |(i, (run, s))| Line {
                name: s.label.clone(),
                points: x(run).into_iter().zip(run.eval_column("accuracy")).collect(),
                width: width(i),
                band: Vec::new(),
            },
        );
        bands.chain(single).collect()
    };
    let [time, version, speedup, staleness, wall, server] = FIGURES;
    written.extend(render(
        &Lines {
            title: "Test accuracy against virtual time".into(),
            x_name: "virtual time (time units)".into(),
            y_name: "test accuracy".into(),
            series: series(&|run| run.eval_column("virtual_time"), &RunLogs::end_time),
            accuracy: true,
        },
        &out.join(time),
    )?);
    written.extend(render(
        &Lines {
            title: "Test accuracy against model version".into(),
            x_name: "model version (server aggregations)".into(),
            y_name: "test accuracy".into(),
            series: series(&|run| run.eval_versions().into_iter().map(|v| v as f64).collect(), &|run| {
                run.info.versions as f64
            }),
            accuracy: true,
        },
        &out.join(version),
    )?);
    written.extend(render(
        &Lines {
            title: "Server wall time per arrival (aggregation and distillation)".into(),
            x_name: "model version (server aggregations)".into(),
            y_name: "server ms per applied update".into(),
            series: server_time_series(runs, stats, seed_groups),
            accuracy: false,
        },
        &out.join(server),
    )?);
    let speedups: Vec<(String, Vec<(f64, f64)>)> = groups
        .iter()
        .filter(|g| g.members.len() > 1 && stats[g.members[0]].speedup.is_some())
        .map(|g| {
            let name = runs[g.members[0]].info.name.clone();
            (
                name,
                g.members
                    .iter()
                    .map(|&i| (stats[i].workers as f64, stats[i].speedup.unwrap_or(0.0)))
                    .collect(),
            )
        })
        .collect();
    written.extend(render(&Speedup { series: speedups }, &out.join(speedup))?);
    written.extend(render(
        &StalenessHistograms {
            panels: runs.iter().zip(stats).map(|(r, s)| (s.label.clone(), r.staleness())).collect(),
        },
        &out.join(staleness),
    )?);
    written.extend(render(
        &WallTime { bars: stats.iter().map(|s| (s.label.clone(), s.breakdown.clone())).collect() },
        &out.join(wall),
    )?);
    // Timelines of the first runs that have a jobs table, one per experiment (the first seed of
    // those repeated over seeds): a few clients each, so the spans stay readable.
    let first_of_experiment =
        |i: usize| seed_groups.iter().all(|g| !g.members.contains(&i) || g.members.first() == Some(&i));
    let panels: Vec<TimelinePanel> = runs
        .iter()
        .zip(stats)
        .enumerate()
        .filter(|&(i, (run, _))| run.jobs.is_some() && first_of_experiment(i))
        .map(|(_, pair)| pair)
        .take(TIMELINE_RUNS)
        .map(|(run, s)| TimelinePanel {
            title: format!("{}: the {} clients with the most jobs", s.label, TIMELINE_LANES),
            end: run.end_time(),
            lanes: run.timeline_lanes(TIMELINE_LANES),
        })
        .collect();
    if !panels.is_empty() {
        written.extend(render(&Timeline { panels }, &out.join(TIMELINE))?);
    }
    Ok(written)
}
