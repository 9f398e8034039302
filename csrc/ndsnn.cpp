// Operator schemas of the ndsnn library. Device kernels live in cpu/ and cuda/; autograd and fake (meta)
// kernels are registered from Python (ndsnn/ops), so the same ops work eagerly and under torch.compile.
#include <string>

#include <torch/library.h>
#include <torch/version.h>

#include "sparse_tiled.h"

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
  // The same two ops for a number as tau and as v_threshold (no gradient for them), with kernels built for
  // the memory roofline (CUDA only: csrc/cuda/lif_fast_cuda.cu); the Python op picks them where they apply.
  m.def(
      "lif_forward_fast(Tensor x, Tensor? tau, Tensor? v_threshold, float tau_value, float v_threshold_value, "
      "float? v_reset, bool decay_input, bool detach_reset, str surrogate, float alpha, "
      "ScalarType? saved_dtype) -> (Tensor spikes, Tensor h)");
  m.def(
      "lif_backward_fast(Tensor grad_spikes, Tensor? grad_h, Tensor h, Tensor? tau, Tensor? v_threshold, "
      "float tau_value, float v_threshold_value, float? v_reset, bool decay_input, bool detach_reset, "
      "str surrogate, float alpha, bool tau_grad, bool v_threshold_grad) "
      "-> (Tensor grad_x, Tensor grad_tau, Tensor grad_v_threshold)");
  // LIF of a constant input current (direct encoding): current [N, ...] is the input at each of `steps` steps.
  // Returns the spikes [steps, N, ...] only; backward recomputes h from current and returns the gradient of
  // current itself (summed over the steps). Per-channel tau / v_threshold: channel = dim 1 of current.
  m.def(
      "lif_repeated_forward(Tensor current, int steps, Tensor? tau, Tensor? v_threshold, float tau_value, "
      "float v_threshold_value, float? v_reset, bool decay_input, bool detach_reset, str surrogate, "
      "float alpha) -> Tensor");
  m.def(
      "lif_repeated_backward(Tensor grad_spikes, Tensor current, Tensor? tau, Tensor? v_threshold, "
      "float tau_value, float v_threshold_value, float? v_reset, bool decay_input, bool detach_reset, "
      "str surrogate, float alpha, bool tau_grad, bool v_threshold_grad) "
      "-> (Tensor grad_current, Tensor grad_tau, Tensor grad_v_threshold)");
  // lif_repeated followed by max pooling of window = stride (no padding, floor) over current [N, C, H, W]:
  // returns the pooled spikes [steps, N, C, H / window, W / window] and the number of spikes fired (int64, for
  // firing rates); the full-size spikes are never stored. Backward recomputes them, and the gradient of each
  // window goes to its first maximum in row-major order, as max_pool2d's.
  m.def(
      "lif_repeated_max_pool_forward(Tensor current, int steps, int window, Tensor? tau, Tensor? v_threshold, "
      "float tau_value, float v_threshold_value, float? v_reset, bool decay_input, bool detach_reset, "
      "str surrogate, float alpha) -> (Tensor pooled, Tensor spike_count)");
  m.def(
      "lif_repeated_max_pool_backward(Tensor grad_pooled, Tensor current, int window, Tensor? tau, "
      "Tensor? v_threshold, float tau_value, float v_threshold_value, float? v_reset, bool decay_input, "
      "bool detach_reset, str surrogate, float alpha, bool tau_grad, bool v_threshold_grad) "
      "-> (Tensor grad_current, Tensor grad_tau, Tensor grad_v_threshold)");
  // Batch norm (per channel = dim 2 of x [T, N, C, ...], over all other dims) fused with multi-step LIF of
  // scalar tau / v_threshold. batch_norm_stats: per-channel mean and biased variance, in the arithmetic type
  // (float for 16-bit x). batch_norm_lif_forward: spikes of LIF(x * scale + shift (+ residual)), with
  // scale = weight * invstd and shift = bias - mean * scale; nothing but x is needed for backward (h is
  // recomputed). batch_stats says mean / invstd are x's own statistics, so backward includes their gradient
  // through x (batch norm in training); otherwise they are constants (running statistics). At most 64 steps.
  m.def("max_pool_window_forward(Tensor x, int window) -> (Tensor out, Tensor index)");
  m.def("max_pool_window_backward(Tensor grad_out, Tensor index, int[] input_size, int window) -> Tensor");
  m.def("batch_norm_stats(Tensor x) -> (Tensor mean, Tensor var)");
  m.def(
      "batch_norm_lif_forward(Tensor x, Tensor? residual, Tensor? weight, Tensor? bias, Tensor mean, "
      "Tensor invstd, float tau, float v_threshold, float? v_reset, bool decay_input, bool detach_reset, "
      "str surrogate, float alpha, bool batch_stats) -> Tensor");
  // grad_residual / grad_weight / grad_bias are empty when residual / weight / bias are None.
  m.def(
      "batch_norm_lif_backward(Tensor grad_spikes, Tensor x, Tensor? residual, Tensor? weight, Tensor? bias, "
      "Tensor mean, Tensor invstd, float tau, float v_threshold, float? v_reset, bool decay_input, "
      "bool detach_reset, str surrogate, float alpha, bool batch_stats) "
      "-> (Tensor grad_x, Tensor grad_residual, Tensor grad_weight, Tensor grad_bias)");
  // Masked sparse convolution: F.conv2d(x, weight * mask, bias, ...) with work proportional to the kept
  // weights. The mask enters as its kept-weight index: flat indices into weight grouped by output channel
  // (out_ptr [C_out + 1] offsets into out_flat) and by input channel (in_ptr [C_in + 1], in_flat).
  // in_ptr / in_flat and dense_weight_grad are backward settings, carried here so autograd can read them.
  m.def(
      "sparse_conv2d_forward(Tensor x, Tensor weight, Tensor? bias, Tensor out_ptr, Tensor out_flat, "
      "Tensor in_ptr, Tensor in_flat, int[2] stride, int[2] padding, int[2] dilation, int groups, "
      "bool dense_weight_grad) -> Tensor");
  m.def(
      "sparse_conv2d_grad_input(Tensor grad_out, Tensor weight, Tensor in_ptr, Tensor in_flat, int[] input_size, "
      "int[2] stride, int[2] padding, int[2] dilation, int groups) -> Tensor");
  // Weight gradient at the kept positions (zero elsewhere), in weight's shape.
  m.def(
      "sparse_conv2d_grad_weight(Tensor grad_out, Tensor x, Tensor out_flat, Tensor in_ptr, Tensor in_flat, "
      "int[] weight_size, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups) -> Tensor");
  // Masked sparse linear layer, x [B, I], weight [O, I], with the same kept-weight index (flat o * I + i).
  // input_kind: 1 spikes (the event-driven forward), 2 real-valued, 0 not known (x's nonzeros are counted).
  m.def(
      "sparse_linear_forward(Tensor x, Tensor weight, Tensor? bias, Tensor out_ptr, Tensor out_flat, "
      "Tensor in_ptr, Tensor in_flat, bool dense_weight_grad, int input_kind) -> Tensor");
  m.def("sparse_linear_grad_input(Tensor grad_out, Tensor weight, Tensor in_ptr, Tensor in_flat) -> Tensor");
  m.def("sparse_linear_grad_weight(Tensor grad_out, Tensor x, Tensor out_flat, int[] weight_size) -> Tensor");
  // The same three products by the tile-resident kernels (csrc/sparse_tiles.h): CUDA, and on the CPU an
  // emulation of the CUDA blocks thread by thread (for testing the tile logic, not for speed). smem_budget:
  // the bytes of shared memory a block may stage (0: the device's opt-in maximum; 48 KiB when emulated).
  m.def(
      "sparse_conv2d_tiled_forward(Tensor x, Tensor weight, Tensor? bias, Tensor out_ptr, Tensor out_flat, "
      "Tensor in_ptr, Tensor in_flat, int[2] stride, int[2] padding, int[2] dilation, int groups, "
      "bool dense_weight_grad, int smem_budget) -> Tensor");
  m.def(
      "sparse_conv2d_tiled_grad_input(Tensor grad_out, Tensor weight, Tensor in_ptr, Tensor in_flat, "
      "int[] input_size, int[2] stride, int[2] padding, int[2] dilation, int groups, int smem_budget) -> Tensor");
  m.def(
      "sparse_conv2d_tiled_grad_weight(Tensor grad_out, Tensor x, Tensor out_flat, Tensor in_ptr, Tensor in_flat, "
      "int[] weight_size, int[2] stride, int[2] padding, int[2] dilation, int groups, int smem_budget) -> Tensor");
  // The tiles those kernels would use: (tile_h, tile_w, images, span_h, span_w, blocks) for the forward, the
  // input gradient and the weight gradient, zeros where not one pixel of one image fits the budget.
  m.def(
      "sparse_conv2d_tiled_plan(int[] input_size, int[] weight_size, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups, int element_bytes, int smem_budget) -> int[]",
      &ndsnn::tile_plans);
}
