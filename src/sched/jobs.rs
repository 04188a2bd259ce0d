//! Every dispatched job's story, for the jobs table and the timeline figure: where it ran, its
//! download, training and upload spans in virtual time, when its update reached the server and
//! what became of it.

use super::TrainTask;
use crate::sim::time::{SimDuration, SimTime};

/// What became of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Its update made this version.
    Applied { version: u64 },
    /// Staler than the policy's maximum when it reached the server.
    DroppedStale,
    /// Still out when an over-committed round took its K updates.
    Cancelled,
    /// Based on a version the server no longer kept.
    Refused,
    /// Slower than algorithm.update_timeout.
    TimedOut,
    /// Its client went offline before the upload ended.
    WentOffline,
    /// Still out at its sync round's deadline (late_updates = "drop").
    MissedDeadline,
    /// Not settled when the plan (or the run) ended: in flight, at a leaf, buffered, or planned
    /// beyond the stop.
    Open,
}

impl Fate {
    /// The fates as the jobs table spells them, in the order reports list them.
    pub const NAMES: [&'static str; 8] = [
        "applied",
        "dropped_stale",
        "cancelled",
        "refused",
        "timed_out",
        "went_offline",
        "missed_deadline",
        "open",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fate::Applied { .. } => "applied",
            Fate::DroppedStale => "dropped_stale",
            Fate::Cancelled => "cancelled",
            Fate::Refused => "refused",
            Fate::TimedOut => "timed_out",
            Fate::WentOffline => "went_offline",
            Fate::MissedDeadline => "missed_deadline",
            Fate::Open => "open",
        }
    }

    /// Whether the job's Train step stays in the plan (it trains if the run gets that far).
    pub fn trains(self) -> bool {
        matches!(self, Fate::Applied { .. } | Fate::Open)
    }
}

/// One job, as the scheduler saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub task: u64,
    pub client: u32,
    pub leaf: Option<u32>,
    pub base_version: u64,
    pub dispatched_at: SimTime,
    pub download: SimDuration,
    pub train: SimDuration,
    pub upload: SimDuration,
    /// When its update reached the server (after the leaf and the hop, in a hierarchy).
    pub at_server: Option<SimTime>,
    pub fate: Fate,
    /// When the fate became known.
    pub settled_at: Option<SimTime>,
}

impl JobRecord {
    pub fn dispatched(task: &TrainTask, download: SimDuration, upload: SimDuration) -> Self {
        JobRecord {
            task: task.task,
            client: task.client,
            leaf: task.leaf,
            base_version: task.base_version,
            dispatched_at: task.dispatched_at,
            download,
            train: task.train_time,
            upload,
            at_server: None,
            fate: Fate::Open,
            settled_at: None,
        }
    }

    /// When the client's part ended (its upload done), had the job run to the end.
    pub fn upload_ends_at(&self) -> SimTime {
        self.dispatched_at + self.download + self.train + self.upload
    }
}
