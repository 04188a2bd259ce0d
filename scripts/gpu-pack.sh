#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has python3 with torch 2.11.0 but
# no Rust: the release binary (stripped, gzipped) and the CIFAR-10 source tarball, in .gpu/
# (ignored by git; about 40 MB, within the device tool's 64 MiB). Then, from this machine:
#   device run --carry .gpu --command "bash scripts/gpu-check.sh"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet
mkdir -p .gpu
strip -o .gpu/fedsim target/release/fedsim
gzip -f .gpu/fedsim
cp -f ../shared/data/cifar10-jpeg.tar.gz .gpu/
ls -la .gpu
