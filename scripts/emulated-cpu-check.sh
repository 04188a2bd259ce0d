#!/usr/bin/env bash
# The reproducible mode (run.cpu_kernels = "avx2") on CPUs this machine does not have: QEMU's
# user-mode emulator presents an Intel Haswell and an AMD EPYC-Rome (both AVX2, no AVX-512) to
# the unchanged binary. Prints, for this CPU and each emulated one, one local update's delta
# hash and the per-operation hashes of libtorch's MKL-backed kernels in MKL's COMPATIBLE branch.
# Equal hashes across a row: that piece rounds alike. About 5 minutes per emulated CPU.
# Needs qemu-user (apt-get install -y qemu-user) and a release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v qemu-x86_64 > /dev/null || { echo "emulated-cpu-check: install qemu-user (apt-get install -y qemu-user)"; exit 1; }
fedsim=target/release/fedsim
[ -x "$fedsim" ] || { echo "emulated-cpu-check: build first (cargo build --release)"; exit 1; }
python=$(readlink -f .venv/bin/python3)
export PYTHONPATH
PYTHONPATH=$(echo .venv/lib/python3*/site-packages)
# The pins `fedsim run` (src/commands/run.rs) sets by restarting; set here, since a restart would leave the emulator.
export ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2
cpus=(host Haswell-noTSX EPYC-Rome-v2)
out=$(mktemp -d)
for cpu in "${cpus[@]}"; do
    run=(); [ "$cpu" = host ] || run=(qemu-x86_64 -cpu "$cpu")
    "${run[@]}" "$fedsim" bench local-update --repeats 1 --device cpu 2> /dev/null \
        | sed -n 's/.*delta \([0-9a-f]*\).*/local-update \1/p' | head -1 > "$out/$cpu"
    "${run[@]}" "$python" scripts/mkl-ops.py 2> /dev/null >> "$out/$cpu"
done
printf '%-22s' op; printf ' %-17s' "${cpus[@]}"; echo
paste "${cpus[@]/#/$out/}" | awk '{ line = sprintf("%-22s", $1); same = 1
    for (i = 2; i <= NF; i += 2) { line = line sprintf(" %-17s", $i); if ($i != $2) same = 0 }
    print line (same ? "" : "  differs") }'
