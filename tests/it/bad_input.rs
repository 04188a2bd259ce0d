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
