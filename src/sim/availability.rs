//! When clients are online. A client alternates online and offline spans drawn from its own
//! stream: the on/off model draws exponential spans with the given means, starting online with
//! the stationary probability mean_on / (mean_on + mean_off); the daily model repeats a cycle of
//! `period` whose first `online_fraction` is online, each client at its own uniformly drawn
//! phase (time zones, charging hours); a trace file lists each client's online windows (CSV
//! `client,start,end` in virtual time; offline outside them); or a client is always online.
//! Spans are drawn lazily as
//! virtual time advances, so any number of clients costs only the spans a run reaches. Queries
//! must come at non-decreasing times per client (the scheduler's clock).

use std::sync::Arc;

use rand::Rng as _;
use rand_distr::{Distribution, Exp};
use serde::{Deserialize, Serialize};

use super::rng::{self, Purpose, Rng};
use super::time::{SimDuration, SimTime};

/// A config's availability model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AvailabilityModel {
    #[default]
    Always,
    /// Exponential online and offline spans with these means (virtual time units).
    OnOff { mean_on: f64, mean_off: f64 },
    /// Online for the first `online_fraction` of every `period` (virtual time units), at a
    /// phase drawn per client.
    Daily { period: f64, online_fraction: f64 },
    /// Online windows from a CSV file (`client,start,end`), read and checked with the config.
    Trace {
        file: String,
        #[serde(skip)]
        windows: Arc<TraceWindows>,
    },
}

/// Each client's online windows, sorted, apart and merged where they touch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceWindows {
    pub clients: Vec<Vec<(SimTime, SimTime)>>,
}

/// A trace's columns of online windows.
pub const TRACE_COLUMNS: [&str; 3] = ["client", "start", "end"];

/// The online windows of a trace's rows ([`TRACE_COLUMNS`]) for `num_clients` clients; errors
/// name the row and the column (the caller names the file).
pub fn trace_windows(trace: Vec<super::trace::Row>, num_clients: usize) -> Result<TraceWindows, String> {
    let mut rows: Vec<Vec<(SimTime, SimTime, usize)>> = vec![Vec::new(); num_clients];
    for (row, values) in trace {
        let client = super::trace::client(row, values[0], num_clients)?;
        let time = |column: &str, t: f64| {
            Some(t).filter(|t| t.is_finite() && *t >= 0.0).ok_or_else(|| {
                format!("row {row}, column {column}: '{t}' is not a finite, non-negative virtual time")
            })
        };
        let (start, end) = (time("start", values[1])?, time("end", values[2])?);
        if end <= start {
            return Err(format!("row {row}, column end: {end} is not after start {start}"));
        }
        rows[client].push((SimTime::from_units(start), SimTime::from_units(end), row));
    }
    if rows.iter().all(Vec::is_empty) {
        return Err("no online window: every client would be offline for ever".to_owned());
    }
    let mut clients = Vec::with_capacity(num_clients);
    for (client, mut windows) in rows.into_iter().enumerate() {
        windows.sort_by_key(|&(start, _, _)| start);
        let mut merged: Vec<(SimTime, SimTime)> = Vec::with_capacity(windows.len());
        let mut last_row = 0;
        for (start, end, row) in windows {
            match merged.last_mut() {
                Some(last) if start < last.1 => {
                    return Err(format!(
                        "rows {last_row} and {row}: client {client}'s online windows overlap"
                    ))
                }
                Some(last) if start == last.1 => last.1 = end,
                _ => merged.push((start, end)),
            }
            last_row = row;
        }
        clients.push(merged);
    }
    Ok(TraceWindows { clients })
}

impl AvailabilityModel {
    /// The long-run share of time a client is online.
    pub fn online_share(&self) -> f64 {
        match *self {
            AvailabilityModel::Always => 1.0,
            AvailabilityModel::OnOff { mean_on, mean_off } => mean_on / (mean_on + mean_off),
            AvailabilityModel::Daily { online_fraction, .. } => online_fraction,
            // A trace's share depends on the horizon (see measured_online_share).
            AvailabilityModel::Trace { .. } => f64::NAN,
        }
    }
}

