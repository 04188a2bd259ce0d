#!/usr/bin/env bash
# Installs what the `mpi` feature builds and runs with (issue 13): OpenMPI (mpirun and its
# headers) and libclang, which the MPI bindings use to read mpi.h. Quick when all is there.
set -euo pipefail
packages=(openmpi-bin libopenmpi-dev libclang-dev)
if ! dpkg -s "${packages[@]}" >/dev/null 2>&1; then
    echo "setup-mpi: installing ${packages[*]}"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${packages[@]}" >/dev/null; }
fi
