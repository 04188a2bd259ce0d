//! `fedsim report` over run directories written by hand, so that every number it prints can
//! be checked against a value computed here; its figures; and runs it cannot read.

use std::path::{Path, PathBuf};

use fedsim::exec::{EvalRecord, UpdateRecord, VecSink};
use fedsim::record::{RunDir, RunInfo, LOG_FORMAT};
use fedsim::report::{self, figures::SIZE, ReportOptions, FIGURES, TIMELINE};
use fedsim::sched::{Fate, JobRecord};
use fedsim::sim::time::{SimDuration, SimTime};

use crate::{fedsim, scratch};

/// Evaluations at versions 0, 5, 10 (virtual times 0, 2.5, 6) with accuracies 0.1, 0.25, 0.42.
fn evals(middle_accuracy: f64) -> Vec<EvalRecord> {
    [(0, 0.0, 0.1, 0.5), (5, 2.5, middle_accuracy, 50.0), (10, 6.0, 0.42, 99.0)]
        .into_iter()
        .map(|(version, virtual_time, accuracy, wall_s)| EvalRecord {
            version,
            virtual_time,
            accuracy,
            loss: 2.0 - accuracy,
            per_class_accuracy: vec![accuracy, accuracy / 2.0],
            wall_s,
        })
        .collect()
}

/// The eight applied updates' jobs, one cancelled and one whose client went offline.
fn jobs() -> Vec<JobRecord> {
    let t = SimTime::from_units;
    let d = SimDuration::from_units;
    (0..10u64)
        .map(|i| JobRecord {
            task: i,
            client: 10 + i as u32,
            leaf: None,
            base_version: 0,
            dispatched_at: t(i as f64 * 0.5),
            download: d(0.1),
            train: d(1.0),
            upload: d(0.2),
            at_server: (i < 8).then(|| t(i as f64 * 0.5 + 1.3)),
            fate: match i {
                8 => Fate::Cancelled,
                9 => Fate::WentOffline,
                _ => Fate::Applied { version: 10 },
            },
            settled_at: Some(t(i as f64 * 0.5 + if i < 8 { 1.3 } else { 0.8 })),
        })
        .collect()
}

/// Eight updates with staleness 0, 1, 1, 2, 2, 2, 3, 9 (mean 2.5, median 2, p90 4.8, max 9).
fn updates(worker_count: u32) -> Vec<UpdateRecord> {
    [0, 1, 1, 2, 2, 2, 3, 9]
        .into_iter()
        .enumerate()
        .map(|(i, staleness)| UpdateRecord {
            task: i as u64,
            client: 10 + i as u32,
            leaf: None,
            base_version: 10 - staleness,
            applied_version: 10,
            staleness,
            dispatched_at: i as f64,
            arrived_at: i as f64 + 0.5,
            first_loss: 2.3,
            last_loss: 1.9,
            // Wall-clock columns differ between worker counts; the check must ignore them.
            train_ms: 100.0 + worker_count as f64,
            worker: i as u32 % worker_count,
            server_ms: 0.1 * worker_count as f64,
        })
        .collect()
}

struct HandRun<'a> {
    name: &'a str,
    seed: u64,
    workers: usize,
    wall: f64,
    train: f64,
    hash: &'a str,
    middle_accuracy: f64,
}

/// A run directory as `fedsim run` writes it, with K = 4, 10 versions and 8 updates.
fn write_run(root: &Path, run: &HandRun) -> PathBuf {
    let dir = RunDir::create(&root.join(format!("{}-s{}-w{}", run.name, run.seed, run.workers)), "x", true)
        .unwrap();
    dir.write_config(&format!(
        "name = \"{}\"\nseed = {}\nactive_jobs = 4\nworkers = {}\nalgorithm = \"async_fl\"\n",
        run.name, run.seed, run.workers
    ))
    .unwrap();
    dir.write_info(&RunInfo {
        log_format: LOG_FORMAT,
        name: run.name.into(),
        algorithm: "async_fl".into(),
        seed: run.seed,
        setup_seed: None,
        run_seed: None,
        server_threads: 1,
        fedsim_version: "0.1.0".into(),
        git_commit: "abc".into(),
        libtorch: "2.11.0".into(),
        device: "cpu".into(),
        host: "Test CPU, 8 threads".into(),
        cpu_vector_extensions: None,
        cpu_capability: None,
        cpu_kernels: None,
        precision: None,
        omp_wait_policy: None,
        workers: run.workers,
        cohort_size: 1,
        concurrent_cohorts: None,
        device_memory_peak_bytes: None,
        versions: 10,
        virtual_time: 6.0,
        wall_seconds: run.wall,
        stop_reason: "max_versions".into(),
        final_weights_sha256: run.hash.into(),
        tasks_trained: 8,
        updates_applied: 8,
        train_seconds: run.train,
        server_seconds: 2.0,
        eval_seconds: 3.0,
        checkpoints_written: None,
        checkpoint_seconds: None,
        resumed_from_version: None,
        ranks: Vec::new(),
    })
    .unwrap();
    dir.write_tables(&VecSink {
        updates: updates(run.workers as u32),
        evals: evals(run.middle_accuracy),
        jobs: jobs(),
    })
    .unwrap();
    dir.path
}

