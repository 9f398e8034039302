// Host side of the fused batch norm + LIF ops, shared by the CPU and CUDA implementations.
//
// Forward: y = x * scale[c] + shift[c] (+ residual), scale = weight * invstd, shift = bias - mean * scale,
// then multi-step LIF on y; only the spikes are written. Nothing but x (and the residual) is kept for
// backward: the membrane potential is recomputed there, which saves the full-size h that an unfused LIF keeps.
// Backward, phase 1: recompute h, walk the LIF backward, write dL/dy and reduce per channel
// sum(dL/dy) and sum(dL/dy * (x - mean)). Phase 2: dL/dx = dL/dy * scale + x * a[c] + b[c], where a and b
// carry the batch-statistics terms of batch norm's gradient (zero with running statistics).
#pragma once

#include <optional>
#include <string>
#include <tuple>

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include "lif.h"
#include "lif_math.h"

namespace ndsnn {

// Longest sequence the fused ops take: the CUDA backward keeps one neuron's recomputed h for all steps in a
// local array of this size. Longer sequences use the unfused path (ndsnn/ops/batch_norm_lif.py).
constexpr int64_t kMaxFusedSteps = 64;

// x [T, N, C, inner...] viewed as T steps of `neurons` = N * C * inner, channel = (i / inner) % C.
struct BnLifLayout {
  int64_t steps = 0;
  int64_t batch = 0;
  int64_t channels = 0;
  int64_t inner = 0;
  int64_t neurons = 0;
  int64_t rows() const { return batch * channels; }  // (sample, channel) rows of one step
};

inline BnLifLayout bn_lif_layout(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() >= 3, op, ": x must have shape [T, N, C, ...], got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be floating point, got ", x.scalar_type());
  BnLifLayout layout;
  layout.steps = x.size(0);
  layout.batch = x.size(1);
  layout.channels = x.size(2);
  layout.inner = 1;
  for (int64_t d = 3; d < x.dim(); ++d) layout.inner *= x.size(d);
  layout.neurons = layout.batch * layout.channels * layout.inner;
  return layout;
}

inline void check_channel_vector(const std::optional<at::Tensor>& p, const at::Tensor& x, const char* name,
                                 const char* op) {
  if (!p.has_value()) return;
  TORCH_CHECK(p->dim() == 1 && p->size(0) == x.size(2), op, ": ", name, " must have shape [C] = [", x.size(2),
              "], got ", p->sizes());
  TORCH_CHECK(at::isFloatingType(p->scalar_type()), op, ": ", name, " must be floating point, got ",
              p->scalar_type());
  TORCH_CHECK(p->device() == x.device(), op, ": ", name, " is on ", p->device(), " but x is on ", x.device());
}

inline void check_bn_lif_args(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                              const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                              const at::Tensor& mean, const at::Tensor& invstd, double tau, double alpha,
                              const char* op) {
  bn_lif_layout(x, op);
  TORCH_CHECK(x.size(0) <= kMaxFusedSteps, op, ": at most ", kMaxFusedSteps, " time steps, got ", x.size(0));
  if (residual.has_value()) {
    TORCH_CHECK(residual->sizes() == x.sizes() && residual->scalar_type() == x.scalar_type() &&
                    residual->device() == x.device(),
                op, ": residual must match x (", x.sizes(), ", ", x.scalar_type(), ", ", x.device(), "), got ",
                residual->sizes(), ", ", residual->scalar_type(), ", ", residual->device());
  }
  check_channel_vector(weight, x, "weight", op);
  check_channel_vector(bias, x, "bias", op);
  check_channel_vector(mean, x, "mean", op);
  check_channel_vector(invstd, x, "invstd", op);
  TORCH_CHECK(tau > 1.0, op, ": tau must be > 1, got ", tau);
  TORCH_CHECK(alpha > 0, op, ": alpha must be positive, got ", alpha);
}

// Sums per-neuron partials [N * C * inner] to per-channel values [C] (the devices' phase 1 reductions).
inline at::Tensor channel_sum(const at::Tensor& partial, const BnLifLayout& layout) {
  return partial.view({layout.batch, layout.channels, layout.inner}).sum(at::IntArrayRef{0, 2});
}

// A per-channel vector in the kernel's arithmetic type (undefined when not given).
inline at::Tensor channel_values(const std::optional<at::Tensor>& p, at::ScalarType math_type) {
  if (!p.has_value()) return at::Tensor();
  return p->to(math_type).contiguous();
}

template <typename T>
inline const T* optional_ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// The LIF settings of the fused ops (scalar leak and threshold).
template <typename math_t>
struct BnLifNeuron {
  math_t tau;
  math_t v_threshold;
  math_t v_reset;
  bool hard_reset;
  bool decay_input;
  bool detach_reset;
  math_t alpha;
};

