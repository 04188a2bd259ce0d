//! FedRevive (data-free) and DD-FedRevive (real KD split): distillation revives stale updates,
//! deterministically.

use std::sync::Arc;

use fedsim::config::Config;
use fedsim::data::{split, DatasetKind};
use fedsim::exec::VecSink;
use fedsim::fl::revive::{Distiller, Teacher};
use fedsim::nn::device_weights::DeviceWeights;
use fedsim::nn::dfkd::{DataFreeDistiller, DfkdSettings};
use fedsim::nn::kd::{KdSettings, RealDataDistiller};
use fedsim::nn::{initial_weights, InputSpec, ModelKind};
use fedsim::params::weights_hash;
use fedsim::simulation::Simulation;
use tch::Device;

use crate::{applied_updates, dirs, max_abs, max_abs_difference, relative_difference};

fn run(text: &str, workers: usize) -> (String, VecSink) {
    let config = Config::from_toml(text, "test", "test", &[format!("run.workers={workers}")]).unwrap();
    let mut sink = VecSink::default();
    let outcome = Simulation::build(&config, &dirs(), Device::Cpu).unwrap().run(&mut sink, None).unwrap();
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
/// DD-FedRevive's settings, small.
const SMALL_SIMPLE_KD: &str = "[simple_kd]\nbuffer_size = 3\niters = 2\nbatch_per_teacher = 8";
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
    // Two libtorch threads in the server step: part of the config, and again the same results
    // for any worker count (one of the two threads competes with a training worker).
    let threaded = format!("{text}\n[run]\nserver_threads = 2");
    let (threads_1, sink_t1) = run(&threaded, 1);
    let (threads_2, sink_t2) = run(&threaded, 2);
    assert_eq!(threads_1, threads_2);
    assert_eq!(accuracies(&sink_t1), accuracies(&sink_t2));
    // Cohorts of clients: again one result for any worker count at a given cohort size.
    for cohort in [4, 8] {
        let stacked = format!("{text}\n[run]\ncohort_size = {cohort}");
        let (hash_1, sink_1) = run(&stacked, 1);
        for workers in [2, 4] {
            let (hash_n, sink_n) = run(&stacked, workers);
            assert_eq!(hash_n, hash_1, "cohort {cohort}, {workers} workers");
            assert_eq!(accuracies(&sink_n), accuracies(&sink_1));
        }
    }
}

/// FedRevive with device-resident versions and teachers (forced on CPU, as on a GPU): one
/// result for any worker count, and within float rounding of host versions (same applied updates, weights within 1e-3 of their scale: the
/// distillation's Adam steps magnify rounding, as for stacked teachers).
#[test]
fn fedrevive_with_device_resident_versions_is_identical_for_one_and_two_workers() {
    let text = world("fedrevive", &format!("{SMALL_KD}\n{SMALL_DFKD}"));
    let resident = |workers: usize| {
        let config = Config::from_toml(&text, "test", "test", &[format!("run.workers={workers}")]).unwrap();
        let mut sink = VecSink::default();
        let outcome = Simulation::build(&config, &dirs(), Device::Cpu)
            .unwrap()
            .run_with::<DeviceWeights>(&mut sink, None)
            .unwrap();
        (outcome.final_weights, sink)
    };
    let (weights_1, sink_1) = resident(1);
    let (weights_2, sink_2) = resident(2);
    assert_eq!(weights_hash(&weights_1), weights_hash(&weights_2));
    assert_eq!(accuracies(&sink_1), accuracies(&sink_2));
    let config = Config::from_toml(&text, "test", "test", &["run.workers=2".to_owned()]).unwrap();
    let mut host_sink = VecSink::default();
    let host = Simulation::build(&config, &dirs(), Device::Cpu).unwrap().run(&mut host_sink, None).unwrap();
    assert_eq!(applied_updates(&sink_1), applied_updates(&host_sink));
    let difference = relative_difference(&weights_1, &host.final_weights);
    assert!(difference <= 1e-3, "{difference:e} of the weights' scale");
}

