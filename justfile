# fedsim's front door. `just --list` explains every recipe.
# On a fresh machine call these through scripts/just, which installs just itself.

set shell := ["bash", "-euo", "pipefail", "-c"]

fedsim := "target/release/fedsim"

# List the recipes.
default:
    @just --list

# Install libtorch (torch 2.11.0 in .venv), Fashion-MNIST, build, and prepare CIFAR-10.
[group('setup')]
setup:
    scripts/setup.sh

# The default experiment: the quickstart FedBuff run (one to two minutes on 2 cores).
[group('experiments')]
demo: setup
    {{fedsim}} info
    {{fedsim}} run sim-configs/quickstart.toml

# Run a simulation, e.g. `just run sim-configs/fedbuff.toml --workers 2 --set seed=11`.
[group('experiments')]
run config *args: setup
    {{fedsim}} run {{config}} {{args}}

# The MPI build (feature `mpi`): OpenMPI and libclang from Debian, then fedsim with MPI.
[group('cluster')]
build-mpi: setup
    scripts/setup-mpi.sh
    cargo build --release --features mpi

# One run over `ranks` MPI processes on this machine, e.g. `just mpi-run 3 sim-configs/quickstart.toml --workers 1`:
# rank 0 coordinates, the others train; the results equal a single process's.
[group('cluster')]
mpi-run ranks config *args: build-mpi
    mpirun --bind-to none --oversubscribe $([ "$(id -u)" = 0 ] && echo --allow-run-as-root) -np {{ranks}} {{fedsim}} run {{config}} {{args}}

# A sweep's points spread over `ranks` MPI processes, each point a whole run on one rank,
# e.g. `just mpi-sweep 3 sim-configs/sweep-seeds.toml`; the report as a single process's.
[group('cluster')]
mpi-sweep ranks file *args: build-mpi
    mpirun --bind-to none --oversubscribe $([ "$(id -u)" = 0 ] && echo --allow-run-as-root) -np {{ranks}} {{fedsim}} sweep {{file}} {{args}}

# Over 15 time units of virtual time, seeds 10, 11 and 12; in the reproducible mode its sweep
# file pins, several hours on 2 cores (FedRevive's distillation takes most of it).
# The algorithm comparison (FedAvg, FedBuff, AFL-DW, FedRevive, DD-FedRevive) into reports/sweep-seeds.
[group('experiments')]
paper: setup
    {{fedsim}} sweep sim-configs/sweep-seeds.toml

# FedBuff on the default world flat, under 20 leaves (hop 0.05), at 70% availability and both,
# seeds 10-12, 15 time units; about 10 minutes on 2 cores. Into reports/sweep-world.
[group('experiments')]
world: setup
    {{fedsim}} sweep sim-configs/sweep-world.toml

# FedAvg, FedAvgM, FedAdam, FedYogi, FedProx and FedBuff with and without Adam, seeds 10-12,
# 200 time units; about 3 hours on 2 cores. Into reports/server-optimizers.
[group('experiments')]
server-optimizers: setup
    {{fedsim}} sweep sim-configs/sweep-server-optimizers.toml

# FedBuff and FedRevive in fp32 and in bf16 (run.precision), seeds 10-12, 15 time units, native
# kernels; needs a CPU with bf16 units. Several hours on 2 cores. Into reports/sweep-precision.
[group('experiments')]
precision: setup
    {{fedsim}} sweep sim-configs/sweep-precision.toml

# Run a sweep file (a grid of configs) and report it, e.g. `just sweep sim-configs/sweep-workers.toml`.
[group('experiments')]
sweep file: setup
    {{fedsim}} sweep {{file}}

# Report run directories: tables and figures, e.g. `just report reports/mine runs/a-*/ runs/b-*/`.
[group('experiments')]
report out +runs: setup
    {{fedsim}} report {{runs}} --out {{out}}

# Print a config's schedule without training, e.g. `just plan sim-configs/fedbuff.toml 200`.
[group('experiments')]
plan config horizon="200": setup
    {{fedsim}} plan {{config}} --horizon {{horizon}}

# Centralised training, the upper bound for federated runs (e.g. `just central 10`).
[group('experiments')]
central epochs="10" model="convnet": setup
    {{fedsim}} train-central --model {{model}} --epochs {{epochs}}

# Mutation-fuzz every reader of outside bytes (configs, CIFAR-10 and IDX files, run
# directories, checkpoints) for `seconds` each (tests/it/fuzz.rs; corpora in tests/fuzz-corpus/).
[group('checks')]
fuzz seconds="600": setup
    FEDSIM_FUZZ_SECONDS={{seconds}} cargo nextest run --release --no-capture -E 'binary(it) & test(fuzz_)'

# Everything CI checks: formatting, clippy with warnings denied, all tests. Built once, with
# the `mpi` feature on, so that the MPI tests run too (OpenMPI installed by setup-mpi.sh);
# QEMU's user-mode emulator runs the reproducible mode on emulated Intel and AMD CPUs.
[group('checks')]
test: setup
    scripts/setup-mpi.sh
    scripts/apt-install.sh qemu-user
    cargo fmt --check
    cargo clippy --release --all-targets --features mpi --quiet -- -D warnings
    {{just_executable()}} test-only

# Run the tests alone (release build, with the `mpi` feature; they train real models).
[group('checks')]
test-only:
    if cargo nextest --version >/dev/null 2>&1; then cargo nextest run --release --features mpi --no-fail-fast; else cargo test --release --features mpi --no-fail-fast; fi

# The last step is the quickstart at 1, 2 and 4 workers: same results, and the speed-up.
# Benchmarks: criterion suites, local updates, FedAvg rounds alone and in cohorts of 8, the worker sweep.
[group('checks')]
bench: setup
    cargo bench --bench scheduler --bench local_update
    {{fedsim}} bench local-update --model convnet --repeats 10
    {{fedsim}} bench round --model convnet --clients 64 --cohort 1 --workers 2
    {{fedsim}} bench round --model convnet --clients 64 --cohort 8 --workers 2
    {{fedsim}} sweep sim-configs/sweep-workers.toml

# On a GPU machine: the prepared check of issue 10 (pack here with scripts/gpu-pack.sh first).
[group('checks')]
gpu-check:
    scripts/gpu-check.sh
