//! summary.md: a report's tables and figures as markdown, with the command that regenerates it.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::logs::RunLogs;
use super::{Report, ReportOptions, FIGURES};

pub fn markdown(report: &Report, runs: &[RunLogs], options: &ReportOptions) -> String {
    let mut md = String::new();
    let title = options.out.file_name().map_or("report".into(), |n| n.to_string_lossy().into_owned());
    let _ = writeln!(md, "# {title}\n");
    let _ = writeln!(md, "Regenerate:\n\n    {}\n", options.command);
    let distinct = |f: &dyn Fn(&RunLogs) -> String| -> String {
        runs.iter().map(f).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(
        md,
        "{} runs by fedsim {} (commit {}) on {} ({}) with libtorch {}. Wall times are this \
         machine's; everything else is determined by the configs and seeds.\n",
        runs.len(),
        distinct(&|r| r.info.fedsim_version.clone()),
        distinct(&|r| r.info.git_commit.clone()),
        distinct(&|r| r.info.device.clone()),
        distinct(&|r| r.info.host.clone()),
        distinct(&|r| r.info.libtorch.clone()),
    );
    if !report.skipped.is_empty() {
        let _ = writeln!(md, "**Left out** (could not be read):\n");
        for error in &report.skipped {
            let _ = writeln!(md, "- {error}");
        }
        md.push('\n');
    }

    let _ = writeln!(md, "## Runs\n");
    let _ = writeln!(
        md,
        "A round is K client updates (K = active_jobs). Speed-up and efficiency compare a run with \
         the 1-worker run of the same config.\n"
    );
    if report.runs.iter().any(|s| s.resumed_from.is_some()) {
        let _ = writeln!(
            md,
            "A run resumed from a checkpoint (wall time \"from vN\") is timed from version N on, by the \
             process that finished it: its speeds cover those versions, it takes no part in a speed-up, \
             and its times to accuracy give no wall time.\n"
        );
    }
    md.push_str(
        "| run | algorithm | workers | wall s | versions | virtual time | ms / version | s / round | updates / s | speed-up | efficiency | final accuracy | stop | CPU kernels | final weights | folder |\n",
    );
    md.push_str(&"| --- ".repeat(16));
    md.push_str("|\n");
    for (s, run) in report.runs.iter().zip(runs) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.2} | {:.2} | {} | {} | {:.4} (v{}) | {} | {} | {} | {} |",
            s.label,
            s.algorithm,
            s.workers,
            s.resumed_from.map_or(format!("{:.1}", s.wall_seconds), |v| format!("{:.1} (from v{v})", s.wall_seconds)),
            s.versions,
            s.virtual_time,
            s.ms_per_version,
            s.seconds_per_round,
            s.updates_per_second,
            s.speedup.map_or("-".into(), |x| format!("{x:.2}x")),
            s.efficiency.map_or("-".into(), |x| format!("{:.0}%", 100.0 * x)),
            s.final_accuracy,
            s.final_version,
            s.stop_reason,
            // The kernels the run used and whether they were pinned (reproducible mode).
            match (&run.info.cpu_capability, &run.info.cpu_kernels) {
                (Some(capability), Some(mode)) => format!("{capability} ({mode})"),
                (Some(capability), None) => capability.clone(),
                _ => "-".to_owned(),
            },
            run.short_hash(),
            run.dir.file_name().map_or("".into(), |n| n.to_string_lossy()),
        );
    }

    let _ = writeln!(md, "\n## Same results for every worker count\n");
    let compared: Vec<_> = report.groups.iter().filter(|g| g.members.len() > 1).collect();
    if compared.is_empty() {
        let _ =
            writeln!(md, "No two runs differ only in their worker count, so there is nothing to compare.");
    }
    for group in compared {
        let first = &runs[group.members[0]];
        let workers: Vec<String> = group.members.iter().map(|&i| runs[i].info.workers.to_string()).collect();
        if group.identical() {
            let _ = writeln!(
                md,
                "- **{}** ({} workers): **identical**. Final weights (sha256 {}), all {} evaluations and \
                 all {} applied updates agree bit for bit (wall-clock columns aside).",
                first.info.name,
                workers.join(", "),
                first.short_hash(),
                first.evals.height(),
                first.updates.height(),
            );
        } else {
            let _ = writeln!(
                md,
                "- **{}** ({} workers): **DIFFER** in {} rows or values:",
                first.info.name,
                workers.join(", "),
                group.differing_rows
            );
            for line in &group.differences {
                let _ = writeln!(md, "    - {line}");
            }
        }
    }

    let labels: Vec<&str> = report.runs.iter().map(|s| s.label.as_str()).collect();
    let header = |first: &str| {
        format!("| {first} | {} |\n{}|\n", labels.join(" | "), "| --- ".repeat(labels.len() + 1))
    };
    let _ = writeln!(md, "\n## Accuracy at fixed virtual times\n");
    let _ = writeln!(
        md,
        "Test accuracy of the latest evaluation at or before each time (vN: the version it evaluated).\n"
    );
    md.push_str(&header("virtual time"));
    for (t, &time) in report.times.iter().enumerate() {
        let cells: Vec<String> = report
            .runs
            .iter()
            .map(|s| s.accuracy_at[t].map_or("-".into(), |(a, v)| format!("{a:.4} (v{v})")))
            .collect();
        let _ = writeln!(md, "| {time} | {} |", cells.join(" | "));
    }

    let _ = writeln!(md, "\n## Time to accuracy\n");
    let _ = writeln!(md, "The first evaluation at or above each target: virtual time, version and wall-clock seconds into the run.\n");
    md.push_str(&header("target"));
    for (t, &target) in report.targets.iter().enumerate() {
        let cells: Vec<String> = report
            .runs
            .iter()
            .map(|s| {
                s.time_to[t].as_ref().map_or("not reached".into(), |r| match r.wall_s {
                    Some(wall_s) => format!("{:.2} (v{}, {wall_s:.1} s)", r.virtual_time, r.version),
                    None => format!("{:.2} (v{})", r.virtual_time, r.version),
                })
            })
            .collect();
        let _ = writeln!(md, "| {target} | {} |", cells.join(" | "));
    }

    if !report.seed_groups.is_empty() {
        seed_tables(&mut md, report);
    }

    let _ = writeln!(md, "\n## Staleness and wall time\n");
    let _ = writeln!(
        md,
        "Staleness of applied updates, in versions. Wall time, seen from both sides: the workers \
         train (mean per worker) or sit idle; meanwhile the coordinating thread aggregates (server), \
         evaluates, or waits for workers, plans and logs (other). Each side sums to the wall time. \
         The last column is one client's local training: if it grows with the worker count, the \
         cores are contended (a speed-up below the worker count then is the machine's, not the \
         simulator's).\n"
    );
    md.push_str(
        "| run | staleness mean | median | p90 | max | wall s | training s | workers idle s | server s | evaluation s | coordinator other s | ms / training task |\n",
    );
    md.push_str(&"| --- ".repeat(12));
    md.push_str("|\n");
    for s in &report.runs {
        let b = &s.breakdown;
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} |",
            s.label,
            s.staleness.mean,
            s.staleness.median,
            s.staleness.p90,
            s.staleness.max,
            b.wall,
            b.training,
            b.workers_idle,
            b.server,
            b.evaluation,
            b.coordinator_other,
            s.ms_per_task
        );
    }

    let fates: Vec<(&str, Vec<(&'static str, u64)>)> = report
        .runs
        .iter()
        .zip(runs)
        .filter_map(|(s, run)| Some((s.label.as_str(), run.job_fates()?)))
        .collect();
    if let Some((_, first)) = fates.first() {
        let _ = writeln!(md, "\n## Job fates\n");
        let _ = writeln!(
            md,
            "Every dispatched job and what became of it (jobs.parquet): applied by an aggregation; \
             dropped as staler than algorithm.max_staleness; cancelled with an over-committed round; \
             refused for a base version the server no longer kept; timed out; lost when its client \
             went offline; missed its round's deadline; or still open when the run ended. Only \
             applied and open jobs were trained.\n"
        );
        let _ = write!(md, "| run | dispatched |");
        for (name, _) in first {
            let _ = write!(md, " {name} |");
        }
        md.push('\n');
        md.push_str(&"| --- ".repeat(first.len() + 2));
        md.push_str("|\n");
        for (label, counts) in &fates {
            let total: u64 = counts.iter().map(|(_, n)| n).sum();
            let _ = write!(md, "| {label} | {total} |");
            for (_, n) in counts {
                let _ = write!(md, " {n} |");
            }
            md.push('\n');
        }
    }

    let _ = writeln!(md, "\n## Figures\n");
    let _ = writeln!(md, "Each figure is also written as SVG beside the PNG.\n");
    let captions = [
        "Test accuracy against virtual time (experiments over seeds: mean line in a min-max band)",
        "Test accuracy against model version (experiments over seeds: mean line in a min-max band)",
        "Speed-up against workers, with the ideal line",
        "Staleness histograms",
        "Where the wall time went",
        "Server wall time per arrival against version",
    ];
    for (stem, caption) in FIGURES.iter().zip(captions) {
        let _ = writeln!(md, "![{caption}]({stem}.png)\n");
    }
    if !fates.is_empty() {
        let _ = writeln!(
            md,
            "![Per-client timelines on the virtual time axis: download, training, upload, the leaf and hop, idle between]({}.png)\n",
            super::TIMELINE
        );
    }
    md
}

/// Accuracy and time to accuracy of the experiments repeated over seeds: mean [min, max].
fn seed_tables(md: &mut String, report: &Report) {
    let groups = &report.seed_groups;
    let _ = writeln!(md, "\n## Over seeds\n");
    let _ = writeln!(
        md,
        "Runs whose configs differ only in their seeds, one column per experiment: the mean over \
         the seeds and, in brackets, the lowest and highest.\n"
    );
    for group in groups {
        let _ =
            writeln!(md, "- **{}**: seeds {} ({} runs)", group.name, group.seed_list(), group.members.len());
    }
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    let header =
        |first: &str| format!("| {first} | {} |\n{}|\n", names.join(" | "), "| --- ".repeat(names.len() + 1));
    let _ = writeln!(md, "\nTest accuracy at fixed virtual times:\n");
    md.push_str(&header("virtual time"));
    for (t, &time) in report.times.iter().enumerate() {
        let cells: Vec<String> = groups
            .iter()
            .map(|g| {
                g.accuracy_at[t].map_or("-".into(), |a| format!("{:.4} [{:.4}, {:.4}]", a.mean, a.min, a.max))
            })
            .collect();
        let _ = writeln!(md, "| {time} | {} |", cells.join(" | "));
    }
    let _ = writeln!(md, "\nVirtual time to each target accuracy, over the seeds that reached it:\n");
    md.push_str(&header("target"));
    for (t, &target) in report.targets.iter().enumerate() {
        let cells: Vec<String> = groups
            .iter()
            .map(|g| {
                let reach = &g.time_to[t];
                match reach.virtual_time {
                    Some(v) => format!(
                        "{:.2} [{:.2}, {:.2}] ({} of {})",
                        v.mean, v.min, v.max, reach.reached, reach.of
                    ),
                    None => format!("not reached (0 of {})", reach.of),
                }
            })
            .collect();
        let _ = writeln!(md, "| {target} | {} |", cells.join(" | "));
    }
}