#[test]
fn before_the_freeze_gate_fedrevive_equals_fedbuff_with_buffer_one() {
    let frozen = format!("[kd]\nfreeze_rounds = 1000\nwarmup_rounds = 1000\n{SMALL_DFKD}");
    let (revive, _) = run(&world("fedrevive", &frozen), 2);
    let (fedbuff, _) = run(&world("async_fl", ""), 2);
    assert_eq!(revive, fedbuff);
}

#[test]
fn dd_fedrevive_is_identical_for_one_two_and_four_workers_and_distils_from_the_first_arrival() {
    let text = world("dd_fedrevive", SMALL_SIMPLE_KD);
    let (hash_1, sink_1) = run(&text, 1);
    // No gates: every arrival (constant beta 0.5 > 0) pays for a distillation, the first included.
    assert_eq!(sink_1.updates[0].applied_version, 1);
    assert!(sink_1.updates.iter().all(|u| u.server_ms > 0.0));
    for workers in [2, 4] {
        let (hash_n, sink_n) = run(&text, workers);
        assert_eq!(hash_n, hash_1, "{workers} workers");
        assert_eq!(accuracies(&sink_n), accuracies(&sink_1));
    }
}

#[test]
fn dd_fedrevive_without_beta_equals_fedbuff_with_buffer_one() {
    let config = |kind: &str, extra: &str| {
        Config::from_toml(
            &world(kind, extra),
            "test",
            "test",
            &["algorithm.beta={ kind = \"constant\", beta = 0.0 }".to_owned()],
        )
        .unwrap()
    };
    let hash = |config: &Config| {
        let mut sink = VecSink::default();
        weights_hash(
            &Simulation::build(config, &dirs(), Device::Cpu)
                .unwrap()
                .run(&mut sink, None)
                .unwrap()
                .final_weights,
        )
    };
    assert_eq!(hash(&config("dd_fedrevive", SMALL_SIMPLE_KD)), hash(&config("async_fl", "")));
    let (distilled, _) = run(&world("dd_fedrevive", SMALL_SIMPLE_KD), 2);
    let (fedbuff, _) = run(&world("async_fl", ""), 2);
    assert_ne!(distilled, fedbuff, "with beta 0.5 distillation changes the model");
}

#[test]
fn each_distillation_reads_its_own_table() {
    let err = Config::from_toml(&world("dd_fedrevive", SMALL_KD), "t", "t", &[]).unwrap_err().to_string();
    assert!(err.contains("DD-FedRevive reads [simple_kd]"), "{err}");
    let err = Config::from_toml(&world("fedrevive", SMALL_SIMPLE_KD), "t", "t", &[]).unwrap_err().to_string();
    assert!(err.contains("[simple_kd] configures dd_fedrevive only"), "{err}");
    let dd = Config::from_toml(&world("dd_fedrevive", ""), "t", "t", &[]).unwrap();
    let s = dd.kd.settings;
    assert_eq!((s.lr, s.weight_decay, s.temperature, s.iters, s.batch_per_teacher), (3e-4, 0.0, 2.0, 10, 32));
    assert_eq!(dd.kd.gates, None, "DD-FedRevive has no freeze or warm-up gates");
    let revive = Config::from_toml(&world("fedrevive", ""), "t", "t", &[]).unwrap();
    let s = revive.kd.settings;
    assert_eq!((s.lr, s.weight_decay, s.temperature), (1e-4, 1e-5, 1.0));
    assert_eq!(revive.kd.gates.map(|g| (g.freeze_rounds, g.warmup_rounds)), Some((50, 100)));
}

