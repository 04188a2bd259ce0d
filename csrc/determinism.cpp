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

// TF32 on CUDA: libtorch's default computes float32 convolutions with TF32 tensor cores (a
// 10-bit mantissa). fedsim's float32 is IEEE float32 unless asked otherwise; `on` chooses TF32
// for convolutions and matrix products alike.
extern "C" void fedsim_set_tf32(int on) {
  const auto precision = on != 0 ? at::Float32Precision::TF32 : at::Float32Precision::IEEE;
  at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV, precision);
  at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, precision);
}

extern "C" int fedsim_tf32_convolutions() {
  return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV) ? 1 : 0;
}
