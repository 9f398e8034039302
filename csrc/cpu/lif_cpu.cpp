// Fused multi-step LIF on the CPU: neurons in blocks across threads, the time loop innermost per block, so
// the membrane state of a block stays in a small local array and each step is one vectorisable pass.
#include <algorithm>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../lif.h"

namespace ndsnn {
namespace {

constexpr int64_t kBlock = 256;
constexpr int64_t kBlocksPerTask = 4;

template <typename T>
struct BlockParams {
  T tau[kBlock];
  T v_threshold[kBlock];
};

template <typename T>
inline void load_block_params(BlockParams<T>& out, const ChannelParam<T>& tau, const ChannelParam<T>& v_threshold,
                              const LifLayout& layout, int64_t first, int64_t count) {
  for (int64_t j = 0; j < count; ++j) {
    const int64_t channel = ((first + j) / layout.inner) % layout.channels;
    out.tau[j] = tau.at(channel);
    out.v_threshold[j] = v_threshold.at(channel);
  }
}

template <typename scalar_t, typename store_t>
void forward_cpu_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ spikes, store_t* __restrict__ h_out,
                        const LifLayout layout,
                        const ChannelParam<at::opmath_type<scalar_t>> tau,
                        const ChannelParam<at::opmath_type<scalar_t>> v_threshold,
                        const at::opmath_type<scalar_t> v_reset, const bool hard_reset, const bool decay_input) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t neurons = layout.neurons;
  const int64_t blocks = (neurons + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t block_begin, int64_t block_end) {
    BlockParams<math_t> params;
    math_t v[kBlock];
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t first = block * kBlock;
      const int64_t count = std::min(kBlock, neurons - first);
      load_block_params(params, tau, v_threshold, layout, first, count);
      const math_t v_start = hard_reset ? v_reset : math_t(0);
      for (int64_t j = 0; j < count; ++j) v[j] = v_start;
      for (int64_t t = 0; t < layout.steps; ++t) {
        const int64_t offset = t * neurons + first;
        const scalar_t* x_t = x + offset;
        scalar_t* s_t = spikes + offset;
        store_t* h_t = h_out + offset;
        for (int64_t j = 0; j < count; ++j) {
          const math_t th = params.v_threshold[j];
          const math_t h = lif_charge<math_t>(v[j], static_cast<math_t>(x_t[j]), params.tau[j], v_reset, decay_input);
          const bool spike = h >= th;
          s_t[j] = static_cast<scalar_t>(spike ? 1 : 0);
          h_t[j] = SpikeConsistentStore<store_t>::store(h, spike, th);
          v[j] = lif_reset<math_t>(h, spike, th, v_reset, hard_reset);
        }
      }
    }
  });
}

// Backward over one block of neurons, one time step: the branch-free part every call needs. Returns dL/dh
// per neuron in `grad_h_total` for the optional leak-gradient pass.
template <Surrogate S, bool HasGradH, typename scalar_t, typename store_t, typename math_t>
inline void backward_block_step(const scalar_t* __restrict__ gs_t, const store_t* __restrict__ gh_t,
                                const store_t* __restrict__ h_t, scalar_t* __restrict__ gx_t,
                                const BlockParams<math_t>& params, const math_t* __restrict__ input_divisor,
                                const math_t* __restrict__ keep, math_t* __restrict__ grad_v,
                                math_t* __restrict__ acc_th, math_t* __restrict__ grad_h_total, int64_t count,
                                math_t v_reset, math_t alpha, ResetMode<math_t> mode) {
  for (int64_t j = 0; j < count; ++j) {
    const math_t gh_out = HasGradH ? static_cast<math_t>(gh_t[j]) : math_t(0);
    const LifStepGrad<math_t> g = lif_step_grad<S, math_t>(static_cast<math_t>(h_t[j]), params.v_threshold[j],
                                                           static_cast<math_t>(gs_t[j]), gh_out, grad_v[j],
                                                           v_reset, alpha, mode);
    gx_t[j] = static_cast<scalar_t>(g.h / input_divisor[j]);
    acc_th[j] += g.threshold;
    grad_v[j] = g.h * keep[j];
    grad_h_total[j] = g.h;
  }
}

