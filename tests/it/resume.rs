//! Kill and resume: a run SIGKILLed after its first checkpoint, after a checkpoint in its tail
//! (the plan read to its end), in the middle of a FedRevive distillation, or in the middle of
//! an evaluation, then continued with `fedsim resume` (with another worker count), ends with
//! the uninterrupted run's final weights and tables (wall-clock columns aside); a sweep killed
//! in one of its points, started again, keeps the points that finished and resumes the killed
//! one. The kills are aimed with FEDSIM_KILL_AT (src/faults.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

use polars::prelude::*;

use crate::scratch;

/// A FedBuff world that runs in a few seconds: 40 versions, evaluations every 5, a
/// checkpoint every 10.
pub(crate) const FEDBUFF: &str = "name = \"resumable\"\nseed = 3\n\
    [data]\nnum_clients = 30\nclient_data_size = 64\n\
    [train]\nlocal_iters = 4\nbatch_size = 16\nlr = 1e-3\n\
    [algorithm]\nkind = \"async_fl\"\nactive_jobs = 6\nbuffer_size = 2\nserver_lr = 0.5\n\
    [eval]\ninterval = 5\n[stop]\nmax_versions = 40\n[run]\ncheckpoint_every = 10\n";

/// FedRevive with a tiny generator: distillation from version 6 on, a checkpoint every 3.
pub(crate) const FEDREVIVE: &str = "name = \"resumable-revive\"\nseed = 5\n\
    [data]\nnum_clients = 30\nclient_data_size = 64\n\
    [train]\nlocal_iters = 4\nbatch_size = 16\nlr = 1e-3\n\
    [algorithm]\nkind = \"fedrevive\"\nactive_jobs = 6\nbuffer_size = 1\nserver_lr = 0.5\n\
    [kd]\nbuffer_size = 3\niters = 2\nbatch_per_teacher = 8\nfreeze_rounds = 3\nwarmup_rounds = 5\n\
    [dfkd]\nnz = 16\nngf = 8\nsynthetic_batch = 16\npool_size = 64\nadv_after = 2\n\
    [eval]\ninterval = 5\n[stop]\nmax_versions = 18\n[run]\ncheckpoint_every = 3\n";

/// Runs `fedsim ARGS` with FEDSIM_KILL_AT set (or not); whether it was killed by SIGKILL.
fn fedsim_killed_at(args: &[&str], kill_at: Option<&str>) -> bool {
    fedsim_output_killed_at(args, kill_at).0
}

/// As [`fedsim_killed_at`], with what fedsim printed on stdout.
fn fedsim_output_killed_at(args: &[&str], kill_at: Option<&str>) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedsim"));
    command.args(args).current_dir(crate::repo());
    match kill_at {
        Some(point) => command.env("FEDSIM_KILL_AT", point),
        None => command.env_remove("FEDSIM_KILL_AT"),
    };
    let output = command.output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    let killed = output.status.signal() == Some(9);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        killed || output.status.success(),
        "fedsim {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (killed, stdout)
}

/// The one run directory in `out`.
pub(crate) fn run_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// A run's final-weights hash and its tables without the wall-clock columns.
pub(crate) fn results(dir: &Path) -> (String, Vec<DataFrame>) {
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    let hash = info["final_weights_sha256"].as_str().unwrap().to_owned();
    let tables = ["updates", "evals", "jobs"]
        .iter()
        .map(|table| {
            let frame = fedsim::record::read_parquet(&dir.join(format!("{table}.parquet"))).unwrap();
            frame.drop_many(fedsim::report::logs::WALL_CLOCK_COLUMNS)
        })
        .collect();
    (hash, tables)
}