fn hand_runs(root: &Path) -> Vec<PathBuf> {
    let same = "a".repeat(64);
    [
        HandRun {
            name: "alpha",
            seed: 1,
            workers: 1,
            wall: 100.0,
            train: 90.0,
            hash: &same,
            middle_accuracy: 0.25,
        },
        HandRun {
            name: "alpha",
            seed: 1,
            workers: 2,
            wall: 40.0,
            train: 70.0,
            hash: &same,
            middle_accuracy: 0.25,
        },
        HandRun {
            name: "beta",
            seed: 2,
            workers: 1,
            wall: 80.0,
            train: 60.0,
            hash: &"b".repeat(64),
            middle_accuracy: 0.25,
        },
        HandRun {
            name: "beta",
            seed: 2,
            workers: 4,
            wall: 20.0,
            train: 60.0,
            hash: &"c".repeat(64),
            middle_accuracy: 0.26,
        },
    ]
    .iter()
    .map(|run| write_run(root, run))
    .collect()
}

fn options(out: PathBuf) -> ReportOptions {
    ReportOptions {
        out,
        times: Some(vec![0.0, 2.4, 2.5, 3.0, 100.0]),
        targets: Some(vec![0.2, 0.3, 0.5]),
        command: "fedsim report ...".into(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn report_numbers_match_hand_computed_values() {
    let root = scratch("report-numbers");
    let runs = hand_runs(&root);
    let report = report::write(&runs, &options(root.join("report"))).unwrap();
    assert!(report.skipped.is_empty());
    let labels: Vec<&str> = report.runs.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["alpha, workers 1", "alpha, workers 2", "beta, workers 1", "beta, workers 4"]);

    let one = &report.runs[0];
    assert!(close(one.ms_per_version, 10_000.0), "100 s over 10 versions");
    assert!(close(one.seconds_per_round, 50.0), "8 updates are 2 rounds of K = 4");
    assert!(close(one.updates_per_second, 0.08));
    assert!(close(one.ms_per_task, 11_250.0), "90 s of training over 8 tasks");
    assert_eq!(one.speedup, Some(1.0));
    let b = &one.breakdown;
    assert!(close(b.training, 90.0) && close(b.workers_idle, 10.0) && close(b.coordinator_other, 95.0));
    let two = &report.runs[1];
    assert!(close(two.speedup.unwrap(), 2.5), "100 s / 40 s");
    assert!(close(two.efficiency.unwrap(), 1.25), "2.5x on 2 workers");
    assert!(
        close(two.breakdown.training, 35.0) && close(two.breakdown.workers_idle, 5.0),
        "70 s over 2 workers"
    );
    assert!(close(report.runs[3].speedup.unwrap(), 4.0) && close(report.runs[3].efficiency.unwrap(), 1.0));

    // Staleness 0, 1, 1, 2, 2, 2, 3, 9: linear p90 at position 6.3 is 3 + 0.3 * 6.
    let s = &one.staleness;
    assert!(close(s.mean, 2.5) && close(s.median, 2.0) && close(s.p90, 4.8) && s.max == 9, "{s:?}");

    // Accuracy at 0, 2.4, 2.5 (an evaluation exactly then), 3 and past the end.
    let at: Vec<Option<(f64, u64)>> = one.accuracy_at.clone();
    assert_eq!(at, [Some((0.1, 0)), Some((0.1, 0)), Some((0.25, 5)), Some((0.25, 5)), Some((0.42, 10))]);
    // Time to 0.2: version 5 at virtual time 2.5, 50 s in; 0.3: version 10; 0.5: never.
    let reached = &one.time_to;
    assert_eq!(
        reached[0].as_ref().map(|r| (r.virtual_time, r.version, r.wall_s)),
        Some((2.5, 5, Some(50.0)))
    );
    assert_eq!(reached[1].as_ref().map(|r| (r.virtual_time, r.version)), Some((6.0, 10)));
    assert!(reached[2].is_none());
    assert!(close(one.final_accuracy, 0.42) && one.final_version == 10);

    // alpha agrees bit for bit (wall-clock columns differ and are ignored); beta does not.
    assert_eq!(report.groups.len(), 2);
    assert!(report.groups[0].identical(), "{:?}", report.groups[0].differences);
    let beta = &report.groups[1];
    assert_eq!(beta.members, [2, 3]);
    assert!(!beta.identical());
    assert_eq!(beta.differing_rows, 2, "the final weights and evals row 1");
    let listed = beta.differences.join("\n");
    assert!(
        listed.contains("workers 1 vs 4: final weights sha256 bbbbbbbbbbbbbbbb vs cccccccccccccccc"),
        "{listed}"
    );
    assert!(listed.contains("evals.parquet row 1 (version 5): accuracy 0.25 vs 0.26"), "{listed}");
    assert!(listed.contains("loss 1.75 vs 1.74"), "{listed}");
    assert!(!listed.contains("train_ms") && !listed.contains("wall_s"), "{listed}");

    let summary = std::fs::read_to_string(&report.summary).unwrap();
    for expected in [
        "fedsim report ...",
        "4 runs by fedsim 0.1.0 (commit abc) on cpu (Test CPU, 8 threads) with libtorch 2.11.0.",
        "| alpha, workers 2 | async_fl | 2 | 40.0 | 10 | 6.00 | 4000.0 | 20.00 | 0.20 | 2.50x | 125% | 0.4200 (v10) |",
        "**alpha** (1, 2 workers): **identical**",
        "**beta** (1, 4 workers): **DIFFER** in 2 rows",
        "| 2.5 | 0.2500 (v5) | 0.2500 (v5) | 0.2500 (v5) | 0.2600 (v5) |",
        "| 0.5 | not reached | not reached | not reached | not reached |",
        "| 0.2 | 2.50 (v5, 50.0 s) |",
        "| alpha, workers 1 | 2.50 | 2.0 | 4.8 | 9 | 100.0 | 90.0 | 10.0 | 2.00 | 3.0 | 95.0 | 11250.0 |",
        "![Where the wall time went](wall_time.png)",
        "| run | dispatched | applied | dropped_stale | cancelled | refused | timed_out | went_offline | missed_deadline | open |",
        "| alpha, workers 1 | 10 | 8 | 0 | 1 | 0 | 0 | 1 | 0 | 0 |",
        "(timeline.png)",
    ] {
        assert!(summary.contains(expected), "summary.md lacks {expected:?}:\n{summary}");
    }
}

#[test]
fn a_resumed_run_is_timed_from_its_checkpoint_and_takes_no_part_in_a_speed_up() {
    let root = scratch("report-resumed");
    let runs = &hand_runs(&root)[..2];
    // The 2-worker run was resumed from version 4: its 40 s made versions 5 to 10 (8 updates).
    let info_file = runs[1].join("run.json");
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info_file).unwrap()).unwrap();
    info["resumed_from_version"] = 4.into();
    std::fs::write(&info_file, info.to_string()).unwrap();
    let report = report::write(runs, &options(root.join("report"))).unwrap();
    let resumed = &report.runs[1];
    assert_eq!(resumed.resumed_from, Some(4));
    assert!(close(resumed.ms_per_version, 40_000.0 / 6.0), "{}", resumed.ms_per_version);
    assert!(close(resumed.updates_per_second, 0.2));
    assert_eq!((resumed.speedup, resumed.efficiency), (None, None));
    assert_eq!(resumed.time_to[0].as_ref().map(|r| (r.version, r.wall_s)), Some((5, None)));
    let summary = std::fs::read_to_string(&report.summary).unwrap();
    for expected in [
        "| alpha, workers 2 | async_fl | 2 | 40.0 (from v4) | 10 | 6.00 | 6666.7 | 20.00 | 0.20 | - | - |",
        "| 0.2 | 2.50 (v5, 50.0 s) | 2.50 (v5) |",
        "is timed from version N on",
    ] {
        assert!(summary.contains(expected), "summary.md lacks {expected:?}:\n{summary}");
    }
}

