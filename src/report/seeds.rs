//! Results over seeds: runs whose configs differ only in their seeds (`seed`, `setup_seed`,
//! `run_seed`) and worker counts are one experiment repeated. Its accuracy at each virtual time
//! is reported as the mean, minimum and maximum over the seeds, drawn as a band around the
//! mean; its time to each target accuracy as the mean and range over the seeds that reached
//! it, with how many did.

use std::collections::BTreeSet;

use super::logs::RunLogs;
use super::metrics::RunStats;

/// Config keys that tell repetitions of one experiment apart.
pub const SEED_KEYS: [&str; 3] = ["seed", "setup_seed", "run_seed"];

/// Mean, minimum and maximum of some values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Spread { mean, min, max })
    }
}

/// How many seeds reached a target, and when (virtual time) those that did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reach {
    pub reached: usize,
    pub of: usize,
    pub virtual_time: Option<Spread>,
}

/// One experiment over several seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedGroup {
    /// The experiment's name (the runs' config name).
    pub name: String,
    /// One run per seed (the fewest workers where a seed ran more than once), by seed.
    pub members: Vec<usize>,
    /// Each member's (setup seed, run seed).
    pub seeds: Vec<(u64, u64)>,
    /// At each report time: the spread of the members' accuracies (None where one lacks one).
    pub accuracy_at: Vec<Option<Spread>>,
    /// For each target accuracy.
    pub time_to: Vec<Reach>,
}

impl SeedGroup {
    /// "10, 11, 12" (or "setup 10 / run 11, ..." where the two seeds differ).
    pub fn seed_list(&self) -> String {
        let list: Vec<String> = self
            .seeds
            .iter()
            .map(
                |&(setup, run)| {
                    if setup == run {
                        setup.to_string()
                    } else {
                        format!("setup {setup} / run {run}")
                    }
                },
            )
            .collect();
        list.join(", ")
    }
}

/// Whether run `i` belongs to one of `groups` (and is drawn in its band, not on its own).
pub fn in_any(groups: &[SeedGroup], i: usize) -> bool {
    groups.iter().any(|g| g.members.contains(&i))
}

fn seeds_of(run: &RunLogs) -> (u64, u64) {
    let key = |name: &str| run.config.get(name).and_then(toml::Value::as_integer).map(|v| v as u64);
    (key("setup_seed").unwrap_or(run.info.seed), key("run_seed").unwrap_or(run.info.seed))
}

fn config_without_seeds(run: &RunLogs) -> toml::Table {
    let mut config = run.config_without_workers();
    for key in SEED_KEYS {
        config.remove(key);
    }
    config
}

/// The experiments the report's runs repeat over at least two seeds, in order of first run.
/// Two experiments of one name are told apart by the config values in which they differ
/// (e.g. "fedbuff (cohort size 8)") and, where they ran on different commits (the same config
/// before and after a change of fedsim), by the commit.
pub fn seed_groups(runs: &[RunLogs], stats: &[RunStats], targets: usize) -> Vec<SeedGroup> {
    let mut groups = unnamed_seed_groups(runs, stats, targets);
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let configs: Vec<Vec<(String, String)>> =
        groups.iter().map(|g| flat_config(&config_without_seeds(&runs[g.members[0]]), "")).collect();
    let commits: Vec<String> =
        groups.iter().map(|g| runs[g.members[0]].info.git_commit.chars().take(7).collect()).collect();
    for (i, group) in groups.iter_mut().enumerate() {
        let namesakes: Vec<usize> = (0..names.len()).filter(|&j| names[j] == names[i]).collect();
        if namesakes.len() < 2 {
            continue;
        }
        let differing: Vec<String> = configs[i]
            .iter()
            .filter(|(key, value)| {
                namesakes
                    .iter()
                    .any(|&j| configs[j].iter().find(|(k, _)| k == key).map(|(_, v)| v) != Some(value))
            })
            .map(|(key, value)| {
                format!("{} {value}", key.rsplit('.').next().unwrap_or(key).replace('_', " "))
            })
            .collect();
        if !differing.is_empty() {
            group.name = format!("{} ({})", group.name, differing.join(", "));
        }
        if namesakes.iter().any(|&j| commits[j] != commits[i]) {
            group.name = format!("{} @{}", group.name, commits[i]);
        }
    }
    groups
}

