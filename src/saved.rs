//! What a checkpoint holds, as plain data: the executor's [`RunSnapshot`] (its position in the
//! plan, the model versions and trained-but-unapplied updates it holds, its stop-rule state)
//! and the server's [`SavedState`] (FedRevive's teachers, generator, pool and stabilisers) as
//! named arrays and values. The executor and the server fill these in; `record::checkpoint`
//! writes and reads them; nothing here touches a file or a tensor.

use std::collections::BTreeMap;

/// Saved state that does not fit what restores it: a checkpoint of another config, version or
/// model, or a damaged one. Each names the part of the state at fault.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the checkpoint lacks the {kind} {name:?}")]
    Missing { kind: &'static str, name: String },
    #[error("the checkpoint's {name:?} is not of {expected}")]
    WrongType { name: String, expected: &'static str },
    #[error("the checkpoint's {name:?} has {found} values where {expected} are expected")]
    WrongLength { name: String, found: usize, expected: usize },
    #[error("the checkpoint's value {name:?}: {message}")]
    Value { name: String, message: String },
    /// The parts read, but they do not fit together or with the config.
    #[error("{0}")]
    Mismatch(String),
}

/// Fails with [`StateError::Mismatch`] unless `condition` holds.
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), StateError> {
    if condition {
        Ok(())
    } else {
        Err(StateError::Mismatch(message()))
    }
}

/// A host array of one element type, with its shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    F32 {
        shape: Vec<usize>,
        data: Vec<f32>,
    },
    /// Floats that must come back bit for bit (JSON's would not, through serde_json's parser).
    F64 {
        shape: Vec<usize>,
        data: Vec<f64>,
    },
    U8 {
        shape: Vec<usize>,
        data: Vec<u8>,
    },
}

impl Array {
    pub fn shape(&self) -> &[usize] {
        match self {
            Array::F32 { shape, .. } | Array::F64 { shape, .. } | Array::U8 { shape, .. } => shape,
        }
    }

    /// A flat f32 vector (shape [n]).
    pub fn vector(data: Vec<f32>) -> Array {
        Array::F32 { shape: vec![data.len()], data }
    }
}

/// Named arrays and plain values: the state of a component that decides the future.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SavedState {
    pub arrays: BTreeMap<String, Array>,
    pub values: serde_json::Map<String, serde_json::Value>,
}

impl SavedState {
    pub fn put_array(&mut self, name: impl Into<String>, array: Array) {
        self.arrays.insert(name.into(), array);
    }

    /// Stores a plain value (counts, flags, small records) by name.
    pub fn put_value(
        &mut self,
        name: impl Into<String>,
        value: impl serde::Serialize,
    ) -> Result<(), StateError> {
        let name = name.into();
        let value = serde_json::to_value(value)
            .map_err(|e| StateError::Value { name: name.clone(), message: e.to_string() })?;
        self.values.insert(name, value);
        Ok(())
    }

    /// Removes and returns an array; a missing one is an error naming it.
    pub fn take_array(&mut self, name: &str) -> Result<Array, StateError> {
        self.arrays.remove(name).ok_or_else(|| StateError::Missing { kind: "array", name: name.to_owned() })
    }

    /// Removes and returns an f32 array's data, checking its length.
    pub fn take_f32(&mut self, name: &str, len: usize) -> Result<Vec<f32>, StateError> {
        match self.take_array(name)? {
            Array::F32 { data, .. } if data.len() == len => Ok(data),
            Array::F32 { data, .. } => {
                Err(StateError::WrongLength { name: name.to_owned(), found: data.len(), expected: len })
            }
            _ => Err(StateError::WrongType { name: name.to_owned(), expected: "32-bit floats" }),
        }
    }

    /// Removes and returns an f64 array's data.
    pub fn take_f64(&mut self, name: &str) -> Result<Vec<f64>, StateError> {
        match self.take_array(name)? {
            Array::F64 { data, .. } => Ok(data),
            _ => Err(StateError::WrongType { name: name.to_owned(), expected: "64-bit floats" }),
        }
    }

