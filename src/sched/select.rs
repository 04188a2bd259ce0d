//! Whom to dispatch. A selector holds the clients that may be picked (not in flight) and picks
//! one when the engine dispatches; the engine gives a client back when its job arrives.

use rand::Rng as _;

use crate::sim::rng::Rng;

pub trait Selector: Send {
    /// Takes a client out of the pool for a new job; None when none can be picked.
    fn pick(&mut self) -> Option<u32>;
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
    fn pick(&mut self) -> Option<u32> {
        if self.idle.is_empty() {
            return None;
        }
        let index = self.rng.random_range(0..self.idle.len());
        Some(self.idle.swap_remove(index))
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
    use crate::sim::rng::{stream, Purpose};

    #[test]
    fn picks_each_client_once_until_released() {
        let mut selector = UniformIdle::new(5, true, stream(1, Purpose::ClientSelection, 0));
        let mut picked: Vec<u32> = (0..5).map(|_| selector.pick().unwrap()).collect();
        assert_eq!(selector.pick(), None);
        picked.sort_unstable();
        assert_eq!(picked, [0, 1, 2, 3, 4]);
        selector.release(3);
        assert_eq!(selector.pick(), Some(3));
    }

    #[test]
    fn without_reuse_every_client_takes_part_once() {
        let mut selector = UniformIdle::new(3, false, stream(1, Purpose::ClientSelection, 0));
        let first = selector.pick().unwrap();
        selector.release(first);
        let rest = [selector.pick().unwrap(), selector.pick().unwrap()];
        assert!(!rest.contains(&first));
        assert_eq!(selector.pick(), None);
    }
}