/// A config's leaves as ("a.b", value) pairs, in key order; tables a label can name in a few
/// words (leaves, availability models) stay whole.
fn flat_config(table: &toml::Table, prefix: &str) -> Vec<(String, String)> {
    table
        .iter()
        .flat_map(|(key, value)| {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match value {
                toml::Value::Table(_) if super::metrics::short_value(value) != super::metrics::CHANGED => {
                    vec![(path, super::metrics::short_value(value))]
                }
                toml::Value::Table(inner) => flat_config(inner, &path),
                leaf => vec![(path, leaf.to_string().trim_matches('"').to_owned())],
            }
        })
        .collect()
}

fn unnamed_seed_groups(runs: &[RunLogs], stats: &[RunStats], targets: usize) -> Vec<SeedGroup> {
    let keys: Vec<toml::Table> = runs.iter().map(config_without_seeds).collect();
    super::metrics::group_equal(&keys)
        .into_iter()
        .filter_map(|mut candidates| {
            candidates.sort_by_key(|&i| (seeds_of(&runs[i]), runs[i].info.workers));
            let mut seen = BTreeSet::new();
            let members: Vec<usize> =
                candidates.into_iter().filter(|&i| seen.insert(seeds_of(&runs[i]))).collect();
            (members.len() >= 2).then(|| {
                let times = stats[members[0]].accuracy_at.len();
                let accuracy_at = (0..times)
                    .map(|t| {
                        let values: Option<Vec<f64>> =
                            members.iter().map(|&i| stats[i].accuracy_at[t].map(|(a, _)| a)).collect();
                        values.and_then(|v| Spread::of(&v))
                    })
                    .collect();
                let time_to = (0..targets)
                    .map(|t| {
                        let reached: Vec<f64> = members
                            .iter()
                            .filter_map(|&i| stats[i].time_to[t].as_ref().map(|r| r.virtual_time))
                            .collect();
                        Reach {
                            reached: reached.len(),
                            of: members.len(),
                            virtual_time: Spread::of(&reached),
                        }
                    })
                    .collect();
                SeedGroup {
                    name: runs[members[0]].info.name.clone(),
                    seeds: members.iter().map(|&i| seeds_of(&runs[i])).collect(),
                    members,
                    accuracy_at,
                    time_to,
                }
            })
        })
        .collect()
}

/// The band of a group's accuracy curves: at each of `steps` points of x from 0 to the
/// shortest member's end, each member's latest accuracy at or before that x (`x` picks the
/// axis: the evaluations' virtual times or versions; `run_end` where a run ended on that axis,
/// its last accuracy holding until then); returns (x, mean, min, max).
pub fn band(
    runs: &[RunLogs],
    group: &SeedGroup,
    x: &dyn Fn(&RunLogs) -> Vec<f64>,
    run_end: &dyn Fn(&RunLogs) -> f64,
    steps: usize,
) -> Vec<[f64; 4]> {
    let curves: Vec<Vec<(f64, f64)>> = group
        .members
        .iter()
        .map(|&i| x(&runs[i]).into_iter().zip(runs[i].eval_column("accuracy")).collect())
        .collect();
    let end = group
        .members
        .iter()
        .zip(&curves)
        .map(|(&i, c)| run_end(&runs[i]).max(c.last().map_or(0.0, |p| p.0)))
        .fold(f64::INFINITY, f64::min);
    if !end.is_finite() || curves.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    (0..=steps)
        .filter_map(|k| {
            let at = end * k as f64 / steps.max(1) as f64;
            let values: Option<Vec<f64>> = curves
                .iter()
                .map(|c| c.iter().take_while(|p| p.0 <= at + 1e-9).last().map(|p| p.1))
                .collect();
            let spread = Spread::of(&values?)?;
            Some([at, spread.mean, spread.min, spread.max])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_are_mean_min_and_max() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[0.2, 0.4, 0.3]).map(|s| (s.min, s.max)), Some((0.2, 0.4)));
        assert!((Spread::of(&[0.2, 0.4, 0.3]).unwrap().mean - 0.3).abs() < 1e-12);
    }
}
