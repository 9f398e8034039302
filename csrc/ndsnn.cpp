// Operator schemas of the ndsnn library. Device kernels live in cpu/ and cuda/; autograd and fake (meta)
// kernels are registered from Python (ndsnn/ops), so the same ops work eagerly and under torch.compile.
#include <string>

#include <torch/library.h>
#include <torch/version.h>

namespace ndsnn {

// What this binary was compiled with, for `ndsnn info` and the import-time version check.
std::string build_info() {
  std::string info = "torch=" + std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) +
                     "." + std::to_string(TORCH_VERSION_PATCH);
#ifdef NDSNN_WITH_CUDA
  info += ";cuda=1";
#else
  info += ";cuda=0";
#endif
#ifdef NDSNN_CUDA_ARCHS
  info += ";cuda_archs=" NDSNN_CUDA_ARCHS;
#endif
  return info;
}

}  // namespace ndsnn

TORCH_LIBRARY(ndsnn, m) {
  m.def("build_info() -> str", &ndsnn::build_info);
  // Fused multi-step LIF. x: [T, N, ...]. tau / v_threshold: a number (the *_value argument) or a tensor with
  // one element or one per channel (dim 2 of x). Returns the spikes and the membrane potential before reset,
  // h, stored in saved_dtype (default: x's dtype) and rounded so that (h >= v_threshold) equals the spikes.
  // detach_reset, surrogate and alpha are backward settings, carried here so autograd can read them.
  m.def(
      "lif_forward(Tensor x, Tensor? tau, Tensor? v_threshold, float tau_value, float v_threshold_value, "
      "float? v_reset, bool decay_input, bool detach_reset, str surrogate, float alpha, "
      "ScalarType? saved_dtype) -> (Tensor spikes, Tensor h)");
  // Backward of lif_forward through all time steps. grad_tau / grad_v_threshold are empty when not requested.
  m.def(
      "lif_backward(Tensor grad_spikes, Tensor? grad_h, Tensor h, Tensor? tau, Tensor? v_threshold, "
      "float tau_value, float v_threshold_value, float? v_reset, bool decay_input, bool detach_reset, "
      "str surrogate, float alpha, bool tau_grad, bool v_threshold_grad) "
      "-> (Tensor grad_x, Tensor grad_tau, Tensor grad_v_threshold)");
}
