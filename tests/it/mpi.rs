//! One run over MPI ranks (feature `mpi`, issue 13), through OpenMPI's mpirun over loopback:
//! the same final weights, evaluations and applied updates for 1 to 4 ranks as a single
//! process; a rank that cannot start, dies or stops answering ends the job with the rank
//! named, and the run directory still resumes to the uninterrupted run's results. A sweep
//! spreads its points over the ranks, each point the run it would be in a single process.

use std::path::Path;
use std::process::{Command, Output};

use crate::resume::{results, run_dir, FEDBUFF, FEDREVIVE};
use crate::scratch;

/// `mpirun -np N fedsim ARGS` (as root where CI runs as root; more ranks than cores).
/// `rank_prefix` runs every rank through `sh -c`, for tests that treat one rank differently.
fn mpirun(ranks: usize, args: &[&str], rank_prefix: Option<&str>) -> Output {
    let fedsim = env!("CARGO_BIN_EXE_fedsim");
    let mut command = Command::new("mpirun");
    command.args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string()]);
    match rank_prefix {
        Some(prefix) => command.args(["sh", "-c", &format!("{prefix} exec \"$0\" \"$@\""), fedsim]),
        None => command.arg(fedsim),
    };
    command.args(args).current_dir(crate::repo()).env_remove("FEDSIM_KILL_AT");
    command.output().expect("mpirun runs (OpenMPI is installed by scripts/setup.sh)")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Runs `config` as one process, then over 1, 2, 3 and 4 ranks; all must agree exactly.
