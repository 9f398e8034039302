// Host side of LIF of a constant input current followed by max pooling (window = stride, no padding, floor):
// the direct-encoding stem's neurons and the pooling after them as one op. Forward writes only the pooled
// spikes [T, N, C, H / k, W / k] and the number of spikes fired (for firing rates); the full-size spikes are
// never stored. Backward recomputes the spikes of each window from the frame, routes the pooled gradient to
// the window's first maximum in row-major order (max_pool2d's rule), and runs the LIF backward from there.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/ATen.h>

#include "lif_repeated.h"

namespace ndsnn {

constexpr int64_t kMaxLifPoolWindow = 16;

// current [N, C, H, W] pooled by window x window.
struct RepeatedPoolGeometry {
  int64_t planes = 0;  // N * C
  int64_t height = 0;
  int64_t width = 0;
  int64_t window = 1;
  int64_t out_height = 0;
  int64_t out_width = 0;
};

inline RepeatedPoolGeometry repeated_pool_geometry(const at::Tensor& current, int64_t window) {
  TORCH_CHECK(current.dim() == 4, "ndsnn.lif_repeated_max_pool: current must have shape [N, C, H, W], got ",
              current.sizes());
  TORCH_CHECK(window >= 1 && window <= kMaxLifPoolWindow, "ndsnn.lif_repeated_max_pool: window must be in [1, ",
              kMaxLifPoolWindow, "], got ", window);
  TORCH_CHECK(current.size(2) >= window && current.size(3) >= window,
              "ndsnn.lif_repeated_max_pool: the window ", window, " must fit the frame ", current.sizes());
  RepeatedPoolGeometry g;
  g.planes = current.size(0) * current.size(1);
  g.height = current.size(2);
  g.width = current.size(3);
  g.window = window;
  g.out_height = g.height / window;
  g.out_width = g.width / window;
  return g;
}

template <typename scalar_t>
struct LifRepeatedPoolArgs {
  using scalar = scalar_t;
  LifRepeatedArgs<scalar_t> lif;  // its spikes / grad_spikes are unused
  RepeatedPoolGeometry pool;
  scalar_t* pooled;               // forward: [T, planes, out_height, out_width]
  int64_t* spike_count;           // forward: spikes fired over all steps and neurons
  const scalar_t* grad_pooled;    // backward
};

// (pooled spikes, spike count as a 0-dim int64). launch(args) runs the device kernel; it is not called when
// there is nothing to compute.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> lif_repeated_max_pool_forward_host(
    const at::Tensor& current_in, int64_t steps, int64_t window, const std::optional<at::Tensor>& tau,
    const std::optional<at::Tensor>& v_threshold, double tau_value, double v_threshold_value,
    std::optional<double> v_reset, bool decay_input, bool detach_reset, c10::string_view surrogate, double alpha,
    const Launch& launch) {
  surrogate_from_name(std::string(surrogate));
  const RepeatedPoolGeometry geometry = repeated_pool_geometry(current_in, window);
  const LifLayout layout = lif_repeated_layout(current_in, steps, tau, tau_value, v_threshold, alpha);
  const at::Tensor current = current_in.contiguous();
  at::Tensor pooled =
      at::empty({steps, current.size(0), current.size(1), geometry.out_height, geometry.out_width}, current.options());
  at::Tensor spike_count = at::zeros({}, current.options().dtype(at::kLong));
  if (steps == 0 || current.numel() == 0) return {pooled, spike_count};
  dispatch_repeated_type(current.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    const at::ScalarType math_type = c10::CppTypeToScalarType<at::opmath_type<scalar_t>>::value;
    LifRepeatedPoolArgs<scalar_t> args{
        repeated_args<scalar_t>(current, param_values(tau, math_type), tau_value, param_values(v_threshold, math_type),
                                v_threshold_value, v_reset, decay_input, detach_reset, alpha, layout),
        geometry, pooled.data_ptr<scalar_t>(), spike_count.data_ptr<int64_t>(), nullptr};
    launch(args);
  });
  return {pooled, spike_count};
}

// (grad_current, grad_tau, grad_v_threshold) from the pooled spikes' gradient [T, N, C, H / k, W / k].
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_repeated_max_pool_backward_host(
    const at::Tensor& grad_pooled_in, const at::Tensor& current_in, int64_t window,
    const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold, double tau_value,
    double v_threshold_value, std::optional<double> v_reset, bool decay_input, bool detach_reset,
    c10::string_view surrogate, double alpha, bool tau_grad, bool v_threshold_grad, const Launch& launch) {
  const RepeatedPoolGeometry geometry = repeated_pool_geometry(current_in, window);
  TORCH_CHECK(grad_pooled_in.dim() == 5 && grad_pooled_in.size(1) == current_in.size(0) &&
                  grad_pooled_in.size(2) == current_in.size(1) && grad_pooled_in.size(3) == geometry.out_height &&
                  grad_pooled_in.size(4) == geometry.out_width,
              "ndsnn.lif_repeated_max_pool_backward: grad_pooled must have shape [T, N, C, H / window, W / window] "
              "for current ",
              current_in.sizes(), " and window ", window, ", got ", grad_pooled_in.sizes());
  TORCH_CHECK(grad_pooled_in.scalar_type() == current_in.scalar_type() &&
                  grad_pooled_in.device() == current_in.device(),
              "ndsnn.lif_repeated_max_pool_backward: grad_pooled must have current's dtype and device");
  const at::Tensor current = current_in.contiguous();
  const at::Tensor grad_pooled = grad_pooled_in.contiguous();
  return lif_repeated_backward_run(
      current, grad_pooled.size(0), grad_pooled.size(0) > 0 && current.numel() > 0, tau, v_threshold, tau_value,
      v_threshold_value, v_reset, decay_input, detach_reset, surrogate, alpha, tau_grad, v_threshold_grad,
      [&](auto surrogate_tag, const auto& lif_args) {
        using scalar_t = typename std::decay_t<decltype(lif_args)>::scalar;
        LifRepeatedPoolArgs<scalar_t> args{lif_args, geometry, nullptr, nullptr,
                                           grad_pooled.const_data_ptr<scalar_t>()};
        launch(surrogate_tag, args);
      });
}

}  // namespace ndsnn
