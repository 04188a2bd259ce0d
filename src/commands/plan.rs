//! `fedsim plan`: a config's schedule (versions, client jobs, their fates, staleness) without
//! training; the plan never depends on model values, so it is the run's own.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use crate::config::Config;
use crate::sched::summarize_watching;
use crate::simulation::plan_config;

/// Prints the plan's summary; `replace_stops`: a horizon replaces the config's version limit.
pub fn plan(config_path: &Path, overrides: &[String], replace_stops: bool) -> Result<()> {
    let mut config = Config::load(config_path, overrides)?;
    if replace_stops {
        config.max_versions = None;
    }
    let started = Instant::now();
    // A long plan says how far it got every few seconds, and Ctrl-C ends it with what it has.
    let mut last_note = Instant::now();
    let mut watch = |so_far: &crate::sched::PlanSummary| {
        if last_note.elapsed().as_secs_f64() >= 2.0 {
            last_note = Instant::now();
            eprintln!(
                "  planning: virtual time {:.1}, {} versions so far ({:.0} s; Ctrl-C stops with these counts)",
                so_far.virtual_time,
                so_far.versions,
                started.elapsed().as_secs_f64()
            );
        }
        !crate::exec::interrupt::requested()
    };
    let (summary, end) = summarize_watching(plan_config(&config), &mut watch);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "plan {}: {} with K = {}, B = {}, seed {}",
        config.name,
        config.algorithm.name(),
        config.active_jobs,
        config.buffer_size,
        config.seed
    );
    println!("  versions            {}", summary.versions);
    println!(
        "  client jobs         {} dispatched, {} trained, {} aggregated",
        summary.dispatched_jobs, summary.trained_jobs, summary.aggregated_updates
    );
    println!(
        "  never trained       {} dropped (staler than algorithm.max_staleness), {} refused (base older than algorithm.max_model_history), {} timed out (algorithm.update_timeout), {} cancelled (over-committed rounds), {} missed the round deadline, {} past the horizon",
        summary.fates.dropped_stale,
        summary.fates.refused,
        summary.fates.timed_out,
        summary.fates.cancelled,
        summary.fates.missed_deadline,
        summary.dispatched_jobs.saturating_sub(summary.trained_jobs + summary.fates.withdrawn())
    );
    println!(
        "  availability        clients online {:.1}% of the time; {} jobs never trained, their client going offline",
        summary.online_share * 100.0,
        summary.fates.went_offline
    );
    if !summary.leaves.is_empty() {
        println!(
            "  leaves              {} (clients / jobs dispatched / updates aggregated / messages):",
            summary.leaves.len()
        );
        for (leaf, counts) in summary.leaves.iter().enumerate() {
            println!(
                "    leaf {leaf:<4}         {} / {} / {} / {}",
                counts.clients, counts.dispatched_jobs, counts.aggregated_updates, counts.messages
            );
        }
    }
    println!("  staleness           mean {:.2}, max {}", summary.mean_staleness, summary.max_staleness);
    println!("  evaluations         {}", summary.evaluations);
    match end {
        Some(end) => println!("  virtual time        {:.2} (ended by {end:?})", summary.virtual_time),
        None => {
            println!("  virtual time        {:.2} (interrupted: the counts so far)", summary.virtual_time)
        }
    }
    println!(
        "  planned in {:.3} s ({:.0} jobs/s)",
        seconds,
        summary.dispatched_jobs as f64 / seconds.max(1e-9)
    );
    Ok(())
}