fn same_results_on_any_number_of_ranks(name: &str, config: &str) {
    let dir = scratch(name);
    let config_file = dir.join("config.toml");
    std::fs::write(&config_file, config).unwrap();
    let config_arg = config_file.to_str().unwrap();
    let single = dir.join("single");
    let (code, _, stderr) =
        crate::fedsim(&["run", config_arg, "--workers", "2", "--out", single.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let expected = results(&run_dir(&single));
    for ranks in 1..=4 {
        let out = dir.join(format!("ranks-{ranks}"));
        let output =
            mpirun(ranks, &["run", config_arg, "--workers", "1", "--out", out.to_str().unwrap()], None);
        assert!(output.status.success(), "{ranks} ranks: {}", text(&output));
        let run = run_dir(&out);
        let (hash, tables) = results(&run);
        assert_eq!(hash, expected.0, "{ranks} ranks: final weights differ from a single process");
        for (table, (got, want)) in ["updates", "evals", "jobs"].iter().zip(tables.iter().zip(&expected.1)) {
            assert!(got.equals_missing(want), "{ranks} ranks: {table} differ:\n{got}\n{want}");
        }
        // run.json names the training ranks and what each did; rank 0 only coordinates.
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        let listed = info.get("ranks").and_then(|r| r.as_array()).map_or(0, Vec::len);
        assert_eq!(listed, ranks - 1, "{ranks} ranks: run.json lists {listed} training ranks");
        if ranks > 1 {
            let tasks: u64 =
                info["ranks"].as_array().unwrap().iter().map(|r| r["tasks"].as_u64().unwrap()).sum();
            assert_eq!(tasks, info["tasks_trained"].as_u64().unwrap(), "every task trained on some rank");
            assert!(text(&output).contains("rank 0 (coordinator)"), "{}", text(&output));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fedbuff_over_one_to_four_ranks_matches_a_single_process() {
    same_results_on_any_number_of_ranks("mpi-fedbuff", FEDBUFF);
}

#[test]
fn fedrevive_over_one_to_four_ranks_matches_a_single_process() {
    // Clients send their trained models too (FedRevive's teachers): two buffers per task.
    same_results_on_any_number_of_ranks("mpi-fedrevive", FEDREVIVE);
}

/// The config file and uninterrupted results of FEDBUFF, in `dir`.
fn fedbuff_expected(dir: &Path) -> (String, (String, Vec<polars::prelude::DataFrame>)) {
    let config_file = dir.join("config.toml");
    std::fs::write(&config_file, FEDBUFF).unwrap();
    let whole = dir.join("whole");
    let (code, _, stderr) =
        crate::fedsim(&["run", config_file.to_str().unwrap(), "--out", whole.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    (config_file.to_str().unwrap().to_owned(), results(&run_dir(&whole)))
}

/// Resumes `run` (as a single process, or over `ranks` MPI ranks) and checks it ends as the
/// uninterrupted run did.
fn resumes_to(run: &Path, ranks: Option<usize>, expected: &(String, Vec<polars::prelude::DataFrame>)) {
    assert!(run.join("checkpoint.safetensors").exists(), "the run directory keeps its checkpoint");
    let args = ["resume", run.to_str().unwrap(), "--workers", "1"];
    match ranks {
        Some(ranks) => {
            let output = mpirun(ranks, &args, None);
            assert!(output.status.success(), "{}", text(&output));
        }
        None => {
            let (code, _, stderr) = crate::fedsim(&args);
            assert_eq!(code, 0, "{stderr}");
        }
    }
    let (hash, tables) = results(run);
    assert_eq!(hash, expected.0, "final weights differ after the resume");
    for (got, want) in tables.iter().zip(&expected.1) {
        assert!(got.equals_missing(want), "tables differ after the resume:\n{got}\n{want}");
    }
}

#[test]
fn a_rank_killed_mid_run_ends_the_job_and_the_run_resumes() {
    let dir = scratch("mpi-killed-rank");
    let (config, expected) = fedbuff_expected(&dir);
    let out = dir.join("runs");
    // Rank 2 is SIGKILLed when its 20th cohort arrives, after the first checkpoint (version 10).
    let output = mpirun(
        3,
        &["run", &config, "--workers", "1", "--out", out.to_str().unwrap()],
        Some("[ \"$OMPI_COMM_WORLD_RANK\" = 2 ] && export FEDSIM_KILL_AT=train:20;"),
    );
    let said = text(&output);
    assert!(!output.status.success(), "the job went on without rank 2: {said}");
    assert!(said.contains("process rank 2"), "mpirun names the dead rank: {said}");
    assert!(said.contains("rank 2 held task"), "rank 0 names the tasks it held: {said}");
    assert!(
        run_dir(&out).join("checkpoint.safetensors").exists(),
        "killed before the first checkpoint: {said}"
    );
    // Resumed over MPI again, with another number of ranks.
    resumes_to(&run_dir(&out), Some(2), &expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_rank_that_stops_answering_is_named_with_its_tasks_and_the_run_resumes() {
    let dir = scratch("mpi-silent-rank");
    let (config, expected) = fedbuff_expected(&dir);
    let out = dir.join("runs");
    // Rank 1 stops itself (SIGSTOP) when its 20th cohort arrives (after the first checkpoint);
    // rank 0 gives up after 10 s (long enough that a loaded machine's ranks are not taken for
    // stopped ones before that).
    let output = mpirun(
        3,
        &["run", &config, "--workers", "1", "--out", out.to_str().unwrap()],
        Some("export FEDSIM_MPI_SILENCE_SECONDS=10; [ \"$OMPI_COMM_WORLD_RANK\" = 1 ] && export FEDSIM_STOP_AT=train:20;"),
    );
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("rank 1 (") && said.contains("stopped answering"), "{said}");
    assert!(said.contains("while it held cohort"), "the task it held is named: {said}");
    let run = run_dir(&out);
    assert!(run.join("failure.txt").exists(), "rank 0 wrote why the run stopped");
    assert!(run.join("checkpoint.safetensors").exists(), "stopped before the first checkpoint: {said}");
    resumes_to(&run, None, &expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_rank_that_cannot_start_is_named() {
    let dir = scratch("mpi-rank-startup");
    let config_file = dir.join("config.toml");
    std::fs::write(&config_file, FEDBUFF).unwrap();
    let out = dir.join("runs");
    // Rank 2 is pointed at a data folder that does not exist.
    let output = mpirun(
        3,
        &["run", config_file.to_str().unwrap(), "--out", out.to_str().unwrap()],
        Some("[ \"$OMPI_COMM_WORLD_RANK\" = 2 ] && set -- \"$@\" --data-dir /nonexistent;"),
    );
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("rank 2 could not start") && said.contains("CIFAR-10 not found"), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Each run directory in `out` as (seed, final-weights hash), sorted.
fn seeds_and_hashes(out: &Path) -> Vec<(u64, String)> {
    let mut runs: Vec<(u64, String)> = std::fs::read_dir(out)
        .unwrap()
        .map(|entry| {
            let info: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(entry.unwrap().path().join("run.json")).unwrap(),
            )
            .unwrap();
            (info["seed"].as_u64().unwrap(), info["final_weights_sha256"].as_str().unwrap().to_owned())
        })
        .collect();
    runs.sort();
    runs
}

/// A sweep over seeds 3, 4 and 5 of FEDBUFF, in `dir`; its file's path.
fn seed_sweep(dir: &Path) -> String {
    std::fs::write(dir.join("config.toml"), FEDBUFF).unwrap();
    let sweep = dir.join("sweep.toml");
    std::fs::write(&sweep, "name = \"seeds\"\nconfigs = [\"config.toml\"]\n[set]\n\"run.workers\" = 1\n[grid]\nseed = [3, 4, 5]\n")
        .unwrap();
    sweep.to_str().unwrap().to_owned()
}

#[test]
fn a_sweep_spreads_its_points_over_ranks_with_single_process_results() {
    let dir = scratch("mpi-sweep");
    let sweep = seed_sweep(&dir);
    let folder = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (code, _, stderr) =
        crate::fedsim(&["sweep", &sweep, "--out", &folder("single"), "--report", &folder("single-report")]);
    assert_eq!(code, 0, "{stderr}");
    let output =
        mpirun(3, &["sweep", &sweep, "--out", &folder("ranks"), "--report", &folder("ranks-report")], None);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    // Two training ranks, three points: each rank got one at the start.
    assert!(said.contains("[1/3]") && said.contains("-> rank 1") && said.contains("-> rank 2"), "{said}");
    let expected = seeds_and_hashes(&dir.join("single"));
    assert_eq!(expected.iter().map(|(seed, _)| *seed).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert_eq!(seeds_and_hashes(&dir.join("ranks")), expected, "each point as in a single process");
    let summary = std::fs::read_to_string(dir.join("ranks-report/summary.md")).unwrap();
    assert!(summary.contains("mpirun -np 3 fedsim sweep"), "{summary}");
    assert!(summary.contains("3 runs by fedsim"), "{summary}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sweep_point_that_fails_on_a_rank_ends_the_job_naming_point_and_rank() {
    let dir = scratch("mpi-sweep-fails");
    let sweep = seed_sweep(&dir);
    let out = dir.join("runs");
    // Rank 2 is pointed at a data folder that does not exist; its point fails to start.
    let output = mpirun(
        3,
        &["sweep", &sweep, "--out", out.to_str().unwrap(), "--report", dir.join("report").to_str().unwrap()],
        Some("[ \"$OMPI_COMM_WORLD_RANK\" = 2 ] && set -- \"$@\" --data-dir /nonexistent;"),
    );
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("sweep point [2/3]") && said.contains("failed on rank 2"), "{said}");
    assert!(said.contains("CIFAR-10 not found"), "{said}");
    assert!(!dir.join("report").exists(), "no report of a sweep that failed");
    std::fs::remove_dir_all(&dir).unwrap();
}
