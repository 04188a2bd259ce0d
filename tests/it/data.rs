//! The prepared datasets: counts, layout, checksums, re-preparing from other sources.

use fedsim::data::{cifar, prepare, DatasetKind};
use sha2::{Digest, Sha256};

use crate::{cifar, dirs, scratch};

#[test]
fn cifar_has_the_official_counts_and_shapes() {
    let data = cifar();
    assert_eq!(data.train.len(), 50_000);
    assert_eq!(data.test.len(), 10_000);
    assert_eq!(data.train.images.size(), [50_000, 3, 32, 32]);
    assert_eq!(data.classes.len(), 10);
    for labels in [&data.train.host_labels, &data.test.host_labels] {
        let mut counts = [0usize; 10];
        labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert!(counts.iter().all(|&c| c == labels.len() / 10), "unbalanced classes: {counts:?}");
    }
    // Labels on the host and in the tensor agree.
    let tensor_labels = Vec::<i64>::try_from(data.test.labels.narrow(0, 0, 100)).unwrap();
    let host: Vec<i64> = data.test.host_labels[..100].iter().map(|&l| l as i64).collect();
    assert_eq!(tensor_labels, host);
}

#[test]
fn the_manifest_matches_the_prepared_files() {
    let dir = dirs().cifar10();
    let manifest = std::fs::read_to_string(dir.join(prepare::MANIFEST)).unwrap();
    let mut checked = 0;
    for line in manifest.lines() {
        let (hash, name) = line.split_once("  ").unwrap();
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(format!("{:x}", Sha256::digest(&bytes)), hash, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[test]
fn a_rerun_does_nothing() {
    let outcome = prepare::prepare(&dirs().root, None).unwrap();
    assert_eq!(outcome, prepare::Outcome::AlreadyPrepared(dirs().cifar10()));
}

#[test]
fn preparing_from_an_official_binary_folder_copies_it_exactly() {
    let out = scratch("prepare-from-binary");
    let outcome = prepare::prepare(&out, Some(&dirs().cifar10())).unwrap();
    assert!(matches!(outcome, prepare::Outcome::Prepared { train: 50_000, test: 10_000, .. }));
    for name in cifar::TRAIN_FILES.iter().chain([&cifar::TEST_FILE]) {
        let a = std::fs::read(dirs().cifar10().join(name)).unwrap();
        let b = std::fs::read(out.join(cifar::DIR_NAME).join(name)).unwrap();
        assert!(a == b, "{name} differs");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn an_image_folder_with_the_wrong_counts_is_refused_and_names_them() {
    let src = scratch("prepare-from-folder");
    let out = scratch("prepare-from-folder-out");
    let image = image::RgbImage::from_pixel(32, 32, image::Rgb([10, 200, 30]));
    for split in ["train", "test"] {
        for class in cifar::CLASSES {
            std::fs::create_dir_all(src.join(split).join(class)).unwrap();
        }
        image.save(src.join(split).join("cat").join("1.png")).unwrap();
    }
    let err = prepare::prepare(&out, Some(&src)).unwrap_err().to_string();
    assert!(err.contains("found 1 images in 1 classes, expected 50000"), "{err}");
    assert!(!out.join(cifar::DIR_NAME).exists(), "nothing may be written on failure");
}

#[test]
fn fashion_mnist_loads_as_a_second_dataset() {
    let data = fedsim::data::load(DatasetKind::FashionMnist, &dirs())
        .expect("Debian's dataset-fashion-mnist (just setup)");
    assert_eq!(data.train.images.size(), [60_000, 1, 28, 28]);
    assert_eq!(data.test.len(), 10_000);
    assert_eq!(data.classes.len(), 10);
    assert!(data.train.host_labels.iter().all(|&l| l < 10));
}
