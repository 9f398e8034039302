// LIF of a constant input current on the CPU (csrc/lif_repeated.h): neurons in blocks across threads; each
// block reads its frame once, and backward recomputes the block's membrane potentials over all steps into a
// thread-local buffer before walking back through them.
#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../lif_repeated.h"
#include "cpu_cast.h"
#include "lif_block.h"

namespace ndsnn {
namespace {

using namespace cpu;

// h_t of one block for every step (h[t * kBlock + j]), as forward computes them.
template <typename math_t>
inline void charge_block(const math_t* x, const BlockParams<math_t>& params, math_t* h, int64_t steps, int64_t count,
                         math_t v_reset, bool hard_reset, bool decay_input) {
  math_t v[kBlock];
  const math_t v_start = hard_reset ? v_reset : math_t(0);
  for (int64_t j = 0; j < count; ++j) v[j] = v_start;
  for (int64_t t = 0; t < steps; ++t) {
    math_t* h_t = h + t * kBlock;
    for (int64_t j = 0; j < count; ++j) {
      const math_t th = params.v_threshold[j];
      const math_t value = lif_charge<math_t>(v[j], x[j], params.tau[j], v_reset, decay_input);
      h_t[j] = value;
      v[j] = lif_reset<math_t>(value, value >= th, th, v_reset, hard_reset);
    }
  }
}

template <typename scalar_t>
void repeated_forward_kernel(const LifRepeatedArgs<scalar_t>& a) {
  using math_t = at::opmath_type<scalar_t>;
  const LifLayout layout = a.layout;
  const int64_t neurons = layout.neurons;
  const int64_t blocks = (neurons + kBlock - 1) / kBlock;
  const Raw<scalar_t>* current = raw_ptr(a.current);
  Raw<scalar_t>* spikes = raw_ptr(a.spikes);
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t block_begin, int64_t block_end) {
    BlockParams<math_t> params;
    math_t x[kBlock];
    math_t v[kBlock];
    math_t fired[kBlock];
    const math_t v_reset = a.v_reset;
    const bool hard_reset = a.hard_reset;
    const bool decay_input = a.decay_input;
    const math_t v_start = hard_reset ? v_reset : math_t(0);
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t first = block * kBlock;
      const int64_t count = std::min(kBlock, neurons - first);
      load_block_params(params, a.tau, a.v_threshold, layout, first, count);
      CpuCast<scalar_t>::load_block(current + first, x, count);
      for (int64_t j = 0; j < count; ++j) v[j] = v_start;
      for (int64_t t = 0; t < layout.steps; ++t) {
        for (int64_t j = 0; j < count; ++j) {
          const math_t th = params.v_threshold[j];
          const math_t h = lif_charge<math_t>(v[j], x[j], params.tau[j], v_reset, decay_input);
          const bool spike = h >= th;
          fired[j] = spike ? math_t(1) : math_t(0);
          v[j] = lif_reset<math_t>(h, spike, th, v_reset, hard_reset);
        }
        CpuCast<scalar_t>::store_values(fired, spikes + t * neurons + first, count);
      }
    }
  });
}

