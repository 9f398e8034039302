// Host-side argument checking and layout for the fused LIF op, shared by the CPU and CUDA implementations.
#pragma once

#include <optional>
#include <type_traits>
#include <string>
#include <tuple>

#include <ATen/ATen.h>

#include "lif_math.h"

namespace ndsnn {

// Neuron layout of one time step of x: [N, C, inner] when a parameter is per channel, else [1, 1, M].
struct LifLayout {
  int64_t steps = 0;    // T
  int64_t neurons = 0;  // M = numel / T
  int64_t channels = 1;
  int64_t inner = 1;    // neurons per (sample, channel)
};

inline bool is_per_channel(const std::optional<at::Tensor>& p) { return p.has_value() && p->numel() > 1; }

inline void check_param(const std::optional<at::Tensor>& p, double value, const at::Tensor& x, const char* name) {
  if (!p.has_value()) {
    TORCH_CHECK(std::string(name) != "tau" || value > 1.0, "ndsnn.lif: tau must be > 1, got ", value);
    return;
  }
  TORCH_CHECK(p->numel() >= 1, "ndsnn.lif: ", name, " must have at least one element");
  TORCH_CHECK(at::isFloatingType(p->scalar_type()), "ndsnn.lif: ", name, " must be a floating-point tensor, got ",
              p->scalar_type());
  TORCH_CHECK(p->device() == x.device(), "ndsnn.lif: ", name, " is on ", p->device(), " but x_seq is on ",
              x.device());
  if (p->numel() > 1) {
    TORCH_CHECK(x.dim() >= 3, "ndsnn.lif: a per-channel ", name, " needs x_seq of shape [T, N, C, ...], got ",
                x.sizes());
    TORCH_CHECK(p->dim() == 1 && p->size(0) == x.size(2), "ndsnn.lif: ", name,
                " must have one element or shape [C] = [", x.size(2), "], got ", p->sizes());
  }
}

inline LifLayout lif_layout(const at::Tensor& x, const std::optional<at::Tensor>& tau, double tau_value,
                            const std::optional<at::Tensor>& v_threshold, double alpha) {
  TORCH_CHECK(x.dim() >= 2, "ndsnn.lif: x_seq must have shape [T, N, ...], got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "ndsnn.lif: x_seq must be floating point, got ",
              x.scalar_type());
  check_param(tau, tau_value, x, "tau");
  check_param(v_threshold, 0.0, x, "v_threshold");
  TORCH_CHECK(alpha > 0, "ndsnn.lif: alpha must be positive, got ", alpha);
  LifLayout layout;
  layout.steps = x.size(0);
  layout.neurons = layout.steps == 0 ? 0 : x.numel() / layout.steps;
  if (is_per_channel(tau) || is_per_channel(v_threshold)) {
    layout.channels = x.size(2);
    const int64_t rows = x.size(1) * layout.channels;  // N * C
    layout.inner = rows == 0 ? 0 : layout.neurons / rows;
  } else {
    layout.inner = layout.neurons;
  }
  return layout;
}

// The parameter as a contiguous tensor in the kernel's arithmetic type (undefined when given as a number).
inline at::Tensor param_values(const std::optional<at::Tensor>& p, at::ScalarType math_type) {
  if (!p.has_value()) return at::Tensor();
  return p->to(math_type).contiguous();
}

template <typename T>
inline ChannelParam<T> channel_param(const at::Tensor& values, double fallback) {
  if (!values.defined()) return ChannelParam<T>{nullptr, static_cast<T>(fallback), false};
  return ChannelParam<T>{values.const_data_ptr<T>(), T(0), values.numel() > 1};
}

// Saved-h dtype: the input dtype, or a 16-bit type for fp32 input.
inline at::ScalarType saved_type(const at::Tensor& x, std::optional<at::ScalarType> saved_dtype) {
  if (!saved_dtype.has_value() || *saved_dtype == x.scalar_type()) return x.scalar_type();
  TORCH_CHECK(x.scalar_type() == at::kFloat && (*saved_dtype == at::kHalf || *saved_dtype == at::kBFloat16),
              "ndsnn.lif: saved_dtype may be float16 or bfloat16 only for float32 input; got saved_dtype=",
              *saved_dtype, " for x_seq of dtype ", x.scalar_type());
  return *saved_dtype;
}

// Reduce per-neuron parameter gradients [M] (per time-summed) to the parameter's shape.
inline at::Tensor reduce_param_grad(const at::Tensor& per_neuron, const std::optional<at::Tensor>& p,
                                    const at::Tensor& x, const LifLayout& layout) {
  at::Tensor total;
  if (is_per_channel(p)) {
    total = per_neuron.view({x.size(1), layout.channels, layout.inner}).sum(at::IntArrayRef{0, 2});
  } else {
    total = per_neuron.sum();
  }
  return total.reshape(p->sizes()).to(p->scalar_type());
}

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls fn(TypeTag<input type>, TypeTag<saved-h type>) for the supported (input, saved) dtype pairs.
template <typename Fn>
inline void dispatch_lif_types(at::ScalarType input, at::ScalarType saved, const Fn& fn) {
  using at::ScalarType;
  if (input == saved) {
    switch (input) {
      case ScalarType::Float: return fn(TypeTag<float>{}, TypeTag<float>{});
      case ScalarType::Double: return fn(TypeTag<double>{}, TypeTag<double>{});
      case ScalarType::Half: return fn(TypeTag<c10::Half>{}, TypeTag<c10::Half>{});
      case ScalarType::BFloat16: return fn(TypeTag<c10::BFloat16>{}, TypeTag<c10::BFloat16>{});
      default: break;
    }
  } else if (input == ScalarType::Float && saved == ScalarType::Half) {
    return fn(TypeTag<float>{}, TypeTag<c10::Half>{});
  } else if (input == ScalarType::Float && saved == ScalarType::BFloat16) {
    return fn(TypeTag<float>{}, TypeTag<c10::BFloat16>{});
  }
  TORCH_CHECK(false, "ndsnn.lif: unsupported dtypes: input ", input, " with saved h ", saved);
}

// Calls fn(std::integral_constant<Surrogate, S>) for the surrogate named `name`.
template <typename Fn>
inline void dispatch_surrogate(c10::string_view name, const Fn& fn) {
  switch (surrogate_from_name(std::string(name))) {
    case Surrogate::ATan: return fn(std::integral_constant<Surrogate, Surrogate::ATan>{});
    case Surrogate::Sigmoid: return fn(std::integral_constant<Surrogate, Surrogate::Sigmoid>{});
    case Surrogate::Triangle: return fn(std::integral_constant<Surrogate, Surrogate::Triangle>{});
    case Surrogate::Rectangle: return fn(std::integral_constant<Surrogate, Surrogate::Rectangle>{});
    case Surrogate::SoftSign: return fn(std::integral_constant<Surrogate, Surrogate::SoftSign>{});
  }
}

// Checks shared by the backward implementations; returns the layout.
inline LifLayout check_backward_args(const at::Tensor& grad_spikes, const std::optional<at::Tensor>& grad_h,
                                     const at::Tensor& h, const std::optional<at::Tensor>& tau, double tau_value,
                                     const std::optional<at::Tensor>& v_threshold, double alpha) {
  TORCH_CHECK(grad_spikes.sizes() == h.sizes(), "ndsnn.lif_backward: grad_spikes has shape ", grad_spikes.sizes(),
              " but h has shape ", h.sizes());
  TORCH_CHECK(grad_spikes.device() == h.device(), "ndsnn.lif_backward: grad_spikes and h are on different devices");
  if (grad_h.has_value()) {
    TORCH_CHECK(grad_h->sizes() == h.sizes() && grad_h->scalar_type() == h.scalar_type() &&
                    grad_h->device() == h.device(),
                "ndsnn.lif_backward: grad_h must match h (", h.sizes(), ", ", h.scalar_type(), ", ", h.device(),
                "), got ", grad_h->sizes(), ", ", grad_h->scalar_type(), ", ", grad_h->device());
  }
  return lif_layout(h, tau, tau_value, v_threshold, alpha);
}

// What a device kernel gets for one forward call, in its element types.
template <typename scalar_t, typename store_t>
struct LifForwardArgs {
  using scalar = scalar_t;
  using store = store_t;
  using math_t = at::opmath_type<scalar_t>;
  const scalar_t* x;
  scalar_t* spikes;
  store_t* h;
  LifLayout layout;
  ChannelParam<math_t> tau;
  ChannelParam<math_t> v_threshold;
  math_t v_reset;
  bool hard_reset;
  bool decay_input;
};

// The device-independent part of lif_forward: checks, layout, outputs, dtype dispatch. launch(args) runs the
// device kernel on LifForwardArgs; it is not called for empty input.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> lif_forward_host(const at::Tensor& x_in, const std::optional<at::Tensor>& tau,
                                                    const std::optional<at::Tensor>& v_threshold, double tau_value,
                                                    double v_threshold_value, std::optional<double> v_reset,
                                                    bool decay_input, c10::string_view surrogate, double alpha,
                                                    std::optional<at::ScalarType> saved_dtype, const Launch& launch) {
  surrogate_from_name(std::string(surrogate));
  const LifLayout layout = lif_layout(x_in, tau, tau_value, v_threshold, alpha);
  const at::Tensor x = x_in.contiguous();
  const at::ScalarType store_type = saved_type(x, saved_dtype);
  at::Tensor spikes = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor h = at::empty(x.sizes(), x.options().dtype(store_type));
  if (x.numel() == 0) return {spikes, h};
  dispatch_lif_types(x.scalar_type(), store_type, [&](auto input_tag, auto store_tag) {
    using scalar_t = typename decltype(input_tag)::type;
    using store_t = typename decltype(store_tag)::type;
    using math_t = at::opmath_type<scalar_t>;
    const at::ScalarType math_type = c10::CppTypeToScalarType<math_t>::value;
    const at::Tensor tau_values = param_values(tau, math_type);
    const at::Tensor th_values = param_values(v_threshold, math_type);
    launch(LifForwardArgs<scalar_t, store_t>{
        x.const_data_ptr<scalar_t>(), spikes.data_ptr<scalar_t>(), h.data_ptr<store_t>(), layout,
        channel_param<math_t>(tau_values, tau_value), channel_param<math_t>(th_values, v_threshold_value),
        static_cast<math_t>(v_reset.value_or(0.0)), v_reset.has_value(), decay_input});
  });
  return {spikes, h};
}

