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

# The default experiment: machine facts, then a short centralised ConvNet run on CIFAR-10.
[group('experiments')]
demo: setup
    {{fedsim}} info
    {{fedsim}} train-central --model convnet --epochs 2

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

# Benchmarks: the criterion suites and the local-update throughput command.
[group('checks')]
bench: setup
    cargo bench --bench local_update
    {{fedsim}} bench local-update --model convnet --repeats 10
