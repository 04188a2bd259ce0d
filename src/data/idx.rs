//! Fashion-MNIST in the IDX format (as Debian's `dataset-fashion-mnist` ships it, gzipped):
//! 60,000 training and 10,000 test images of 1x28x28.

use std::io::Read;
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::{DataError, Dataset, DatasetKind, ImageSet};

/// Where `apt-get install dataset-fashion-mnist` puts the files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
pub const CLASSES: [&str; 10] =
    ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"];
const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

pub fn load_fashion_mnist(dir: &Path) -> Result<Dataset, DataError> {
    let train = load_split(dir, "train")?;
    let test = load_split(dir, "t10k")?;
    Ok(Dataset {
        kind: DatasetKind::FashionMnist,
        train,
        test,
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
    })
}

fn load_split(dir: &Path, prefix: &str) -> Result<ImageSet, DataError> {
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (image_bytes, label_bytes) = (read(&images_path)?, read(&labels_path)?);
    let (dims, pixels) = parse(&images_path, &image_bytes, IMAGES_MAGIC)?;
    let (label_dims, labels) = parse(&labels_path, &label_bytes, LABELS_MAGIC)?;
    if dims.len() != 3 || label_dims.len() != 1 || dims[0] != label_dims[0] {
        return Err(DataError::corrupt(
            &images_path,
            format!("image dimensions {dims:?} do not match label dimensions {label_dims:?}"),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= CLASSES.len()) {
        return Err(DataError::corrupt(&labels_path, format!("label {bad} outside 0 to 9")));
    }
    let [n, h, w] = [dims[0] as i64, dims[1] as i64, dims[2] as i64];
    let images = Tensor::from_slice(pixels).view([n, 1, h, w]);
    Ok(ImageSet::new(images, labels.to_vec()))
}

/// The file, gzipped or not.
fn find(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    [dir.join(format!("{stem}.gz")), dir.join(stem)].into_iter().find(|p| p.exists()).ok_or_else(|| {
        DataError::Missing {
            dataset: "Fashion-MNIST",
            missing: format!("no {stem}.gz in {}", dir.display()),
            fix: "apt-get install -y dataset-fashion-mnist   (or: just setup)",
        }
    })
}

fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(DataError::io(path))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::corrupt(path, format!("not a valid gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Splits an IDX file into its dimensions and its payload, checking magic and length.
pub fn parse<'a>(path: &Path, bytes: &'a [u8], magic: u32) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let word = |i: usize| bytes.get(4 * i..4 * i + 4).map(|b| u32::from_be_bytes(b.try_into().unwrap()));
    let found = word(0).ok_or_else(|| DataError::corrupt(path, "shorter than an IDX header"))?;
    if found != magic {
        return Err(DataError::corrupt(path, format!("IDX magic {found:#010x}, expected {magic:#010x}")));
    }
    let rank = (magic & 0xff) as usize;
    let dims: Vec<usize> = (1..=rank)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| DataError::corrupt(path, "IDX header truncated"))?;
    let header = 4 * (rank + 1);
    let expected: usize = dims.iter().product();
    let payload = &bytes[header..];
    if payload.len() != expected {
        return Err(DataError::corrupt(
            path,
            format!("expected {expected} data bytes for dimensions {dims:?}, found {}", payload.len()),
        ));
    }
    Ok((dims, payload))
}
