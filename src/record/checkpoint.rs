//! The run directory's checkpoint: one safetensors file, `checkpoint.safetensors`, holding a
//! [`RunSnapshot`] (arrays as tensors, everything else as JSON in the file's metadata) and
//! what a resume must check before it trusts it: the fedsim build, the hash of the config's
//! results-deciding settings, the device and CPU kernels, and how many log segments were on
//! disk when it was taken. It is written to a temporary file, synced and renamed over the
//! previous one, so the previous checkpoint stays whole until the new one is.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};

use super::RecordError;
use crate::saved::{Array, RunSnapshot, SavedState, TrainedTask};

pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// What is wrong with a file read as a checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(String);

fn format_error(message: impl Into<String>) -> FormatError {
    FormatError(message.into())
}

/// Raise when the layout below changes: a resume refuses checkpoints of another format.
pub const CHECKPOINT_FORMAT: u32 = 3;

/// What must match for a checkpoint to continue this run exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub fedsim_version: String,
    pub git_commit: String,
    /// [`crate::config::Config::results_fingerprint`].
    pub config_sha256: String,
    /// "cpu" or the CUDA device's name: another device gives other floats.
    pub device: String,
    /// The CPU kernels libtorch dispatched to ("AVX512", "AVX2"): other kernels round differently.
    pub cpu_capability: String,
}

/// The metadata of a checkpoint file (the snapshot's arrays are its tensors).
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    provenance: Provenance,
    /// Log segments on disk when the checkpoint was taken; later ones are dropped on resume.
    segments: usize,
    position: u64,
    plan_read: bool,
    version: u64,
    /// f64 values as their bits: JSON would not give every one back exactly.
    virtual_time: u64,
    last_accuracy: Option<u64>,
    best_accuracy: Option<u64>,
    early_stop_due: bool,
    jobs_recorded_before: u64,
    tasks_trained: u64,
    updates_applied: u64,
    cohorts_trained: u64,
    versions: Vec<u64>,
    trained: Vec<TrainedHeader>,
    server_values: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TrainedHeader {
    task: u64,
    worker: u32,
    first_loss: u32,
    last_loss: u32,
    samples: usize,
    has_model: bool,
}

/// A checkpoint as read back.
pub struct Checkpoint {
    pub provenance: Provenance,
    pub segments: usize,
    pub snapshot: RunSnapshot,
}

/// An array's bytes as safetensors writes them (little-endian, as this machine holds them).
struct Bytes<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
}

impl View for &Bytes<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!(
    "checkpoints store arrays as this machine's bytes, which safetensors requires to be little-endian"
);

fn bytes_of<T>(values: &[T]) -> &[u8] {
    // f32, f64 and u8 have no padding and any byte pattern is valid; the target is little-endian.
    unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values)) }
}

fn view(array: &Array) -> Bytes<'_> {
    match array {
        Array::F32 { shape, data } => Bytes { dtype: Dtype::F32, shape: shape.clone(), data: bytes_of(data) },
        Array::F64 { shape, data } => Bytes { dtype: Dtype::F64, shape: shape.clone(), data: bytes_of(data) },
        Array::U8 { shape, data } => Bytes { dtype: Dtype::U8, shape: shape.clone(), data: bytes_of(data) },
    }
}

fn floats(data: &[f32]) -> Bytes<'_> {
    Bytes { dtype: Dtype::F32, shape: vec![data.len()], data: bytes_of(data) }
}

/// Writes `snapshot` as the checkpoint of `run_dir`, replacing the previous one only once the
/// new one is complete and synced.
pub fn write(
    run_dir: &Path,
    provenance: &Provenance,
    segments: usize,
    snapshot: &RunSnapshot,
) -> Result<(), RecordError> {
    let mut views: Vec<(String, Bytes)> = Vec::new();
    for (version, weights) in &snapshot.versions {
        views.push((format!("version.{version}"), floats(weights)));
    }
    let mut trained = Vec::with_capacity(snapshot.trained.len());
    for task in &snapshot.trained {
        views.push((format!("trained.{}.delta", task.task), floats(&task.delta)));
        if let Some(model) = &task.model {
            views.push((format!("trained.{}.model", task.task), floats(model)));
        }
        trained.push(TrainedHeader {
            task: task.task,
            worker: task.worker,
            first_loss: task.first_loss.to_bits(),
            last_loss: task.last_loss.to_bits(),
            samples: task.samples,
            has_model: task.model.is_some(),
        });
    }
    for (name, array) in &snapshot.server.arrays {
        views.push((format!("server.{name}"), view(array)));
    }
    let header = Header {
        format: CHECKPOINT_FORMAT,
        provenance: provenance.clone(),
        segments,
        position: snapshot.position,
        plan_read: snapshot.plan_read,
        version: snapshot.version,
        virtual_time: snapshot.virtual_time.to_bits(),
        last_accuracy: snapshot.last_accuracy.map(f64::to_bits),
        best_accuracy: snapshot.best_accuracy.map(f64::to_bits),
        early_stop_due: snapshot.early_stop_due,
        jobs_recorded_before: snapshot.jobs_recorded_before.to_bits(),
        tasks_trained: snapshot.tasks_trained,
        updates_applied: snapshot.updates_applied,
        cohorts_trained: snapshot.cohorts_trained,
        versions: snapshot.versions.iter().map(|(v, _)| *v).collect(),
        trained,
        server_values: snapshot.server.values.clone(),
    };
    let path = run_dir.join(CHECKPOINT);
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| RecordError::WriteCheckpoint {
        path: path.clone(),
        source,
    };
    let metadata =
        HashMap::from([("fedsim".to_owned(), serde_json::to_string(&header).map_err(|e| failed(e.into()))?)]);
    let staging = path.with_extension("partial");
    let written = safetensors::tensor::serialize_to_file(
        views.iter().map(|(n, b)| (n.as_str(), b)),
        &Some(metadata),
        &staging,
    )
    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { format!("{e:?}").into() })
    .and_then(|()| Ok(std::fs::File::open(&staging)?.sync_all()?))
    .and_then(|()| Ok(std::fs::rename(&staging, &path)?));
    if let Err(error) = written {
        // Nothing half-written stays; the previous checkpoint is untouched.
        let _ = std::fs::remove_file(&staging);
        return Err(failed(error));
    }
    // The rename itself reaches the disk with the folder.
    if let Ok(folder) = std::fs::File::open(run_dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// Where a run directory's checkpoint is.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join(CHECKPOINT)
}