// Per-channel affine of batch norm; weight / bias may be null (1 / 0).
template <typename math_t>
struct BnAffine {
  const math_t* weight;
  const math_t* bias;
  const math_t* mean;
  const math_t* invstd;
  C10_HOST_DEVICE inline math_t scale(int64_t c) const { return weight ? weight[c] * invstd[c] : invstd[c]; }
  C10_HOST_DEVICE inline math_t shift(int64_t c, math_t scale_c) const {
    return (bias ? bias[c] : math_t(0)) - mean[c] * scale_c;
  }
};

// weight, bias, mean and invstd as contiguous tensors of the arithmetic type (weight / bias undefined when
// not given); `affine` points into them, so it is valid while this object lives.
template <typename math_t>
struct BnAffineValues {
  at::Tensor weight, bias, mean, invstd;
  BnAffineValues(const std::optional<at::Tensor>& weight_in, const std::optional<at::Tensor>& bias_in,
                 const at::Tensor& mean_in, const at::Tensor& invstd_in) {
    const at::ScalarType math_type = c10::CppTypeToScalarType<math_t>::value;
    weight = channel_values(weight_in, math_type);
    bias = channel_values(bias_in, math_type);
    mean = mean_in.to(math_type).contiguous();
    invstd = invstd_in.to(math_type).contiguous();
  }
  BnAffine<math_t> affine() const {
    return {optional_ptr<math_t>(weight), optional_ptr<math_t>(bias), mean.const_data_ptr<math_t>(),
            invstd.const_data_ptr<math_t>()};
  }
};

template <typename scalar_t>
struct BnLifForwardArgs {
  using scalar = scalar_t;
  using math_t = at::opmath_type<scalar_t>;
  const scalar_t* x;
  const scalar_t* residual;  // may be null
  scalar_t* spikes;
  BnLifLayout layout;
  BnAffine<math_t> affine;
  BnLifNeuron<math_t> neuron;
};

template <typename scalar_t>
struct BnLifBackwardArgs {
  using scalar = scalar_t;
  using math_t = at::opmath_type<scalar_t>;
  const scalar_t* grad_spikes;
  const scalar_t* x;
  const scalar_t* residual;  // may be null
  scalar_t* grad_y;          // dL/dy: grad_residual when there is a residual, else grad_x (rewritten in phase 2)
  BnLifLayout layout;
  BnAffine<math_t> affine;
  BnLifNeuron<math_t> neuron;
};

// Phase 2's per-channel coefficients: dL/dx = grad_y * scale + x * a + b.
template <typename scalar_t>
struct BnLifInputGradArgs {
  using math_t = at::opmath_type<scalar_t>;
  const scalar_t* grad_y;
  const scalar_t* x;
  scalar_t* grad_x;
  BnLifLayout layout;
  const math_t* scale;
  const math_t* a;
  const math_t* b;
};

template <typename Fn>
inline void dispatch_bn_lif_type(at::ScalarType type, const char* op, const Fn& fn) {
  switch (type) {
    case at::ScalarType::Float: return fn(TypeTag<float>{});
    case at::ScalarType::Double: return fn(TypeTag<double>{});
    case at::ScalarType::Half: return fn(TypeTag<c10::Half>{});
    case at::ScalarType::BFloat16: return fn(TypeTag<c10::BFloat16>{});
    default: TORCH_CHECK(false, op, ": unsupported dtype ", type);
  }
}

template <typename math_t>
inline BnLifNeuron<math_t> bn_lif_neuron(double tau, double v_threshold, std::optional<double> v_reset,
                                         bool decay_input, bool detach_reset, double alpha) {
  return {static_cast<math_t>(tau),         static_cast<math_t>(v_threshold), static_cast<math_t>(v_reset.value_or(0.0)),
          v_reset.has_value(),              decay_input,                      detach_reset,
          static_cast<math_t>(alpha)};
}

// Forward: checks, output, dtype dispatch; launch(args) runs the device kernel (not called for empty input).
template <typename Launch>
at::Tensor bn_lif_forward_host(const at::Tensor& x_in, const std::optional<at::Tensor>& residual_in,
                               const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                               const at::Tensor& mean, const at::Tensor& invstd, double tau, double v_threshold,
                               std::optional<double> v_reset, bool decay_input, bool detach_reset,
                               c10::string_view surrogate, double alpha, const Launch& launch) {
  constexpr const char* op = "ndsnn.batch_norm_lif_forward";
  check_bn_lif_args(x_in, residual_in, weight, bias, mean, invstd, tau, alpha, op);
  surrogate_from_name(std::string(surrogate));
  const at::Tensor x = x_in.contiguous();
  at::Tensor residual;
  if (residual_in.has_value()) residual = residual_in->contiguous();
  at::Tensor spikes = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return spikes;
  dispatch_bn_lif_type(x.scalar_type(), op, [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using math_t = at::opmath_type<scalar_t>;
    const BnAffineValues<math_t> values(weight, bias, mean, invstd);
    launch(BnLifForwardArgs<scalar_t>{
        x.const_data_ptr<scalar_t>(), residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr,
        spikes.data_ptr<scalar_t>(), bn_lif_layout(x, op), values.affine(),
        bn_lif_neuron<math_t>(tau, v_threshold, v_reset, decay_input, detach_reset, alpha)});
  });
  return spikes;
}

