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
                fedsim::commands::sweep::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(!points.is_empty());
        } else if path.extension().is_some_and(|e| e == "toml") {
            let config = Config::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            assert_eq!(config.name, stem, "{}: name differs from the file name", path.display());
            let expected = stem.trim_end_matches("-resnet18").trim_start_matches("nvflare-");
            if expected != "quickstart" {
                // The method as reports name it (server optimizer and FedProx included).
                let method = match expected {
                    "fedavg" => "sync_fl",
                    "fedbuff" => "async_fl",
                    "fedavgm" => "FedAvgM",
                    "fedadam" => "FedAdam",
                    "fedyogi" => "FedYogi",
                    "fedprox" => "FedProx",
                    "fedbuff-adam" => "async_fl + adam",
                    other => other,
                };
                let flat: toml::Table = config.to_toml().parse().unwrap();
                let named = fedsim::report::metrics::method_name(config.algorithm.name(), &flat);
                assert_eq!(named, method, "{stem}");
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

/// The reference's FedRevive JSON (a sample written from FEDREVIVE.md section 9) imports as
/// the same experiment as sim-configs/fedrevive-resnet18.toml, which spells those values in
/// fedsim's keys; only the name, horizon, version cap and run settings differ.
#[test]
fn the_reference_fedrevive_json_is_the_fedrevive_experiment() {
    let imported = Config::load(&repo().join("sim-configs/reference/fedrevive.json"), &[]).unwrap();
    let native = Config::load(
        &repo().join("sim-configs/fedrevive-resnet18.toml"),
        &["stop.max_virtual_time=17500.0".into(), "stop.max_versions=100000".into()],
    )
    .unwrap();
    let run_settings = |mut c: Config| {
        c.name = String::new();
        (c.workers, c.device, c.lookahead) = (1, String::new(), 0);
        c
    };
    assert_eq!(run_settings(imported), run_settings(native));
}

/// The reference gates L_adv by its warmup_rounds; an imported config does too.
#[test]
fn an_imported_warmup_gates_kd_and_the_adversarial_loss_alike() {
    let sample = std::fs::read_to_string(repo().join("sim-configs/reference/fedrevive.json")).unwrap();
    let scratch = crate::scratch("imported-warmup");
    let path = scratch.join("warmup.json");
    let text = sample.replace("\"warmup_rounds\": 100", "\"warmup_rounds\": 80");
    assert_ne!(text, sample);
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path, &[]).unwrap();
    assert_eq!((config.kd.gates.unwrap().warmup_rounds, config.dfkd.adv_after), (80, 80));
    // --set still applies after the import.
    let config = Config::load(&path, &["dfkd.adv_after=7".into()]).unwrap();
    assert_eq!(config.dfkd.adv_after, 7);
}

/// Keys that would change results and that fedsim cannot honour are refused by name; keys that
/// only steer the reference's logging are noted once.
#[test]
fn reference_keys_fedsim_cannot_honour_are_refused_by_name() {
    let sample = std::fs::read_to_string(repo().join("sim-configs/reference/fedrevive.json")).unwrap();
    let scratch = crate::scratch("import");
    for (from, to, expected) in [
        (
            "\"dataset\": \"cifar10\"",
            "\"dataset\": \"cifar100\"",
            "dataset: \"cifar100\": fedsim runs the reference's CIFAR-10 configs only",
        ),
        ("\"is_maml\": false", "\"is_maml\": true", "dfkd_settings.is_maml: true would change results"),
        (
            "\"beta\": \"cosine\"",
            "\"beta\": \"adaptive\"",
            "dfkd_settings.beta: \"adaptive\": fedsim knows a number or",
        ),
        (
            "\"external_kd_dataset\": null",
            "\"external_kd_dataset\": \"svhn\"",
            "external_kd_dataset: \"svhn\"",
        ),
        (
            "\"kd_augmentation\": \"dfkd\"",
            "\"kd_augmentation\": \"mixup\"",
            "kd_augmentation: \"mixup\" is not one of",
        ),
        (
            "\"server_lr\": 0.1",
            "\"server_rate\": 0.1",
            "server_rate: is not a key of the reference's config files",
        ),
        ("\"bn_mmt\": 0.0", "\"bn_mmt\": 0.9", "dfkd_settings.bn_mmt: 0.9 would change results"),
    ] {
        assert!(sample.contains(from), "{from}");
        let path = scratch.join("bad.json");
        std::fs::write(&path, sample.replace(from, to)).unwrap();
        let err = Config::load(&path, &[]).unwrap_err().to_string();
        assert!(err.contains(expected), "{to}: {err}");
    }
    // DD-FedRevive: its settings block is the one read, the dfkd block is noted.
    let dd = sample
        .replace("\"kd_augmentation\": \"dfkd\"", "\"kd_augmentation\": \"simple_kd\"")
        .replace("\"server_lr\": 0.1", "\"server_lr\": 0.2");
    let path = scratch.join("dd_fedrevive.json");
    std::fs::write(&path, dd).unwrap();
    let config = Config::load(&path, &["model.kind=\"convnet\"".into()]).unwrap();
    assert_eq!(config.algorithm.name(), "dd_fedrevive");
    assert_eq!((config.kd.settings.temperature, config.kd.gates), (2.0, None));
    let (code, _, stderr) = crate::fedsim(&["plan", path.to_str().unwrap(), "--horizon", "5"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches("note:").count(), 1, "{stderr}");
    assert!(
        stderr.contains("dfkd_settings (a KD this config does not use)") && stderr.contains("wandb_project"),
        "{stderr}"
    );
}

/// The reference's shipped CIFAR-10 files all name "./ExperimentOuts/cifar10/<algorithm>" in
/// continue_exp_from, which the reference ignores where that folder holds no experiment: they
/// run as they are, with a note, as the same experiment as null. A folder with files in it
/// would be continued by the reference, which fedsim cannot do: refused by name.
#[test]
fn continue_exp_from_is_ignored_as_the_reference_ignores_it_and_refused_where_it_would_not_be() {
    let sample = std::fs::read_to_string(repo().join("sim-configs/reference/fedrevive.json")).unwrap();
    let scratch = crate::scratch("continue_exp_from");
    let with = |folder: &str| {
        let path = scratch.join("shipped.json");
        let text = sample.replace(
            "\"continue_exp_from\": null",
            &format!("\"continue_exp_from\": {}", serde_json::Value::String(folder.to_owned())),
        );
        assert_ne!(text, sample);
        std::fs::write(&path, text).unwrap();
        path
    };
    let fresh = Config::load(&repo().join("sim-configs/reference/fedrevive.json"), &[]).unwrap();
    let shipped = with("./ExperimentOuts/cifar10/fedrevive");
    let config = Config::load(&shipped, &[]).unwrap();
    assert_eq!(Config { name: fresh.name.clone(), ..config }, fresh);
    let (code, _, stderr) = crate::fedsim(&["plan", shipped.to_str().unwrap(), "--horizon", "5"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("continue_exp_from \"./ExperimentOuts/cifar10/fedrevive\" holds no experiment here"),
        "{stderr}"
    );
    let empty = scratch.join("empty-experiment");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(Config::load(&with(empty.to_str().unwrap()), &[]).is_ok());
    let saved = scratch.join("saved-experiment");
    std::fs::create_dir_all(&saved).unwrap();
    std::fs::write(saved.join("exp_state.pkl"), b"state").unwrap();
    let err = Config::load(&with(saved.to_str().unwrap()), &[]).unwrap_err().to_string();
    assert!(
        err.contains("continue_exp_from")
            && err.contains("saved-experiment")
            && err.contains("set it to null"),
        "{err}"
    );
    let path = scratch.join("number.json");
    std::fs::write(&path, sample.replace("\"continue_exp_from\": null", "\"continue_exp_from\": 7")).unwrap();
    assert!(Config::load(&path, &[])
        .unwrap_err()
        .to_string()
        .contains("continue_exp_from: 7 is not a folder"));
}

/// A run directory's config.toml is the resolved config in the input format: read back, it is
/// the same config, for every shipped experiment and with the world's features switched on.
#[test]
fn the_resolved_config_reads_back_as_the_same_config() {
    let mut configs: Vec<(std::path::PathBuf, Vec<String>)> = std::fs::read_dir(repo().join("sim-configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && !p.to_str().unwrap().contains("sweep-"))
        .map(|p| (p, Vec::new()))
        .collect();
    configs.push((repo().join("sim-configs/reference/fedrevive.json"), Vec::new()));
    configs.push((
        repo().join("sim-configs/fedavg.toml"),
        [
            "algorithm.round_deadline=2.5",
            "algorithm.late_updates=\"carry\"",
            "algorithm.over_commitment=1.2",
            "topology={num_leaf_nodes=7,assignment=\"seeded\",flush_period=0.3,hop_delay={distribution=\"uniform\",mixture=[[0.5,0.1],[0.5,0.2]],std=0.01}}",
            "availability={kind=\"daily\",period=24.0,online_fraction=0.6}",
            "data.partition=\"iid\"",
            "run.cohort_size=4",
            "train.lr_schedule={kind=\"cosine\",versions=100,floor=0.1}",
            "train.prox_mu=0.01",
            "algorithm.server_lr_schedule={kind=\"exponential\",gamma=0.99}",
            "algorithm.server_optimizer=\"yogi\"",
            "algorithm.server_tau=0.01",
        ]
        .map(String::from)
        .to_vec(),
    ));
    for (path, overrides) in configs {
        let config = Config::load(&path, &overrides).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = config.to_input_toml();
        let again = Config::from_toml(&text, "config.toml", "other", &[])
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
        assert_eq!(again, config, "{}:\n{text}", path.display());
    }
}

/// A plan over a huge horizon says how far it got every few seconds, and Ctrl-C ends it with
/// the counts so far.
#[test]
fn a_long_plan_shows_progress_and_stops_on_ctrl_c() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(["plan", "sim-configs/fedbuff.toml", "--horizon", "1e9"])
        .current_dir(repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("planning: virtual time") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the plan ended without progress lines");
    }
    crate::send_sigint(&child);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("(interrupted: the counts so far)"), "{stdout}");
    let versions: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("versions"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(versions > 1000, "{stdout}");
}
