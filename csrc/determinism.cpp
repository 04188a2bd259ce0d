// fedsim's one piece of C++: libtorch's determinism switches, which tch does not expose.
// On GPU, cuDNN may otherwise pick non-deterministic convolution algorithms (measured: the same
// training task gave different deltas on an H100).
#include <ATen/Context.h>

extern "C" void fedsim_set_deterministic(int on) {
  at::globalContext().setDeterministicAlgorithms(on != 0, /*warn_only=*/false);
  at::globalContext().setDeterministicCuDNN(on != 0);
  at::globalContext().setBenchmarkCuDNN(false);
}

extern "C" int fedsim_deterministic_algorithms() {
  return at::globalContext().deterministicAlgorithms() ? 1 : 0;
}
