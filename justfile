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

# The algorithm comparison: FedAvg, FedBuff, AFL-DW, FedRevive, DD-FedRevive on the reference's
# default world, same seed, over `horizon` time units; then accuracy at fixed virtual times.
[group('experiments')]
paper horizon="15" workers="2": setup
    for a in fedavg fedbuff afl_dw dd_fedrevive fedrevive; do {{fedsim}} run sim-configs/$a.toml --workers {{workers}} --set stop.max_virtual_time={{horizon}} --out runs/paper-H{{horizon}}; done
    {{fedsim}} compare $(ls -d runs/paper-H{{horizon}}/*/ | sort) --at $(python3 -c "h={{horizon}}; print(','.join(str(round(h*i/6, 2)) for i in range(7)))")

# Run a sweep file (a grid of configs), e.g. `just sweep sim-configs/sweep-workers.toml`.
[group('experiments')]
sweep file: setup
    {{fedsim}} sweep {{file}}

# Print a config's schedule without training, e.g. `just plan sim-configs/fedbuff.toml 200`.
[group('experiments')]
plan config horizon="200": setup
    {{fedsim}} plan {{config}} --horizon {{horizon}}

# Centralised training, the upper bound for federated runs (e.g. `just central 10`).
[group('experiments')]
central epochs="10" model="convnet": setup
    {{fedsim}} train-central --model {{model}} --epochs {{epochs}}

# Everything CI checks: formatting, clippy with warnings denied, all tests.
[group('checks')]
test: setup
    cargo fmt --check
    cargo clippy --release --all-targets --quiet -- -D warnings
    {{just_executable()}} test-only

# Run the tests alone (release build; they train real models).
[group('checks')]
test-only:
    if cargo nextest --version >/dev/null 2>&1; then cargo nextest run --release --no-fail-fast; else cargo test --release --no-fail-fast; fi

# Benchmarks: criterion suites, local-update throughput, and the quickstart at 1 and 2 workers.
[group('checks')]
bench: setup
    cargo bench --bench scheduler --bench local_update
    {{fedsim}} bench local-update --model convnet --repeats 10
    just bench-workers

# The quickstart with 1 and 2 workers: same final hash, and the wall-time ratio.
[group('checks')]
bench-workers: setup
    mkdir -p runs
    for w in 1 2; do {{fedsim}} run sim-configs/quickstart.toml --workers $w --out runs/bench-workers | tee runs/bench-workers-$w.log; done
    grep -h "final weights sha256" runs/bench-workers-1.log runs/bench-workers-2.log
    awk '/^wall/ { gsub("wall ", ""); print $1 }' runs/bench-workers-1.log runs/bench-workers-2.log | paste -sd' ' | awk '{ printf "speed-up with 2 workers: %.2fx\n", $1 / $2 }'