/// Reads a checkpoint; every fault names the file and what is wrong.
pub fn read(file: &Path) -> Result<Checkpoint, RecordError> {
    let mut buffer = Vec::new();
    std::fs::File::open(file)
        .and_then(|mut f| f.read_to_end(&mut buffer))
        .map_err(|source| RecordError::ReadCheckpoint { path: file.to_owned(), source })?;
    parse(&buffer).map_err(|problem| RecordError::NotACheckpoint { path: file.to_owned(), problem })
}

/// A checkpoint from its bytes.
pub fn parse(buffer: &[u8]) -> Result<Checkpoint, FormatError> {
    let (_, metadata) = SafeTensors::read_metadata(buffer)
        .map_err(|e| format_error(format!("not a safetensors file ({e:?})")))?;
    let text = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get("fedsim"))
        .ok_or_else(|| format_error("a safetensors file without fedsim's checkpoint header"))?;
    let format: serde_json::Value = serde_json::from_str(text).map_err(|e| format_error(e.to_string()))?;
    let found = format.get("format").and_then(|f| f.as_u64());
    if found != Some(CHECKPOINT_FORMAT as u64) {
        return Err(format_error(format!(
            "checkpoint format {found:?}; this fedsim reads format {CHECKPOINT_FORMAT}"
        )));
    }
    let header: Header = serde_json::from_str(text).map_err(|e| format_error(e.to_string()))?;
    let tensors = SafeTensors::deserialize(buffer)
        .map_err(|e| format_error(format!("a damaged safetensors file ({e:?})")))?;
    let mut arrays: HashMap<String, Array> = HashMap::new();
    for (name, tensor) in tensors.tensors() {
        let shape = tensor.shape().to_vec();
        let data = tensor.data();
        let array = match tensor.dtype() {
            Dtype::F32 => Array::F32 {
                shape,
                data: data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            },
            Dtype::F64 => Array::F64 {
                shape,
                data: data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            },
            Dtype::U8 => Array::U8 { shape, data: data.to_vec() },
            other => {
                return Err(format_error(format!(
                    "the array {name:?} is of type {other:?}, which fedsim never writes"
                )))
            }
        };
        arrays.insert(name, array);
    }
    let mut take = |name: String| -> Result<Vec<f32>, FormatError> {
        match arrays.remove(&name) {
            Some(Array::F32 { data, .. }) => Ok(data),
            Some(_) => Err(format_error(format!("the array {name:?} is not of 32-bit floats"))),
            None => Err(format_error(format!("the array {name:?} is missing"))),
        }
    };
    let mut versions = Vec::with_capacity(header.versions.len());
    for version in &header.versions {
        versions.push((*version, take(format!("version.{version}"))?));
    }
    let mut trained = Vec::with_capacity(header.trained.len());
    for task in &header.trained {
        trained.push(TrainedTask {
            task: task.task,
            worker: task.worker,
            first_loss: f32::from_bits(task.first_loss),
            last_loss: f32::from_bits(task.last_loss),
            samples: task.samples,
            delta: take(format!("trained.{}.delta", task.task))?,
            model: if task.has_model { Some(take(format!("trained.{}.model", task.task))?) } else { None },
        });
    }
    let mut server = SavedState { values: header.server_values, ..SavedState::default() };
    for (name, array) in arrays {
        match name.strip_prefix("server.") {
            Some(inner) => {
                server.arrays.insert(inner.to_owned(), array);
            }
            None => return Err(format_error(format!("an array {name:?} that no part of a run writes"))),
        }
    }
    Ok(Checkpoint {
        provenance: header.provenance,
        segments: header.segments,
        snapshot: RunSnapshot {
            position: header.position,
            plan_read: header.plan_read,
            version: header.version,
            virtual_time: f64::from_bits(header.virtual_time),
            versions,
            trained,
            last_accuracy: header.last_accuracy.map(f64::from_bits),
            best_accuracy: header.best_accuracy.map(f64::from_bits),
            early_stop_due: header.early_stop_due,
            jobs_recorded_before: f64::from_bits(header.jobs_recorded_before),
            tasks_trained: header.tasks_trained,
            updates_applied: header.updates_applied,
            cohorts_trained: header.cohorts_trained,
            server,
        },
    })
}