#[test]
fn kd_towards_a_teacher_identical_to_the_student_leaves_it_unchanged() {
    let dataset = Arc::new(fedsim::data::load(DatasetKind::Cifar10, &dirs()).unwrap());
    let input = InputSpec::of(&dataset);
    let kd_split = split::split(dataset.train.len(), split::VAL_SPLIT, split::KD_SPLIT, 1).kd;
    let settings =
        KdSettings { iters: 5, lr: 1e-4, weight_decay: 0.0, temperature: 2.0, batch_per_teacher: 16 };
    let mut distiller =
        RealDataDistiller::new(settings, ModelKind::ConvNet, dataset, &kd_split, Device::Cpu, 1);
    let student = initial_weights(ModelKind::ConvNet, input, 9);
    let same = Teacher { weights: Arc::new(student.clone()), class_proportions: vec![0.1; 10] };
    let delta = distiller.distill(&student, &[&same, &same], 1).unwrap();
    let largest = max_abs(&delta);
    assert!(largest < 1e-6, "identical teacher moved the student by {largest}");
    // A different teacher does move it.
    let other = Teacher {
        weights: Arc::new(initial_weights(ModelKind::ConvNet, input, 10)),
        class_proportions: vec![0.1; 10],
    };
    let moved = distiller.distill(&student, &[&other], 1).unwrap();
    assert!(moved.iter().any(|d| d.abs() > 1e-5));
}

/// A tiny data-free distiller whose adversarial term is on from its `adv_after`-th call.
fn tiny_distiller(adv_weight: f64, adv_after: u64) -> DataFreeDistiller {
    let input = InputSpec { channels: 3, height: 32, width: 32, classes: 10 };
    let kd = KdSettings { iters: 2, lr: 1e-4, weight_decay: 1e-5, temperature: 1.0, batch_per_teacher: 8 };
    let settings = DfkdSettings {
        nz: 16,
        ngf: 8,
        synthetic_batch: 16,
        pool_size: 256,
        adv_after,
        adv_weight,
        ..DfkdSettings::reference()
    };
    DataFreeDistiller::new(kd, settings, ModelKind::ConvNet, DatasetKind::Cifar10, input, Device::Cpu, 3)
        .unwrap()
}

/// A student and three teachers; the student is the first teacher shrunk, so that teachers and
/// student agree on many images (L_adv counts only those) without being equal.
fn teachers() -> (Vec<f32>, Vec<Teacher>) {
    let input = InputSpec { channels: 3, height: 32, width: 32, classes: 10 };
    let teachers: Vec<Teacher> = (0..3u64)
        .map(|k| {
            let raw: Vec<f64> = (0..10u64).map(|c| if c % 3 == k { 3.0 } else { 1.0 }).collect();
            let total: f64 = raw.iter().sum();
            Teacher {
                weights: Arc::new(initial_weights(ModelKind::ConvNet, input, 20 + k)),
                class_proportions: raw.iter().map(|r| r / total).collect(),
            }
        })
        .collect();
    let student = teachers[0].weights.iter().map(|w| 0.8 * w).collect();
    (student, teachers)
}

/// Regression: L_adv used to enter the stabiliser as 0 before its gate, so every later value was
/// judged a spike against a zero mean and dropped: the adversarial term never reached the loss.
#[test]
fn after_its_gate_the_adversarial_term_is_recorded_non_zero_and_moves_the_generator() {
    let (student, teachers) = teachers();
    let refs: Vec<&Teacher> = teachers.iter().collect();
    let mut with_adv = tiny_distiller(0.1, 3);
    let mut without = tiny_distiller(0.0, 3);
    for call in 1..=2u64 {
        with_adv.warm_up(&student, &refs, call).unwrap();
        without.warm_up(&student, &refs, call).unwrap();
        assert!(with_adv.kept_terms(2).is_empty(), "call {call}: L_adv is off and never judged");
    }
    assert_eq!(
        with_adv.generator_weights(),
        without.generator_weights(),
        "before the gate adv_weight changes nothing"
    );
    // The 3rd call counts from 1: L_adv is on.
    for call in 3..=6u64 {
        with_adv.warm_up(&student, &refs, call).unwrap();
        without.warm_up(&student, &refs, call).unwrap();
    }
    let adv = with_adv.kept_terms(2);
    assert_eq!(adv.len(), 2 * 4, "each of the 2 steps of 4 calls kept its L_adv: {adv:?}");
    assert!(adv.iter().all(|&v| v <= 0.0), "L_adv is minus a KL where teachers and student agree: {adv:?}");
    assert!(adv.iter().any(|&v| v < 0.0), "a recorded, non-zero term: {adv:?}");
    assert_ne!(with_adv.generator_weights(), without.generator_weights(), "L_adv moves the generator");
}