template <Surrogate S, typename scalar_t, typename store_t>
void backward_cpu_kernel(const scalar_t* grad_spikes, const store_t* grad_h, const store_t* h_seq, scalar_t* grad_x,
                         at::opmath_type<scalar_t>* grad_tau, at::opmath_type<scalar_t>* grad_v_threshold,
                         const LifLayout layout, const ChannelParam<at::opmath_type<scalar_t>> tau,
                         const ChannelParam<at::opmath_type<scalar_t>> v_threshold,
                         const at::opmath_type<scalar_t> v_reset, const bool hard_reset, const bool decay_input,
                         const bool detach_reset, const at::opmath_type<scalar_t> alpha) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t neurons = layout.neurons;
  const int64_t blocks = (neurons + kBlock - 1) / kBlock;
  const math_t v_start = hard_reset ? v_reset : math_t(0);
  const math_t charge_reset = hard_reset ? v_reset : math_t(0);
  const auto mode = ResetMode<math_t>::make(hard_reset, detach_reset);
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t block_begin, int64_t block_end) {
    BlockParams<math_t> params;
    math_t input_divisor[kBlock];  // tau with decay_input (x enters as x / tau), else 1
    math_t keep[kBlock];           // dh_t / dv_{t-1} = 1 - 1 / tau
    math_t grad_v[kBlock];
    math_t grad_h_total[kBlock];
    math_t acc_tau[kBlock];
    math_t acc_th[kBlock];
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t first = block * kBlock;
      const int64_t count = std::min(kBlock, neurons - first);
      load_block_params(params, tau, v_threshold, layout, first, count);
      for (int64_t j = 0; j < count; ++j) {
        input_divisor[j] = decay_input ? params.tau[j] : math_t(1);
        keep[j] = math_t(1) - math_t(1) / params.tau[j];
        grad_v[j] = 0;
        acc_tau[j] = 0;
        acc_th[j] = 0;
      }
      for (int64_t t = layout.steps - 1; t >= 0; --t) {
        const int64_t offset = t * neurons + first;
        const store_t* h_t = h_seq + offset;
        if (grad_h) {
          backward_block_step<S, true>(grad_spikes + offset, grad_h + offset, h_t, grad_x + offset, params,
                                       input_divisor, keep, grad_v, acc_th, grad_h_total, count, v_reset, alpha,
                                       mode);
        } else {
          backward_block_step<S, false>(grad_spikes + offset, grad_h, h_t, grad_x + offset, params, input_divisor,
                                        keep, grad_v, acc_th, grad_h_total, count, v_reset, alpha, mode);
        }
        if (!grad_tau) continue;
        // Leak gradient: needs v_{t-1}, rebuilt from h_{t-1} and its spike.
        const store_t* h_prev = h_t - neurons;
        for (int64_t j = 0; j < count; ++j) {
          const math_t th = params.v_threshold[j];
          math_t v_prev = v_start;
          if (t > 0) {
            const math_t hp = static_cast<math_t>(h_prev[j]);
            v_prev = lif_reset<math_t>(hp, hp >= th, th, v_reset, hard_reset);
          }
          const math_t h = static_cast<math_t>(h_t[j]);
          acc_tau[j] += grad_h_total[j] * lif_dh_dtau<math_t>(h, v_prev, params.tau[j], charge_reset, decay_input);
        }
      }
      for (int64_t j = 0; j < count; ++j) {
        if (grad_tau) grad_tau[first + j] = acc_tau[j];
        if (grad_v_threshold) grad_v_threshold[first + j] = acc_th[j];
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> lif_forward_cpu(const at::Tensor& x_in, const std::optional<at::Tensor>& tau,
                                                   const std::optional<at::Tensor>& v_threshold, double tau_value,
                                                   double v_threshold_value, std::optional<double> v_reset,
                                                   bool decay_input, bool /*detach_reset*/,
                                                   c10::string_view surrogate, double /*alpha*/,
                                                   std::optional<at::ScalarType> saved_dtype) {
  surrogate_from_name(std::string(surrogate));
  const LifLayout layout = lif_layout(x_in, tau, v_threshold);
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
    forward_cpu_kernel<scalar_t, store_t>(x.data_ptr<scalar_t>(), spikes.data_ptr<scalar_t>(), h.data_ptr<store_t>(),
                                          layout, channel_param<math_t>(tau_values, tau_value),
                                          channel_param<math_t>(th_values, v_threshold_value),
                                          static_cast<math_t>(v_reset.value_or(0.0)), v_reset.has_value(),
                                          decay_input);
  });
  return {spikes, h};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_backward_cpu(
    const at::Tensor& grad_spikes_in, const std::optional<at::Tensor>& grad_h_in, const at::Tensor& h_in,
    const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold, double tau_value,
    double v_threshold_value, std::optional<double> v_reset, bool decay_input, bool detach_reset,
    c10::string_view surrogate, double alpha, bool tau_grad, bool v_threshold_grad) {
  const LifLayout layout = check_backward_args(grad_spikes_in, grad_h_in, h_in, tau, v_threshold);
  TORCH_CHECK(!tau_grad || tau.has_value(), "ndsnn.lif_backward: tau_grad needs tau as a tensor");
  TORCH_CHECK(!v_threshold_grad || v_threshold.has_value(),
              "ndsnn.lif_backward: v_threshold_grad needs v_threshold as a tensor");
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
    at::Tensor tau_partial = tau_grad ? at::zeros({layout.neurons}, h.options().dtype(math_type)) : at::Tensor();
    at::Tensor th_partial =
        v_threshold_grad ? at::zeros({layout.neurons}, h.options().dtype(math_type)) : at::Tensor();
    if (grad_spikes.numel() > 0) {
      dispatch_surrogate(surrogate, [&](auto surrogate_tag) {
        backward_cpu_kernel<decltype(surrogate_tag)::value, scalar_t, store_t>(
            grad_spikes.data_ptr<scalar_t>(), grad_h ? grad_h->data_ptr<store_t>() : nullptr, h.data_ptr<store_t>(),
            grad_x.data_ptr<scalar_t>(), tau_grad ? tau_partial.data_ptr<math_t>() : nullptr,
            v_threshold_grad ? th_partial.data_ptr<math_t>() : nullptr, layout,
            channel_param<math_t>(tau_values, tau_value), channel_param<math_t>(th_values, v_threshold_value),
            static_cast<math_t>(v_reset.value_or(0.0)), v_reset.has_value(), decay_input, detach_reset,
            static_cast<math_t>(alpha));
      });
    } else {
      surrogate_from_name(std::string(surrogate));
    }
    if (tau_grad) grad_tau = reduce_param_grad(tau_partial, tau, h, layout);
    if (v_threshold_grad) grad_th = reduce_param_grad(th_partial, v_threshold, h, layout);
  });
  return {grad_x, grad_tau, grad_th};
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CPU, m) {
  m.impl("lif_forward", &lif_forward_cpu);
  m.impl("lif_backward", &lif_backward_cpu);
}

}  // namespace ndsnn
