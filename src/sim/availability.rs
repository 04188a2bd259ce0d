//! When clients are online. A client alternates online and offline spans drawn from its own
//! stream (seeded on/off model: exponential spans with the given means, starting online with
//! the stationary probability mean_on / (mean_on + mean_off)); or it is always online. Spans are
//! drawn lazily as virtual time advances, so any number of clients costs only the spans a run
//! reaches. Queries must come at non-decreasing times per client (the scheduler's clock).

use rand::Rng as _;
use rand_distr::{Distribution, Exp};
use serde::{Deserialize, Serialize};

use super::rng::{self, Purpose, Rng};
use super::time::{SimDuration, SimTime};

/// A config's availability model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AvailabilityModel {
    #[default]
    Always,
    /// Exponential online and offline spans with these means (virtual time units).
    OnOff { mean_on: f64, mean_off: f64 },
}

impl AvailabilityModel {
    /// The long-run share of time a client is online.
    pub fn online_share(&self) -> f64 {
        match *self {
            AvailabilityModel::Always => 1.0,
            AvailabilityModel::OnOff { mean_on, mean_off } => mean_on / (mean_on + mean_off),
        }
    }
}

/// One client's spans: the current one and the stream that draws the next.
struct Spans {
    rng: Rng,
    online: bool,
    /// The current span is [.., end).
    end: SimTime,
    on: Exp<f64>,
    off: Exp<f64>,
}

impl Spans {
    fn new(mut rng: Rng, mean_on: f64, mean_off: f64) -> Self {
        let on = Exp::new(1.0 / mean_on).expect("validated: mean_on > 0");
        let off = Exp::new(1.0 / mean_off).expect("validated: mean_off > 0");
        let online = rng.random_bool(mean_on / (mean_on + mean_off));
        let first = if online { on.sample(&mut rng) } else { off.sample(&mut rng) };
        // At least one tick a span, so time always moves on.
        let end = SimTime::ZERO + SimDuration::from_units(first).max(SimDuration(1));
        Spans { rng, online, end, on, off }
    }

    /// Moves to the span that holds `t`.
    fn advance(&mut self, t: SimTime) {
        while self.end <= t {
            self.online = !self.online;
            let length =
                if self.online { self.on.sample(&mut self.rng) } else { self.off.sample(&mut self.rng) };
            self.end = self.end + SimDuration::from_units(length).max(SimDuration(1));
        }
    }
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

    pub fn new(model: AvailabilityModel, num_clients: usize, seed: u64) -> Self {
        let clients = match model {
            AvailabilityModel::Always => None,
            AvailabilityModel::OnOff { mean_on, mean_off } => Some(
                (0..num_clients as u64)
                    .map(|c| Spans::new(rng::stream(seed, Purpose::Availability, c), mean_on, mean_off))
                    .collect(),
            ),
        };
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
pub fn measured_online_share(model: AvailabilityModel, num_clients: usize, seed: u64, until: SimTime) -> f64 {
    let AvailabilityModel::OnOff { mean_on, mean_off } = model else { return 1.0 };
    if until == SimTime::ZERO || num_clients == 0 {
        return model.online_share();
    }
    let mut online_ticks = 0u128;
    for c in 0..num_clients as u64 {
        let mut s = Spans::new(rng::stream(seed, Purpose::Availability, c), mean_on, mean_off);
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
        let mut a = Availability::new(AvailabilityModel::Always, 3, 1);
        assert!(a.online(2, SimTime::from_units(5.0)));
        assert_eq!(a.offline_at(2, SimTime::from_units(5.0)), None);
        assert_eq!(a.next_online(1, SimTime::from_units(7.0)), SimTime::from_units(7.0));
    }

    #[test]
    fn on_off_spans_are_seeded_alternate_and_give_the_stationary_share() {
        let model = AvailabilityModel::OnOff { mean_on: 3.0, mean_off: 1.0 };
        let until = SimTime::from_units(2000.0);
        let share = measured_online_share(model, 50, 7, until);
        assert!((share - 0.75).abs() < 0.03, "{share}");
        assert_eq!(share, measured_online_share(model, 50, 7, until));
        assert_ne!(share, measured_online_share(model, 50, 8, until));
        // Queries agree with each other: offline_at ends the span, next_online starts the next.
        let mut a = Availability::new(model, 1, 7);
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
