//! The algorithms fedsim runs, one row each: how updates reach the server (synchronous rounds
//! or a buffer), whether the server down-weights stale updates, which distillation runs on the
//! server, the defaults the algorithm changes, and how the reference simulator's JSON names
//! it. Validation, the simulation's wiring and the JSON import all read this table, so a new
//! algorithm is a row here (and its kind) plus its rule's own file.

use serde::Serialize;

use crate::fl::BetaSchedule;

/// An algorithm's name in configs, run.json and reports; its row is [`AlgorithmKind::row`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmKind {
    SyncFl,
    AsyncFl,
    AflDw,
    FedRevive,
    DdFedRevive,
}

/// How updates reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Rounds of algorithm.active_jobs clients, aggregated together (FedAvg).
    Rounds,
    /// A buffer of algorithm.buffer_size updates, slots refilled as clients return (FedBuff).
    Buffered,
}

/// What the server distils into the model after an aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distillation {
    None,
    /// FedRevive: images a generator synthesises ([kd] and [dfkd] tables).
    DataFree,
    /// DD-FedRevive: the real KD split ([simple_kd] table).
    RealData,
}

/// algorithm.buffer_size when the config leaves it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferDefault {
    /// A whole round: algorithm.active_jobs.
    ActiveJobs,
    Updates(usize),
}

/// The defaults an algorithm changes; every other key has one default for all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defaults {
    pub buffer_size: BufferDefault,
    pub server_lr: f64,
    pub beta: BetaSchedule,
    /// Versions between evaluations.
    pub eval_interval: u64,
}

/// How the reference's JSON selects an algorithm (FEDREVIVE.md section 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReferenceName {
    /// Its `algorithm` key.
    pub algorithm: &'static str,
    /// Its `kd_augmentation` key.
    pub kd_augmentation: Option<&'static str>,
    /// Its `async_downweighting` key, where it decides (None: not read).
    pub async_downweighting: Option<bool>,
}

/// One algorithm: everything that differs between algorithms, in one place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Algorithm {
    pub kind: AlgorithmKind,
    /// algorithm.kind as written in a config.
    pub name: &'static str,
    /// Other accepted spellings.
    pub aliases: &'static [&'static str],
    pub arrival: Arrival,
    /// The server weighs each update by algorithm.beta at its staleness (AFL-DW).
    pub down_weight: bool,
    pub distillation: Distillation,
    pub defaults: Defaults,
    pub reference: ReferenceName,
}

const COSINE_75: BetaSchedule = BetaSchedule::Cosine { factor: 75.0 };

/// Every algorithm, in the order error messages list them.
pub const ALGORITHMS: [Algorithm; 5] = [
    Algorithm {
        kind: AlgorithmKind::SyncFl,
        name: "sync_fl",
        aliases: &["fedavg"],
        arrival: Arrival::Rounds,
        down_weight: false,
        distillation: Distillation::None,
        defaults: Defaults {
            buffer_size: BufferDefault::ActiveJobs,
            server_lr: 1.4,
            beta: COSINE_75,
            eval_interval: 1,
        },
        reference: ReferenceName { algorithm: "sync_fl", kd_augmentation: None, async_downweighting: None },
    },
    Algorithm {
        kind: AlgorithmKind::AsyncFl,
        name: "async_fl",
        aliases: &["fedbuff"],
        arrival: Arrival::Buffered,
        down_weight: false,
        distillation: Distillation::None,
        defaults: Defaults {
            buffer_size: BufferDefault::Updates(2),
            server_lr: 0.05,
            beta: COSINE_75,
            eval_interval: 10,
        },
        reference: ReferenceName {
            algorithm: "async_fl",
            kd_augmentation: None,
            async_downweighting: Some(false),
        },
    },
    Algorithm {
        kind: AlgorithmKind::AflDw,
        name: "afl_dw",
        aliases: &[],
        arrival: Arrival::Buffered,
        down_weight: true,
        distillation: Distillation::None,
        defaults: Defaults {
            buffer_size: BufferDefault::Updates(1),
            server_lr: 0.1,
            beta: COSINE_75,
            eval_interval: 10,
        },
        reference: ReferenceName {
            algorithm: "async_fl",
            kd_augmentation: None,
            async_downweighting: Some(true),
        },
    },
    Algorithm {
        kind: AlgorithmKind::FedRevive,
        name: "fedrevive",
        aliases: &[],
        arrival: Arrival::Buffered,
        down_weight: false,
        distillation: Distillation::DataFree,
        defaults: Defaults {
            buffer_size: BufferDefault::Updates(1),
            server_lr: 0.1,
            beta: COSINE_75,
            eval_interval: 10,
        },
        reference: ReferenceName {
            algorithm: "async_fl",
            kd_augmentation: Some("dfkd"),
            async_downweighting: None,
        },
    },
    Algorithm {
        kind: AlgorithmKind::DdFedRevive,
        name: "dd_fedrevive",
        aliases: &[],
        arrival: Arrival::Buffered,
        down_weight: false,
        distillation: Distillation::RealData,
        defaults: Defaults {
            buffer_size: BufferDefault::Updates(1),
            server_lr: 0.2,
            beta: BetaSchedule::Constant { beta: 0.5 },
            eval_interval: 10,
        },
        reference: ReferenceName {
            algorithm: "async_fl",
            kd_augmentation: Some("simple_kd"),
            async_downweighting: None,
        },
    },
];

