// Fused multi-step LIF on the CPU: neurons in blocks across threads, the time loop innermost per block, so
// the membrane state of a block stays in a small local array and each step is one vectorisable pass.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../lif.h"
#include "cpu_cast.h"
#include "lif_block.h"

namespace ndsnn {
namespace {

using namespace cpu;

// Writes one block-step of spikes (input dtype) and h (saved dtype).
template <typename scalar_t, typename store_t>
inline void store_forward_block(const at::opmath_type<scalar_t>* h, const at::opmath_type<scalar_t>* threshold,
                                Raw<scalar_t>* spikes, Raw<store_t>* h_out, int64_t count) {
  if constexpr (std::is_same_v<scalar_t, store_t>) {
    CpuCast<scalar_t>::store_block(h, threshold, spikes, h_out, count);
  } else {
    Raw<store_t> ignored[kBlock];
    Raw<scalar_t> spikes_unused[kBlock];
    CpuCast<store_t>::store_block(h, threshold, ignored, h_out, count);
    CpuCast<scalar_t>::store_block(h, threshold, spikes, spikes_unused, count);
  }
}

template <typename scalar_t, typename store_t>
void forward_cpu_kernel(const Raw<scalar_t>* __restrict__ x, Raw<scalar_t>* __restrict__ spikes,
                        Raw<store_t>* __restrict__ h_out,
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
    math_t x_in[kBlock];
    math_t h_block[kBlock];
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t first = block * kBlock;
      const int64_t count = std::min(kBlock, neurons - first);
      load_block_params(params, tau, v_threshold, layout, first, count);
      const math_t v_start = hard_reset ? v_reset : math_t(0);
      for (int64_t j = 0; j < count; ++j) v[j] = v_start;
      for (int64_t t = 0; t < layout.steps; ++t) {
        const int64_t offset = t * neurons + first;
        CpuCast<scalar_t>::load_block(x + offset, x_in, count);
        for (int64_t j = 0; j < count; ++j) {
          const math_t th = params.v_threshold[j];
          const math_t h = lif_charge<math_t>(v[j], x_in[j], params.tau[j], v_reset, decay_input);
          h_block[j] = h;
          v[j] = lif_reset<math_t>(h, h >= th, th, v_reset, hard_reset);
        }
        store_forward_block<scalar_t, store_t>(h_block, params.v_threshold, spikes + offset, h_out + offset, count);
      }
    }
  });
}

// Backward over one block of neurons, one time step: the branch-free part every call needs. Returns dL/dh
// per neuron in `grad_h_total` for the optional leak-gradient pass.
template <Surrogate S, bool HasGradH, typename scalar_t, typename store_t, typename math_t>
inline void backward_block_step(const Raw<scalar_t>* __restrict__ gs_t, const Raw<store_t>* __restrict__ gh_t,
                                const Raw<store_t>* __restrict__ h_t, Raw<scalar_t>* __restrict__ gx_t,
                                const BlockParams<math_t>& params, const math_t* __restrict__ input_divisor,
                                const math_t* __restrict__ keep, math_t* __restrict__ grad_v,
                                math_t* __restrict__ acc_th, math_t* __restrict__ grad_h_total, int64_t count,
                                math_t v_reset, math_t alpha, ResetMode<math_t> mode) {
  math_t h_buffer[kBlock];
  math_t gs_buffer[kBlock];
  math_t gh_buffer[kBlock];
  math_t gx_buffer[kBlock];
  const math_t* __restrict__ h = as_math<store_t>(h_t, h_buffer, count);
  const math_t* __restrict__ gs = as_math<scalar_t>(gs_t, gs_buffer, count);
  const math_t* __restrict__ gh = HasGradH ? as_math<store_t>(gh_t, gh_buffer, count) : nullptr;
  math_t* __restrict__ gx = math_output<scalar_t>(gx_t, gx_buffer);
  for (int64_t j = 0; j < count; ++j) {
    const math_t gh_out = HasGradH ? gh[j] : math_t(0);
    const LifStepGrad<math_t> g =
        lif_step_grad<S, math_t>(h[j], params.v_threshold[j], gs[j], gh_out, grad_v[j], v_reset, alpha, mode);
    gx[j] = g.h / input_divisor[j];
    acc_th[j] += g.threshold;
    grad_v[j] = g.h * keep[j];
    grad_h_total[j] = g.h;
  }
  if (gx != reinterpret_cast<math_t*>(gx_t)) CpuCast<scalar_t>::store_values(gx, gx_t, count);
}

