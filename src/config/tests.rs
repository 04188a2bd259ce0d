//! The config's unit tests: loading, overrides, validation and the round trip.

use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml", "test", &[])
}

const MINIMAL: &str = "[stop]\nmax_versions = 10\n";

#[test]
fn a_bad_availability_trace_is_named_with_its_row_and_column() {
    let path = std::env::temp_dir().join(format!("fedsim-config-trace-{}.csv", std::process::id()));
    std::fs::write(&path, "client,start,end\n0,0,1\n3,x,2\n").unwrap();
    let text = format!(
        "[data]\nnum_clients = 4\n[algorithm]\nactive_jobs = 2\n[availability]\nkind = \"trace\"\nfile = \"{}\"\n[stop]\nmax_versions = 1",
        path.display()
    );
    let message = load(&text).unwrap_err().to_string();
    let _ = std::fs::remove_file(&path);
    assert!(
        message.starts_with("availability.file = ") && message.contains("row 3, column start: 'x'"),
        "{message}"
    );
    let missing = load(&text.replace(&path.display().to_string(), "/no/such.csv")).unwrap_err().to_string();
    assert!(missing.contains("availability.file = /no/such.csv"), "{missing}");
}

#[test]
fn a_device_trace_replaces_the_mixture_and_bad_ones_are_named() {
    let dir = std::env::temp_dir().join(format!("fedsim-device-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("devices.csv");
    let text = format!(
        "[data]\nnum_clients = 3\n[algorithm]\nactive_jobs = 2\n[delays]\ntrace = \"{}\"\n[stop]\nmax_versions = 1",
        path.display()
    );
    std::fs::write(&path, "client,speed,bandwidth\n0,1,1\n1,2,0.5\n2,0.5,4\n").unwrap();
    let delays = load(&text).unwrap().delays;
    let clients = delays.clients(1, 1, 3);
    let train = DelayModel::reference_default().train.expected();
    assert!((clients[1].component(crate::sim::delay::DelayKind::Train).mean - train / 2.0).abs() < 1e-12);
    assert!((clients[2].component(crate::sim::delay::DelayKind::Download).mean - 0.1 / 4.0).abs() < 1e-12);
    for (contents, expected) in [
        (
            "client,speed,bandwidth\n0,1,1\n1,0,1\n2,1,1\n",
            "row 3, column speed: '0' is not a positive factor",
        ),
        ("client,speed,bandwidth\n0,1,1\n2,1,1\n", "1 of 3 clients have no row (first: 1)"),
        (
            "client,speed,bandwidth\n0,1,1\n1,1,1\n1,1,1\n2,1,1\n",
            "row 4, column client: client 1 has a row already",
        ),
        ("client,speed\n0,1\n", "row 1: the header must be client,speed,bandwidth"),
    ] {
        std::fs::write(&path, contents).unwrap();
        let message = load(&text).unwrap_err().to_string();
        assert!(message.starts_with("delays.trace = ") && message.contains(expected), "{message}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn server_optimizers_take_the_papers_defaults_and_sgd_keeps_the_algorithms_learning_rate() {
    let with = |keys: &str| {
        load(&format!("[algorithm]\nkind = \"sync_fl\"\n{keys}\n[stop]\nmax_versions = 1")).unwrap()
    };
    let sgd = with("");
    assert_eq!(sgd.server_optimizer, ServerOptimizerSettings::sgd());
    for (name, lr) in [("momentum", 1.0), ("adam", 0.01), ("yogi", 0.01), ("adagrad", 0.1)] {
        let config = with(&format!("server_optimizer = \"{name}\""));
        assert_eq!(config.server_optimizer.kind.name(), name);
        assert_eq!(config.server_lr, lr, "{name}");
        assert_eq!((config.server_optimizer.beta1, config.server_optimizer.beta2), (0.9, 0.99), "{name}");
        assert_eq!(config.server_optimizer.tau, 1e-3, "{name}");
        // A written learning rate wins.
        assert_eq!(with(&format!("server_optimizer = \"{name}\"\nserver_lr = 0.3")).server_lr, 0.3);
    }
}

#[test]
fn defaults_are_the_reference_values() {
    let c = load(MINIMAL).unwrap();
    assert_eq!((c.num_clients, c.client_data_size, c.active_jobs, c.buffer_size), (1000, 350, 100, 2));
    assert_eq!((c.local_iters, c.batch_size, c.lr, c.seed), (25, 32, 3e-4, 10));
    assert_eq!(c.partition, PartitionKind::Dirichlet { alpha: 0.5 });
    assert_eq!(c.delays, DelayModel::reference_default());
    assert_eq!(c.algorithm, AlgorithmKind::AsyncFl);
}

#[test]
fn bad_values_name_the_key_and_what_is_allowed() {
    let cases = [
        ("[data]\nnum_clent = 3\n[stop]\nmax_versions = 1", "unknown field `num_clent`"),
        (
            "[algorithm]\nkind = \"sync_fl\"\nmax_staleness = 3\n[stop]\nmax_versions = 1",
            "algorithm.max_staleness = 3: applies to asynchronous algorithms",
        ),
        (
            "[algorithm]\nmin_hole_to_fill = 0\n[stop]\nmax_versions = 1",
            "algorithm.min_hole_to_fill = 0: must be between 1 and algorithm.active_jobs (100)",
        ),
        (
            "[availability]\nkind = \"on_off\"\nmean_on = 0.0\nmean_off = 1.0\n[stop]\nmax_versions = 1",
            "availability.mean_on = 0: must be a positive, finite virtual time",
        ),
        (
            "[availability]\nkind = \"weekly\"\n[stop]\nmax_versions = 1",
            "unknown variant `weekly`",
        ),
        (
            "[availability]\nkind = \"daily\"\nperiod = 24.0\nonline_fraction = 1.5\n[stop]\nmax_versions = 1",
            "availability.online_fraction = 1.5: must lie strictly between 0 and 1",
        ),
        (
            "[algorithm]\nupdate_timeout = -1.0\n[stop]\nmax_versions = 1",
            "algorithm.update_timeout = -1: must be a positive, finite virtual time",
        ),
        (
            "[algorithm]\nmax_model_history = 0\n[stop]\nmax_versions = 1",
            "algorithm.max_model_history = 0: must be at least 1",
        ),
        (
            "[algorithm]\nover_commitment = 1.5\n[stop]\nmax_versions = 1",
            "algorithm.over_commitment = 1.5: applies to sync_fl rounds",
        ),
        (
            "[algorithm]\nkind = \"sync_fl\"\nover_commitment = 0.5\n[stop]\nmax_versions = 1",
            "algorithm.over_commitment = 0.5: must lie in [1, 1000]",
        ),
        (
            "[algorithm]\nkind = \"sync_fl\"\nover_commitment = nan\n[stop]\nmax_versions = 1",
            "algorithm.over_commitment = NaN: ",
        ),
        (
            "[data]\nnum_clients = 120\n[algorithm]\nkind = \"sync_fl\"\nover_commitment = 1.3\n[stop]\nmax_versions = 1",
            "dispatches 130 clients a round (ceil(over_commitment x active_jobs)), more than data.num_clients (120)",
        ),
        (
            "[algorithm]\nkind = \"fedprox\"\n[stop]\nmax_versions = 1",
            "algorithm.kind = \"fedprox\": valid kinds: sync_fl, async_fl, afl_dw",
        ),
        (
            "[delays.train]\nmean = -1.0\n[stop]\nmax_versions = 1",
            "delays.train.mean = -1: delay means must be finite and >= 0",
        ),
        (
            "[delays.upload]\nmixture = [[0.5, 0.1], [0.4, 0.2]]\n[stop]\nmax_versions = 1",
            "mixture probabilities must sum to 1",
        ),
        (
            "[algorithm]\nactive_jobs = 2000\n[stop]\nmax_versions = 1",
            "algorithm.active_jobs = 2000: must be between 1 and data.num_clients (1000)",
        ),
        (
            "[algorithm]\nbuffer_size = 0\n[stop]\nmax_versions = 1",
            "algorithm.buffer_size = 0: must be at least 1",
        ),
        ("[delays.train]\ndistribution = \"gamma\"\n[stop]\nmax_versions = 1", "unknown variant `gamma`"),
        ("seed = 1", "set stop.max_versions or stop.max_virtual_time"),
        (
            "[model]\nkind = \"vgg\"\n[stop]\nmax_versions = 1",
            "unknown variant `vgg`, expected `convnet` or `resnet18`",
        ),
        (
            "[data]\nkd_split = 0.9\n[stop]\nmax_versions = 1",
            "data.kd_split = 0.9: with data.val_split (0.15) it must leave training images",
        ),
        ("[data]\nval_split = -0.1\n[stop]\nmax_versions = 1", "data.val_split = -0.1: must be a share"),
        ("[train]\nmomentum = 1.5\n[stop]\nmax_versions = 1", "train.momentum = 1.5: must lie in [0, 1)"),
        ("[train]\nprox_mu = -0.1\n[stop]\nmax_versions = 1", "train.prox_mu = -0.1: must be a finite number >= 0"),
        (
            "[train]\nlr_schedule = { kind = \"step\", every = 0, factor = 0.5 }\n[stop]\nmax_versions = 1",
            "train.lr_schedule = Step { every: 0, factor: 0.5 }: every must be at least 1 (versions)",
        ),
        (
            "[algorithm]\nserver_lr_schedule = { kind = \"exponential\", gamma = 1.5 }\n[stop]\nmax_versions = 1",
            "algorithm.server_lr_schedule = Exponential { gamma: 1.5 }: gamma must lie in (0, 1]",
        ),
        (
            "[algorithm]\nserver_optimizer = \"lamb\"\n[stop]\nmax_versions = 1",
            "algorithm.server_optimizer = \"lamb\": valid optimizers: sgd, momentum, adam, yogi, adagrad",
        ),
        (
            "[algorithm]\nserver_optimizer = \"momentum\"\nserver_tau = 0.1\n[stop]\nmax_versions = 1",
            "algorithm.server_tau = 0.1: is not read by server_optimizer \"momentum\"; it is a parameter of adam, yogi, adagrad",
        ),
        (
            "[algorithm]\nserver_beta1 = 0.5\n[stop]\nmax_versions = 1",
            "algorithm.server_beta1 = 0.5: is not read by server_optimizer \"sgd\"",
        ),
        (
            "[algorithm]\nserver_optimizer = \"adam\"\nserver_beta2 = 1.0\n[stop]\nmax_versions = 1",
            "algorithm.server_beta2 = 1: must lie in [0, 1)",
        ),
        (
            "[algorithm]\nserver_optimizer = \"yogi\"\nserver_tau = 0.0\n[stop]\nmax_versions = 1",
            "algorithm.server_tau = 0: must be a positive number",
        ),
        (
            "[algorithm]\nserver_optimizer = \"adam\"\nserver_lr = -0.5\n[stop]\nmax_versions = 1",
            "algorithm.server_lr = -0.5: must be positive with server_optimizer \"adam\"",
        ),
        (
            "[run]\nserver_threads = 0\n[stop]\nmax_versions = 1",
            "run.server_threads = 0: must be between 1 and 1024",
        ),
        ("[run]\ncohort_size = 0\n[stop]\nmax_versions = 1", "run.cohort_size = 0: must be a positive number"),
        (
            "[run]\ncohort_size = \"big\"\n[stop]\nmax_versions = 1",
            "run.cohort_size = \"big\": must be a positive number of tasks trained as one stacked model, or \"auto\"",
        ),
        (
            "[algorithm]\nbeta = { kind = \"linear\", factor = 0.0 }\n[stop]\nmax_versions = 1",
            "factor (the reference's adaptive_beta_factor) must be a positive number",
        ),
        (
            "[topology]\nnum_leaf_nodes = 0\n[stop]\nmax_versions = 1",
            "topology.num_leaf_nodes = 0: must be between 1 and data.num_clients (1000)",
        ),
        (
            "[topology]\nnum_leaf_nodes = 4\nassignment = \"random\"\n[stop]\nmax_versions = 1",
            "topology.assignment = \"random\": valid values: blocks, seeded",
        ),
        (
            "[topology]\nleaf_buffer_size = 4\nflush_period = 0.5\n[stop]\nmax_versions = 1",
            "topology.flush_period = 0.5: a leaf forwards either every leaf_buffer_size updates or every flush_period",
        ),
        (
            "[topology]\nflush_period = 0.0\n[stop]\nmax_versions = 1",
            "topology.flush_period = 0: must be a positive, finite virtual time",
        ),
        (
            "[topology]\nhop_delay = { mean = -0.1 }\n[stop]\nmax_versions = 1",
            "topology.hop_delay.mean = -0.1: delay means must be finite and >= 0",
        ),
        (
            "[algorithm]\nround_deadline = 2.0\n[stop]\nmax_versions = 1",
            "algorithm.round_deadline = 2: applies to sync_fl rounds",
        ),
        (
            "[algorithm]\nkind = \"sync_fl\"\nlate_updates = \"carry\"\n[stop]\nmax_versions = 1",
            "algorithm.late_updates = \"carry\": says what a round deadline does to late updates",
        ),
        (
            "[algorithm]\nkind = \"sync_fl\"\nround_deadline = 2.0\nlate_updates = \"keep\"\n[stop]\nmax_versions = 1",
            "algorithm.late_updates = \"keep\": valid values: drop, carry",
        ),
    ];
    for (text, expected) in cases {
        let err = load(text).unwrap_err().to_string();
        assert!(err.contains(expected), "for {text:?}: {err}");
    }
}

#[test]
fn the_ports_key_names_are_accepted_and_a_topology_resolves() {
    let c = load(
        "[algorithm]\ndevice_selection_size = 200\ndevice_reuse = false\n[eval]\neval_frequency = 5\n[stop]\nmax_model_version = 40\n[topology]\nnum_leaf_nodes = 20\nhop_delay = { distribution = \"normal\", mean = 0.05, std = 0.01 }",
    )
    .unwrap();
    assert_eq!((c.active_jobs, c.client_reuse, c.eval_interval, c.max_versions), (200, false, 5, Some(40)));
    let topology = c.topology.as_ref().unwrap().topology();
    assert_eq!(topology.num_leaves, 20);
    assert_eq!(topology.flush, crate::sched::LeafFlush::Buffer(1));
    assert_eq!(topology.hop.distribution, Distribution::Normal);
    assert_eq!((topology.hop.components[0].mean, topology.hop.components[0].std), (0.05, 0.01));
}

#[test]
fn setup_and_run_seeds_default_to_the_seed_and_can_be_set_apart() {
    let c = load("seed = 7\n[stop]\nmax_versions = 1").unwrap();
    assert_eq!((c.seed, c.setup_seed, c.run_seed), (7, 7, 7));
    let c = load("seed = 7\nrun_seed = 9\n[stop]\nmax_versions = 1").unwrap();
    assert_eq!((c.setup_seed, c.run_seed), (7, 9));
    assert_eq!((c.val_split, c.kd_split, c.momentum, c.server_threads), (0.15, 0.1, 0.9, 1));
    assert_eq!(c.cohort_size, CohortSize::Auto, "auto by default: 1 on CPU, sized on a GPU");
    let fixed = load("[run]\ncohort_size = 8\n[stop]\nmax_versions = 1").unwrap();
    assert_eq!(fixed.cohort_size, CohortSize::Fixed(8));
    assert!(fixed.to_toml().contains("cohort_size = 8") && c.to_toml().contains("cohort_size = \"auto\""));
    // Stepwise beta is resolved on K / B: factor 0.5, K 100, B 2 -> base 25.
    let c =
        load("[algorithm]\nbeta = { kind = \"stepwise\", factor = 0.5 }\n[stop]\nmax_versions = 1").unwrap();
    assert_eq!(c.beta, BetaSchedule::Stepwise { factor: 0.5, base: 25.0 });
}

#[test]
fn overrides_set_nested_keys_with_toml_values() {
    let overrides = [
        "algorithm.buffer_size=1".to_owned(),
        "data.partition=iid".to_owned(),
        "stop.max_virtual_time=5.5".to_owned(),
    ];
    let c = Config::from_toml(MINIMAL, "t", "t", &overrides).unwrap();
    assert_eq!(c.buffer_size, 1);
    assert_eq!(c.partition, PartitionKind::Iid);
    assert_eq!(c.max_virtual_time, Some(5.5));
    let err = Config::from_toml(MINIMAL, "t", "t", &["nonsense".to_owned()]).unwrap_err().to_string();
    assert!(err.contains("expected key=value"), "{err}");
    let err =
        Config::from_toml(MINIMAL, "t", "t", &["algorithm.bufer_size=1".to_owned()]).unwrap_err().to_string();
    assert!(err.contains("unknown field `bufer_size`"), "{err}");
}

#[test]
fn nvflare_spelling_becomes_normal_delays() {
    let text = "[delays]\ndevice_speed = { mean = [1.0, 2.0], std = [0.1, 0.2] }\ncommunication_delay = { mean = 0.05, std = 0.01 }\n[stop]\nmax_versions = 1";
    let c = load(text).unwrap();
    assert_eq!(c.delays.train.distribution, Distribution::Normal);
    assert_eq!(c.delays.train.components.len(), 2);
    assert_eq!(c.delays.train.components[1], Component { probability: 0.5, mean: 2.0, std: 0.2 });
    // One communication draw per task: the download carries it, the upload is 0.
    assert_eq!(c.delays.download.components[0].mean, 0.05);
    assert_eq!(c.delays.download.distribution, Distribution::Normal);
    assert_eq!(c.delays.upload, DelaySpec::constant(0.0));
}

#[test]
fn a_delay_table_overrides_only_what_it_names() {
    let c = load("[delays.upload]\nstd = 0.05\n[stop]\nmax_versions = 1").unwrap();
    assert_eq!(c.delays.upload.distribution, Distribution::Uniform);
    assert!(c.delays.upload.components.iter().all(|c| c.std == 0.05));
    assert_eq!(c.delays.upload.components[1].mean, 0.25);
}
