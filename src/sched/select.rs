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
/// a client that is still downloading or uploading).
pub struct UniformIdle {
    idle: Vec<u32>,
    rng: Rng,
}

impl UniformIdle {
    /// Clients 0..num_clients, all idle, drawing from `rng`.
    pub fn new(num_clients: usize, rng: Rng) -> Self {
        UniformIdle { idle: (0..num_clients as u32).collect(), rng }
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
        self.idle.push(client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rng::{stream, Purpose};

    #[test]
    fn picks_each_client_once_until_released() {
        let mut selector = UniformIdle::new(5, stream(1, Purpose::ClientSelection, 0));
        let mut picked: Vec<u32> = (0..5).map(|_| selector.pick().unwrap()).collect();
        assert_eq!(selector.pick(), None);
        picked.sort_unstable();
        assert_eq!(picked, [0, 1, 2, 3, 4]);
        selector.release(3);
        assert_eq!(selector.pick(), Some(3));
    }
}