// What a device kernel gets for one backward call. grad_h / grad_tau / grad_v_threshold may be null; the
// parameter gradients are per neuron (summed over time), reduced to the parameters' shapes afterwards.
template <typename scalar_t, typename store_t>
struct LifBackwardArgs {
  using scalar = scalar_t;
  using store = store_t;
  using math_t = at::opmath_type<scalar_t>;
  const scalar_t* grad_spikes;
  const store_t* grad_h;
  const store_t* h;
  scalar_t* grad_x;
  math_t* grad_tau;
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

// The device-independent part of lif_backward. launch(surrogate_tag, args) runs the device kernel, with
// surrogate_tag a std::integral_constant<Surrogate, S>; it is not called for empty input.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_backward_host(
    const at::Tensor& grad_spikes_in, const std::optional<at::Tensor>& grad_h_in, const at::Tensor& h_in,
    const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold, double tau_value,
    double v_threshold_value, std::optional<double> v_reset, bool decay_input, bool detach_reset,
    c10::string_view surrogate, double alpha, bool tau_grad, bool v_threshold_grad, const Launch& launch) {
  const LifLayout layout = check_backward_args(grad_spikes_in, grad_h_in, h_in, tau, tau_value, v_threshold, alpha);
  TORCH_CHECK(!tau_grad || tau.has_value(), "ndsnn.lif_backward: tau_grad needs tau as a tensor");
  TORCH_CHECK(!v_threshold_grad || v_threshold.has_value(),
              "ndsnn.lif_backward: v_threshold_grad needs v_threshold as a tensor");
  surrogate_from_name(std::string(surrogate));
  const at::Tensor grad_spikes = grad_spikes_in.contiguous();
  const at::Tensor h = h_in.contiguous();
  std::optional<at::Tensor> grad_h;
  if (grad_h_in.has_value()) grad_h = grad_h_in->contiguous();
  at::Tensor grad_x = at::empty_like(grad_spikes, at::MemoryFormat::Contiguous);
  at::Tensor grad_tau = at::empty({0}, h.options());
  at::Tensor grad_th = at::empty({0}, h.options());
  dispatch_lif_types(grad_spikes.scalar_type(), h.scalar_type(), [&](auto input_tag, auto store_tag) {
    using scalar_t = typename decltype(input_tag)::type;
    using store_t = typename decltype(store_tag)::type;
    using math_t = at::opmath_type<scalar_t>;
    const at::ScalarType math_type = c10::CppTypeToScalarType<math_t>::value;
    const at::Tensor tau_values = param_values(tau, math_type);
    const at::Tensor th_values = param_values(v_threshold, math_type);
    at::Tensor tau_partial = tau_grad ? at::empty({layout.neurons}, h.options().dtype(math_type)) : at::Tensor();
    at::Tensor th_partial =
        v_threshold_grad ? at::empty({layout.neurons}, h.options().dtype(math_type)) : at::Tensor();
    if (grad_spikes.numel() > 0) {
      const LifBackwardArgs<scalar_t, store_t> args{
          grad_spikes.const_data_ptr<scalar_t>(),
          grad_h ? grad_h->const_data_ptr<store_t>() : nullptr,
          h.const_data_ptr<store_t>(),
          grad_x.data_ptr<scalar_t>(),
          tau_grad ? tau_partial.data_ptr<math_t>() : nullptr,
          v_threshold_grad ? th_partial.data_ptr<math_t>() : nullptr,
          layout,
          channel_param<math_t>(tau_values, tau_value),
          channel_param<math_t>(th_values, v_threshold_value),
          static_cast<math_t>(v_reset.value_or(0.0)),
          v_reset.has_value(),
          decay_input,
          detach_reset,
          static_cast<math_t>(alpha)};
      dispatch_surrogate(surrogate, [&](auto surrogate_tag) { launch(surrogate_tag, args); });
    }
    if (tau_grad) grad_tau = reduce_param_grad(tau_partial, tau, h, layout);
    if (v_threshold_grad) grad_th = reduce_param_grad(th_partial, v_threshold, h, layout);
  });
  return {grad_x, grad_tau, grad_th};
}

}  // namespace ndsnn
