//! Whom to dispatch. A selector holds the clients that may be picked (not in flight) and picks
//! one of those online when the engine dispatches; the engine gives a client back when its
//! job ends.

use rand::Rng as _;

use crate::sim::availability::{Availability, FOREVER};
use crate::sim::rng::Rng;
use crate::sim::time::SimTime;

/// A selector's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Client(u32),
    /// No free client is online now; one will be at this time.
    WaitUntil(SimTime),
    /// No client can ever be picked again (each took part once, without reuse).
    Exhausted,
}

pub trait Selector: Send {
    /// Takes a client out of the pool for a new job.
    fn pick(&mut self, now: SimTime, availability: &mut Availability) -> Pick;
    /// A client whose job ended may be picked again.
    fn release(&mut self, client: u32);
}

/// Uniformly among the clients not in flight (one job per client; the reference may also pick
/// a client that is still downloading or uploading). Without reuse (the NVFlare port's
/// `device_reuse = false`) a client takes part once and is never picked again.
pub struct UniformIdle {
    idle: Vec<u32>,
    reuse: bool,
    rng: Rng,
}

impl UniformIdle {
    /// Clients 0..num_clients, all idle, drawing from `rng`.
    pub fn new(num_clients: usize, reuse: bool, rng: Rng) -> Self {
        UniformIdle { idle: (0..num_clients as u32).collect(), reuse, rng }
    }
}

impl Selector for UniformIdle {
    fn pick(&mut self, now: SimTime, availability: &mut Availability) -> Pick {
        if self.idle.is_empty() {
            return Pick::Exhausted;
        }
        if availability.always() {
            let index = self.rng.random_range(0..self.idle.len());
            return Pick::Client(self.idle.swap_remove(index));
        }
        let online: Vec<usize> =
            (0..self.idle.len()).filter(|&i| availability.online(self.idle[i], now)).collect();
        if online.is_empty() {
            let next =
                self.idle.iter().map(|&c| availability.next_online(c, now)).min().expect("idle is not empty");
            // A trace's clients may never come online again.
            return if next == FOREVER { Pick::Exhausted } else { Pick::WaitUntil(next) };
        }
        let index = online[self.rng.random_range(0..online.len())];
        Pick::Client(self.idle.swap_remove(index))
    }

    fn release(&mut self, client: u32) {
        if self.reuse {
            self.idle.push(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::availability::AvailabilityModel;
    use crate::sim::rng::{stream, Purpose};

    fn always() -> Availability {
        Availability::new(&AvailabilityModel::Always, 5, 0)
    }

    fn client(pick: Pick) -> u32 {
        let Pick::Client(c) = pick else { panic!("no client: {pick:?}") };
        c
    }

    #[test]
    fn picks_each_client_once_until_released() {
        let (mut selector, mut a) =
            (UniformIdle::new(5, true, stream(1, Purpose::ClientSelection, 0)), always());
        let mut picked: Vec<u32> = (0..5).map(|_| client(selector.pick(SimTime::ZERO, &mut a))).collect();
        assert_eq!(selector.pick(SimTime::ZERO, &mut a), Pick::Exhausted);
        picked.sort_unstable();
        assert_eq!(picked, [0, 1, 2, 3, 4]);
        selector.release(3);
        assert_eq!(selector.pick(SimTime::ZERO, &mut a), Pick::Client(3));
    }

    #[test]
    fn without_reuse_every_client_takes_part_once() {
        let (mut selector, mut a) =
            (UniformIdle::new(3, false, stream(1, Purpose::ClientSelection, 0)), always());
        let first = client(selector.pick(SimTime::ZERO, &mut a));
        selector.release(first);
        let rest =
            [client(selector.pick(SimTime::ZERO, &mut a)), client(selector.pick(SimTime::ZERO, &mut a))];
        assert!(!rest.contains(&first));
        assert_eq!(selector.pick(SimTime::ZERO, &mut a), Pick::Exhausted);
    }

    #[test]
    fn only_online_clients_are_picked_and_otherwise_the_next_to_come_online_is_named() {
        let model = AvailabilityModel::OnOff { mean_on: 1.0, mean_off: 1.0 };
        let mut selector = UniformIdle::new(20, true, stream(1, Purpose::ClientSelection, 0));
        let (mut a, mut check) = (Availability::new(&model, 20, 4), Availability::new(&model, 20, 4));
        let now = SimTime::from_units(3.0);
        loop {
            match selector.pick(now, &mut a) {
                Pick::Client(c) => assert!(check.online(c, now), "client {c} is offline"),
                Pick::WaitUntil(t) => {
                    assert!(t > now);
                    assert!(selector.idle.iter().all(|&c| !check.online(c, now)));
                    assert!(selector.idle.iter().any(|&c| check.next_online(c, now) == t));
                    break;
                }
                Pick::Exhausted => panic!("about half of 20 clients are offline"),
            }
        }
    }
}