/// How a client's span lengths come.
enum Lengths {
    Random {
        on: Exp<f64>,
        off: Exp<f64>,
    },
    Fixed {
        on: f64,
        off: f64,
    },
    /// The ends of the spans after the first, from a trace; offline for ever after the last.
    Listed {
        ends: Vec<SimTime>,
        next: usize,
    },
}

/// One client's spans: the current one and what makes the next.
struct Spans {
    rng: Rng,
    online: bool,
    /// The current span is [.., end).
    end: SimTime,
    lengths: Lengths,
}

impl Spans {
    /// A client's spans under `model` (not `Always`), drawn from `rng`.
    fn new(model: &AvailabilityModel, client: usize, mut rng: Rng) -> Self {
        if let AvailabilityModel::Trace { windows, .. } = model {
            let mut ends: Vec<SimTime> =
                windows.clients[client].iter().flat_map(|&(start, end)| [start, end]).collect();
            // A first window from time zero starts the client online.
            let online = ends.first() == Some(&SimTime::ZERO);
            if online {
                ends.remove(0);
            }
            let end = ends.first().copied().unwrap_or(FOREVER);
            return Spans { rng, online, end, lengths: Lengths::Listed { ends, next: 1 } };
        }
        let (online, first, lengths) = match *model {
            AvailabilityModel::OnOff { mean_on, mean_off } => {
                let on = Exp::new(1.0 / mean_on).expect("validated: mean_on > 0");
                let off = Exp::new(1.0 / mean_off).expect("validated: mean_off > 0");
                let online = rng.random_bool(mean_on / (mean_on + mean_off));
                let first = if online { on.sample(&mut rng) } else { off.sample(&mut rng) };
                (online, first, Lengths::Random { on, off })
            }
            AvailabilityModel::Daily { period, online_fraction } => {
                let (on, off) = (period * online_fraction, period * (1.0 - online_fraction));
                // Where in its cycle the client is at time zero.
                let phase = rng.random_range(0.0..period);
                let (online, first) = if phase < on { (true, on - phase) } else { (false, period - phase) };
                (online, first, Lengths::Fixed { on, off })
            }
            AvailabilityModel::Always | AvailabilityModel::Trace { .. } => {
                unreachable!("always-online clients have no spans; traces are listed above")
            }
        };
        Spans { rng, online, end: SimTime::ZERO + span(first), lengths }
    }

    /// Moves to the span that holds `t`.
    fn advance(&mut self, t: SimTime) {
        while self.end <= t {
            self.online = !self.online;
            if let Lengths::Listed { ends, next } = &mut self.lengths {
                self.end = ends.get(*next).copied().unwrap_or(FOREVER);
                *next += 1;
                continue;
            }
            let length = match &self.lengths {
                Lengths::Random { on, off } => {
                    if self.online {
                        on.sample(&mut self.rng)
                    } else {
                        off.sample(&mut self.rng)
                    }
                }
                Lengths::Fixed { on, off } => {
                    if self.online {
                        *on
                    } else {
                        *off
                    }
                }
                Lengths::Listed { .. } => unreachable!("handled above"),
            };
            self.end = self.end + span(length);
        }
    }
}

/// The end of a span that never ends.
pub const FOREVER: SimTime = SimTime(u64::MAX);

/// A span's length in ticks: at least one, so that time always moves on.
fn span(units: f64) -> SimDuration {
    SimDuration::from_units(units).max(SimDuration(1))
}

/// Every client's availability.
pub struct Availability {
    /// None: always online.
    clients: Option<Vec<Spans>>,
}

impl Availability {
    /// Whether every client is always online.
    pub fn always(&self) -> bool {
        self.clients.is_none()
    }

    pub fn new(model: &AvailabilityModel, num_clients: usize, seed: u64) -> Self {
        let clients = (*model != AvailabilityModel::Always).then(|| {
            (0..num_clients)
                .map(|c| Spans::new(model, c, rng::stream(seed, Purpose::Availability, c as u64)))
                .collect()
        });
        Availability { clients }
    }

