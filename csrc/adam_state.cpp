// The state of a libtorch Adam optimizer (step count and both moment estimates of every
// parameter), which tch does not expose: a checkpoint saves it and a resume puts it back, so
// that FedRevive's persistent generator continues exactly. The optimizer is created through
// tch's own C API (ato_adam), so its steps are libtorch's.
#include <torch/optim/adam.h>

#include <exception>

namespace {

// Parameter `index`, counting across the parameter groups in order; nullptr past the end.
at::Tensor* parameter(torch::optim::Optimizer* optimizer, int64_t index) {
  for (auto& group : optimizer->param_groups()) {
    auto& params = group.params();
    if (index < static_cast<int64_t>(params.size())) return &params[index];
    index -= static_cast<int64_t>(params.size());
  }
  return nullptr;
}

}  // namespace

// The number of parameters the optimizer holds.
extern "C" int64_t fedsim_adam_parameters(torch::optim::Optimizer* optimizer) {
  int64_t count = 0;
  for (auto& group : optimizer->param_groups()) count += group.params().size();
  return count;
}

// Parameter `index`'s state: 1 with step and copies of the moments (the caller owns them),
// 0 when it has none yet (never stepped), -1 on error.
extern "C" int fedsim_adam_get(torch::optim::Optimizer* optimizer, int64_t index, int64_t* step,
                               at::Tensor** exp_avg, at::Tensor** exp_avg_sq) {
  try {
    at::Tensor* p = parameter(optimizer, index);
    if (p == nullptr) return -1;
    auto found = optimizer->state().find(p->unsafeGetTensorImpl());
    if (found == optimizer->state().end()) return 0;
    auto& state = static_cast<torch::optim::AdamParamState&>(*found->second);
    *step = state.step();
    *exp_avg = new at::Tensor(state.exp_avg().clone());
    *exp_avg_sq = new at::Tensor(state.exp_avg_sq().clone());
    return 1;
  } catch (const std::exception&) {
    return -1;
  }
}

// Sets parameter `index`'s state (copies of the given moments); 0 on success, -1 on error
// (no such parameter, or moments of another shape).
extern "C" int fedsim_adam_set(torch::optim::Optimizer* optimizer, int64_t index, int64_t step,
                               const at::Tensor* exp_avg, const at::Tensor* exp_avg_sq) {
  try {
    at::Tensor* p = parameter(optimizer, index);
    if (p == nullptr || exp_avg->sizes() != p->sizes() || exp_avg_sq->sizes() != p->sizes()) return -1;
    auto state = std::make_unique<torch::optim::AdamParamState>();
    state->step(step);
    state->exp_avg(exp_avg->to(p->options()).clone());
    state->exp_avg_sq(exp_avg_sq->to(p->options()).clone());
    optimizer->state()[p->unsafeGetTensorImpl()] = std::move(state);
    return 0;
  } catch (const std::exception&) {
    return -1;
  }
}
