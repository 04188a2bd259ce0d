//! Bad input gets a clear error naming the input and what is allowed; never a panic.

use fedsim::data::{self, cifar, DataDirs, DatasetKind};

use crate::{fedsim, scratch};

/// A data folder holding a CIFAR-10 layout whose first training file is `first_file`.
fn data_dir_with(name: &str, first_file: &[u8]) -> DataDirs {
    let root = scratch(name);
    let dir = root.join(cifar::DIR_NAME);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(cifar::TRAIN_FILES[0]), first_file).unwrap();
    std::fs::write(dir.join(cifar::TEST_FILE), b"").unwrap();
    DataDirs { root, ..DataDirs::default() }
}

#[test]
fn a_truncated_cifar_file_is_named_with_the_expected_size() {
    let dirs = data_dir_with("truncated-cifar", &vec![1u8; 5_000]);
    let err = data::load(DatasetKind::Cifar10, &dirs).err().expect("truncated file refused").to_string();
    assert!(err.contains("data_batch_1.bin"), "{err}");
    assert!(
        err.contains("expected 30730000 bytes") && err.contains("found 5000") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn a_corrupt_label_is_named_with_its_record() {
    let mut bytes = vec![0u8; cifar::FILE_BYTES];
    bytes[3 * cifar::RECORD] = 12;
    let dirs = data_dir_with("corrupt-cifar", &bytes);
    let err = data::load(DatasetKind::Cifar10, &dirs).err().expect("corrupt file refused").to_string();
    assert!(err.contains("data_batch_1.bin") && err.contains("record 3 has label 12"), "{err}");
}

#[test]
fn a_corrupt_idx_file_is_named() {
    let dir = scratch("corrupt-idx");
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(dir.join(name), b"\x00\x00\x08\x03\x00\x00\x00\x02").unwrap();
    }
    let dirs = DataDirs { fashion_mnist: dir, ..DataDirs::default() };
    let err = data::load(DatasetKind::FashionMnist, &dirs).err().expect("corrupt IDX refused").to_string();
    assert!(err.contains("train-images-idx3-ubyte") && err.contains("truncated"), "{err}");
}

/// Exit code 2, the expected words on stderr, and no panic.
fn assert_refused(args: &[&str], expected: &[&str]) {
    let (code, _, stderr) = fedsim(args);
    assert_eq!(code, 2, "fedsim {args:?} should fail cleanly; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "fedsim {args:?} panicked: {stderr}");
    for word in expected {
        assert!(stderr.contains(word), "fedsim {args:?}: stderr lacks '{word}': {stderr}");
    }
}

#[test]
fn missing_data_names_the_command_that_prepares_it() {
    let empty = scratch("no-data");
    let empty = empty.to_str().unwrap();
    assert_refused(
        &["--data-dir", empty, "train-central", "--epochs", "1"],
        &["CIFAR-10 not found", "fedsim data prepare"],
    );
    assert_refused(
        &["--fashion-mnist-dir", empty, "train-central", "--dataset", "fashion-mnist"],
        &["Fashion-MNIST not found", "apt-get install -y dataset-fashion-mnist"],
    );
}

#[test]
fn unknown_names_list_the_valid_ones() {
    assert_refused(
        &["train-central", "--model", "resnet50"],
        &["resnet50", "valid models: convnet, resnet18"],
    );
    assert_refused(
        &["train-central", "--dataset", "mnist"],
        &["mnist", "valid datasets: cifar10, fashion-mnist"],
    );
    assert_refused(&["train-central", "--optimizer", "lbfgs"], &["valid optimizers: adam, sgd"]);
    assert_refused(&["train-central", "--device", "tpu"], &["valid devices: auto, cpu, cuda"]);
}

#[test]
fn bad_numbers_and_sources_are_refused_by_name() {
    assert_refused(&["train-central", "--epochs", "0"], &["--epochs must be at least 1"]);
    assert_refused(&["train-central", "--lr", "-1"], &["--lr must be a positive number"]);
    let out = scratch("prepare-missing-source");
    assert_refused(
        &["--data-dir", out.to_str().unwrap(), "data", "prepare", "--from", "/nonexistent/cifar.tar.gz"],
        &["/nonexistent/cifar.tar.gz does not exist"],
    );
}

/// The corpus: one line per bad input, run as a user would, each refused with exit code 2 and
/// an error naming the input and what is allowed, never a panic, and nothing written. `{cfg}`
/// is a config file holding the case's text (None: the quickstart), `{out}` a fresh folder
/// that must still not exist afterwards, `{file}` an existing plain file.
#[test]
fn bad_inputs_are_refused_by_name_before_anything_is_written() {
    const OK: &str = "[data]\nnum_clients = 20\nclient_data_size = 32\n[algorithm]\nactive_jobs = 4\n[stop]\nmax_versions = 2\n";
    let cases: &[(&[&str], Option<&str>, &str)] = &[
        (&["run", "{cfg}", "--out", "{out}"], Some("[stop]\nmax_virtual_time = 5.0\n[delays]\ndownload = { distribution = \"constant\", mean = 0.0 }\ntrain = { distribution = \"constant\", mean = 0.0 }\nupload = { distribution = \"constant\", mean = 0.0 }"), "every delay is zero, so virtual time never advances"),
        (&["plan", "{cfg}"], Some("[stop]\nmax_virtual_time = 5.0\n[delays]\ndownload = { mean = 0.0 }\ntrain = { mean = 0.0 }\nupload = { mean = 0.0 }"), "set stop.max_versions"),
        (&["run", "{cfg}", "--out", "{out}", "--set", "train.batch_size=100000"], Some(OK), "train.batch_size = 100000: must be between 1 and data.client_data_size (32)"),
        (&["run", "{cfg}", "--out", "{out}", "--workers", "100000"], Some(OK), "run.workers = 100000: must be between 1 and 1024"),
        (&["run", "{cfg}", "--out", "{out}", "--set", "run.server_threads=5000"], Some(OK), "run.server_threads = 5000: must be between 1 and 1024"),
        (&["run", "{cfg}", "--out", "{out}", "--set", "name=\"../escape\""], Some(OK), "name = \"../escape\": names the run folder"),
        (&["run", "{cfg}", "--out", "{out}", "--set", "name=\"a/b\""], Some(OK), "name = \"a/b\""),
        (&["run", "{cfg}", "--out", "{out}", "--set", "name=\".hidden\""], Some(OK), "not starting with '.'"),
        (&["plan", "{cfg}", "--set", "data.num_clients=1000000000"], Some(OK), "data.num_clients = 1000000000: must be between 1 and 1000000"),
        (&["plan", "{cfg}", "--set", "data.num_clients=500000", "--set", "data.client_data_size=1000"], Some(OK), "the shards would hold more than 100000000 samples"),
        (&["plan", "{cfg}", "--set", "run.lookahead=9999999"], Some(OK), "run.lookahead = 9999999: must be at most 1000000"),
        (&["plan", "{cfg}", "--horizon", "nan"], Some(OK), "'nan' is not a positive, finite virtual time"),
        (&["plan", "{cfg}", "--horizon=-3"], Some(OK), "'-3' is not a positive, finite virtual time"),
        (&["run", "{cfg}", "--out", "{out}", "--set", "train.lr=fast"], Some(OK), "--set train.lr=fast: invalid type: string \"fast\", expected f64"),
        (&["run", "{cfg}", "--out", "{out}", "--seed", "18446744073709551615"], Some(OK), "is not in 0..=9223372036854775807"),
        (&["run", "{cfg}", "--out", "{out}", "--set", "nonsense"], Some(OK), "--set nonsense: expected key=value"),
        (&["run", "{cfg}", "--out", "{out}", "--set", "algorithm.bufer_size=1"], Some(OK), "unknown field `bufer_size`"),
        (&["run", "{cfg}", "--out", "{out}", "--set", "run.device=\"cuda\""], Some(OK), "libtorch sees no CUDA device"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[stop]\nmax_versions = 1\nmax_virtual_time = inf"), "stop.max_virtual_time = inf: must be a positive number"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[train]\nlr = nan\n[stop]\nmax_versions = 1"), "train.lr = NaN: must be a positive number"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[algorithm]\nserver_lr = 0.0\n[stop]\nmax_versions = 1"), "algorithm.server_lr = 0: must be a non-zero number"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[data]\nnum_clients = -4\n[stop]\nmax_versions = 1"), "invalid value: integer `-4`"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[stop\nmax_versions = 1"), "invalid table header"),
        (&["run", "{cfg}", "--out", "{out}"], Some(""), "set stop.max_versions or stop.max_virtual_time"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[eval]\ninterval = 0\n[stop]\nmax_versions = 1"), "eval.interval = 0: must be at least 1"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[topology]\nnum_leaf_nodes = 5000\n[stop]\nmax_versions = 1"), "topology.num_leaf_nodes = 5000: must be between 1 and data.num_clients (1000)"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[availability]\nkind = \"trace\"\nfile = \"/no/such/trace.csv\"\n[stop]\nmax_versions = 1"), "availability.file = /no/such/trace.csv"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[delays]\ntrace = \"/no/such/devices.parquet\"\n[stop]\nmax_versions = 1"), "delays.trace = /no/such/devices.parquet"),
        (&["run", "{file}", "--out", "{out}"], None, "plain-file.txt: TOML parse error at line 1"),
        (&["run", "/no/such/config.toml", "--out", "{out}"], None, "/no/such/config.toml"),
        (&["run", "{dir}", "--out", "{out}"], None, "Is a directory"),
        (&["report", "{file}", "--out", "{out}"], None, "no run could be read"),
        (&["sweep", "{sweep}", "--report", "{file}", "--out", "{out}"], None, "--report"),
        (&["sweep", "{cfg}", "--out", "{out}"], Some("configs = []"), "configs must name at least one config file"),
        (&["sweep", "{cfg}", "--out", "{out}"], Some("configs = [\"missing.toml\"]"), "missing.toml"),
        (&["sweep", "{cfg}", "--out", "{out}"], Some("configs = [\"../../../sim-configs/quickstart.toml\"]\n[grid]\nseed = []"), "grid key \"seed\" has no values"),
        (&["sweep", "{cfg}", "--out", "{out}"], Some("configs = [\"../../../sim-configs/quickstart.toml\"]\nrepeats = 3"), "unknown field `repeats`"),
        (&["sweep", "{cfg}", "--out", "{out}"], Some("configs = [\"../../../sim-configs/quickstart.toml\"]\n[grid]\n\"run.cpu_kernels\" = [\"native\", \"avx2\"]"), "points differ in run.cpu_kernels"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[run]\ncpu_kernels = \"avx512\"\n[stop]\nmax_versions = 1"), "unknown variant `avx512`, expected `native` or `avx2`"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[algorithm]\nkind = \"sync_fl\"\nround_deadline = 0.0\n[stop]\nmax_versions = 1"), "algorithm.round_deadline = 0: must be a positive, finite virtual time"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[data]\ndataset = \"cifar100\"\n[stop]\nmax_versions = 1"), "unknown variant `cifar100`"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[stop]\nmax_versions = 1\nearly_stop = [[10, 1.5]]"), "stop.early_stop = [10, 1.5]: minimum accuracies must lie in [0, 1]"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[stop]\nmax_versions = 1\ntarget_accuracy = 2.0"), "stop.target_accuracy = 2: must lie in [0, 1]"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[kd]\nwarmup_rounds = 10\nfreeze_rounds = 20\n[algorithm]\nkind = \"fedrevive\"\n[stop]\nmax_versions = 1"), "kd.warmup_rounds = 10: must be >= kd.freeze_rounds (20)"),
        (&["run", "{cfg}", "--out", "{out}"], Some("[dfkd]\npool_size = 10\n[stop]\nmax_versions = 1"), "dfkd.pool_size = 10: must hold at least one synthetic batch (64)"),
        (&["run", "{binary}", "--out", "{out}"], None, "binary.toml"),
        (&["report", "{dir}", "--out", "{out}"], None, "run.json"),
        (&["run", "{cfg}", "--out", "{out}", "--set", "run.checkpoint_minutes=nan"], Some(OK), "run.checkpoint_minutes = NaN: must be a finite number of minutes >= 0"),
        (&["run", "{cfg}", "--out", "{out}", "--set", "run.checkpoint_every=-10"], Some(OK), "invalid value: integer `-10`"),
        (&["resume", "{file}"], None, "plain-file.txt is not a run directory"),
        (&["resume", "{dir}"], None, "a-folder has no config.toml: not a fedsim run directory"),
        (&["resume", "{nockpt}"], None, "has no checkpoint: the run stopped before its first one"),
        (&["resume", "{badckpt}"], None, "checkpoint.safetensors is not a fedsim checkpoint this version can read"),
        (&["resume", "{foreign}"], None, "a safetensors file without fedsim's checkpoint header"),
        (&["resume", "{badckpt}", "--workers", "0"], None, "run.workers = 0: must be between 1 and 1024"),
        (&["resume", "{badconfig}"], None, "config.toml: TOML parse error"),
    ];
    let root = scratch("bad-input-corpus");
    let file = root.join("plain-file.txt");
    std::fs::write(&file, "not a config \u{0}\u{1}").unwrap();
    let sweep = root.join("sweep.toml");
    std::fs::write(&sweep, "configs = [\"../../../sim-configs/quickstart.toml\"]\n").unwrap();
    let folder = root.join("a-folder");
    std::fs::create_dir_all(&folder).unwrap();
    let binary = root.join("binary.toml");
    std::fs::write(&binary, [0xffu8, 0xfe, 0x00, 0x80, 0x81]).unwrap();
    // Run directories for resume: no checkpoint, a damaged one, someone else's safetensors file,
    // a damaged config.toml.
    let run_dir = |name: &str, config: &str, checkpoint: Option<&[u8]>| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), config).unwrap();
        if let Some(bytes) = checkpoint {
            std::fs::write(dir.join("checkpoint.safetensors"), bytes).unwrap();
        }
        dir
    };
    let foreign_safetensors = [&2u64.to_le_bytes()[..], b"{}"].concat();
    let nockpt = run_dir("no-checkpoint", OK, None);
    let badckpt = run_dir("bad-checkpoint", OK, Some(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"fedsim\": tru"));
    let foreign = run_dir("foreign-checkpoint", OK, Some(&foreign_safetensors));
    let badconfig = run_dir("bad-config", "[stop\nmax_versions = 1", Some(&foreign_safetensors));
    for (i, (args, config, expected)) in cases.iter().enumerate() {
        let cfg = root.join(format!("case-{i}.toml"));
        std::fs::write(&cfg, config.unwrap_or("")).unwrap();
        let out = root.join(format!("out-{i}"));
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("{cfg}", cfg.to_str().unwrap())
                    .replace("{out}", out.to_str().unwrap())
                    .replace("{file}", file.to_str().unwrap())
                    .replace("{dir}", folder.to_str().unwrap())
                    .replace("{sweep}", sweep.to_str().unwrap())
                    .replace("{binary}", binary.to_str().unwrap())
                    .replace("{nockpt}", nockpt.to_str().unwrap())
                    .replace("{badckpt}", badckpt.to_str().unwrap())
                    .replace("{foreign}", foreign.to_str().unwrap())
                    .replace("{badconfig}", badconfig.to_str().unwrap())
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, stderr) = fedsim(&args);
        assert!(code == 2, "case {i} {args:?}: exit code {code}; stderr: {stderr}");
        assert!(!stderr.contains("panicked"), "case {i} {args:?} panicked: {stderr}");
        assert!(stderr.contains(expected), "case {i} {args:?}: stderr lacks {expected:?}: {stderr}");
        assert!(!out.exists(), "case {i} {args:?}: {} was written", out.display());
    }
    assert!(
        std::fs::read_to_string(&file).unwrap().starts_with("not a config"),
        "the plain file is untouched"
    );
    assert_eq!(
        std::fs::read(foreign.join("checkpoint.safetensors")).unwrap(),
        foreign_safetensors,
        "refused checkpoints stay"
    );
    assert_eq!(
        std::fs::read_dir(&nockpt).unwrap().count(),
        1,
        "nothing written into a refused run directory"
    );
}