/// Why `found` cannot continue a run made as `expected`, if it cannot.
pub fn mismatch(expected: &Provenance, found: &Provenance) -> Option<String> {
    let differs = |what: &str, a: &str, b: &str| {
        (a != b).then(|| format!("{what}: the checkpoint's is {b}, this run's {a}"))
    };
    differs("fedsim version", &expected.fedsim_version, &found.fedsim_version)
        .or_else(|| differs("git commit", &expected.git_commit, &found.git_commit))
        .or_else(|| {
            differs(
                "config (hash of the settings that decide results)",
                &expected.config_sha256,
                &found.config_sha256,
            )
        })
        .or_else(|| differs("device", &expected.device, &found.device))
        .or_else(|| differs("CPU kernels", &expected.cpu_capability, &found.cpu_capability))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provenance() -> Provenance {
        Provenance {
            fedsim_version: "0.1.0".into(),
            git_commit: "abc".into(),
            config_sha256: "f00".into(),
            device: "cpu".into(),
            cpu_capability: "AVX2".into(),
        }
    }

    fn snapshot() -> RunSnapshot {
        let mut server = SavedState::default();
        server.put_array("teacher.0.weights", Array::vector(vec![0.5, -0.25]));
        server.put_array("distiller.pool.images", Array::U8 { shape: vec![2, 1], data: vec![7, 255] });
        server.put_array("distiller.stabilizer.0", Array::F64 { shape: vec![1], data: vec![0.1 + 0.2] });
        server.put_value("teachers", 1).unwrap();
        RunSnapshot {
            position: 42,
            plan_read: true,
            version: 9,
            virtual_time: 1.0 / 3.0,
            versions: vec![(9, vec![1.0, 2.0]), (7, vec![f32::MIN_POSITIVE, -0.0])],
            trained: vec![TrainedTask {
                task: 31,
                worker: 1,
                first_loss: 2.3,
                last_loss: f32::NAN,
                samples: 64,
                delta: vec![0.125, 3.0],
                model: Some(vec![1.0, 1.5]),
            }],
            last_accuracy: Some(0.1 + 0.7),
            best_accuracy: None,
            early_stop_due: true,
            jobs_recorded_before: 0.5,
            tasks_trained: 40,
            updates_applied: 18,
            cohorts_trained: 40,
            server,
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fedsim-checkpoint-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_snapshot_comes_back_bit_for_bit() {
        let dir = scratch("roundtrip");
        write(&dir, &provenance(), 3, &snapshot()).unwrap();
        let back = read(&path(&dir)).unwrap();
        assert_eq!((back.provenance, back.segments), (provenance(), 3));
        let (mut expected, mut got) = (snapshot(), back.snapshot);
        // NaN != NaN: compare the loss by its bits, then the rest as values.
        assert_eq!(got.trained[0].last_loss.to_bits(), expected.trained[0].last_loss.to_bits());
        (got.trained[0].last_loss, expected.trained[0].last_loss) = (0.0, 0.0);
        assert_eq!(got, expected);
        assert!(!dir.join("checkpoint.partial").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_or_foreign_files_are_errors_naming_the_file() {
        let dir = scratch("damaged");
        write(&dir, &provenance(), 0, &snapshot()).unwrap();
        let file = path(&dir);
        let bytes = std::fs::read(&file).unwrap();
        for (what, content) in [
            ("empty", Vec::new()),
            ("truncated", bytes[..bytes.len() / 2].to_vec()),
            ("text", b"not a checkpoint at all".to_vec()),
        ] {
            std::fs::write(&file, &content).unwrap();
            let error = format!("{:#}", read(&file).err().unwrap_or_else(|| panic!("{what} was read")));
            assert!(error.contains("checkpoint.safetensors"), "{what}: {error}");
        }
        // A safetensors file of someone else's.
        std::fs::write(&file, safetensors::tensor::serialize(Vec::<(&str, &Bytes)>::new(), &None).unwrap())
            .unwrap();
        assert!(format!("{:#}", read(&file).err().unwrap()).contains("without fedsim's checkpoint header"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_mismatch_names_what_differs() {
        let mut other = provenance();
        assert_eq!(mismatch(&provenance(), &other), None);
        other.cpu_capability = "AVX512".into();
        assert!(mismatch(&provenance(), &other).unwrap().contains("CPU kernels: the checkpoint's is AVX512"));
    }
}