// Backward. phase1(surrogate_tag, args) writes dL/dy and returns the per-channel sums {sum(dL/dy),
// sum(dL/dy * (x - mean))} as [C] tensors of the arithmetic type; phase2(args) writes dL/dx.
template <typename Phase1, typename Phase2>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_lif_backward_host(
    const at::Tensor& grad_spikes_in, const at::Tensor& x_in, const std::optional<at::Tensor>& residual_in,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, const at::Tensor& mean,
    const at::Tensor& invstd, double tau, double v_threshold, std::optional<double> v_reset, bool decay_input,
    bool detach_reset, c10::string_view surrogate, double alpha, bool batch_stats, const Phase1& phase1,
    const Phase2& phase2) {
  constexpr const char* op = "ndsnn.batch_norm_lif_backward";
  check_bn_lif_args(x_in, residual_in, weight, bias, mean, invstd, tau, alpha, op);
  TORCH_CHECK(grad_spikes_in.sizes() == x_in.sizes() && grad_spikes_in.scalar_type() == x_in.scalar_type() &&
                  grad_spikes_in.device() == x_in.device(),
              op, ": grad_spikes must match x (", x_in.sizes(), ", ", x_in.scalar_type(), ", ", x_in.device(),
              "), got ", grad_spikes_in.sizes(), ", ", grad_spikes_in.scalar_type(), ", ", grad_spikes_in.device());
  surrogate_from_name(std::string(surrogate));
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad_spikes = grad_spikes_in.contiguous();
  at::Tensor residual;
  if (residual_in.has_value()) residual = residual_in->contiguous();
  const BnLifLayout layout = bn_lif_layout(x, op);
  at::Tensor grad_x = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor grad_residual = residual.defined() ? at::empty_like(x, at::MemoryFormat::Contiguous) : x.new_empty({0});
  at::Tensor grad_weight = x.new_empty({0});
  at::Tensor grad_bias = x.new_empty({0});
  dispatch_bn_lif_type(x.scalar_type(), op, [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using math_t = at::opmath_type<scalar_t>;
    const at::ScalarType math_type = c10::CppTypeToScalarType<math_t>::value;
    const BnAffineValues<math_t> values(weight, bias, mean, invstd);
    const at::Tensor& w = values.weight;
    const at::Tensor& m = values.mean;
    const at::Tensor& s = values.invstd;
    at::Tensor sum_dy = at::zeros({layout.channels}, x.options().dtype(math_type));
    at::Tensor sum_dyxc = at::zeros({layout.channels}, x.options().dtype(math_type));
    at::Tensor grad_y = residual.defined() ? grad_residual : grad_x;
    if (x.numel() > 0) {
      const BnLifBackwardArgs<scalar_t> args{
          grad_spikes.const_data_ptr<scalar_t>(),
          x.const_data_ptr<scalar_t>(),
          residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr,
          grad_y.data_ptr<scalar_t>(),
          layout,
          values.affine(),
          bn_lif_neuron<math_t>(tau, v_threshold, v_reset, decay_input, detach_reset, alpha)};
      dispatch_surrogate(surrogate, [&](auto surrogate_tag) {
        std::tie(sum_dy, sum_dyxc) = phase1(surrogate_tag, args);
      });
    }
    const at::Tensor scale = w.defined() ? w * s : s.clone();
    at::Tensor a = at::zeros_like(scale);
    at::Tensor shift_b = at::zeros_like(scale);
    const int64_t count = layout.steps * layout.batch * layout.inner;
    if (batch_stats && count > 0) {
      a = -scale * s * s * sum_dyxc / static_cast<double>(count);
      shift_b = -scale * sum_dy / static_cast<double>(count) - a * m;
    }
    if (x.numel() > 0) {
      phase2(BnLifInputGradArgs<scalar_t>{grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                          grad_x.data_ptr<scalar_t>(), layout, scale.const_data_ptr<math_t>(),
                                          a.const_data_ptr<math_t>(), shift_b.const_data_ptr<math_t>()});
    }
    if (weight.has_value()) grad_weight = (sum_dyxc * s).to(weight->scalar_type());
    if (bias.has_value()) grad_bias = sum_dy.to(bias->scalar_type());
  });
  return {grad_x, grad_residual, grad_weight, grad_bias};
}

}  // namespace ndsnn