template <Surrogate S, typename scalar_t>
void repeated_backward_kernel(const LifRepeatedArgs<scalar_t>& a) {
  using math_t = at::opmath_type<scalar_t>;
  const LifLayout layout = a.layout;
  const int64_t neurons = layout.neurons;
  const int64_t steps = layout.steps;
  const int64_t blocks = (neurons + kBlock - 1) / kBlock;
  const Raw<scalar_t>* current = raw_ptr(a.current);
  const Raw<scalar_t>* grad_spikes = raw_ptr(a.grad_spikes);
  Raw<scalar_t>* grad_current = raw_ptr(a.grad_current);
  const auto mode = ResetMode<math_t>::make(a.hard_reset, a.detach_reset);
  const math_t v_start = a.hard_reset ? a.v_reset : math_t(0);
  const math_t charge_reset = a.hard_reset ? a.v_reset : math_t(0);
  const math_t v_reset = a.v_reset;
  const math_t alpha = a.alpha;
  const bool hard_reset = a.hard_reset;
  const bool decay_input = a.decay_input;
  const bool tau_grad = a.grad_tau != nullptr;
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t block_begin, int64_t block_end) {
    BlockParams<math_t> params;
    std::vector<math_t> h_steps(static_cast<size_t>(steps * kBlock));
    math_t x[kBlock];
    math_t input_divisor[kBlock];  // tau with decay_input (x enters as x / tau), else 1
    math_t keep[kBlock];           // dh_t / dv_{t-1} = 1 - 1 / tau
    math_t grad_v[kBlock];
    math_t grad_x[kBlock];
    math_t acc_tau[kBlock];
    math_t acc_th[kBlock];
    math_t gs_buffer[kBlock];
    math_t grad_h_total[kBlock];
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t first = block * kBlock;
      const int64_t count = std::min(kBlock, neurons - first);
      load_block_params(params, a.tau, a.v_threshold, layout, first, count);
      CpuCast<scalar_t>::load_block(current + first, x, count);
      charge_block(x, params, h_steps.data(), steps, count, v_reset, hard_reset, decay_input);
      for (int64_t j = 0; j < count; ++j) {
        input_divisor[j] = decay_input ? params.tau[j] : math_t(1);
        keep[j] = math_t(1) - math_t(1) / params.tau[j];
        grad_v[j] = 0;
        grad_x[j] = 0;
        acc_tau[j] = 0;
        acc_th[j] = 0;
      }
      for (int64_t t = steps - 1; t >= 0; --t) {
        const math_t* __restrict__ h = h_steps.data() + t * kBlock;
        const math_t* __restrict__ gs = as_math<scalar_t>(grad_spikes + t * neurons + first, gs_buffer, count);
        for (int64_t j = 0; j < count; ++j) {
          const LifStepGrad<math_t> g =
              lif_step_grad<S, math_t>(h[j], params.v_threshold[j], gs[j], math_t(0), grad_v[j], v_reset, alpha, mode);
          grad_x[j] += g.h;  // divided by the input divisor once, after the last step
          acc_th[j] += g.threshold;
          grad_v[j] = g.h * keep[j];
          grad_h_total[j] = g.h;
        }
        if (!tau_grad) continue;
        // Leak gradient: needs v_{t-1}, from h_{t-1} and its spike.
        for (int64_t j = 0; j < count; ++j) {
          math_t v_prev = v_start;
          if (t > 0) {
            const math_t hp = h[j - kBlock];
            const math_t th = params.v_threshold[j];
            v_prev = lif_reset<math_t>(hp, hp >= th, th, v_reset, hard_reset);
          }
          acc_tau[j] += grad_h_total[j] * lif_dh_dtau<math_t>(h[j], v_prev, params.tau[j], charge_reset, decay_input);
        }
      }
      for (int64_t j = 0; j < count; ++j) grad_x[j] /= input_divisor[j];
      CpuCast<scalar_t>::store_values(grad_x, grad_current + first, count);
      for (int64_t j = 0; j < count; ++j) {
        if (tau_grad) a.grad_tau[first + j] = acc_tau[j];
        if (a.grad_v_threshold) a.grad_v_threshold[first + j] = acc_th[j];
      }
    }
  });
}

at::Tensor lif_repeated_forward_cpu(const at::Tensor& current, int64_t steps, const std::optional<at::Tensor>& tau,
                                    const std::optional<at::Tensor>& v_threshold, double tau_value,
                                    double v_threshold_value, std::optional<double> v_reset, bool decay_input,
                                    bool detach_reset, c10::string_view surrogate, double alpha) {
  return lif_repeated_forward_host(current, steps, tau, v_threshold, tau_value, v_threshold_value, v_reset,
                                   decay_input, detach_reset, surrogate, alpha,
                                   [](const auto& args) { repeated_forward_kernel(args); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_repeated_backward_cpu(
    const at::Tensor& grad_spikes, const at::Tensor& current, const std::optional<at::Tensor>& tau,
    const std::optional<at::Tensor>& v_threshold, double tau_value, double v_threshold_value,
    std::optional<double> v_reset, bool decay_input, bool detach_reset, c10::string_view surrogate, double alpha,
    bool tau_grad, bool v_threshold_grad) {
  return lif_repeated_backward_host(
      grad_spikes, current, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input, detach_reset,
      surrogate, alpha, tau_grad, v_threshold_grad, [](auto surrogate_tag, const auto& args) {
        using Args = std::decay_t<decltype(args)>;
        repeated_backward_kernel<decltype(surrogate_tag)::value, typename Args::scalar>(args);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CPU, m) {
  m.impl("lif_repeated_forward", &lif_repeated_forward_cpu);
  m.impl("lif_repeated_backward", &lif_repeated_backward_cpu);
}

}  // namespace ndsnn
