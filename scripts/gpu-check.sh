#!/usr/bin/env bash
# The prepared GPU check (issue 10), one call on a GPU machine with only the carried .gpu/
# (scripts/gpu-pack.sh) or a built target/release/fedsim, and python3 with torch 2.11.0 for
# libtorch. Within about 8 minutes: `fedsim info`; the FedAvg round benchmark for ResNet-18 at
# cohort sizes 1, 10, 25, 50 and 100; the distillation benchmark (ngf 128, 8 teachers, one by
# one and stacked);
# fedbuff-resnet18 for 200 versions at 1 and 4 workers, whose hashes must agree; then one
# summary table. First, on the machine's CPU, the reproducible mode across machines (issue
# 12): the quickstart for 200 versions with the CPU kernels pinned to AVX2 must end at the hash
# the development machine (AMD EPYC, AVX-512) gave. Without CUDA it says so, runs a small CPU
# round instead, and exits 0.
# Logs go to $OUT (the device tool's folder) or /tmp/gpu-check.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
started=$(date +%s)

# libtorch: the wheel's own (the binary's rpath points at this machine's .venv otherwise).
torch_lib="$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || true)"
[ -d .venv/libtorch/lib ] && torch_lib="${torch_lib:-$(readlink -f .venv/libtorch/lib)}"
export LD_LIBRARY_PATH="${torch_lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [ -f .gpu/fedsim.gz ]; then
    gunzip -c .gpu/fedsim.gz > /tmp/fedsim && chmod +x /tmp/fedsim
    fedsim=/tmp/fedsim
else
    fedsim=target/release/fedsim
fi
[ -x "$fedsim" ] || { echo "gpu-check: no fedsim binary (run scripts/gpu-pack.sh here first)"; exit 1; }
source_tar=""
[ -f .gpu/cifar10-jpeg.tar.gz ] && source_tar="--from .gpu/cifar10-jpeg.tar.gz"
# shellcheck disable=SC2086
"$fedsim" data prepare $source_tar > "$out/prepare.log" 2>&1 || { cat "$out/prepare.log"; exit 1; }

"$fedsim" info | tee "$out/info.log"

# The reproducible mode on another machine's CPU: the hash of the development machine (an
# Intel Xeon with AVX-512).
expected_pinned=fbd03a2cd6140027d800a1bba8b5d0009f0d8c3ba9405f2075f01293acbcad52
"$fedsim" run sim-configs/quickstart.toml --set 'run.cpu_kernels="avx2"' --set run.device='"cpu"' \
    --set stop.max_versions=200 --workers 8 --out "$out/runs" > "$out/pinned-cpu.log" 2>&1
pinned=$(sed -n 's/^final weights sha256 //p' "$out/pinned-cpu.log")
pinned_same="no"; [ "$pinned" = "$expected_pinned" ] && pinned_same="yes"
echo "gpu-check: quickstart pinned to AVX2 on this CPU ($(grep -m1 '^CPU kernels' "$out/info.log" || echo '?')): ${pinned:-failed}; same as the development machine: $pinned_same"

if ! grep -q "^CUDA *available" "$out/info.log"; then
    echo "gpu-check: CUDA is absent here; no GPU figures. A small CPU round instead:"
    "$fedsim" bench round --model convnet --clients 8 --cohort 4 --rounds 1 --device cpu | tee "$out/cpu-round.log"
    exit 0
fi

rows=()
row() { rows+=("$(printf '| %-44s | %s |' "$1" "$2")"); }
row "quickstart pinned to AVX2, this CPU" "hash ${pinned:0:16}; same as the development machine: $pinned_same"
for cohort in 1 10 25 50 100; do
    # Cohorts of one are slow: 20 clients show their rate; the rest train full 100-client rounds.
    clients=100; [ "$cohort" = 1 ] && clients=20
    log="$out/round-resnet18-g$cohort.log"
    "$fedsim" bench round --model resnet18 --clients "$clients" --cohort "$cohort" --workers 1 --rounds 1 --device cuda > "$log" 2>&1
    mean=$(grep '^mean' "$log")
    per_update=$(sed -n 's/.* \([0-9.]*\) ms per client update.*/\1/p' <<<"$mean")
    samples=$(sed -n 's/.*updates\/s, \([0-9]*\) samples\/s.*/\1/p' <<<"$mean")
    memory=$(grep -o '[0-9]* MiB per client in flight' "$log" | tail -1)
    round_s=$(awk -v ms="${per_update:-nan}" 'BEGIN { printf "%.2f", ms * 100 / 1000 }')
    row "round ResNet-18, cohort $cohort (100 clients)" "${round_s} s per round, ${samples:-?} samples/s, ${memory:-memory ?}"
    [ -n "$mean" ] || tail -5 "$log"
done

for stacked in false true; do
    log="$out/distill-stacked-$stacked.log"
    "$fedsim" bench distill --model resnet18 --ngf 128 --teachers 8 --repeats 3 --stacked "$stacked" --device cuda > "$log" 2>&1
    how="one by one"; [ "$stacked" = true ] && how="stacked"
    row "distillation ResNet-18, ngf 128, 8 teachers $how" "$(grep -o 'mean [0-9.]* ms per arrival' "$log" || tail -1 "$log")"
done

hashes=()
for workers in 1 4; do
    log="$out/fedbuff-w$workers.log"
    "$fedsim" run sim-configs/fedbuff-resnet18.toml --workers "$workers" --set stop.max_versions=200 --out "$out/runs" > "$log" 2>&1
    hash=$(sed -n 's/^final weights sha256 //p' "$log")
    hashes+=("${hash:-none}")
    cohorts=$(grep -o 'cohorts of [0-9]* task.*at once' "$log" | head -1)
    speed=$(grep -o '[0-9.]* client updates/s' "$log" | tail -1)
    row "fedbuff-resnet18, 200 versions, $workers workers" "${speed:-failed}; ${cohorts}; hash ${hash:0:16}"
    [ -n "$hash" ] || tail -5 "$log"
done
same="no"; [ "${hashes[0]}" = "${hashes[1]}" ] && [ "${hashes[0]}" != none ] && same="yes"
row "identical hashes at 1 and 4 workers" "$same"
row "gpu-check wall time" "$(( $(date +%s) - started )) s"

{
    echo "| check | result |"
    echo "| --- | --- |"
    printf '%s\n' "${rows[@]}"
} | tee "$out/summary.md"
