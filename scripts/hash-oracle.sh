#!/usr/bin/env bash
# The refactor oracle (issue 27): runs a fixed set of short simulations in the reproducible mode
# (and the quickstart natively) with a given fedsim binary and prints one "name hash" line each.
# A change that must not change results prints the same lines before and after:
#   scripts/hash-oracle.sh /path/to/old/fedsim > before.txt
#   scripts/hash-oracle.sh target/release/fedsim > after.txt && diff before.txt after.txt
# The reproducible rows with a hash in reports/ say so (sweep-workers, sweep-cohorts); about
# 15 minutes on 2 cores.
set -euo pipefail
bin="${1:?usage: scripts/hash-oracle.sh FEDSIM_BINARY}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
pin=(--set 'run.cpu_kernels="avx2"')
one() { # name, config, args...
    local name="$1" config="$2"; shift 2
    local hash
    hash=$("$bin" run "$config" --out "$out" "$@" 2>/dev/null | awk '/final weights sha256/ {print $4}') || true
    echo "$name ${hash:-FAILED}"
}
one "quickstart-1000-avx2 (reports/sweep-workers: b879fcd98b4a1a29)" sim-configs/quickstart.toml "${pin[@]}"
one "quickstart-200-native" sim-configs/quickstart.toml --set stop.max_versions=200
one "fedavg-seed10-cohort1 (reports/sweep-cohorts: 5332ddc30aee4d38)" sim-configs/fedavg.toml "${pin[@]}" --set stop.max_virtual_time=15.0 --set run.cohort_size=1
one "fedavg-seed10-cohort8 (reports/sweep-cohorts: aeb0332e0a4d4b1e)" sim-configs/fedavg.toml "${pin[@]}" --set stop.max_virtual_time=15.0 --set run.cohort_size=8
one "fedbuff-seed10-cohort8-60v" sim-configs/fedbuff.toml "${pin[@]}" --set stop.max_versions=60 --set run.cohort_size=8
one "afl_dw-60v" sim-configs/afl_dw.toml "${pin[@]}" --set stop.max_versions=60
one "fedrevive-40v" sim-configs/fedrevive.toml "${pin[@]}" --set stop.max_versions=40 --set kd.freeze_rounds=5 --set kd.warmup_rounds=10 --set dfkd.adv_after=15
one "dd_fedrevive-40v" sim-configs/dd_fedrevive.toml "${pin[@]}" --set stop.max_versions=40
