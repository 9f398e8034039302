// Host side of the LIF op for a constant input current (direct encoding: the same frame at every step),
// shared by its device implementations. Forward writes the spikes only; backward recomputes the membrane
// potentials from the frame and returns the gradient of the frame itself (the sum over the steps), so
// neither the repeated input nor h nor a per-step input gradient is ever stored.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/ATen.h>

#include "lif.h"

namespace ndsnn {

// The layout of one frame current [N, ...] over `steps` steps (per-channel parameters: channel = dim 1).
inline LifLayout lif_repeated_layout(const at::Tensor& current, int64_t steps, const std::optional<at::Tensor>& tau,
                                     double tau_value, const std::optional<at::Tensor>& v_threshold, double alpha) {
  TORCH_CHECK(steps >= 0, "ndsnn.lif_repeated: steps must be >= 0, got ", steps);
  TORCH_CHECK(current.dim() >= 1, "ndsnn.lif_repeated: current must have shape [N, ...], got ", current.sizes());
  LifLayout layout = lif_layout(current.unsqueeze(0), tau, tau_value, v_threshold, alpha);
  layout.steps = steps;
  return layout;
}

// What a device kernel gets; the gradient fields are null in forward, spikes null in backward.
template <typename scalar_t>
struct LifRepeatedArgs {
  using scalar = scalar_t;
  using math_t = at::opmath_type<scalar_t>;
  const scalar_t* current;
  scalar_t* spikes;
  const scalar_t* grad_spikes;
  scalar_t* grad_current;
  math_t* grad_tau;  // per neuron, summed over the steps
  math_t* grad_v_threshold;
  LifLayout layout;
  ChannelParam<math_t> tau;
  ChannelParam<math_t> v_threshold;
  math_t v_reset;
  bool hard_reset;
  bool decay_input;
  bool detach_reset;
  math_t alpha;
};

// Calls fn(TypeTag<scalar_t>) for the dtypes the LIF kernels take.
template <typename Fn>
inline void dispatch_repeated_type(at::ScalarType type, const Fn& fn) {
  dispatch_lif_types(type, type, [&](auto input_tag, auto) { fn(input_tag); });
}

template <typename scalar_t>
inline LifRepeatedArgs<scalar_t> repeated_args(const at::Tensor& current, const at::Tensor& tau_values,
                                               double tau_value, const at::Tensor& th_values,
                                               double v_threshold_value, std::optional<double> v_reset,
                                               bool decay_input, bool detach_reset, double alpha,
                                               const LifLayout& layout) {
  using math_t = at::opmath_type<scalar_t>;
  return LifRepeatedArgs<scalar_t>{current.const_data_ptr<scalar_t>(),
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   layout,
                                   channel_param<math_t>(tau_values, tau_value),
                                   channel_param<math_t>(th_values, v_threshold_value),
                                   static_cast<math_t>(v_reset.value_or(0.0)),
                                   v_reset.has_value(),
                                   decay_input,
                                   detach_reset,
                                   static_cast<math_t>(alpha)};
}

// Spikes [steps, *current.shape]. launch(args) runs the device kernel; it is not called for empty output.
template <typename Launch>
at::Tensor lif_repeated_forward_host(const at::Tensor& current_in, int64_t steps,
                                     const std::optional<at::Tensor>& tau,
                                     const std::optional<at::Tensor>& v_threshold, double tau_value,
                                     double v_threshold_value, std::optional<double> v_reset, bool decay_input,
                                     bool detach_reset, c10::string_view surrogate, double alpha,
                                     const Launch& launch) {
  surrogate_from_name(std::string(surrogate));
  const LifLayout layout = lif_repeated_layout(current_in, steps, tau, tau_value, v_threshold, alpha);
  const at::Tensor current = current_in.contiguous();
  std::vector<int64_t> shape{steps};
  shape.insert(shape.end(), current.sizes().begin(), current.sizes().end());
  at::Tensor spikes = at::empty(shape, current.options());
  if (spikes.numel() == 0) return spikes;
  dispatch_repeated_type(current.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    const at::ScalarType math_type = c10::CppTypeToScalarType<at::opmath_type<scalar_t>>::value;
    auto args = repeated_args<scalar_t>(current, param_values(tau, math_type), tau_value,
                                        param_values(v_threshold, math_type), v_threshold_value, v_reset,
                                        decay_input, detach_reset, alpha, layout);
    args.spikes = spikes.data_ptr<scalar_t>();
    launch(args);
  });
  return spikes;
}

