//! Every shipped experiment config loads and validates, and says what it claims to be.

use fedsim::config::Config;

use crate::repo;

#[test]
fn every_sim_config_validates() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo().join("sim-configs")).unwrap() {
        let path = entry.unwrap().path();
        let is_sweep = path.file_name().unwrap().to_str().unwrap().starts_with("sweep-");
        if is_sweep {
            let (_, points) =
                fedsim::sweep::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(!points.is_empty());
        } else if path.extension().is_some_and(|e| e == "toml") {
            let config = Config::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            assert_eq!(config.name, stem, "{}: name differs from the file name", path.display());
            let expected = stem.trim_end_matches("-resnet18").trim_start_matches("nvflare-");
            if expected != "quickstart" {
                let algorithm = match expected {
                    "fedavg" => "sync_fl",
                    "fedbuff" => "async_fl",
                    other => other,
                };
                assert_eq!(config.algorithm.name(), algorithm, "{stem}");
                assert_eq!(
                    config.model.name(),
                    if stem.ends_with("-resnet18") { "resnet18" } else { "convnet" },
                    "{stem}"
                );
            }
            names.push(stem);
        }
    }
    names.sort();
    for expected in ["afl_dw", "dd_fedrevive", "fedavg", "fedbuff", "fedrevive", "quickstart"] {
        assert!(names.iter().any(|n| n == expected), "sim-configs/{expected}.toml missing");
        assert!(expected == "quickstart" || names.iter().any(|n| *n == format!("{expected}-resnet18")));
    }
}

/// `fedsim plan` counts what happens to the jobs: over the reference world's 200 time units
/// FedAvg makes 28 versions; over-committed by 1.3 it makes more, cancelling the stragglers'
/// jobs, which never train; a bad key value is named.
#[test]
fn fedsim_plan_counts_jobs_by_fate() {
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", "sim-configs/fedavg.toml", "--horizon", "200"];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = crate::fedsim(&args);
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let plain = plan(&[]);
    assert!(plain.contains("versions            28\n"), "{plain}");
    assert!(plain.contains(" 0 cancelled (over-committed rounds)"), "{plain}");
    assert!(plain.contains("clients online 100.0% of the time"), "{plain}");
    let over = plan(&["--set", "algorithm.over_commitment=1.3"]);
    let versions: u64 = over
        .lines()
        .find_map(|l| l.trim().strip_prefix("versions"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{over}"));
    assert!(versions > 28 * 2, "{over}");
    assert!(!over.contains(" 0 cancelled"), "{over}");
    let (code, _, stderr) =
        crate::fedsim(&["plan", "sim-configs/fedavg.toml", "--set", "algorithm.max_staleness=3"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("algorithm.max_staleness = 3: applies to asynchronous algorithms"), "{stderr}");
}