#[test]
fn two_arrivals_draw_different_latents_and_one_arrival_the_same_ones() {
    let (_, teachers) = teachers();
    let refs: Vec<&Teacher> = teachers.iter().collect();
    let distiller = tiny_distiller(0.1, 100);
    let (targets_a, z_a, embeddings_a, _) = distiller.draw_inputs(&refs, 40);
    let (targets_b, z_b, embeddings_b, _) = distiller.draw_inputs(&refs, 41);
    let (targets_again, z_again, _, _) = distiller.draw_inputs(&refs, 40);
    assert!(!z_a.equal(&z_b), "two arrivals of one aggregation (tasks 40 and 41) share no latents");
    assert!(!embeddings_a.equal(&embeddings_b));
    assert_ne!(targets_a, targets_b);
    assert!(
        z_a.equal(&z_again) && targets_a == targets_again,
        "an arrival's draws are a function of its task"
    );
}

/// FedRevive's teachers as one stacked model (the GPU's path) against one by one (CPU's):
/// synthesis, pool and KD give the same delta_KD up to float rounding, with the adversarial
/// term on, over a few arrivals.
#[test]
fn stacked_teachers_distil_as_teachers_one_by_one() {
    let (student, teachers) = teachers();
    let refs: Vec<&Teacher> = teachers.iter().collect();
    let mut apart = tiny_distiller(0.1, 2);
    let mut stacked = tiny_distiller(0.1, 2);
    assert!(!apart.core.stack_teachers, "on CPU the teachers run one by one");
    stacked.core.stack_teachers = true;
    for arrival in 1..=3u64 {
        let a = apart.distill(&student, &refs, arrival).unwrap();
        let b = stacked.distill(&student, &refs, arrival).unwrap();
        let (scale, diff) = (max_abs(&a), max_abs_difference(&a, &b));
        eprintln!("arrival {arrival}: max |stacked - apart| / max |apart| = {:.3e}", diff / scale);
        assert!(scale > 0.0 && diff <= 1e-3 * scale, "arrival {arrival}: {diff:e} of {scale:e}");
    }
    // The synthetic images the generators made (their pools) agree too.
    let (ga, gb) = (apart.generator_weights(), stacked.generator_weights());
    let diff = max_abs_difference(&ga, &gb);
    assert!(diff < 1e-3, "generators differ by {diff:e}");
}

/// DD-FedRevive's KD on the real split, stacked against one by one.
#[test]
fn stacked_teachers_distil_real_images_as_teachers_one_by_one() {
    let (student, teachers) = teachers();
    let refs: Vec<&Teacher> = teachers.iter().collect();
    let data = Arc::new(fedsim::data::load(DatasetKind::Cifar10, &dirs()).unwrap());
    let kd_split = split::split(data.train.len(), split::VAL_SPLIT, split::KD_SPLIT, 3).kd;
    let settings =
        KdSettings { iters: 3, lr: 3e-4, weight_decay: 0.0, temperature: 2.0, batch_per_teacher: 8 };
    let make =
        || RealDataDistiller::new(settings, ModelKind::ConvNet, data.clone(), &kd_split, Device::Cpu, 4);
    let (mut apart, mut stacked) = (make(), make());
    stacked.core.stack_teachers = true;
    let a = apart.distill(&student, &refs, 7).unwrap();
    let b = stacked.distill(&student, &refs, 7).unwrap();
    let (scale, diff) = (max_abs(&a), max_abs_difference(&a, &b));
    eprintln!("real-data KD: max |stacked - apart| / max |apart| = {:.3e}", diff / scale);
    assert!(scale > 0.0 && diff <= 1e-3 * scale, "{diff:e} of {scale:e}");
}