// The backward of a LIF of constant current, whatever follows it: (grad_current, grad_tau, grad_v_threshold)
// of `current` (contiguous) over `steps` steps, the parameter gradients empty unless asked for.
// launch(surrogate_tag, args) runs the device kernel, which writes every element of args.grad_current; it is
// not called when there is no work (then grad_current is zeros). The caller's launch sets its own inputs.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_repeated_backward_run(
    const at::Tensor& current, int64_t steps, bool has_work, const std::optional<at::Tensor>& tau,
    const std::optional<at::Tensor>& v_threshold, double tau_value, double v_threshold_value,
    std::optional<double> v_reset, bool decay_input, bool detach_reset, c10::string_view surrogate, double alpha,
    bool tau_grad, bool v_threshold_grad, const Launch& launch) {
  TORCH_CHECK(!tau_grad || tau.has_value(), "ndsnn.lif_repeated_backward: tau_grad needs tau as a tensor");
  TORCH_CHECK(!v_threshold_grad || v_threshold.has_value(),
              "ndsnn.lif_repeated_backward: v_threshold_grad needs v_threshold as a tensor");
  surrogate_from_name(std::string(surrogate));
  const LifLayout layout = lif_repeated_layout(current, steps, tau, tau_value, v_threshold, alpha);
  at::Tensor grad_current = has_work ? at::empty_like(current, at::MemoryFormat::Contiguous)
                                     : at::zeros_like(current, at::MemoryFormat::Contiguous);
  at::Tensor grad_tau = at::empty({0}, current.options());
  at::Tensor grad_th = at::empty({0}, current.options());
  const at::Tensor frames = current.unsqueeze(0);  // the [T, N, C, ...] view the parameter reduction expects
  dispatch_repeated_type(current.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using math_t = at::opmath_type<scalar_t>;
    const at::ScalarType math_type = c10::CppTypeToScalarType<math_t>::value;
    at::Tensor tau_partial = at::zeros({tau_grad ? layout.neurons : 0}, current.options().dtype(math_type));
    at::Tensor th_partial = at::zeros({v_threshold_grad ? layout.neurons : 0}, current.options().dtype(math_type));
    if (has_work) {
      auto args = repeated_args<scalar_t>(current, param_values(tau, math_type), tau_value,
                                          param_values(v_threshold, math_type), v_threshold_value, v_reset,
                                          decay_input, detach_reset, alpha, layout);
      args.grad_current = grad_current.data_ptr<scalar_t>();
      args.grad_tau = tau_grad ? tau_partial.data_ptr<math_t>() : nullptr;
      args.grad_v_threshold = v_threshold_grad ? th_partial.data_ptr<math_t>() : nullptr;
      dispatch_surrogate(surrogate, [&](auto surrogate_tag) { launch(surrogate_tag, args); });
    }
    if (tau_grad) grad_tau = reduce_param_grad(tau_partial, tau, frames, layout);
    if (v_threshold_grad) grad_th = reduce_param_grad(th_partial, v_threshold, frames, layout);
  });
  return {grad_current, grad_tau, grad_th};
}

// (grad_current, grad_tau, grad_v_threshold); the parameter gradients are empty unless asked for.
// launch(surrogate_tag, args) runs the device kernel; it is not called for empty input.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_repeated_backward_host(
    const at::Tensor& grad_spikes_in, const at::Tensor& current_in, const std::optional<at::Tensor>& tau,
    const std::optional<at::Tensor>& v_threshold, double tau_value, double v_threshold_value,
    std::optional<double> v_reset, bool decay_input, bool detach_reset, c10::string_view surrogate, double alpha,
    bool tau_grad, bool v_threshold_grad, const Launch& launch) {
  TORCH_CHECK(grad_spikes_in.dim() == current_in.dim() + 1 && grad_spikes_in.sizes().slice(1) == current_in.sizes(),
              "ndsnn.lif_repeated_backward: grad_spikes must have shape [T, *current.shape] with current ",
              current_in.sizes(), ", got ", grad_spikes_in.sizes());
  TORCH_CHECK(grad_spikes_in.scalar_type() == current_in.scalar_type() &&
                  grad_spikes_in.device() == current_in.device(),
              "ndsnn.lif_repeated_backward: grad_spikes must have current's dtype and device");
  const at::Tensor current = current_in.contiguous();
  const at::Tensor grad_spikes = grad_spikes_in.contiguous();
  return lif_repeated_backward_run(
      current, grad_spikes.size(0), grad_spikes.numel() > 0, tau, v_threshold, tau_value, v_threshold_value,
      v_reset, decay_input, detach_reset, surrogate, alpha, tau_grad, v_threshold_grad,
      [&](auto surrogate_tag, auto args) {
        using scalar_t = typename decltype(args)::scalar;
        args.grad_spikes = grad_spikes.const_data_ptr<scalar_t>();
        launch(surrogate_tag, args);
      });
}

}  // namespace ndsnn
