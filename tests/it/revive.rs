//! FedRevive (data-free) and DD-FedRevive (real KD split): distillation revives stale updates,
//! deterministically.

use std::sync::Arc;

use fedsim::config::Config;
use fedsim::data::{split, DatasetKind};
use fedsim::exec::VecSink;
use fedsim::fl::revive::{Distiller, Teacher};
use fedsim::nn::kd::{KdSettings, RealDataDistiller};
use fedsim::nn::{initial_weights, InputSpec, ModelKind};
use fedsim::params::weights_hash;
use fedsim::simulation::Simulation;
use tch::Device;

use crate::dirs;

fn run(text: &str, workers: usize) -> (String, VecSink) {
    let config = Config::from_toml(text, "test", "test", &[format!("run.workers={workers}")]).unwrap();
    let mut sink = VecSink::default();
    let outcome = Simulation::build(&config, &dirs(), Device::Cpu).unwrap().run(&mut sink).unwrap();
    (weights_hash(&outcome.final_weights), sink)
}

/// Each evaluation's version and exact accuracy.
fn accuracies(sink: &VecSink) -> Vec<(u64, u64)> {
    sink.evals.iter().map(|e| (e.version, e.accuracy.to_bits())).collect()
}

fn world(algorithm: &str, extra: &str) -> String {
    format!(
        "seed = 5\n[data]\nnum_clients = 30\nclient_data_size = 64\n\
         [train]\nlocal_iters = 4\nbatch_size = 16\nlr = 1e-3\n\
         [algorithm]\nkind = \"{algorithm}\"\nactive_jobs = 6\nbuffer_size = 1\nserver_lr = 0.5\n\
         {extra}\n[eval]\ninterval = 5\n[stop]\nmax_versions = 16\n"
    )
}

const SMALL_KD: &str =
    "[kd]\nbuffer_size = 3\niters = 2\nbatch_per_teacher = 8\nfreeze_rounds = 3\nwarmup_rounds = 5";
/// A tiny generator, so that synthesis takes milliseconds; adversarial loss from the third call.
const SMALL_DFKD: &str = "[dfkd]\nnz = 16\nngf = 8\nsynthetic_batch = 16\npool_size = 256\nadv_after = 2";

#[test]
fn fedrevive_is_identical_for_one_two_and_four_workers() {
    let text = world("fedrevive", &format!("{SMALL_KD}\n{SMALL_DFKD}"));
    let (hash_1, sink_1) = run(&text, 1);
    for workers in [2, 4] {
        let (hash_n, sink_n) = run(&text, workers);
        assert_eq!(hash_n, hash_1, "{workers} workers");
        assert_eq!(accuracies(&sink_n), accuracies(&sink_1));
    }
    let (fedbuff, _) = run(&world("async_fl", ""), 1);
    assert_ne!(hash_1, fedbuff, "after the gates distillation changes the model");
}

#[test]
fn before_the_freeze_gate_fedrevive_equals_fedbuff_with_buffer_one() {
    let frozen = format!("[kd]\nfreeze_rounds = 1000\nwarmup_rounds = 1000\n{SMALL_DFKD}");
    let (revive, _) = run(&world("fedrevive", &frozen), 2);
    let (fedbuff, _) = run(&world("async_fl", ""), 2);
    assert_eq!(revive, fedbuff);
}

#[test]
fn dd_fedrevive_is_identical_for_one_two_and_four_workers() {
    let text = world("dd_fedrevive", SMALL_KD);
    let (hash_1, sink_1) = run(&text, 1);
    // Distillation costs server time on the arrivals after warm-up.
    assert!(sink_1
        .updates
        .iter()
        .filter(|u| u.applied_version > 5 && u.staleness > 0)
        .all(|u| u.server_ms > 0.0));
    for workers in [2, 4] {
        let (hash_n, sink_n) = run(&text, workers);
        assert_eq!(hash_n, hash_1, "{workers} workers");
        assert_eq!(accuracies(&sink_n), accuracies(&sink_1));
    }
}

#[test]
fn before_the_freeze_gate_dd_fedrevive_equals_fedbuff_with_buffer_one() {
    let frozen = "[kd]\nfreeze_rounds = 1000\nwarmup_rounds = 1000";
    let (revive, _) = run(&world("dd_fedrevive", frozen), 2);
    let (fedbuff, _) = run(&world("async_fl", ""), 2);
    assert_eq!(revive, fedbuff);
    let (distilled, _) = run(&world("dd_fedrevive", SMALL_KD), 2);
    assert_ne!(distilled, fedbuff, "after the gates distillation changes the model");
}

#[test]
fn kd_towards_a_teacher_identical_to_the_student_leaves_it_unchanged() {
    let dataset = Arc::new(fedsim::data::load(DatasetKind::Cifar10, &dirs()).unwrap());
    let input = InputSpec::of(&dataset);
    let kd_split = split::split(dataset.train.len(), 1).kd;
    let settings =
        KdSettings { iters: 5, lr: 1e-4, weight_decay: 0.0, temperature: 2.0, batch_per_teacher: 16 };
    let mut distiller =
        RealDataDistiller::new(settings, ModelKind::ConvNet, dataset, &kd_split, Device::Cpu, 1);
    let student = initial_weights(ModelKind::ConvNet, input, 9);
    let same = Teacher { weights: Arc::new(student.clone()), class_proportions: vec![0.1; 10] };
    let delta = distiller.distill(&student, &[&same, &same], 1).unwrap();
    let largest = delta.iter().fold(0f32, |m, d| m.max(d.abs()));
    assert!(largest < 1e-6, "identical teacher moved the student by {largest}");
    // A different teacher does move it.
    let other = Teacher {
        weights: Arc::new(initial_weights(ModelKind::ConvNet, input, 10)),
        class_proportions: vec![0.1; 10],
    };
    let moved = distiller.distill(&student, &[&other], 1).unwrap();
    assert!(moved.iter().any(|d| d.abs() > 1e-5));
}
