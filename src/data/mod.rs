//! Datasets in memory: images as one uint8 tensor, labels beside them; loaders for the
//! CIFAR-10 binary format and Fashion-MNIST's IDX files; splits, client partitions and
//! augmentation; the guarded Parquet reader and trace files (device factors, online windows),
//! the other outside bytes a run reads.

pub mod augment;
pub mod cifar;
pub mod idx;
pub mod parquet;
mod parquet_check;
pub mod partition;
pub mod prepare;
pub mod split;
pub mod trace_file;

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

/// Errors from finding, reading and preparing data. All are fatal for the command at hand.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The prepared dataset is not where it was looked for.
    #[error("{dataset} not found: {missing}\n  to prepare it run: {fix}")]
    Missing { dataset: &'static str, missing: String, fix: &'static str },
    /// A file exists but does not hold what its format promises.
    #[error("{path}: {problem}")]
    Corrupt { path: PathBuf, problem: String },
    /// The operating system refused a read or write.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A dataset name fedsim does not know.
    #[error("unknown dataset '{0}'; valid datasets: cifar10, fashion-mnist")]
    UnknownDataset(String),
    /// A source for `data prepare` that is neither of the accepted layouts.
    #[error("{path}: not a CIFAR-10 source; expected a .tar.gz of <split>/<class>/*.jpg|png, a folder with data_batch_1..5.bin and test_batch.bin, or a folder with train/<class>/ and test/<class>/ images")]
    UnknownSource { path: PathBuf },
}

impl DataError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
        move |source| DataError::Io { path: path.to_owned(), source }
    }

    pub(crate) fn corrupt(path: &Path, problem: impl Into<String>) -> DataError {
        DataError::Corrupt { path: path.to_owned(), problem: problem.into() }
    }
}

/// The datasets fedsim can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    Cifar10,
    FashionMnist,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Cifar10, DatasetKind::FashionMnist];

    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// Per-channel normalisation (mean, std) applied after augmentation.
    pub fn normalization(self) -> (Vec<f32>, Vec<f32>) {
        match self {
            DatasetKind::Cifar10 => (vec![0.4914, 0.4822, 0.4465], vec![0.2023, 0.1994, 0.2010]),
            DatasetKind::FashionMnist => (vec![0.2860], vec![0.3530]),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatasetKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| DataError::UnknownDataset(s.to_owned()))
    }
}

/// A tensor that many threads read at once and nobody writes.
pub struct SharedTensor(Tensor);

// SAFETY: libtorch allows concurrent reads of one tensor. A SharedTensor is built once, never
// requires grad, and exposes no mutable access, so threads only ever read it.
unsafe impl Sync for SharedTensor {}

impl SharedTensor {
    pub fn new(tensor: Tensor) -> Self {
        SharedTensor(tensor.set_requires_grad(false))
    }
}

impl Deref for SharedTensor {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.0
    }
}

/// One split of a dataset: images `[N, C, H, W]` as uint8 and labels `[N]` as int64, both on
/// the device training runs on, plus the labels on the host for partitioning.
pub struct ImageSet {
    pub images: SharedTensor,
    pub labels: SharedTensor,
    pub host_labels: Vec<u8>,
}

impl ImageSet {
    pub fn new(images: Tensor, host_labels: Vec<u8>) -> Self {
        let labels = Tensor::from_slice(&host_labels).to_kind(Kind::Int64);
        ImageSet { images: SharedTensor::new(images), labels: SharedTensor::new(labels), host_labels }
    }

    pub fn len(&self) -> usize {
        self.host_labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.host_labels.is_empty()
    }

    /// `[C, H, W]` of one image.
    pub fn image_shape(&self) -> [i64; 3] {
        let size = self.images.size();
        [size[1], size[2], size[3]]
    }

    pub fn to_device(&self, device: Device) -> ImageSet {
        ImageSet {
            images: SharedTensor::new(self.images.to_device(device)),
            labels: SharedTensor::new(self.labels.to_device(device)),
            host_labels: self.host_labels.clone(),
        }
    }
}

/// A loaded dataset: its training and test splits and class names.
pub struct Dataset {
    pub kind: DatasetKind,
    pub train: ImageSet,
    pub test: ImageSet,
    pub classes: Vec<String>,
}

impl Dataset {
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    pub fn to_device(&self, device: Device) -> Dataset {
        Dataset {
            kind: self.kind,
            train: self.train.to_device(device),
            test: self.test.to_device(device),
            classes: self.classes.clone(),
        }
    }
}

/// Where fedsim looks for data: the prepared folder (`data/` by default) and the system
/// folder of Debian's Fashion-MNIST package.
#[derive(Clone, Debug)]
pub struct DataDirs {
    pub root: PathBuf,
    pub fashion_mnist: PathBuf,
}

impl Default for DataDirs {
    fn default() -> Self {
        DataDirs { root: PathBuf::from("data"), fashion_mnist: PathBuf::from(idx::DEBIAN_DIR) }
    }
}

impl DataDirs {
    pub fn cifar10(&self) -> PathBuf {
        self.root.join(cifar::DIR_NAME)
    }
}

/// Loads a dataset onto the host (CPU); move it with [`Dataset::to_device`].
pub fn load(kind: DatasetKind, dirs: &DataDirs) -> Result<Dataset, DataError> {
    match kind {
        DatasetKind::Cifar10 => cifar::load(&dirs.cifar10()),
        DatasetKind::FashionMnist => idx::load_fashion_mnist(&dirs.fashion_mnist),
    }
}
