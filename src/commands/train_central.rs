//! `fedsim train-central`: one model trained centrally on the training images, the
//! federated runs' upper bound ([`crate::nn::central`] does the training).

use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::load_dataset;
use crate::data::{DataDirs, DatasetKind};
use crate::nn::central::{self, CentralOptions};
use crate::runtime::{self, DeviceChoice};

pub fn train_central(
    dirs: &DataDirs,
    kind: DatasetKind,
    options: &CentralOptions,
    device: DeviceChoice,
) -> Result<()> {
    anyhow::ensure!(options.epochs > 0, "--epochs must be at least 1");
    anyhow::ensure!(options.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(
        options.lr.is_finite() && options.lr > 0.0,
        "--lr must be a positive number, got {}",
        options.lr
    );
    let device = device.resolve()?;
    let dataset = load_dataset(dirs, kind, device)?;
    println!(
        "central training: {} on {kind}, {} epochs, {} on {}",
        options.model,
        options.epochs,
        options.optimizer_label(),
        runtime::describe(device)
    );
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {elapsed_precise} eta {eta}  {msg}")
            .context("progress bar template")?,
    );
    let started = Instant::now();
    let reports = central::train(
        options,
        &dataset,
        device,
        |step, total| {
            bar.set_length(total as u64);
            bar.set_position(step as u64);
        },
        |report| {
            bar.set_message(format!("epoch {} test accuracy {:.4}", report.epoch, report.test.accuracy));
            // suspend, not println: println is dropped when stderr is not a terminal.
            bar.suspend(|| {
                println!(
                    "epoch {:>3}  train loss {:.4}  test loss {:.4}  test accuracy {:.4}  ({:.1} s)",
                    report.epoch,
                    report.mean_loss,
                    report.test.loss,
                    report.test.accuracy,
                    report.wall.as_secs_f64()
                )
            });
        },
    )?;
    bar.finish_and_clear();
    if let Some(last) = reports.last() {
        println!(
            "final test accuracy {:.4} after {} epochs ({:.1} s); per class: {}",
            last.test.accuracy,
            last.epoch,
            started.elapsed().as_secs_f64(),
            last.test.per_class_accuracy.iter().map(|a| format!("{a:.2}")).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}

impl CentralOptions {
    fn optimizer_label(&self) -> String {
        format!("{:?} lr {} batch {}", self.optimizer, self.lr, self.batch_size).to_lowercase()
    }
}
