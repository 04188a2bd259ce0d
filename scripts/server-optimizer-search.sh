#!/usr/bin/env bash
# The small search behind the server optimizers' and FedProx's settings for the comparison of
# issue 28 (item 6): seed 10, the default synchronous world (sim-configs/fedavg.toml and its
# variants) over 50 time units, and FedBuff (sim-configs/fedbuff.toml) over 15, each setting
# once, then a report of each part:
#   reports/search-sync     FedAvg; FedAdam eta 0.003-0.1; FedYogi eta 0.01-0.1;
#                           FedAvgM eta 0.1-1 (beta1 0.9); FedProx mu 0.01-1
#   reports/search-fedbuff  FedBuff; FedBuff with Adam, eta 0.00003-0.01
# About 25 minutes (sync) and 10 (fedbuff) on 2 cores. Usage: scripts/server-optimizer-search.sh [sync|fedbuff|report]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${FEDSIM:-target/release/fedsim}
out=runs/server-optimizer-search
pinned=(--set 'run.cpu_kernels="avx2"' --workers 2)

sync_runs() {
    local horizon=(--set stop.max_virtual_time=50.0 --out "$out/sync")
    "$bin" run sim-configs/fedavg.toml "${horizon[@]}" "${pinned[@]}"
    for lr in 0.003 0.01 0.03 0.1; do
        "$bin" run sim-configs/fedadam.toml --set algorithm.server_lr=$lr "${horizon[@]}" "${pinned[@]}"
    done
    for lr in 0.01 0.03 0.1; do
        "$bin" run sim-configs/fedyogi.toml --set algorithm.server_lr=$lr "${horizon[@]}" "${pinned[@]}"
    done
    for lr in 0.1 0.3 1.0; do
        "$bin" run sim-configs/fedavgm.toml --set algorithm.server_lr=$lr "${horizon[@]}" "${pinned[@]}"
    done
    for mu in 0.01 0.1 1.0; do
        "$bin" run sim-configs/fedprox.toml --set train.prox_mu=$mu "${horizon[@]}" "${pinned[@]}"
    done
}

fedbuff_runs() {
    local horizon=(--set stop.max_virtual_time=15.0 --out "$out/fedbuff")
    "$bin" run sim-configs/fedbuff.toml "${horizon[@]}" "${pinned[@]}"
    for lr in 0.00003 0.0001 0.0003 0.001 0.003 0.01; do
        "$bin" run sim-configs/fedbuff-adam.toml --set algorithm.server_lr=$lr "${horizon[@]}" "${pinned[@]}"
    done
}

reports() {
    "$bin" report "$out"/sync/*/ --out reports/search-sync
    "$bin" report "$out"/fedbuff/*/ --out reports/search-fedbuff
}

case "${1:-all}" in
    sync) sync_runs ;;
    fedbuff) fedbuff_runs ;;
    report) reports ;;
    all) sync_runs && fedbuff_runs && reports ;;
    *) echo "usage: $0 [sync|fedbuff|report|all]" >&2; exit 2 ;;
esac