#[test]
fn runs_that_differ_only_in_seed_report_mean_and_range() {
    let root = scratch("report-seeds");
    let hash = "d".repeat(64);
    let runs: Vec<PathBuf> = [(1, 0.2), (2, 0.3), (3, 0.25)]
        .into_iter()
        .map(|(seed, middle_accuracy)| {
            let run = HandRun {
                name: "gamma",
                seed,
                workers: 1,
                wall: 10.0,
                train: 9.0,
                hash: &hash,
                middle_accuracy,
            };
            write_run(&root, &run)
        })
        .chain(hand_runs(&root).into_iter().take(1))
        .collect();
    let out = root.join("report");
    let report = report::write(&runs, &options(out.clone())).unwrap();
    assert_eq!(report.seed_groups.len(), 1, "alpha ran with one seed only");
    let gamma = &report.seed_groups[0];
    assert_eq!(
        (gamma.name.as_str(), gamma.members.as_slice(), gamma.seed_list()),
        ("gamma", &[0, 1, 2][..], "1, 2, 3".into())
    );
    // At 2.5 the seeds stand at 0.2, 0.3 and 0.25.
    let at = gamma.accuracy_at[2].unwrap();
    assert!(close(at.mean, 0.25) && close(at.min, 0.2) && close(at.max, 0.3), "{at:?}");
    // 0.3: seed 2 at 2.5, seeds 1 and 3 at 6.0; 0.5: none.
    let to = &gamma.time_to[1];
    let v = to.virtual_time.unwrap();
    assert_eq!((to.reached, to.of), (3, 3));
    assert!(close(v.mean, (2.5 + 6.0 + 6.0) / 3.0) && close(v.min, 2.5) && close(v.max, 6.0), "{v:?}");
    assert_eq!((gamma.time_to[2].reached, gamma.time_to[2].virtual_time), (0, None));

    let summary = std::fs::read_to_string(&report.summary).unwrap();
    for expected in [
        "## Over seeds",
        "- **gamma**: seeds 1, 2, 3 (3 runs)",
        "| 2.5 | 0.2500 [0.2000, 0.3000] |",
        "| 0.3 | 4.83 [2.50, 6.00] (3 of 3) |",
        "| 0.5 | not reached (0 of 3) |",
    ] {
        assert!(summary.contains(expected), "summary.md lacks {expected:?}:\n{summary}");
    }
    // The accuracy figures draw the experiment once, as a band, and the other run as a line.
    let svg = std::fs::read_to_string(out.join("accuracy_vs_time.svg")).unwrap();
    assert!(svg.contains("gamma (mean, min-max of seeds 1, 2, 3)"), "the band's legend");
    assert!(!svg.contains("gamma, seed 2"), "seeded runs are not drawn one by one");
    assert!(svg.contains("alpha") && svg.contains("<polygon"), "a band is a filled polygon");
    let band = fedsim::report::seeds::band(
        &report_logs(&runs[..3]),
        gamma,
        &|r| r.eval_column("virtual_time"),
        &|_| 12.0,
        24,
    );
    // Runs that ended at 12 hold their last accuracy from the evaluation at 6 on.
    assert_eq!(band.len(), 25);
    assert_eq!(band[5], [2.5, 0.25, 0.2, 0.3], "x 2.5 lies on the middle evaluation");
    assert!(close(band[12][1], 0.42) && close(band[24][0], 12.0) && close(band[24][1], 0.42));
    assert!(close(band[0][1], 0.1));
}