/// The same run given twice to a report is an error, not "identical".
#[test]
fn a_run_given_twice_to_a_report_is_refused() {
    let root = scratch("report-twice");
    let run = root.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let out = root.join("report");
    let (code, _, stderr) = fedsim(&[
        "report",
        run.to_str().unwrap(),
        root.join("./run").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("given twice"), "{stderr}");
    assert!(!out.exists());
}

/// A prepared CIFAR-10 file whose pixels were changed no longer matches SHA256SUMS.
#[test]
fn a_prepared_file_that_no_longer_matches_its_checksum_is_refused() {
    let source = crate::repo().join("data").join(cifar::DIR_NAME);
    let root = scratch("flipped-pixels");
    let dir = root.join(cifar::DIR_NAME);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let target = dir.join(cifar::TEST_FILE);
    let mut bytes = std::fs::read(&target).unwrap();
    bytes[1 + 500] ^= 0xff; // a pixel of the first test image
    std::fs::write(&target, bytes).unwrap();
    let err = data::load(DatasetKind::Cifar10, &DataDirs { root: root.clone(), ..DataDirs::default() })
        .err()
        .expect("a changed file is refused")
        .to_string();
    assert!(
        err.contains("test_batch.bin") && err.contains("SHA256SUMS") && err.contains("fedsim data prepare"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_missing_source_is_refused_even_when_the_data_is_prepared() {
    assert_refused(
        &["data", "prepare", "--from", "no/such/cifar.tar.gz"],
        &["no/such/cifar.tar.gz does not exist (named by --from)"],
    );
}

#[test]
fn report_times_and_targets_must_be_what_they_name() {
    let out = scratch("bad-report-values");
    let out = out.to_str().unwrap();
    assert_refused(&["report", "x", "--out", out, "--at", "-5"], &["'-5' is not a virtual time"]);
    for target in ["1.5", "0", "-0.2", "80"] {
        assert_refused(
            &["report", "x", "--out", out, "--targets", target],
            &[&format!("'{target}' is not an accuracy")],
        );
    }
    // A percentage is an accuracy too: the refusal is then about the run folder, not the target.
    assert_refused(&["report", "x", "--out", out, "--targets", "80%,0.9"], &["x: not a folder"]);
}

#[test]
fn negative_seeds_and_horizons_are_refused_with_what_is_allowed() {
    assert_refused(
        &["run", "sim-configs/quickstart.toml", "--seed", "-1"],
        &["'-1' is not a seed", "not in 0..=9223372036854775807"],
    );
    assert_refused(
        &["plan", "sim-configs/quickstart.toml", "--horizon", "-5"],
        &["'-5' is not a positive, finite virtual time"],
    );
}

#[test]
fn a_batch_above_a_shard_is_refused_by_the_benchmarks() {
    assert_refused(
        &["bench", "local-update", "--batch-size", "1000", "--device", "cpu"],
        &["--batch-size 1000 is larger than a client's shard (350 samples)"],
    );
}

#[test]
fn a_horizon_beyond_reach_is_refused_naming_the_key() {
    let out = scratch("unreachable-horizon");
    assert_refused(
        &[
            "run",
            "sim-configs/fedbuff.toml",
            "--set",
            "stop.max_virtual_time=1e15",
            "--out",
            out.to_str().unwrap(),
        ],
        &["stop.max_virtual_time = 1000000000000000", "a run can reach", "stop.max_versions"],
    );
    assert_eq!(std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0), 0, "no run folder was made");
}

#[test]
fn run_takes_the_device_as_a_shortcut() {
    assert_refused(
        &["run", "sim-configs/quickstart.toml", "--device", "tpu"],
        &["unknown device 'tpu'", "auto, cpu, cuda"],
    );
    let out = scratch("device-shortcut");
    let args = ["run", "sim-configs/quickstart.toml", "--device", "cpu", "--set", "stop.max_versions=1"];
    let (code, stdout, stderr) = fedsim(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(" on cpu"), "{stdout}");
}

/// Output piped into a reader that has gone (`fedsim info | head -1`) ends fedsim quietly, by
/// SIGPIPE as other tools end, not with a panic.
#[test]
fn a_closed_stdout_pipe_ends_fedsim_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .arg("info")
        .current_dir(crate::repo())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.signal(), Some(13), "{:?}: {stderr}", output.status);
}
