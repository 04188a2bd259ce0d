//! Evaluation on a labelled set: accuracy, mean cross-entropy and per-class accuracy, in
//! batches (300, as the reference), without gradients.

use tch::{Device, Kind, Reduction, Tensor};

use super::Model;
use crate::data::augment::Normalize;
use crate::data::ImageSet;

#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    pub accuracy: f64,
    pub loss: f64,
    pub per_class_accuracy: Vec<f64>,
}

pub const EVAL_BATCH: i64 = 300;

pub fn evaluate(model: &Model, data: &ImageSet, normalize: &Normalize, num_classes: usize) -> EvalResult {
    let n = data.len() as i64;
    let device = data.images.device();
    let mut loss_sum = 0.0;
    let mut correct = Tensor::zeros([num_classes as i64], (Kind::Int64, device));
    let mut totals = Tensor::zeros([num_classes as i64], (Kind::Int64, device));
    tch::no_grad(|| {
        let mut start = 0;
        while start < n {
            let len = EVAL_BATCH.min(n - start);
            let inputs = normalize.apply(&data.images.narrow(0, start, len));
            let labels = data.labels.narrow(0, start, len);
            let logits = model.forward_t(&inputs, false);
            loss_sum += logits
                .cross_entropy_loss(&labels, None::<Tensor>, Reduction::Sum, -100, 0.0)
                .double_value(&[]);
            // One-hot sums rather than scatter_add: deterministic on GPU too.
            let one_hot = labels.one_hot(num_classes as i64);
            let hits = logits.argmax(-1, false).eq_tensor(&labels).to_kind(Kind::Int64).unsqueeze(1);
            correct = &correct + (&one_hot * hits).sum_dim_intlist(0, false, Kind::Int64);
            totals = &totals + one_hot.sum_dim_intlist(0, false, Kind::Int64);
            start += len;
            if start >= n / 2 && start - len < n / 2 {
                crate::faults::reached("eval");
            }
        }
    });
    let correct = Vec::<i64>::try_from(correct.to_device(Device::Cpu)).unwrap_or_default();
    let totals = Vec::<i64>::try_from(totals.to_device(Device::Cpu)).unwrap_or_default();
    let all_correct: i64 = correct.iter().sum();
    EvalResult {
        accuracy: all_correct as f64 / n.max(1) as f64,
        loss: loss_sum / n.max(1) as f64,
        per_class_accuracy: correct.iter().zip(&totals).map(|(&c, &t)| c as f64 / t.max(1) as f64).collect(),
    }
}
