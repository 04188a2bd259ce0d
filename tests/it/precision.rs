//! `run.precision = "bf16"`: deterministic as fp32 is (any worker count, cohorts, FedRevive,
//! an exact resume), different from fp32, recorded in config.toml and run.json; refused with
//! the reproducible mode, and by name on a CPU without bf16 units. fp32 configs keep their text.

use std::path::Path;

use fedsim::nn::precision::cpu_has_bf16_units;

use crate::resume::{kill_and_resume, results, run_dir, FEDBUFF, FEDREVIVE};
use crate::{fedsim, scratch};

/// Runs `config` with `workers` into `out`; the run's folder.
fn run(config: &Path, workers: &str, out: &Path) -> std::path::PathBuf {
    let (code, stdout, stderr) =
        fedsim(&["run", config.to_str().unwrap(), "--workers", workers, "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "fedsim run failed:\n{stdout}\n{stderr}");
    run_dir(out)
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Where this CPU has no bf16 units, a bf16 run is refused by its key; true where it has them.
fn bf16_runs_here(dir: &Path) -> bool {
    if cpu_has_bf16_units() {
        return true;
    }
    let config = write(dir, "bf16.toml", &format!("{FEDBUFF}precision = \"bf16\"\n"));
    let (code, _, stderr) = fedsim(&["run", config.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("run.precision") && stderr.contains("bf16 units"), "{stderr}");
    false
}

#[test]
fn bf16_runs_agree_for_any_worker_count_and_cohort_and_differ_from_fp32() {
    let dir = scratch("precision-workers");
    if !bf16_runs_here(&dir) {
        return;
    }
    let fp32 = write(&dir, "fp32.toml", FEDBUFF);
    let bf16 = write(&dir, "bf16.toml", &format!("{FEDBUFF}precision = \"bf16\"\n"));
    let fp32_run = run(&fp32, "2", &dir.join("fp32"));
    let runs: Vec<_> =
        ["1", "2", "4"].iter().map(|w| run(&bf16, w, &dir.join(format!("bf16-{w}")))).collect();
    let (hash, tables) = results(&runs[0]);
    for other in &runs[1..] {
        let (other_hash, other_tables) = results(other);
        assert_eq!(other_hash, hash, "bf16: the worker count changed the final weights");
        for (a, b) in tables.iter().zip(&other_tables) {
            assert!(a.equals_missing(b), "bf16: the worker count changed a table:\n{a}\n{b}");
        }
    }
    assert_ne!(results(&fp32_run).0, hash, "bf16 computes in another precision than fp32");

    // The record: config.toml names bf16 (fp32's keeps its old text), run.json too.
    let config_text = std::fs::read_to_string(runs[0].join("config.toml")).unwrap();
    assert!(config_text.contains("precision = \"bf16\""), "{config_text}");
    let fp32_text = std::fs::read_to_string(fp32_run.join("config.toml")).unwrap();
    assert!(!fp32_text.contains("precision"), "fp32 configs keep their text and hash:\n{fp32_text}");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs[0].join("run.json")).unwrap()).unwrap();
    assert_eq!(info["precision"], "bf16");

    // Stacked cohorts of 3 in bf16: again one result for 1 and 2 workers.
    let cohorts = write(&dir, "cohorts.toml", &format!("{FEDBUFF}precision = \"bf16\"\ncohort_size = 3\n"));
    let one = results(&run(&cohorts, "1", &dir.join("cohort-1"))).0;
    assert_eq!(
        one,
        results(&run(&cohorts, "2", &dir.join("cohort-2"))).0,
        "bf16 cohorts: workers changed it"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bf16_fedrevive_run_killed_mid_distillation_resumes_to_the_same_results() {
    if !bf16_runs_here(&scratch("precision-revive-check")) {
        return;
    }
    kill_and_resume("precision-revive", &format!("{FEDREVIVE}precision = \"bf16\"\n"), "distill:4", "2");
}

#[test]
fn precisions_other_than_fp32_and_bf16_and_bf16_in_the_reproducible_mode_are_refused() {
    let dir = scratch("precision-refused");
    let fp16 = write(&dir, "fp16.toml", &format!("{FEDBUFF}precision = \"fp16\"\n"));
    let (code, _, stderr) = fedsim(&["run", fp16.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("fp16") && stderr.contains("fp32") && stderr.contains("bf16"), "{stderr}");
    let pinned =
        write(&dir, "pinned.toml", &format!("{FEDBUFF}precision = \"bf16\"\ncpu_kernels = \"avx2\"\n"));
    let (code, _, stderr) = fedsim(&["run", pinned.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("run.precision") && stderr.contains("avx2"), "{stderr}");
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().path().is_dir()), "no run folder was made");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_local_update_benchmark_runs_in_bf16_and_repeats_its_task_exactly() {
    let args = [
        "bench",
        "local-update",
        "--repeats",
        "1",
        "--local-iters",
        "3",
        "--device",
        "cpu",
        "--precision",
        "bf16",
    ];
    let (code, stdout, stderr) = fedsim(&args);
    if !cpu_has_bf16_units() {
        assert_ne!(code, 0);
        assert!(stderr.contains("--precision bf16"), "{stderr}");
        return;
    }
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("bf16 autocast"), "{stdout}");
    assert!(stdout.contains("repeated task bit-identical: yes"), "{stdout}");
}