impl AlgorithmKind {
    /// This algorithm's row of [`ALGORITHMS`].
    pub fn row(self) -> &'static Algorithm {
        // Every kind has a row: tests::every_kind_has_one_row.
        ALGORITHMS.iter().find(|a| a.kind == self).unwrap_or(&ALGORITHMS[0])
    }

    pub fn name(self) -> &'static str {
        self.row().name
    }

    pub fn is_sync(self) -> bool {
        self.row().arrival == Arrival::Rounds
    }

    /// The algorithm a config's algorithm.kind names (its name or an alias).
    pub fn by_name(written: &str) -> Option<AlgorithmKind> {
        ALGORITHMS.iter().find(|a| a.name == written || a.aliases.contains(&written)).map(|a| a.kind)
    }

    /// The names a config may write, for error messages.
    pub fn names() -> String {
        ALGORITHMS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
    }

    /// The algorithm the reference's JSON keys select, if fedsim has it.
    pub fn by_reference(
        algorithm: &str,
        kd_augmentation: Option<&str>,
        async_downweighting: bool,
    ) -> Option<AlgorithmKind> {
        ALGORITHMS
            .iter()
            .find(|a| {
                let r = a.reference;
                r.algorithm == algorithm
                    && r.kd_augmentation == kd_augmentation
                    && r.async_downweighting.is_none_or(|dw| dw == async_downweighting)
            })
            .map(|a| a.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_row_and_every_name_one_kind() {
        use AlgorithmKind::*;
        for kind in [SyncFl, AsyncFl, AflDw, FedRevive, DdFedRevive] {
            assert_eq!(ALGORITHMS.iter().filter(|a| a.kind == kind).count(), 1, "{kind:?}");
            assert_eq!(kind.row().kind, kind);
        }
        let mut written: Vec<&str> =
            ALGORITHMS.iter().flat_map(|a| a.aliases.iter().copied().chain([a.name])).collect();
        let all = written.len();
        written.sort();
        written.dedup();
        assert_eq!(written.len(), all, "a name or alias is used twice");
        for a in &ALGORITHMS {
            assert_eq!(AlgorithmKind::by_name(a.name), Some(a.kind));
        }
    }

    #[test]
    fn the_reference_keys_select_one_algorithm_each() {
        use AlgorithmKind::*;
        let cases = [
            ("sync_fl", None, false, Some(SyncFl)),
            ("sync_fl", None, true, Some(SyncFl)),
            ("sync_fl", Some("dfkd"), false, None),
            ("async_fl", None, false, Some(AsyncFl)),
            ("async_fl", None, true, Some(AflDw)),
            ("async_fl", Some("dfkd"), true, Some(FedRevive)),
            ("async_fl", Some("simple_kd"), false, Some(DdFedRevive)),
            ("fedavg", None, false, None),
        ];
        for (algorithm, kd, dw, expected) in cases {
            assert_eq!(AlgorithmKind::by_reference(algorithm, kd, dw), expected, "{algorithm} {kd:?} {dw}");
        }
    }

    #[test]
    fn only_rounds_wait_for_the_whole_cohort() {
        for a in &ALGORITHMS {
            assert_eq!(
                a.defaults.buffer_size == BufferDefault::ActiveJobs,
                a.arrival == Arrival::Rounds,
                "{}",
                a.name
            );
        }
    }
}