    pub fn online(&mut self, client: u32, now: SimTime) -> bool {
        self.clients.as_mut().is_none_or(|spans| {
            let s = &mut spans[client as usize];
            s.advance(now);
            s.online
        })
    }

    /// When an online client next goes offline (never: `None`).
    pub fn offline_at(&mut self, client: u32, now: SimTime) -> Option<SimTime> {
        let s = &mut self.clients.as_mut()?[client as usize];
        s.advance(now);
        debug_assert!(s.online, "asked of an online client");
        Some(s.end)
    }

    /// When a client is next online: `now` if it is.
    pub fn next_online(&mut self, client: u32, now: SimTime) -> SimTime {
        let Some(spans) = self.clients.as_mut() else { return now };
        let s = &mut spans[client as usize];
        s.advance(now);
        if s.online {
            now
        } else {
            s.end
        }
    }
}

/// The share of [0, until) that clients spent online, over all clients (a fresh draw of the
/// same spans).
pub fn measured_online_share(
    model: &AvailabilityModel,
    num_clients: usize,
    seed: u64,
    until: SimTime,
) -> f64 {
    if *model == AvailabilityModel::Always {
        return 1.0;
    }
    if until == SimTime::ZERO || num_clients == 0 {
        return model.online_share();
    }
    let mut online_ticks = 0u128;
    for c in 0..num_clients as u64 {
        let mut s = Spans::new(model, c as usize, rng::stream(seed, Purpose::Availability, c));
        let mut start = SimTime::ZERO;
        while start < until {
            let end = s.end.min(until);
            if s.online {
                online_ticks += (end - start).0 as u128;
            }
            start = end;
            s.advance(end);
        }
    }
    online_ticks as f64 / (until.0 as f64 * num_clients as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_is_always_online() {
        let mut a = Availability::new(&AvailabilityModel::Always, 3, 1);
        assert!(a.online(2, SimTime::from_units(5.0)));
        assert_eq!(a.offline_at(2, SimTime::from_units(5.0)), None);
        assert_eq!(a.next_online(1, SimTime::from_units(7.0)), SimTime::from_units(7.0));
    }

    #[test]
    fn a_daily_cycle_is_online_its_fraction_of_every_period_at_a_phase_per_client() {
        let model = AvailabilityModel::Daily { period: 24.0, online_fraction: 0.25 };
        let share = measured_online_share(&model, 40, 3, SimTime::from_units(24.0 * 50.0));
        assert!((share - 0.25).abs() < 1e-3, "{share}");
        let mut a = Availability::new(&model, 2, 3);
        let hour = |h: f64| SimTime::from_units(h);
        // Each client is online 6 of every 24 hours: exactly one online window per day.
        for client in 0..2 {
            let online: Vec<bool> =
                (0..24 * 4).map(|q| a.online(client, hour(q as f64 * 0.25 + 0.01))).collect();
            let windows = (0..online.len())
                .filter(|&i| online[i] && !online[(i + online.len() - 1) % online.len()])
                .count();
            assert_eq!(windows, 1, "client {client}");
            assert_eq!(online.iter().filter(|&&o| o).count(), 24, "client {client}: 6 hours of 96 quarters");
        }
    }

    #[test]
    fn on_off_spans_are_seeded_alternate_and_give_the_stationary_share() {
        let model = AvailabilityModel::OnOff { mean_on: 3.0, mean_off: 1.0 };
        let until = SimTime::from_units(2000.0);
        let share = measured_online_share(&model, 50, 7, until);
        assert!((share - 0.75).abs() < 0.03, "{share}");
        assert_eq!(share, measured_online_share(&model, 50, 7, until));
        assert_ne!(share, measured_online_share(&model, 50, 8, until));
        // Queries agree with each other: offline_at ends the span, next_online starts the next.
        let mut a = Availability::new(&model, 1, 7);
        let mut t = SimTime::ZERO;
        for _ in 0..100 {
            if a.online(0, t) {
                let off = a.offline_at(0, t).unwrap();
                assert!(off > t && !a.online(0, off));
                t = off;
            } else {
                let on = a.next_online(0, t);
                assert!(on > t && a.online(0, on));
                t = on;
            }
        }
    }
}
