#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has python3 with torch 2.11.0 but
# no Rust: the release binary (stripped, gzipped), the CIFAR-10 source tarball, and in lib/ the
# binary's system libraries that a CUDA image may lack (fontconfig, freetype and what they
# load), in .gpu/ (ignored by git; about 40 MB, within the device tool's 64 MiB). Then, from
# this machine, with the device tool:
#   run --carry .gpu --command "bash scripts/gpu-check.sh check"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet
rm -rf .gpu && mkdir -p .gpu/lib
strip -o .gpu/fedsim target/release/fedsim
gzip -f .gpu/fedsim
cp -f ../shared/data/cifar10-jpeg.tar.gz .gpu/
# Everything the binary loads from the system except glibc's own and libtorch's.
ldd target/release/fedsim | awk '$3 ~ /^\// { print $3 }' \
    | grep -v -E '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*)\.so|/\.venv/|/torch/|/nvidia/' \
    | while read -r lib; do cp -L "$lib" .gpu/lib/; done
ls -la .gpu .gpu/lib
du -sh .gpu
