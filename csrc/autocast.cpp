// bf16 autocast for fedsim's `run.precision = "bf16"`: tch exposes only CUDA's autocast switch,
// and CPU autocast needs its own device type and dtype. Autocast state is per thread, so every
// training job enters and leaves it on the thread that runs the forward pass.
#include <ATen/autocast_mode.h>

extern "C" {

// Turns bf16 autocast on for CPU (cuda == 0) or CUDA; returns whether it was on before.
int fedsim_autocast_enter(int cuda) {
  try {
    const auto device = cuda ? at::kCUDA : at::kCPU;
    const bool before = at::autocast::is_autocast_enabled(device);
    at::autocast::set_autocast_dtype(device, at::kBFloat16);
    at::autocast::set_autocast_enabled(device, true);
    at::autocast::increment_nesting();
    return before ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

// Leaves the autocast region `fedsim_autocast_enter` opened: restores the earlier switch and
// drops the cast weights cached in it (they would be stale after the next optimizer step).
void fedsim_autocast_exit(int cuda, int before) {
  try {
    const auto device = cuda ? at::kCUDA : at::kCPU;
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(device, before == 1);
  } catch (...) {
  }
}

}
