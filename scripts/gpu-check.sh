#!/usr/bin/env bash
# The prepared GPU check (issue 26): one call on a GPU machine that has python3 with torch
# 2.11.0 and no Rust, with the carried .gpu/ (scripts/gpu-pack.sh) or a built
# target/release/fedsim.
#
#   scripts/gpu-check.sh check [BUDGET_S]   correctness, speed and the pinned-CPU hash
#   scripts/gpu-check.sh rows [BUDGET_S]    the published table's rows (FedAvg, FedBuff,
#                                           FedRevive; ResNet-18, seed 10, 200 time units)
#
# Every stage runs under its own time limit (and the whole under BUDGET_S, default 420 s:
# a stage gets what is left when its own limit would overrun it) and the script goes on after
# a failure, whose log tail it prints; "failed", "timed out" or "skipped (no time)" then stands
# in the table. GPU_CHECK_ONLY="NAME ..." runs only the stages named (a rerun of failed ones;
# names as in logs/). A run stopped by its limit gets SIGINT first, so it writes its tables and
# checkpoint as after Ctrl-C (a minute later, KILL). Results: $OUT (the device tool's folder) or /tmp/gpu-check gets
# summary-MODE.md and gpu-check-MODE.tar.gz (logs, and run directories without weights or
# checkpoints). Without CUDA it says so, runs a small CPU round instead, and exits 0.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode="${1:-check}"
budget="${2:-420}"
case "$mode" in check | rows) ;; *) echo "gpu-check: unknown mode '$mode' (check or rows)"; exit 2 ;; esac
out="${OUT:-/tmp/gpu-check}"
work=/tmp/gpu-check-work/$mode
rm -rf "$work" && mkdir -p "$out" "$work/logs" "$work/runs"
started=$(date +%s)

# libtorch: the machine's torch wheel (the binary's rpath names the build machine's .venv).
torch_lib="$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || true)"
[ -z "$torch_lib" ] && [ -d .venv/libtorch/lib ] && torch_lib="$(readlink -f .venv/libtorch/lib)"
export LD_LIBRARY_PATH="${torch_lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [ -f .gpu/fedsim.gz ]; then
    gunzip -c .gpu/fedsim.gz > /tmp/fedsim && chmod +x /tmp/fedsim
    fedsim=/tmp/fedsim
else
    fedsim=target/release/fedsim
fi
[ -x "$fedsim" ] || { echo "gpu-check: no fedsim binary (run scripts/gpu-pack.sh here first)"; exit 1; }
# Shared libraries: libtorch from the wheel; fontconfig and freetype (report figures) from the
# system, else the copies gpu-pack.sh carries in .gpu/lib.
# Only the missing ones are added (the machine's own stay first), and then what they load.
for round in 1 2 3; do
    missing=$(ldd "$fedsim" | awk '/not found/ { print $1 }')
    [ -n "$missing" ] && [ -d .gpu/lib ] || break
    mkdir -p /tmp/gpu-check-lib
    for lib in $missing; do [ -f ".gpu/lib/$lib" ] && cp ".gpu/lib/$lib" /tmp/gpu-check-lib/; done
    echo "gpu-check: carried in: $(echo $missing)"
    case ":$LD_LIBRARY_PATH:" in *:/tmp/gpu-check-lib:*) ;; *) export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/tmp/gpu-check-lib" ;; esac
done
ldd "$fedsim" > "$work/logs/ldd.log" 2>&1
if grep 'not found' "$work/logs/ldd.log"; then echo "gpu-check: the binary lacks the libraries above"; fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$work/logs/nvidia-smi.log" 2>&1
cat "$work/logs/nvidia-smi.log"

source_tar=""
[ -f .gpu/cifar10-jpeg.tar.gz ] && source_tar="--from .gpu/cifar10-jpeg.tar.gz"
# shellcheck disable=SC2086
"$fedsim" data prepare $source_tar > "$work/logs/prepare.log" 2>&1 || { cat "$work/logs/prepare.log"; exit 1; }
"$fedsim" info | tee "$work/logs/info.log"
cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/.*: //')

