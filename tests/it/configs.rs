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
            let expected = stem.trim_end_matches("-resnet18");
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