template <Surrogate S, typename scalar_t, typename store_t>
void backward_cpu_kernel(const Raw<scalar_t>* grad_spikes, const Raw<store_t>* grad_h, const Raw<store_t>* h_seq,
                         Raw<scalar_t>* grad_x,
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
        const Raw<store_t>* h_t = h_seq + offset;
        if (grad_h) {
          backward_block_step<S, true, scalar_t, store_t>(grad_spikes + offset, grad_h + offset, h_t, grad_x + offset,
                                                          params, input_divisor, keep, grad_v, acc_th, grad_h_total,
                                                          count, v_reset, alpha, mode);
        } else {
          backward_block_step<S, false, scalar_t, store_t>(grad_spikes + offset, grad_h, h_t, grad_x + offset, params,
                                                           input_divisor, keep, grad_v, acc_th, grad_h_total, count,
                                                           v_reset, alpha, mode);
        }
        if (!grad_tau) continue;
        // Leak gradient: needs v_{t-1}, rebuilt from h_{t-1} and its spike.
        const Raw<store_t>* h_prev = h_t - neurons;
        for (int64_t j = 0; j < count; ++j) {
          const math_t th = params.v_threshold[j];
          math_t v_prev = v_start;
          if (t > 0) {
            const math_t hp = CpuCast<store_t>::load(h_prev[j]);
            v_prev = lif_reset<math_t>(hp, hp >= th, th, v_reset, hard_reset);
          }
          const math_t h = CpuCast<store_t>::load(h_t[j]);
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

std::tuple<at::Tensor, at::Tensor> lif_forward_cpu(const at::Tensor& x, const std::optional<at::Tensor>& tau,
                                                   const std::optional<at::Tensor>& v_threshold, double tau_value,
                                                   double v_threshold_value, std::optional<double> v_reset,
                                                   bool decay_input, bool /*detach_reset*/,
                                                   c10::string_view surrogate, double alpha,
                                                   std::optional<at::ScalarType> saved_dtype) {
  return lif_forward_host(x, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input, surrogate, alpha,
                          saved_dtype, [](const auto& a) {
                            using Args = std::decay_t<decltype(a)>;
                            forward_cpu_kernel<typename Args::scalar, typename Args::store>(
                                raw_ptr(a.x), raw_ptr(a.spikes), raw_ptr(a.h), a.layout, a.tau, a.v_threshold,
                                a.v_reset, a.hard_reset, a.decay_input);
                          });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_backward_cpu(
    const at::Tensor& grad_spikes, const std::optional<at::Tensor>& grad_h, const at::Tensor& h,
    const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold, double tau_value,
    double v_threshold_value, std::optional<double> v_reset, bool decay_input, bool detach_reset,
    c10::string_view surrogate, double alpha, bool tau_grad, bool v_threshold_grad) {
  return lif_backward_host(
      grad_spikes, grad_h, h, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input, detach_reset,
      surrogate, alpha, tau_grad, v_threshold_grad, [](auto surrogate_tag, const auto& a) {
        using Args = std::decay_t<decltype(a)>;
        backward_cpu_kernel<decltype(surrogate_tag)::value, typename Args::scalar, typename Args::store>(
            raw_ptr(a.grad_spikes), raw_ptr(a.grad_h), raw_ptr(a.h), raw_ptr(a.grad_x), a.grad_tau,
            a.grad_v_threshold, a.layout, a.tau, a.v_threshold, a.v_reset, a.hard_reset, a.decay_input,
            a.detach_reset, a.alpha);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CPU, m) {
  m.impl("lif_forward", &lif_forward_cpu);
  m.impl("lif_backward", &lif_backward_cpu);
}

}  // namespace ndsnn