/// Runs `config` uninterrupted with 2 workers, and again killed at `kill_at` and resumed with
/// `resume_workers`; the two must agree exactly.
pub(crate) fn kill_and_resume(name: &str, config: &str, kill_at: &str, resume_workers: &str) {
    let dir = scratch(name);
    let config_file = dir.join("config.toml");
    std::fs::write(&config_file, config).unwrap();
    let config_arg = config_file.to_str().unwrap();
    let whole = dir.join("whole");
    assert!(!fedsim_killed_at(
        &["run", config_arg, "--workers", "2", "--out", whole.to_str().unwrap()],
        None
    ));
    let expected = results(&run_dir(&whole));

    let killed = dir.join("killed");
    let was_killed = fedsim_killed_at(
        &["run", config_arg, "--workers", "2", "--out", killed.to_str().unwrap()],
        Some(kill_at),
    );
    assert!(was_killed, "{kill_at} was never reached");
    let killed = run_dir(&killed);
    assert!(killed.join("checkpoint.safetensors").exists(), "{kill_at}: killed before the first checkpoint");
    assert!(!killed.join("run.json").exists());
    assert!(!fedsim_killed_at(&["resume", killed.to_str().unwrap(), "--workers", resume_workers], None));
    let (hash, tables) = results(&killed);
    assert_eq!(hash, expected.0, "{kill_at}: final weights differ after the resume");
    for (table, (got, want)) in ["updates", "evals", "jobs"].iter().zip(tables.iter().zip(&expected.1)) {
        assert!(got.equals_missing(want), "{kill_at}: {table} differ after the resume:\n{got}\n{want}");
    }
    assert!(!killed.join("checkpoint.safetensors").exists(), "a finished run keeps no checkpoint");
    assert!(!killed.join("segments").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_killed_after_its_first_checkpoint_resumes_to_the_same_results() {
    kill_and_resume("resume-checkpoint", FEDBUFF, "checkpoint:1", "1");
}

#[test]
fn a_run_killed_during_an_evaluation_resumes_to_the_same_results() {
    // Evaluations at versions 0, 5, 10, 15...: the fourth runs after the checkpoint at 10.
    kill_and_resume("resume-eval", FEDBUFF, "eval:4", "4");
}

#[test]
fn a_run_killed_in_its_tail_resumes_to_the_same_results() {
    // A lookahead of 40 tasks reads the plan to its end by about version 20, so the third
    // checkpoint (version 30) is in the tail, where unneeded tasks have been dropped.
    kill_and_resume("resume-tail", &format!("{FEDBUFF}lookahead = 40\n"), "checkpoint:3", "3");
}

#[test]
fn a_fedrevive_run_killed_mid_distillation_resumes_to_the_same_results() {
    // Distillation starts after version 5; by the fourth one a checkpoint holds the teachers,
    // the generator and its optimizer, the pool and the stabilisers.
    kill_and_resume("resume-distill", FEDREVIVE, "distill:4", "1");
}

/// Each run directory in `out`, by its run seed.
fn runs_by_seed(out: &Path) -> std::collections::BTreeMap<u64, PathBuf> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|entry| {
            let dir = entry.unwrap().path();
            let info: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
            (info["seed"].as_u64().unwrap(), dir)
        })
        .collect()
}

