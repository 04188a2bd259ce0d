//! Server optimizers, FedProx and learning-rate schedules end to end: under both arrival
//! policies (rounds and a buffer) each gives one result for 1, 2 and 4 workers, alone and in
//! cohorts, with host and device-resident versions alike, changes the result it is meant to
//! change, and resumes exactly after a kill; a constant schedule changes nothing.

use fedsim::simulation::Simulation;
use tch::Device;

use crate::resume::{kill_and_resume, FEDBUFF};
use crate::simulate::{assert_same_run, cohort_config, config, run, run_resident, small};
use crate::{applied_updates, relative_difference};

/// (policy and server rule keys of [algorithm], keys of [train]); the optimizers at the
/// paper's default learning rates.
const CASES: [(&str, &str, &str); 8] = [
    ("sync_fl", "server_optimizer = \"momentum\"", ""),
    ("sync_fl", "server_optimizer = \"adam\"\nserver_tau = 0.01", ""),
    ("async_fl", "buffer_size = 2\nserver_optimizer = \"yogi\"", ""),
    ("async_fl", "buffer_size = 2\nserver_optimizer = \"adagrad\"", ""),
    ("async_fl", "buffer_size = 2\nserver_optimizer = \"adam\"\nserver_beta1 = 0.5", "prox_mu = 0.1"),
    ("sync_fl", "server_lr = 1.0", "prox_mu = 0.1"),
    (
        "sync_fl",
        "server_lr_schedule = { kind = \"step\", every = 5, factor = 0.5 }",
        "lr_schedule = { kind = \"step\", every = 3, factor = 0.5 }",
    ),
    (
        "async_fl",
        "buffer_size = 2\nserver_optimizer = \"momentum\"\nserver_lr_schedule = { kind = \"cosine\", versions = 20, floor = 0.1 }",
        "lr_schedule = { kind = \"exponential\", gamma = 0.9 }",
    ),
];

/// The small world with `algorithm` keys and `train` keys added.
fn world(policy: &str, algorithm: &str, train: &str) -> String {
    small(policy, algorithm).replace("lr = 1e-3\n", &format!("lr = 1e-3\n{train}\n"))
}

#[test]
fn server_optimizers_and_fedprox_give_one_result_for_one_two_and_four_workers_under_both_policies() {
    for (policy, rule, train) in CASES {
        let text = world(policy, rule, train);
        let buffer = if policy == "async_fl" { "buffer_size = 2\n" } else { "" };
        let plain = run(&config(&small(policy, &format!("{buffer}server_lr = 1.0")), 1)).0;
        let (hash_1, sink_1) = run(&config(&text, 1));
        let what = format!("{policy} with {rule} {train}");
        assert_eq!(sink_1.evals.last().unwrap().version, 20, "{what}");
        assert_ne!(hash_1, plain, "{what}: gives the plain rule's weights");
        assert!(sink_1.evals.iter().all(|e| e.loss.is_finite()), "{what}: a non-finite test loss");
        for workers in [2, 4] {
            let (hash_n, sink_n) = run(&config(&text, workers));
            assert_same_run(&what, workers, (&hash_n, &sink_n), (&hash_1, &sink_1));
        }
    }
}

/// The optimizers' moments live where the versions do: device-resident runs keep the contract
/// and agree with host runs to float rounding (libtorch's fused kernels against Rust loops).
#[test]
fn optimizer_state_on_the_device_gives_one_result_and_matches_the_host() {
    for (policy, rule, train) in [CASES[1], CASES[4]] {
        let text = world(policy, rule, train);
        let what = format!("{policy} with {rule} {train} on the device");
        let (hash_1, weights_1, sink_1) = run_resident(&cohort_config(&text, 1, 1));
        let (hash_2, _, sink_2) = run_resident(&cohort_config(&text, 2, 1));
        assert_same_run(&what, 2, (&hash_2, &sink_2), (&hash_1, &sink_1));
        let mut host = fedsim::exec::VecSink::default();
        let outcome = Simulation::build(&config(&text, 2), &crate::dirs(), Device::Cpu)
            .unwrap()
            .run(&mut host, None)
            .unwrap();
        assert_eq!(applied_updates(&sink_1), applied_updates(&host), "{what}");
        let difference = relative_difference(&weights_1, &outcome.final_weights);
        assert!(difference <= 1e-4, "{what}: {difference:e} of the weights' scale");
    }
}

#[test]
fn a_run_with_a_server_optimizer_killed_after_a_checkpoint_resumes_to_the_same_results() {
    // FedBuff with FedAdam, killed after the second checkpoint (version 20), resumed with 1 worker.
    let adam = FEDBUFF.replace("server_lr = 0.5", "server_lr = 0.01\nserver_optimizer = \"adam\"");
    kill_and_resume("resume-adam", &adam, "checkpoint:2", "1");
    // Rounds with server momentum and FedProx, resumed with 4 workers.
    let momentum = FEDBUFF
        .replace("kind = \"async_fl\"", "kind = \"sync_fl\"")
        .replace("buffer_size = 2\nserver_lr = 0.5", "server_optimizer = \"momentum\"\nserver_beta1 = 0.8")
        .replace("lr = 1e-3\n", "lr = 1e-3\nprox_mu = 0.01\n");
    kill_and_resume("resume-momentum", &momentum, "checkpoint:2", "4");
}

/// A client schedule splits cohorts by rate; any worker count still gives one result, and a
/// schedule written as constant is no schedule at all.
#[test]
fn lr_schedules_keep_the_contract_in_cohorts_and_constant_changes_nothing() {
    let text =
        world("async_fl", "buffer_size = 2", "lr_schedule = { kind = \"step\", every = 4, factor = 0.5 }");
    let (hash_1, sink_1) = run(&cohort_config(&text, 1, 4));
    for workers in [2, 4] {
        let (hash_n, sink_n) = run(&cohort_config(&text, workers, 4));
        assert_same_run("a client schedule in cohorts of 4", workers, (&hash_n, &sink_n), (&hash_1, &sink_1));
    }
    let plain = run(&config(&small("async_fl", "buffer_size = 2"), 2)).0;
    let constant = world(
        "async_fl",
        "buffer_size = 2\nserver_lr_schedule = { kind = \"constant\" }",
        "lr_schedule = { kind = \"constant\" }",
    );
    assert_eq!(run(&config(&constant, 2)).0, plain, "a constant schedule changed the result");
}
