// A correctly rounded square root for libtorch's CPU tensors, for the reproducible mode.
//
// libtorch computes a CPU sqrt with MKL's vector math (VML). In MKL's COMPATIBLE branch, the
// one the reproducible mode pins, VML's sqrt is an approximation: on an Intel Xeon 16% of
// float square roots were one ulp off, and an emulated AVX2 CPU rounded other ones off, so
// every Adam step (whose denominator is a sqrt) differed between the two machines. The CPU's
// square-root instruction is exact (IEEE 754) on every x86-64 CPU, so this kernel, registered
// for libtorch's CPU dispatch key, makes sqrt (and with it Adam) round alike everywhere.
#include <ATen/ATen.h>
#include <ATen/native/Resize.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <cstdio>

namespace {

template <typename T>
at::Tensor exact_sqrt_of(const at::Tensor& contiguous) {
  at::Tensor result = at::empty(contiguous.sizes(), contiguous.options());
  const T* in = contiguous.const_data_ptr<T>();
  T* out = result.mutable_data_ptr<T>();
  const int64_t n = contiguous.numel();
  for (int64_t i = 0; i < n; ++i) {
    out[i] = std::sqrt(in[i]);
  }
  return result;
}

// sqrt(self) in libtorch's result type: floats and doubles directly; half precision through
// float and integers through the default float type (a sqrt rounded twice, from at least
// 2p + 2 bits to p bits, is still correctly rounded).
at::Tensor exact_sqrt(const at::Tensor& self) {
  TORCH_CHECK(!self.is_complex(), "fedsim's CPU sqrt (reproducible mode) takes real tensors, not ",
              self.scalar_type());
  switch (self.scalar_type()) {
    case at::kFloat:
      return exact_sqrt_of<float>(self.contiguous());
    case at::kDouble:
      return exact_sqrt_of<double>(self.contiguous());
    case at::kHalf:
    case at::kBFloat16:
      return exact_sqrt_of<float>(self.to(at::kFloat).contiguous()).to(self.scalar_type());
    default:
      return exact_sqrt(self.to(c10::typeMetaToScalarType(c10::get_default_dtype())));
  }
}

at::Tensor sqrt_functional(const at::Tensor& self) { return exact_sqrt(self); }

at::Tensor& sqrt_in_place(at::Tensor& self) {
  TORCH_CHECK(at::isFloatingType(self.scalar_type()),
              "sqrt_ writes a float result into a tensor of type ", self.scalar_type());
  self.copy_(exact_sqrt(self));
  return self;
}

at::Tensor& sqrt_into(const at::Tensor& self, at::Tensor& out) {
  at::Tensor result = exact_sqrt(self);
  at::native::resize_output(out, result.sizes());
  out.copy_(result);
  return out;
}

// Registering a kernel where libtorch has one prints a warning; this one is meant.
struct Quiet : c10::WarningHandler {
  void process(const c10::Warning&) override {}
};

int register_exact_sqrt() {
  try {
    Quiet quiet;
    c10::WarningUtils::WarningHandlerGuard guard(&quiet);
    // Kept for the rest of the process: dropping it would unregister the kernels.
    auto* library = new torch::Library(torch::Library::IMPL, "aten", c10::DispatchKey::CPU,
                                       __FILE__, __LINE__);
    library->impl("sqrt", TORCH_FN(sqrt_functional));
    library->impl("sqrt_", TORCH_FN(sqrt_in_place));
    library->impl("sqrt.out", TORCH_FN(sqrt_into));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fedsim: could not register the exact CPU sqrt: %s\n", e.what());
    return 1;
  }
}

}  // namespace

// Replaces libtorch's CPU sqrt kernels for the rest of the process (once, whoever calls first).
// Returns 0, or 1 if libtorch refused (the reason goes to stderr).
extern "C" int fedsim_use_exact_sqrt() {
  static const int status = register_exact_sqrt();
  return status;
}