# GPU utilisation each second (SM and memory %, in logs/dmon.log): launch-bound or busy.
nvidia-smi dmon -s u -d 1 -o T > "$work/logs/dmon.log" 2>&1 &
dmon=$!

rows=()
# A benchmark variant's arithmetic ("100-tf32", "true-bf16"; none: IEEE float32) as options
# and as a label.
arithmetic_of() { case "$1" in *-tf32) echo "--tf32" ;; *-bf16) echo "--precision bf16" ;; esac; }
label_of() { case "$1" in *-tf32) echo ", TF32" ;; *-bf16) echo ", bf16" ;; esac; }
# A row for a stage that GPU_CHECK_ONLY left out is not written.
row() { [ "$2" = "not selected" ] || rows+=("$(printf '| %-46s | %-9s | %5s | %s |' "$1" "$2" "$3" "$4")"); }
# "yes"/"no" for two hashes, or "not selected" when either stage did not run.
agree() { if [ -z "$1" ] || [ -z "$2" ]; then [ -n "${GPU_CHECK_ONLY:-}" ] && echo "not selected" || echo "no"; elif [ "$1" = "$2" ]; then echo yes; else echo no; fi; }
# stage NAME LIMIT_S COMMAND...: runs COMMAND into logs/NAME.log under min(LIMIT_S, what is
# left of the budget); sets $status and $seconds, and $log for the caller's result line.
stage() {
    local name="$1" limit="$2"
    shift 2
    log="$work/logs/$name.log"
    if [ -n "${GPU_CHECK_ONLY:-}" ] && [[ " $GPU_CHECK_ONLY " != *" $name "* ]]; then
        status="not selected"; seconds=0; : > "$log"
        return 1
    fi
    local left=$((budget - ($(date +%s) - started)))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 15 ]; then
        status="skipped"; seconds=0; echo "no time left" > "$log"
        echo "gpu-check: $name skipped (no time left)"
        return 1
    fi
    echo "gpu-check: $name (at most $limit s) from $(date +%T)"
    local t0 rc
    t0=$(date +%s)
    timeout -s INT -k 60 "$limit" "$@" > "$log" 2>&1
    rc=$?
    seconds=$(($(date +%s) - t0))
    case $rc in
        0) status="ok" ;;
        124 | 137) status="timed out" ;;
        *) status="failed ($rc)" ;;
    esac
    [ $rc -eq 0 ] || { echo "gpu-check: $name $status after $seconds s; its log ends:"; tail -8 "$log"; }
    [ $rc -eq 0 ]
}
hash_of() { sed -n 's/^final weights sha256 //p' "$1"; }
line_of() { grep -o "$2" "$1" | tail -1; }
cohorts_of() { grep -m1 '^  cohorts of' "$1" | sed 's/^ *//; s/ (run.cohort_size = [^)]*)//'; }
run_dir_of() { sed -n 's/^results in //p' "$1" | tail -1; }

if ! grep -q "^CUDA *available" "$work/logs/info.log"; then
    echo "gpu-check: CUDA is absent here; no GPU figures. A small CPU round instead:"
    "$fedsim" bench round --model convnet --clients 8 --cohort 4 --rounds 1 --device cpu | tee "$out/cpu-round.log"
    exit 0
fi

