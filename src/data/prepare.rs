//! `fedsim data prepare`: builds `data/cifar-10-batches-bin/` in the official binary layout
//! from a tar.gz of images (the copy kept in ../shared/data), from an image-folder tree
//! (`<split>/<class>/*.jpg|png`) or from an official binary folder. It checks the counts,
//! writes a SHA-256 manifest, and does nothing when the folder is already complete.
//!
//! Records are interleaved by class (airplane, automobile, ..., truck, airplane, ...), in file
//! name order within a class, so every 10,000-record file is class-balanced without any
//! randomness.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::cifar::{self, CLASSES, FILE_BYTES, PIXELS, RECORDS_PER_FILE};
use super::DataError;

/// The copy of CIFAR-10 this project keeps beside the checkout.
pub const SHARED_TARBALL: &str = "../shared/data/cifar10-jpeg.tar.gz";
/// The prepared folder's checksum file, which the loader checks (named in `cifar`, the layout).
pub use super::cifar::MANIFEST;
const TRAIN_PER_SPLIT: usize = 50_000;
const TEST_PER_SPLIT: usize = 10_000;

/// What `prepare` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    AlreadyPrepared(PathBuf),
    Prepared { dir: PathBuf, train: usize, test: usize },
}

/// An image as read from a source: its split, class index, name (for ordering) and bytes.
struct SourceImage {
    split: Split,
    class: u8,
    name: String,
    encoded: Vec<u8>,
}

/// A decoded image by its file name: (name, planar pixels).
type Named<'a> = (&'a str, &'a [u8]);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Split {
    Train,
    Test,
}

/// Prepares CIFAR-10 under `data_root` from `source` (default: the shared tarball).
pub fn prepare(data_root: &Path, source: Option<&Path>) -> Result<Outcome, DataError> {
    let target = data_root.join(cifar::DIR_NAME);
    // A source named but missing is an error even when the data is already prepared: the
    // user meant that file, and silence would hide the typo.
    if let Some(named) = source.filter(|s| !s.exists()) {
        return Err(DataError::Missing {
            dataset: "CIFAR-10 source",
            missing: format!("{} does not exist (named by --from)", named.display()),
            fix: "fedsim data prepare --from <cifar10 .tar.gz | cifar-10-batches-bin folder | image folder>",
        });
    }
    if is_complete(&target) {
        return Ok(Outcome::AlreadyPrepared(target));
    }
    let source = source.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(SHARED_TARBALL));
    if !source.exists() {
        return Err(DataError::Missing {
            dataset: "CIFAR-10 source",
            missing: format!("{} does not exist", source.display()),
            fix: "fedsim data prepare --from <cifar10 .tar.gz | cifar-10-batches-bin folder | image folder>",
        });
    }
    let files = if source.is_dir() && source.join(cifar::TRAIN_FILES[0]).exists() {
        files_from_binary(&source)?
    } else {
        let images = if source.is_dir() {
            if !source.join("train").is_dir() || !source.join("test").is_dir() {
                return Err(DataError::UnknownSource { path: source });
            }
            read_image_folder(&source)?
        } else {
            read_tarball(&source)?
        };
        files_from_images(&source, images)?
    };
    let (train, test) = (5 * RECORDS_PER_FILE, RECORDS_PER_FILE);
    write_atomically(&target, &files)?;
    Ok(Outcome::Prepared { dir: target, train, test })
}

/// Complete means: the manifest exists and every file it names has the official size.
/// (Full hashing is left to `sha256sum -c SHA256SUMS`; a rerun must be instant.)
pub fn is_complete(dir: &Path) -> bool {
    let Ok(manifest) = std::fs::read_to_string(dir.join(MANIFEST)) else {
        return false;
    };
    let names: Vec<&str> = manifest.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    cifar::TRAIN_FILES.iter().chain([&cifar::TEST_FILE]).all(|name| {
        names.contains(name) && std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == FILE_BYTES as u64)
    })
}

