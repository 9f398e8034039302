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
#include "lif_repeated_block.h"

namespace ndsnn {
namespace {

using namespace cpu;

template <typename scalar_t>
void repeated_forward_kernel(const LifRepeatedArgs<scalar_t>& a) {
  using math_t = at::opmath_type<scalar_t>;
  const LifLayout layout = a.layout;
  const int64_t neurons = layout.neurons;
  const int64_t blocks = (neurons + kBlock - 1) / kBlock;
  const Raw<scalar_t>* current = raw_ptr(a.current);
  Raw<scalar_t>* spikes = raw_ptr(a.spikes);
  const auto settings = RepeatedSettings<math_t>::from(a);
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t block_begin, int64_t block_end) {
    BlockParams<math_t> params;
    math_t x[kBlock];
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t first = block * kBlock;
      const int64_t count = std::min(kBlock, neurons - first);
      load_block_params(params, a.tau, a.v_threshold, layout, first, count);
      CpuCast<scalar_t>::load_block(current + first, x, count);
      fire_repeated_block(x, params, layout.steps, count, settings, [&](int64_t t, const math_t* fired) {
        CpuCast<scalar_t>::store_values(fired, spikes + t * neurons + first, count);
      });
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
  const auto settings = RepeatedSettings<math_t>::from(a);
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t block_begin, int64_t block_end) {
    BlockParams<math_t> params;
    std::vector<math_t> h_steps(static_cast<size_t>(steps * kBlock));
    math_t x[kBlock];
    math_t gs_buffer[kBlock];
    math_t grad_x[kBlock];
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t first = block * kBlock;
      const int64_t count = std::min(kBlock, neurons - first);
      load_block_params(params, a.tau, a.v_threshold, layout, first, count);
      CpuCast<scalar_t>::load_block(current + first, x, count);
      const RepeatedBlockGrad<math_t> out{grad_x, a.grad_tau ? a.grad_tau + first : nullptr,
                                          a.grad_v_threshold ? a.grad_v_threshold + first : nullptr};
      charge_repeated_block(x, params, h_steps.data(), kBlock, steps, count, settings);
      backward_repeated_block<S>(
          x, params, steps, count, settings,
          [&](int64_t t) { return as_math<scalar_t>(grad_spikes + t * neurons + first, gs_buffer, count); },
          [&](int64_t t) { return static_cast<const math_t*>(h_steps.data() + t * kBlock); }, out);
      CpuCast<scalar_t>::store_values(grad_x, grad_current + first, count);
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
