//! The official CIFAR-10 binary format (`cifar-10-batches-bin`): records of 1 label byte and
//! 3,072 pixel bytes (R, G then B planes of 32x32); five training files of 10,000 records and
//! one test file. Reading makes one uint8 tensor per split in one pass over the bytes.

use std::path::Path;

use tch::Tensor;

use super::{DataError, Dataset, DatasetKind, ImageSet};

/// Folder name of the prepared dataset, as in the official archive.
pub const DIR_NAME: &str = "cifar-10-batches-bin";
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const TEST_FILE: &str = "test_batch.bin";
pub const META_FILE: &str = "batches.meta.txt";
/// The checksums of a prepared folder's files, written by `fedsim data prepare`.
pub const MANIFEST: &str = "SHA256SUMS";
pub const CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
pub const PIXELS: usize = 3 * 32 * 32;
pub const RECORD: usize = 1 + PIXELS;
pub const RECORDS_PER_FILE: usize = 10_000;
pub const FILE_BYTES: usize = RECORD * RECORDS_PER_FILE;

/// Loads the five training files and the test file from `dir`.
pub fn load(dir: &Path) -> Result<Dataset, DataError> {
    if !dir.join(TEST_FILE).exists() || !dir.join(TRAIN_FILES[0]).exists() {
        return Err(DataError::Missing {
            dataset: "CIFAR-10",
            missing: format!("no {} or {} in {}", TRAIN_FILES[0], TEST_FILE, dir.display()),
            fix: "fedsim data prepare   (or: just setup)",
        });
    }
    let train_paths: Vec<_> = TRAIN_FILES.iter().map(|name| dir.join(name)).collect();
    let checksums = read_checksums(dir);
    let train = read_split(&train_paths, &checksums)?;
    let test = read_split(&[dir.join(TEST_FILE)], &checksums)?;
    Ok(Dataset {
        kind: DatasetKind::Cifar10,
        train,
        test,
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
    })
}

/// The SHA-256 of each file, by name, from the folder's SHA256SUMS (written by `fedsim data
/// prepare`); empty when there is none (data prepared by other means).
fn read_checksums(dir: &Path) -> std::collections::HashMap<String, String> {
    let manifest = std::fs::read_to_string(dir.join(MANIFEST)).unwrap_or_default();
    manifest
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            Some((parts.next()?.to_lowercase(), parts.next()?.trim_start_matches('*').to_owned()))
        })
        .map(|(hash, name)| (name, hash))
        .collect()
}

/// Reads whole files into one buffer of records, checks them (and their SHA-256 where the
/// manifest lists it), and splits labels from pixels.
fn read_split(
    paths: &[std::path::PathBuf],
    checksums: &std::collections::HashMap<String, String>,
) -> Result<ImageSet, DataError> {
    use sha2::{Digest, Sha256};
    let mut bytes = Vec::with_capacity(paths.len() * FILE_BYTES);
    for path in paths {
        let start = bytes.len();
        let mut file = std::fs::File::open(path).map_err(DataError::io(path))?;
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(DataError::io(path))?;
        check_records(path, &bytes[start..])?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(expected) = checksums.get(name) {
            let actual = format!("{:x}", Sha256::digest(&bytes[start..]));
            if &actual != expected {
                return Err(DataError::corrupt(
                    path,
                    format!(
                        "its SHA-256 is {actual}, but {} says {expected}: the file was changed or damaged; prepare the data again (fedsim data prepare)",
                        MANIFEST
                    ),
                ));
            }
        }
    }
    let records = bytes.len() / RECORD;
    let host_labels: Vec<u8> = bytes.iter().step_by(RECORD).copied().collect();
    let all = Tensor::from_slice(&bytes).view([records as i64, RECORD as i64]);
    let images = all.narrow(1, 1, PIXELS as i64).reshape([records as i64, 3, 32, 32]);
    Ok(ImageSet::new(images, host_labels))
}

/// One file must be exactly 10,000 records, every label a class index.
pub fn check_records(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    if bytes.len() != FILE_BYTES {
        return Err(DataError::corrupt(
            path,
            format!(
                "expected {FILE_BYTES} bytes (10,000 records of 1 label byte + 3,072 pixel bytes), found {}{}",
                bytes.len(),
                if bytes.len() < FILE_BYTES { ": the file is truncated" } else { "" }
            ),
        ));
    }
    if let Some((record, label)) =
        bytes.iter().step_by(RECORD).enumerate().find(|(_, &label)| label as usize >= CLASSES.len())
    {
        return Err(DataError::corrupt(
            path,
            format!("record {record} has label {label}; CIFAR-10 labels are 0 to 9: the file is corrupt"),
        ));
    }
    Ok(())
}

/// Encodes labelled images (each `PIXELS` bytes, planar RGB) as records.
pub fn encode_records<'a>(items: impl Iterator<Item = (u8, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (label, pixels) in items {
        debug_assert_eq!(pixels.len(), PIXELS);
        out.push(label);
        out.extend_from_slice(pixels);
    }
    out
}
