#!/usr/bin/env bash
# Installs what the `mpi` feature builds and runs with (issue 13): OpenMPI (mpirun and its
# headers) and libclang, which the MPI bindings use to read mpi.h. Quick when all is there.
set -euo pipefail
"$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" openmpi-bin libopenmpi-dev libclang-dev
