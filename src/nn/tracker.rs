//! Feature-statistic trackers: the reference's "StatTracker". In place of a BatchNorm, a
//! tracker passes its input through unchanged and, in training mode, records a running mean
//! and biased variance per channel with momentum 0.1 (the reference's `unbiased=False`; BatchNorm
//! would record the unbiased one). The server resets every tracker (mean 0, variance 1) in the
//! global model after each aggregation ([`reset_values`]), so a client's recorded statistics
//! start from that reset. FedRevive's
//! generator later matches synthetic images to these statistics: while a model's [`Probe`]
//! is armed, every tracker also reports its input's batch statistics (with gradients).

use std::sync::{Arc, Mutex};

use tch::{nn, Tensor};

pub const MOMENTUM: f64 = 0.1;

/// One tracker's view of one batch: its batch statistics (differentiable) beside its
/// recorded running statistics.
pub struct BatchStats {
    pub mean: Tensor,
    pub var: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
}

impl BatchStats {
    /// Model `k`'s statistics, where a stacked model holds one row per model (`[G, C]`).
    pub fn row(&self, k: i64) -> BatchStats {
        BatchStats {
            mean: self.mean.get(k),
            var: self.var.get(k),
            running_mean: self.running_mean.get(k),
            running_var: self.running_var.get(k),
        }
    }
}

/// Shared by all trackers of a model; armed, it collects [`BatchStats`] in forward order.
#[derive(Clone, Default)]
pub struct Probe(Arc<Mutex<Option<Vec<BatchStats>>>>);

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl Probe {
    pub fn arm(&self) {
        *self.0.lock().expect("probe lock") = Some(Vec::new());
    }

    /// The statistics collected since [`Probe::arm`]; disarms.
    pub fn take(&self) -> Vec<BatchStats> {
        self.0.lock().expect("probe lock").take().unwrap_or_default()
    }

    fn record(&self, stats: impl FnOnce() -> BatchStats) {
        if let Some(collected) = self.0.lock().expect("probe lock").as_mut() {
            collected.push(stats());
        }
    }
}

#[derive(Debug)]
pub struct StatTracker {
    pub running_mean: Tensor,
    pub running_var: Tensor,
    probe: Probe,
}

impl StatTracker {
    /// A tracker for `channels` features; its buffers are not trained by the optimizer.
    pub fn new(p: nn::Path, channels: i64, probe: &Probe) -> Self {
        StatTracker {
            running_mean: p.zeros_no_train("running_mean", &[channels]),
            running_var: p.ones_no_train("running_var", &[channels]),
            probe: probe.clone(),
        }
    }

    /// Identity; in training mode also folds this batch's statistics into the running ones.
    pub fn track(&self, xs: &Tensor, train: bool) -> Tensor {
        let activations = xs;
        // Statistics in float32 whatever the activations' precision (a no-op in fp32).
        let xs = &xs.to_kind(tch::Kind::Float);
        self.probe.record(|| {
            let dims: Vec<i64> = (0..xs.dim() as i64).filter(|&d| d != 1).collect();
            BatchStats {
                mean: xs.mean_dim(dims.as_slice(), false, None),
                var: xs.var_correction(dims.as_slice(), 0, false),
                running_mean: self.running_mean.shallow_clone(),
                running_var: self.running_var.shallow_clone(),
            }
        });
        if train {
            // Reduce over every dimension but the channel one: [N, C] or [N, C, H, W].
            let dims: Vec<i64> = (0..xs.dim() as i64).filter(|&d| d != 1).collect();
            tch::no_grad(|| {
                let mean = xs.mean_dim(dims.as_slice(), false, None);
                let var = xs.var_correction(dims.as_slice(), 0, false);
                let mut running_mean = self.running_mean.shallow_clone();
                let mut running_var = self.running_var.shallow_clone();
                running_mean.copy_(&(&running_mean * (1.0 - MOMENTUM) + mean * MOMENTUM));
                running_var.copy_(&(&running_var * (1.0 - MOMENTUM) + var * MOMENTUM));
            });
        }
        activations.shallow_clone()
    }
}

/// The value a tracker buffer of this name is reset to, or None if the variable is no tracker
/// buffer: running means to 0, running variances to 1.
pub fn reset_values(name: &str) -> Option<f32> {
    match name.rsplit('.').next() {
        Some("running_mean") => Some(0.0),
        Some("running_var") => Some(1.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn records_running_statistics_with_momentum_one_tenth_and_passes_input_through() {
        let vs = nn::VarStore::new(Device::Cpu);
        let tracker = StatTracker::new(vs.root() / "t", 2, &Probe::default());
        // Channel 0 holds 1, 3 (mean 2, var 2); channel 1 holds 10, 10 (mean 10, var 0).
        let xs = Tensor::from_slice(&[1.0f32, 10.0, 3.0, 10.0]).view([2, 2]);
        let out = tracker.track(&xs, true);
        assert!(out.equal(&xs));
        let mean = Vec::<f32>::try_from(&tracker.running_mean).unwrap();
        let var = Vec::<f32>::try_from(&tracker.running_var).unwrap();
        assert_eq!(mean, [0.2, 1.0]);
        // The biased batch variance of channel 0 is 1 (the unbiased one would be 2).
        assert!((var[0] - (0.9 + 0.1)).abs() < 1e-6 && (var[1] - 0.9).abs() < 1e-6, "{var:?}");
        // Evaluation leaves them alone; the buffers are not trainable.
        let _ = tracker.track(&(xs * 5.0), false);
        assert_eq!(Vec::<f32>::try_from(&tracker.running_mean).unwrap(), [0.2, 1.0]);
        assert!(vs.trainable_variables().is_empty());
        assert_eq!(tracker.running_var.kind(), Kind::Float);
    }

    #[test]
    fn an_armed_probe_collects_differentiable_batch_statistics() {
        let vs = nn::VarStore::new(Device::Cpu);
        let probe = Probe::default();
        let tracker = StatTracker::new(vs.root(), 2, &probe);
        let xs = Tensor::from_slice(&[1.0f32, 10.0, 3.0, 10.0]).view([2, 2]).set_requires_grad(true);
        let _ = tracker.track(&xs, false);
        assert!(probe.take().is_empty(), "unarmed: nothing recorded");
        probe.arm();
        let _ = tracker.track(&xs, false);
        let stats = probe.take();
        assert_eq!(stats.len(), 1);
        assert_eq!(Vec::<f32>::try_from(&stats[0].mean).unwrap(), [2.0, 10.0]);
        assert_eq!(Vec::<f32>::try_from(&stats[0].var).unwrap(), [1.0, 0.0], "biased batch variance");
        assert!(stats[0].mean.requires_grad());
    }

    #[test]
    fn reduces_over_batch_and_space_for_feature_maps() {
        let vs = nn::VarStore::new(Device::Cpu);
        let tracker = StatTracker::new(vs.root(), 3, &Probe::default());
        let xs = Tensor::ones([4, 3, 5, 5], (Kind::Float, Device::Cpu)) * 2.0;
        let _ = tracker.track(&xs, true);
        assert_eq!(Vec::<f32>::try_from(&tracker.running_mean).unwrap(), [0.2, 0.2, 0.2]);
    }
}
