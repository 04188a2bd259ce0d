#!/usr/bin/env bash
# Installs what fedsim needs on a fresh machine and is quick when it is all there:
# libtorch (torch==2.11.0 from PyPI in .venv), the Fashion-MNIST Debian package, a font for
# report figures, the release build, and the prepared CIFAR-10 in data/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
torch_version=2.11.0

# libtorch: PyTorch's wheel carries it (CUDA libraries included, so a GPU machine can use it).
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
    echo "setup: installing torch==$torch_version into .venv (about 4.6 GB, a few minutes)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==$torch_version"
fi
torch_dir="$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
# .cargo/config.toml points LIBTORCH here.
[ "$(readlink .venv/libtorch 2>/dev/null)" = "$torch_dir" ] || ln -sfn "$torch_dir" .venv/libtorch

# Fashion-MNIST, the second dataset, comes from Debian.
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    echo "setup: installing Debian's dataset-fashion-mnist"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null; }
fi

# Report figures draw text with freetype in a fontconfig sans-serif font: the build needs their
# headers, the figures a font. Images of this kind have all three; install what is missing.
packages=()
pkg-config --exists fontconfig freetype2 2>/dev/null || packages+=(pkgconf libfontconfig1-dev libfreetype-dev)
[ -n "$(fc-match -f '%{file}' sans-serif 2>/dev/null)" ] || packages+=(fontconfig fonts-dejavu-core)
if [ ${#packages[@]} -gt 0 ]; then
    echo "setup: installing ${packages[*]} (text in report figures)"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${packages[@]}" >/dev/null; }
fi

cargo build --release --quiet
target/release/fedsim data prepare