    /// A value, read as `T`; a missing or mistyped one is an error naming it.
    pub fn value<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, StateError> {
        let value = self
            .values
            .get(name)
            .ok_or_else(|| StateError::Missing { kind: "value", name: name.to_owned() })?;
        serde_json::from_value(value.clone())
            .map_err(|e| StateError::Value { name: name.to_owned(), message: e.to_string() })
    }

    /// Moves every array and value of `other` in under `prefix.`.
    pub fn nest(&mut self, prefix: &str, other: SavedState) {
        for (name, array) in other.arrays {
            self.arrays.insert(format!("{prefix}.{name}"), array);
        }
        for (name, value) in other.values {
            self.values.insert(format!("{prefix}.{name}"), value);
        }
    }

    /// Takes out everything under `prefix.`, without the prefix.
    pub fn unnest(&mut self, prefix: &str) -> SavedState {
        let start = format!("{prefix}.");
        let mut inner = SavedState::default();
        let names: Vec<String> = self.arrays.keys().filter(|n| n.starts_with(&start)).cloned().collect();
        for name in names {
            let array = self.arrays.remove(&name).expect("listed above");
            inner.arrays.insert(name[start.len()..].to_owned(), array);
        }
        let names: Vec<String> = self.values.keys().filter(|n| n.starts_with(&start)).cloned().collect();
        for name in names {
            let value = self.values.remove(&name).expect("listed above");
            inner.values.insert(name[start.len()..].to_owned(), value);
        }
        inner
    }
}

/// A trained task whose update the server has not applied yet.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainedTask {
    pub task: u64,
    pub worker: u32,
    pub first_loss: f32,
    pub last_loss: f32,
    pub samples: usize,
    pub delta: Vec<f32>,
    pub model: Option<Vec<f32>>,
}

/// The executor at a point between two steps of the plan: everything besides the plan itself
/// (which is rebuilt from the config and replayed up to `position`) and the server.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSnapshot {
    /// Plan steps carried out (read and, for aggregations and evaluations, applied).
    pub position: u64,
    /// The whole plan had been read: the run was in its tail, where the cohorts no remaining
    /// aggregation takes from are dropped, so a resume reads the rest of the plan at once.
    pub plan_read: bool,
    /// The current model version and when it was made.
    pub version: u64,
    pub virtual_time: f64,
    /// Every model version the executor holds (the current one and the bases of tasks that
    /// still have to train), on the host.
    pub versions: Vec<(u64, Vec<f32>)>,
    /// Tasks trained but not applied yet.
    pub trained: Vec<TrainedTask>,
    pub last_accuracy: Option<f64>,
    pub best_accuracy: Option<f64>,
    pub early_stop_due: bool,
    /// Jobs settled before this virtual time are already in the jobs table.
    pub jobs_recorded_before: f64,
    pub tasks_trained: u64,
    pub updates_applied: u64,
    pub cohorts_trained: u64,
    /// The server's state (FedRevive's teachers and distiller).
    pub server: SavedState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_round_trips_and_missing_names_are_errors() {
        let mut inner = SavedState::default();
        inner.put_array("w", Array::vector(vec![1.0, 2.0]));
        inner.put_value("calls", 7u64).unwrap();
        let mut outer = SavedState::default();
        outer.nest("distiller", inner.clone());
        assert!(outer.arrays.contains_key("distiller.w"));
        assert_eq!(outer.unnest("distiller"), inner);
        assert!(outer.arrays.is_empty() && outer.values.is_empty());
        assert!(inner.take_f32("w", 3).unwrap_err().to_string().contains("2 values where 3"));
        assert!(inner.take_f32("w", 2).unwrap_err().to_string().contains("lacks the array \"w\""));
        assert_eq!(inner.value::<u64>("calls").unwrap(), 7);
        assert!(inner.value::<String>("calls").is_err());
    }
}
