// fedsim's one piece of C++: libtorch's determinism switches, which tch does not expose.
// On GPU, cuDNN may otherwise pick non-deterministic convolution algorithms (measured: the same
// training task gave different deltas on an H100).
#include <ATen/Context.h>

extern "C" void fedsim_set_deterministic(int on) {
  at::globalContext().setDeterministicAlgorithms(on != 0, /*warn_only=*/false);
  at::globalContext().setDeterministicCuDNN(on != 0);
  at::globalContext().setBenchmarkCuDNN(false);
}

// oneDNN (mkldnn) convolutions: their blocking follows the CPU's cache sizes, so two CPUs with
// the same instruction set can round differently. Off, libtorch convolves with its own
// kernels (im2col and a BLAS matrix product).
extern "C" void fedsim_set_mkldnn(int on) {
  at::globalContext().setUserEnabledMkldnn(on != 0);
}

extern "C" int fedsim_mkldnn_enabled() {
  return at::globalContext().userEnabledMkldnn() ? 1 : 0;
}

extern "C" int fedsim_deterministic_algorithms() {
  return at::globalContext().deterministicAlgorithms() ? 1 : 0;
}

// The CPU kernels libtorch dispatches to ("DEFAULT", "AVX2", "AVX512"...), after
// ATEN_CPU_CAPABILITY; written into `out` (at most `len` bytes, NUL-terminated).
#include <ATen/Version.h>
#include <cstring>

extern "C" void fedsim_cpu_capability(char* out, int len) {
  try {
    const std::string capability = at::get_cpu_capability();
    std::strncpy(out, capability.c_str(), static_cast<size_t>(len) - 1);
    out[len - 1] = '\0';
  } catch (...) {
    std::strncpy(out, "unknown", static_cast<size_t>(len) - 1);
    out[len - 1] = '\0';
  }
}