#[test]
fn a_sweep_started_again_keeps_finished_points_and_resumes_the_killed_one() {
    let dir = scratch("resume-sweep");
    std::fs::write(dir.join("base.toml"), FEDBUFF).unwrap();
    std::fs::write(
        dir.join("sweep.toml"),
        "name = \"resumable-sweep\"\nconfigs = [\"base.toml\"]\n[set]\n\"run.workers\" = 2\n[grid]\nseed = [3, 4, 5]\n",
    )
    .unwrap();
    let sweep = dir.join("sweep.toml");
    let sweep_into = |name: &str, kill_at: Option<&str>| {
        let (out, report) = (dir.join(name), dir.join(format!("{name}-report")));
        let args = [
            "sweep",
            sweep.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ];
        let (killed, stdout) = fedsim_output_killed_at(&args, kill_at);
        (killed, stdout, out, report)
    };
    let (_, _, whole, _) = sweep_into("whole", None);
    let expected = runs_by_seed(&whole);

    // 40 versions and a checkpoint every 10: the fifth checkpoint is in the second point.
    let (killed, _, out, report) = sweep_into("killed", Some("checkpoint:5"));
    assert!(killed, "the sweep was not killed");
    let mut started: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    started.sort();
    assert_eq!(started.len(), 2, "{started:?}");
    assert!(started[0].join("run.json").exists() && !started[0].join("checkpoint.safetensors").exists());
    assert!(started[1].join("checkpoint.safetensors").exists() && !started[1].join("run.json").exists());
    let first_info = std::fs::read(started[0].join("run.json")).unwrap();

    // Started again: the first point is kept as it is, the second resumed, the third run.
    let (_, stdout, _, _) = sweep_into("killed", None);
    assert_eq!(stdout.matches("kept ").count(), 1, "{stdout}");
    assert!(stdout.contains(&format!("resuming {}", started[1].display())), "{stdout}");
    assert_eq!(
        std::fs::read(started[0].join("run.json")).unwrap(),
        first_info,
        "the finished point is not run again"
    );
    let continued = runs_by_seed(&out);
    assert_eq!(continued.len(), 3);
    for (seed, run) in &continued {
        let ((hash, tables), (want_hash, want_tables)) = (results(run), results(&expected[seed]));
        assert_eq!(hash, want_hash, "seed {seed}: final weights differ from the uninterrupted sweep's");
        assert!(tables.iter().zip(&want_tables).all(|(got, want)| got.equals_missing(want)), "seed {seed}");
    }
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(summary.contains("3 runs by fedsim"), "{summary}");

    // Again: nothing left to run. A run made by another build is not this build's point: it
    // stays, and the point runs afresh.
    let (_, stdout, _, _) = sweep_into("killed", None);
    assert_eq!(stdout.matches("kept ").count(), 3, "{stdout}");
    let info_file = continued[&3].join("run.json");
    let info = std::fs::read_to_string(&info_file).unwrap();
    let commit =
        serde_json::from_str::<serde_json::Value>(&info).unwrap()["git_commit"].as_str().unwrap().to_owned();
    std::fs::write(&info_file, info.replace(&commit, "another-build")).unwrap();
    let (_, stdout, _, _) = sweep_into("killed", None);
    assert_eq!(stdout.matches("kept ").count(), 2, "{stdout}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4, "the other build's run stays");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_refuses_what_it_cannot_continue_and_changes_nothing() {
    let dir = scratch("resume-refusals");
    let config_file = dir.join("config.toml");
    std::fs::write(&config_file, FEDBUFF).unwrap();
    let out = dir.join("runs");
    assert!(!fedsim_killed_at(&["run", config_file.to_str().unwrap(), "--out", out.to_str().unwrap()], None));
    let finished = run_dir(&out);
    let (code, _, stderr) = crate::fedsim(&["resume", finished.to_str().unwrap()]);
    assert!(code != 0 && stderr.contains("finished run"), "{stderr}");
    let (code, _, stderr) = crate::fedsim(&["resume", dir.join("nowhere").to_str().unwrap()]);
    assert!(code != 0 && stderr.contains("is not a run directory"), "{stderr}");
    // A checkpoint made under another config.
    let killed = dir.join("killed");
    assert!(fedsim_killed_at(
        &["run", config_file.to_str().unwrap(), "--out", killed.to_str().unwrap()],
        Some("checkpoint:1")
    ));
    let killed = run_dir(&killed);
    let original = std::fs::read_to_string(killed.join("config.toml")).unwrap();
    std::fs::write(killed.join("config.toml"), original.replace("server_lr = 0.5", "server_lr = 0.25"))
        .unwrap();
    let before = std::fs::read(killed.join("checkpoint.safetensors")).unwrap();
    let (code, _, stderr) = crate::fedsim(&["resume", killed.to_str().unwrap()]);
    assert!(code != 0 && stderr.contains("cannot continue this run exactly: config"), "{stderr}");
    assert_eq!(
        std::fs::read(killed.join("checkpoint.safetensors")).unwrap(),
        before,
        "the checkpoint is kept"
    );
    // A damaged checkpoint.
    std::fs::write(killed.join("config.toml"), original).unwrap();
    std::fs::write(killed.join("checkpoint.safetensors"), &before[..before.len() / 3]).unwrap();
    let (code, _, stderr) = crate::fedsim(&["resume", killed.to_str().unwrap()]);
    assert!(code != 0 && stderr.contains("not a fedsim checkpoint"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

extern "C" {
    fn prlimit(pid: i32, resource: i32, new_limit: *const [u64; 2], old_limit: *mut [u64; 2]) -> i32;
}

/// A disk that fills while a run goes (here: a file-size limit of 100 kB set on the running
/// process after its first checkpoint, so log segments still fit and the next checkpoint does
/// not) stops the run with an error naming the checkpoint; the previous checkpoint stays whole,
/// and once there is room `fedsim resume` ends where the uninterrupted run ends.
#[test]
fn a_run_stopped_by_a_full_disk_resumes_once_there_is_room() {
    const RLIMIT_FSIZE: i32 = 1;
    let dir = scratch("resume-full-disk");
    let config_file = dir.join("config.toml");
    std::fs::write(&config_file, FEDBUFF.replace("max_versions = 40", "max_versions = 120")).unwrap();
    let config_arg = config_file.to_str().unwrap();
    let whole = dir.join("whole");
    assert!(!fedsim_killed_at(&["run", config_arg, "--out", whole.to_str().unwrap()], None));
    let expected = results(&run_dir(&whole));

    let out = dir.join("full");
    let child = Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(["run", config_arg, "--out", out.to_str().unwrap()])
        .current_dir(crate::repo())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let checkpoint = loop {
        let found = std::fs::read_dir(&out)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path().join("checkpoint.safetensors"))
            .filter(|p| p.exists());
        if let Some(path) = found {
            break path;
        }
        assert!(started.elapsed().as_secs() < 120, "no checkpoint within 2 minutes");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let limit = [100_000u64, 100_000u64];
    assert_eq!(unsafe { prlimit(child.id() as i32, RLIMIT_FSIZE, &limit, std::ptr::null_mut()) }, 0);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("writing the checkpoint") && stderr.contains("File too large"), "{stderr}");
    assert!(stderr.contains("`fedsim resume` continues it"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let run = checkpoint.parent().unwrap().to_owned();
    let kept = fedsim::record::checkpoint::read(&checkpoint).unwrap();
    assert_eq!(kept.snapshot.version, 10, "the last complete checkpoint is kept");
    assert!(!run.join("checkpoint.partial").exists(), "no half-written checkpoint");
    assert!(fedsim::record::read_parquet(&run.join("updates.parquet")).unwrap().height() >= 20);
    // Room again: the resume ends as the uninterrupted run.
    assert!(!fedsim_killed_at(&["resume", run.to_str().unwrap()], None));
    let (hash, tables) = results(&run);
    assert_eq!(hash, expected.0);
    for (got, want) in tables.iter().zip(&expected.1) {
        assert!(got.equals_missing(want));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