fn report_logs(dirs: &[PathBuf]) -> Vec<fedsim::report::logs::RunLogs> {
    dirs.iter().map(|d| fedsim::report::logs::RunLogs::load(d).unwrap()).collect()
}

#[test]
fn report_figures_are_pngs_of_the_right_size_with_something_drawn() {
    let root = scratch("report-figures");
    let runs = hand_runs(&root);
    let out = root.join("report");
    let report = report::write(&runs, &options(out.clone())).unwrap();
    assert_eq!(report.figures.len(), 2 * (FIGURES.len() + 1), "the runs have jobs tables: a timeline too");
    for stem in FIGURES.into_iter().chain([TIMELINE]) {
        let png = out.join(format!("{stem}.png"));
        let image = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display())).to_rgb8();
        assert_eq!(image.dimensions(), SIZE, "{stem}");
        let pixels = image.pixels().count();
        let inked = image.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        let colours: std::collections::HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
        assert!(inked * 50 > pixels, "{stem}: only {inked} of {pixels} pixels drawn");
        assert!(colours.len() > 10, "{stem}: {} colours", colours.len());
        let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{stem}.svg");
        assert!(svg.contains("alpha, workers 1") || stem == "speedup", "{stem}.svg names the runs");
    }
    // Axis names with units, and a legend naming the runs.
    let time = std::fs::read_to_string(out.join("accuracy_vs_time.svg")).unwrap();
    assert!(time.contains("virtual time (time units)") && time.contains("test accuracy"));
    assert!(time.contains("beta, workers 4"));
    let speedup = std::fs::read_to_string(out.join("speedup.svg")).unwrap();
    assert!(speedup.contains("ideal (linear)") && speedup.contains("2.50x"));
}

