//! The messages between rank 0 and the training ranks. Control messages are small JSON
//! documents (tag [`CONTROL`]); weights never go through JSON: each float buffer a control
//! message announces follows it as a raw f32 message (tag [`FLOATS`]) from the same sender.
//!
//! The order of a conversation keeps blocking sends from meeting head on: rank 0 sends bases
//! and cohorts, which a training rank's loop receives at once; a training rank sends only small
//! control messages of its own accord, and the deltas of a finished cohort only when rank 0
//! asks for them ([`ToRank::Pull`]) and is waiting to receive them.

use serde::{Deserialize, Serialize};

use crate::nn::train::TrainOutcome;

/// Control messages (JSON bytes).
pub const CONTROL: mpi::Tag = 1;
/// Float buffers announced by the control message before them.
pub const FLOATS: mpi::Tag = 2;

/// From rank 0 to a training rank.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum ToRank {
    /// Model version `version` follows as one float buffer; keep it until told to forget it.
    Base { version: u64 },
    /// Versions no planned task needs any more.
    Forget { versions: Vec<u64> },
    /// Train these jobs as one cohort: (task, client, base version), in order.
    Cohort { cohort: u64, jobs: Vec<(u64, u32, u64)> },
    /// Send the float buffers of a finished cohort, in the order its [`ToCoordinator::Trained`] gave.
    Pull { cohort: u64 },
    /// The run is over: answer [`ToCoordinator::Stopped`] and leave.
    Stop,
}

/// What a training rank says of one trained job; its delta (and model, where `model`) follow
/// as float buffers when rank 0 pulls them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeHead {
    /// Loss bits, so that the floats arrive exactly.
    pub first_loss: u32,
    pub last_loss: u32,
    pub samples: u64,
    pub wall_nanos: u64,
    pub model: bool,
}

impl OutcomeHead {
    pub fn of<W>(outcome: &TrainOutcome<W>) -> Self {
        OutcomeHead {
            first_loss: outcome.first_loss.to_bits(),
            last_loss: outcome.last_loss.to_bits(),
            samples: outcome.samples as u64,
            wall_nanos: outcome.wall.as_nanos().min(u64::MAX as u128) as u64,
            model: outcome.model.is_some(),
        }
    }

    /// The outcome again, given its delta and model.
    pub fn outcome<W>(&self, delta: W, model: Option<W>) -> TrainOutcome<W> {
        TrainOutcome {
            delta,
            model,
            first_loss: f32::from_bits(self.first_loss),
            last_loss: f32::from_bits(self.last_loss),
            samples: self.samples as usize,
            wall: std::time::Duration::from_nanos(self.wall_nanos),
        }
    }
}

/// From a training rank to rank 0.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum ToCoordinator {
    /// Sent once, when the rank has built its trainer.
    Ready { host: String, workers: usize },
    /// A cohort finished; its buffers wait for [`ToRank::Pull`].
    Trained { cohort: u64, worker: u32, outcomes: Vec<OutcomeHead> },
    /// A cohort failed (an error or a caught panic while training it).
    Failed { cohort: u64, error: String },
    /// Sent every second, so that rank 0 notices a rank that stopped answering.
    Alive,
    /// The answer to [`ToRank::Stop`]: nothing more follows from this rank.
    Stopped,
}

/// JSON bytes of a control message.
pub fn encode<M: Serialize>(message: &M) -> Vec<u8> {
    serde_json::to_vec(message).expect("control messages are plain data")
}

/// A control message from JSON bytes; `from` names the sender in the error.
pub fn decode<M: for<'de> Deserialize<'de>>(bytes: &[u8], from: &str) -> Result<M, super::ClusterError> {
    serde_json::from_slice(bytes)
        .map_err(|e| super::ClusterError::Unreadable { from: from.to_owned(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_survive_the_wire_exactly() {
        let outcome = TrainOutcome {
            delta: vec![1.0f32],
            model: None,
            first_loss: f32::from_bits(0x4012_3457),
            last_loss: f32::NAN,
            samples: 350,
            wall: std::time::Duration::from_nanos(123_456_789),
        };
        let message =
            ToCoordinator::Trained { cohort: 7, worker: 3, outcomes: vec![OutcomeHead::of(&outcome)] };
        let back: ToCoordinator = decode(&encode(&message), "rank 1").unwrap();
        assert_eq!(back, message);
        let ToCoordinator::Trained { outcomes, .. } = back else { unreachable!() };
        let again = outcomes[0].outcome(vec![1.0f32], None);
        assert_eq!(again.first_loss.to_bits(), 0x4012_3457);
        assert!(again.last_loss.is_nan());
        assert_eq!((again.samples, again.wall), (350, outcome.wall));
        let cohort = ToRank::Cohort { cohort: u64::MAX, jobs: vec![(1, 2, 3), (u64::MAX, u32::MAX, 0)] };
        assert_eq!(decode::<ToRank>(&encode(&cohort), "rank 0").unwrap(), cohort);
    }

    #[test]
    fn an_unreadable_message_names_its_sender() {
        let error = decode::<ToRank>(b"{\"Launch\":{}}", "rank 0").unwrap_err().to_string();
        assert!(error.contains("rank 0 sent a message"), "{error}");
        assert!(error.contains("same fedsim build"), "{error}");
    }
}