fn read_tarball(path: &Path) -> Result<Vec<SourceImage>, DataError> {
    let file = std::fs::File::open(path).map_err(DataError::io(path))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let bad = |e: std::io::Error| DataError::corrupt(path, format!("not a readable .tar.gz: {e}"));
    let mut images = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let entry_path = entry.path().map_err(bad)?.into_owned();
        let Some((split, class, name)) = classify(&entry_path) else {
            continue;
        };
        let mut encoded = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut encoded).map_err(bad)?;
        images.push(SourceImage { split, class, name, encoded });
    }
    Ok(images)
}

fn read_image_folder(root: &Path) -> Result<Vec<SourceImage>, DataError> {
    let mut images = Vec::new();
    for split_name in ["train", "test"] {
        for class_name in CLASSES {
            let dir = root.join(split_name).join(class_name);
            let entries = std::fs::read_dir(&dir).map_err(DataError::io(&dir))?;
            for entry in entries {
                let path = entry.map_err(DataError::io(&dir))?.path();
                let relative = path.strip_prefix(root).unwrap_or(&path);
                if let Some((split, class, name)) = classify(relative) {
                    let encoded = std::fs::read(&path).map_err(DataError::io(&path))?;
                    images.push(SourceImage { split, class, name, encoded });
                }
            }
        }
    }
    Ok(images)
}

/// `.../<split>/<class>/<name>.(jpg|jpeg|png)` -> (split, class index, name).
fn classify(path: &Path) -> Option<(Split, u8, String)> {
    let parts: Vec<&str> = path.iter().filter_map(|p| p.to_str()).collect();
    let [.., split, class, name] = parts.as_slice() else {
        return None;
    };
    let extension = Path::new(name).extension()?.to_str()?.to_ascii_lowercase();
    if !matches!(extension.as_str(), "jpg" | "jpeg" | "png") {
        return None;
    }
    let split = match *split {
        "train" => Split::Train,
        "test" => Split::Test,
        _ => return None,
    };
    let class = CLASSES.iter().position(|c| c == class)? as u8;
    Some((split, class, name.to_string()))
}