#[test]
fn unreadable_runs_are_named_and_the_others_still_report() {
    let root = scratch("report-bad-input");
    let good = hand_runs(&root);
    let copy = |name: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&good[0]).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
        dir
    };
    let no_logs = copy("no-logs");
    std::fs::remove_file(no_logs.join("updates.parquet")).unwrap();
    std::fs::remove_file(no_logs.join("evals.parquet")).unwrap();
    let truncated = copy("truncated");
    let bytes = std::fs::read(truncated.join("evals.parquet")).unwrap();
    std::fs::write(truncated.join("evals.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let future = copy("future");
    let info = std::fs::read_to_string(future.join("run.json")).unwrap();
    std::fs::write(future.join("run.json"), info.replace("\"log_format\": 1", "\"log_format\": 99")).unwrap();
    // A run from a layout without the staleness column.
    let old_layout = copy("old-layout");
    let updates = fedsim::record::read_parquet(&old_layout.join("updates.parquet")).unwrap();
    let mut updates = updates.drop("staleness").unwrap();
    let file = std::fs::File::create(old_layout.join("updates.parquet")).unwrap();
    polars::prelude::ParquetWriter::new(file).finish(&mut updates).unwrap();
    let not_a_run = root.join("empty");
    std::fs::create_dir_all(&not_a_run).unwrap();

    let out = root.join("report");
    let mut args = vec!["report".to_owned()];
    args.extend(
        [&good[0], &no_logs, &truncated, &future, &old_layout, &good[1], &not_a_run]
            .iter()
            .map(|p| p.display().to_string()),
    );
    args.extend(["--out".into(), out.display().to_string()]);
    let (code, stdout, stderr) = fedsim(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 2, "left-out runs make the command fail: {stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for expected in [
        format!("{}: missing: the run wrote no logs", no_logs.join("updates.parquet").display()),
        format!("{}: is not a readable Parquet file", truncated.join("evals.parquet").display()),
        format!("{}: written by fedsim 0.1.0 in log format 99", future.join("run.json").display()),
        format!("{}: missing: not a fedsim run directory", not_a_run.join("run.json").display()),
        format!("{}: has no column staleness (u64)", old_layout.join("updates.parquet").display()),
        "5 of 7 runs could not be read".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "stderr lacks {expected:?}:\n{stderr}");
    }
    // The two good runs still report, and the summary says what was left out.
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("**alpha** (1, 2 workers): **identical**"), "{summary}");
    assert!(summary.contains("**Left out**") && summary.contains("log format 99"), "{summary}");
    assert!(out.join("wall_time.png").is_file());

    // With nothing readable there is no report at all.
    let nothing = root.join("nothing");
    let (code, _, stderr) =
        fedsim(&["report", not_a_run.to_str().unwrap(), "--out", nothing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no run could be read") && stderr.contains("run.json"), "{stderr}");
    assert!(!nothing.exists());

    // An output path that is a file is refused by name, and the file is left as it was.
    let file = root.join("a-file");
    std::fs::write(&file, "keep me").unwrap();
    let (code, _, stderr) = fedsim(&["report", good[0].to_str().unwrap(), "--out", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains(&format!("--out {}: exists and is not a folder", file.display())), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn experiments_of_one_name_are_told_apart_by_the_config_values_that_differ() {
    let root = scratch("report-namesakes");
    let hash = "c".repeat(64);
    let mut runs = Vec::new();
    for (folder, extra) in [("single", ""), ("stacked", "cohort_size = 8\n")] {
        for seed in [1, 2] {
            let run = HandRun {
                name: "gamma",
                seed,
                workers: 1,
                wall: 10.0,
                train: 9.0,
                hash: &hash,
                middle_accuracy: 0.3,
            };
            let dir = write_run(&root.join(folder), &run);
            let config = dir.join("config.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(&config, format!("{text}{extra}")).unwrap();
            runs.push(dir);
        }
    }
    // The first two runs lack the key (runs from before it existed), the others set it.
    let report = report::write(&runs, &options(root.join("report"))).unwrap();
    let names: Vec<&str> = report.seed_groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[1], "gamma (cohort size 8)", "{names:?}");
    assert_ne!(names[0], names[1]);
    assert!(!names[0].contains('@'), "one commit: no commit in the name: {names:?}");
}