if [ "$mode" = check ]; then
    # Correctness: one hash for 1 and 4 workers, at cohort sizes 1 and 8 (the ConvNet quickstart).
    declare -A hashes
    for cohort in 1 8; do
        for workers in 1 4; do
            name="quickstart-g$cohort-w$workers"
            stage "$name" 90 "$fedsim" run sim-configs/quickstart.toml --workers "$workers" \
                --set run.device='"cuda"' --set run.cohort_size="$cohort" --set stop.max_versions=200 \
                --out "$work/runs/$name"
            hashes[$name]=$(hash_of "$log")
            row "quickstart, 200 versions, cohort $cohort, $workers workers" "$status" "$seconds" \
                "hash ${hashes[$name]:0:16}; $(line_of "$log" 'final accuracy [0-9.]*'); $(line_of "$log" '[0-9.]* client updates/s')"
        done
        row "  one hash for 1 and 4 workers, cohort $cohort" \
            "$(agree "${hashes[quickstart-g$cohort-w1]}" "${hashes[quickstart-g$cohort-w4]}")" "" ""
    done
    # Cohort 8 against cohort 1 after 200 versions (informative: rounding grows over a run).
    a=$(run_dir_of "$work/logs/quickstart-g1-w1.log"); b=$(run_dir_of "$work/logs/quickstart-g8-w1.log")
    if [ -f "$a/final.safetensors" ] && [ -f "$b/final.safetensors" ]; then
        diff=$(python3 -c '
import sys, numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
x = np.concatenate([a[k].ravel() for k in sorted(a)]); y = np.concatenate([b[k].ravel() for k in sorted(a)])
print(f"{np.abs(x - y).max() / np.abs(x).max():.2e}")' "$a/final.safetensors" "$b/final.safetensors" 2>&1 | tail -1)
        row "  final weights, cohort 8 against 1" "" "" "max difference $diff of the largest weight"
    fi
    # The cohort contract on the device: each client's delta stacked against alone.
    for model in convnet resnet18; do
        stage "cohort-$model" 60 "$fedsim" bench cohort --model "$model" --clients 8 --device cuda
        row "cohort of 8 against alone, $model" "$status" "$seconds" "$(line_of "$log" 'max relative delta difference [^;]*')"
    done
    # FedRevive past both gates (synthesis from version 5, KD from version 11, L_adv from the
    # 20th synthesis call), distilling on the device with ResNet-18 and ngf 128.
    stage fedrevive-resnet18 150 "$fedsim" run sim-configs/fedrevive-resnet18.toml --set stop.max_versions=60 \
        --set kd.freeze_rounds=5 --set kd.warmup_rounds=10 --set dfkd.adv_after=20 --out "$work/runs/fedrevive"
    row "fedrevive-resnet18, 60 versions, gates 5/10/20" "$status" "$seconds" \
        "$(line_of "$log" 'final accuracy [0-9.]*'); $(line_of "$log" 'server [0-9.]* s'); $(cohorts_of "$log")"
    # Speed: the FedAvg round (target: 100 ResNet-18 clients in at most 0.5 s).
    # IEEE float32 (what runs use), and at cohort 100 TF32 and bf16 autocast (run.precision)
    # too; a training image costs about 3.3 GFLOP (ResNet-18 on 32x32: 0.56 GMAC forward,
    # backward twice that).
    for variant in 1 10 25 50 100 100-tf32 100-bf16; do
        cohort=${variant%-*}; arithmetic=$(arithmetic_of "$variant")
        clients=100; [ "$cohort" = 1 ] && clients=20
        # shellcheck disable=SC2086
        stage "round-resnet18-g$variant" 60 "$fedsim" bench round --model resnet18 --clients "$clients" \
            --cohort "$cohort" --workers 1 --rounds 1 --device cuda $arithmetic
        mean=$(grep '^mean' "$log")
        per_update=$(sed -n 's/.* \([0-9.]*\) ms per client update.*/\1/p' <<<"$mean")
        round_s=$(awk -v ms="${per_update:-nan}" 'BEGIN { printf "%.3f", ms * 100 / 1000 }')
        samples=$(sed -n 's/.* \([0-9]*\) samples\/s.*/\1/p' <<<"$mean")
        tflops=$(awk -v n="${samples:-0}" 'BEGIN { printf "%.0f", n * 3.34e9 / 1e12 }')
        row "round ResNet-18, cohort $cohort$(label_of "$variant")" "$status" "$seconds" \
            "${round_s} s per 100 clients; ${samples:-?} samples/s (about $tflops TFLOP/s); $(line_of "$log" '[0-9]* MiB per client in flight')"
    done
    # FedRevive's server step (target: at most 150 ms per arrival).
    for variant in false true true-tf32 true-bf16; do
        stacked=${variant%-*}; arithmetic=$(arithmetic_of "$variant")
        how="one by one"; [ "$stacked" = true ] && how="stacked"
        # shellcheck disable=SC2086
        stage "distill-stacked-$variant" 60 "$fedsim" bench distill --model resnet18 --ngf 128 --teachers 8 \
            --repeats 3 --stacked "$stacked" --device cuda $arithmetic
        row "distillation, ngf 128, 8 teachers $how$(label_of "$variant")" "$status" "$seconds" "$(line_of "$log" 'mean [0-9.]* ms per arrival')"
    done
    # FedBuff with ResNet-18 (target: 150 client updates/s), and one hash for 1 and 4 workers.
    for workers in 1 4; do
        stage "fedbuff-resnet18-w$workers" 90 "$fedsim" run sim-configs/fedbuff-resnet18.toml --workers "$workers" \
            --set stop.max_versions=200 --out "$work/runs/fedbuff-w$workers"
        hashes[fedbuff-w$workers]=$(hash_of "$log")
        row "fedbuff-resnet18, 200 versions, $workers workers" "$status" "$seconds" \
            "$(line_of "$log" '[0-9.]* client updates/s'); $(cohorts_of "$log"); $(line_of "$log" 'peak [0-9.]* GiB'); hash ${hashes[fedbuff-w$workers]:0:16}"
    done
    row "  one hash for 1 and 4 workers, FedBuff ResNet-18" "$(agree "${hashes[fedbuff-w1]}" "${hashes[fedbuff-w4]}")" "" ""
    # The reproducible mode on this machine's CPU: the development machine's hash (an Intel
    # Xeon with AVX-512) for the quickstart's first 200 versions.
    expected_pinned=fbd03a2cd6140027d800a1bba8b5d0009f0d8c3ba9405f2075f01293acbcad52
    stage pinned-cpu 150 "$fedsim" run sim-configs/quickstart.toml --set 'run.cpu_kernels="avx2"' \
        --set run.device='"cpu"' --set stop.max_versions=200 --workers 8 --out "$work/runs/pinned"
    pinned=$(hash_of "$log")
    same="no"; [ "$pinned" = "$expected_pinned" ] && same="yes"
    row "quickstart pinned to AVX2 on this CPU" "$status" "$seconds" \
        "hash ${pinned:0:16}; same as the development machine: $same; $cpu_model; $(grep -m1 '^CPU kernels' "$work/logs/info.log" | sed 's/  */ /g')"
else
    # The published rows (FEDREVIVE.md section 6), seed 10, 200 time units; FedRevive for what
    # is left (stopped by SIGINT, it records how far it came).
    stage fedavg-resnet18 400 "$fedsim" run sim-configs/fedavg-resnet18.toml --out "$work/runs/rows"
    row "FedAvg ResNet-18, 200 time units" "$status" "$seconds" "$(grep -m1 '^stopped' "$log")"
    stage fedbuff-resnet18 300 "$fedsim" run sim-configs/fedbuff-resnet18.toml --out "$work/runs/rows"
    row "FedBuff ResNet-18, 200 time units" "$status" "$seconds" "$(grep -m1 '^stopped' "$log")"
    stage fedrevive-resnet18 600 "$fedsim" run sim-configs/fedrevive-resnet18.toml --out "$work/runs/rows"
    row "FedRevive ResNet-18, 200 time units (or less)" "$status" "$seconds" "$(grep -m1 '^stopped' "$log")"
fi
kill "$dmon" 2>/dev/null
row "gpu-check $mode, wall time" "" "$(($(date +%s) - started))" ""

{
    echo "| check | status | s | result |"
    echo "| --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
} | tee "$out/summary-$mode.md"
cp "$out/summary-$mode.md" "$work/"
tar -C "$work" --exclude='*.safetensors' --exclude='*.partial' --exclude='.*.partial' -czf "$out/gpu-check-$mode.tar.gz" . && ls -la "$out"