/// Decodes, checks counts, orders and encodes the images as the six binary files.
fn files_from_images(source: &Path, images: Vec<SourceImage>) -> Result<Vec<(String, Vec<u8>)>, DataError> {
    let decoded: Vec<Vec<u8>> = images
        .par_iter()
        .map(|image| {
            decode_planar(&image.encoded).map_err(|problem| {
                DataError::corrupt(
                    source,
                    format!("{:?}/{}/{}: {problem}", image.split, CLASSES[image.class as usize], image.name),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let mut groups: BTreeMap<(Split, u8), Vec<Named>> = BTreeMap::new();
    for (image, pixels) in images.iter().zip(&decoded) {
        groups.entry((image.split, image.class)).or_default().push((&image.name, pixels));
    }
    let mut files = Vec::new();
    for (split, expected) in [(Split::Train, TRAIN_PER_SPLIT), (Split::Test, TEST_PER_SPLIT)] {
        let mut per_class: Vec<Vec<Named>> =
            (0..CLASSES.len() as u8).map(|c| groups.remove(&(split, c)).unwrap_or_default()).collect();
        let found: usize = per_class.iter().map(Vec::len).sum();
        let classes_present = per_class.iter().filter(|c| !c.is_empty()).count();
        if found != expected || classes_present != CLASSES.len() {
            return Err(DataError::corrupt(
                source,
                format!(
                    "{split:?} split: found {found} images in {classes_present} classes, expected {expected} in 10 classes ({})",
                    CLASSES.join(", ")
                ),
            ));
        }
        for class in &mut per_class {
            class.sort_by_key(|item| natural_key(item.0));
        }
        let records = cifar::encode_records(interleave(&per_class));
        match split {
            Split::Train => {
                for (name, chunk) in cifar::TRAIN_FILES.iter().zip(records.chunks(FILE_BYTES)) {
                    files.push((name.to_string(), chunk.to_vec()));
                }
            }
            Split::Test => files.push((cifar::TEST_FILE.to_string(), records)),
        }
    }
    Ok(files)
}

/// Round-robin over classes, skipping classes that ran out.
fn interleave<'a>(per_class: &'a [Vec<Named<'a>>]) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
    let longest = per_class.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest).flat_map(move |i| {
        per_class
            .iter()
            .enumerate()
            .filter_map(move |(class, items)| items.get(i).map(|(_, px)| (class as u8, *px)))
    })
}

/// Numeric file names sort as numbers ("2.jpg" before "10.jpg"), others as text after them.
fn natural_key(name: &str) -> (u64, String) {
    let stem = Path::new(name).file_stem().and_then(|s| s.to_str()).unwrap_or(name);
    (stem.parse().unwrap_or(u64::MAX), name.to_owned())
}

/// Decodes a 32x32 RGB JPEG or PNG into planar R, G, B bytes.
fn decode_planar(encoded: &[u8]) -> Result<Vec<u8>, String> {
    let image = image::load_from_memory(encoded).map_err(|e| format!("cannot decode image: {e}"))?.to_rgb8();
    if image.dimensions() != (32, 32) {
        return Err(format!("image is {}x{}, CIFAR-10 images are 32x32", image.width(), image.height()));
    }
    let mut planar = vec![0u8; PIXELS];
    for (i, pixel) in image.pixels().enumerate() {
        for channel in 0..3 {
            planar[channel * 1024 + i] = pixel[channel];
        }
    }
    Ok(planar)
}

/// An official binary folder: check every file, then take them as they are.
fn files_from_binary(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, DataError> {
    cifar::TRAIN_FILES
        .iter()
        .chain([&cifar::TEST_FILE])
        .map(|name| {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(DataError::io(&path))?;
            cifar::check_records(&path, &bytes)?;
            Ok((name.to_string(), bytes))
        })
        .collect()
}

/// Writes into a sibling temporary folder and renames it into place, so that an interrupted
/// prepare never leaves a folder that looks complete.
fn write_atomically(target: &Path, files: &[(String, Vec<u8>)]) -> Result<(), DataError> {
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(DataError::io(parent))?;
    let staging = parent.join(format!(".{}.partial", cifar::DIR_NAME));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(DataError::io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(DataError::io(&staging))?;
    let mut manifest = String::new();
    for (name, bytes) in files {
        let path = staging.join(name);
        std::fs::write(&path, bytes).map_err(DataError::io(&path))?;
        manifest.push_str(&format!("{:x}  {name}\n", Sha256::digest(bytes)));
    }
    let meta = staging.join(cifar::META_FILE);
    std::fs::write(&meta, CLASSES.join("\n") + "\n").map_err(DataError::io(&meta))?;
    let manifest_path = staging.join(MANIFEST);
    std::fs::write(&manifest_path, manifest).map_err(DataError::io(&manifest_path))?;
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(DataError::io(target))?;
    }
    std::fs::rename(&staging, target).map_err(DataError::io(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_accepts_split_class_file_at_any_depth() {
        assert_eq!(
            classify(Path::new("cifar10-jpeg/train/cat/0012.jpg")),
            Some((Split::Train, 3, "0012.jpg".into()))
        );
        assert_eq!(classify(Path::new("test/truck/a.PNG")), Some((Split::Test, 9, "a.PNG".into())));
        assert_eq!(classify(Path::new("train/unicorn/1.jpg")), None);
        assert_eq!(classify(Path::new("valid/cat/1.jpg")), None);
        assert_eq!(classify(Path::new("train/cat/readme.txt")), None);
    }

    #[test]
    fn natural_order_puts_numbers_in_numeric_order() {
        let mut names = vec!["10.jpg", "2.jpg", "b.jpg", "0001.jpg"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, ["0001.jpg", "2.jpg", "10.jpg", "b.jpg"]);
    }

    #[test]
    fn interleave_goes_round_robin_and_skips_exhausted_classes() {
        let px = [0u8; 1];
        let per_class = vec![vec![("a", &px[..]), ("b", &px[..])], vec![("c", &px[..])]];
        let labels: Vec<u8> = interleave(&per_class).map(|(l, _)| l).collect();
        assert_eq!(labels, [0, 1, 0]);
    }
}
