// Fused multi-step LIF on CUDA: one thread per neuron, the time loop in registers. At each step a warp reads
// and writes 32 consecutive neurons, so every global access is coalesced; h is the only tensor saved.
// Only light CUDA headers: ATen/cuda/CUDAContext.h would pull in cuBLAS/cuSPARSE headers that a bare
// toolkit (nvcc and the runtime only) lacks.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "../lif.h"
#include "launch.h"

namespace ndsnn {
namespace {

template <typename scalar_t, typename store_t>
__global__ void lif_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ spikes,
                                   store_t* __restrict__ h_out, const LifLayout layout,
                                   const ChannelParam<at::opmath_type<scalar_t>> tau,
                                   const ChannelParam<at::opmath_type<scalar_t>> v_threshold,
                                   const at::opmath_type<scalar_t> v_reset, const bool hard_reset,
                                   const bool decay_input) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t neurons = layout.neurons;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < neurons;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t channel = (i / layout.inner) % layout.channels;
    const math_t tau_i = tau.at(channel);
    const math_t th = v_threshold.at(channel);
    math_t v = hard_reset ? v_reset : math_t(0);
    for (int64_t t = 0, offset = i; t < layout.steps; ++t, offset += neurons) {
      const math_t h = lif_charge<math_t>(v, static_cast<math_t>(x[offset]), tau_i, v_reset, decay_input);
      const bool spike = h >= th;
      spikes[offset] = static_cast<scalar_t>(spike ? 1 : 0);
      h_out[offset] = SpikeConsistentStore<store_t>::store(h, spike, th);
      v = lif_reset<math_t>(h, spike, th, v_reset, hard_reset);
    }
  }
}

template <Surrogate S, typename scalar_t, typename store_t>
__global__ void lif_backward_kernel(const scalar_t* __restrict__ grad_spikes, const store_t* __restrict__ grad_h,
                                    const store_t* __restrict__ h_seq, scalar_t* __restrict__ grad_x,
                                    at::opmath_type<scalar_t>* __restrict__ grad_tau,
                                    at::opmath_type<scalar_t>* __restrict__ grad_v_threshold, const LifLayout layout,
                                    const ChannelParam<at::opmath_type<scalar_t>> tau,
                                    const ChannelParam<at::opmath_type<scalar_t>> v_threshold,
                                    const at::opmath_type<scalar_t> v_reset, const bool hard_reset,
                                    const bool decay_input, const bool detach_reset,
                                    const at::opmath_type<scalar_t> alpha) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t neurons = layout.neurons;
  const math_t v_start = hard_reset ? v_reset : math_t(0);
  const math_t charge_reset = hard_reset ? v_reset : math_t(0);
  const auto mode = ResetMode<math_t>::make(hard_reset, detach_reset);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < neurons;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t channel = (i / layout.inner) % layout.channels;
    const math_t tau_i = tau.at(channel);
    const math_t th = v_threshold.at(channel);
    const math_t keep = math_t(1) - math_t(1) / tau_i;
    math_t grad_v = 0;
    math_t acc_tau = 0;
    math_t acc_th = 0;
    int64_t offset = (layout.steps - 1) * neurons + i;
    math_t h = static_cast<math_t>(h_seq[offset]);
    for (int64_t t = layout.steps - 1; t >= 0; --t, offset -= neurons) {
      // h of the previous step is both this step's v_prev source and the next iteration's h.
      const math_t h_prev = t > 0 ? static_cast<math_t>(h_seq[offset - neurons]) : math_t(0);
      const math_t gh_out = grad_h ? static_cast<math_t>(grad_h[offset]) : math_t(0);
      const LifStepGrad<math_t> g = lif_step_grad<S, math_t>(h, th, static_cast<math_t>(grad_spikes[offset]), gh_out,
                                                             grad_v, v_reset, alpha, mode);
      grad_x[offset] = static_cast<scalar_t>(decay_input ? g.h / tau_i : g.h);
      if (grad_tau) {
        const math_t v_prev = t > 0 ? lif_reset<math_t>(h_prev, h_prev >= th, th, v_reset, hard_reset) : v_start;
        acc_tau += g.h * lif_dh_dtau<math_t>(h, v_prev, tau_i, charge_reset, decay_input);
      }
      acc_th += g.threshold;
      grad_v = g.h * keep;
      h = h_prev;
    }
    if (grad_tau) grad_tau[i] = acc_tau;
    if (grad_v_threshold) grad_v_threshold[i] = acc_th;
  }
}

std::tuple<at::Tensor, at::Tensor> lif_forward_cuda(const at::Tensor& x, const std::optional<at::Tensor>& tau,
                                                    const std::optional<at::Tensor>& v_threshold, double tau_value,
                                                    double v_threshold_value, std::optional<double> v_reset,
                                                    bool decay_input, bool /*detach_reset*/,
                                                    c10::string_view surrogate, double alpha,
                                                    std::optional<at::ScalarType> saved_dtype) {
  // The guard is taken inside the launch, after the argument checks have run on whatever devices were given.
  return lif_forward_host(x, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input, surrogate, alpha,
                          saved_dtype, [&](const auto& a) {
                            using Args = std::decay_t<decltype(a)>;
                            const c10::cuda::CUDAGuard guard(x.device());
                            lif_forward_kernel<typename Args::scalar, typename Args::store>
                                <<<grid_for(a.layout.neurons), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                                    a.x, a.spikes, a.h, a.layout, a.tau, a.v_threshold, a.v_reset, a.hard_reset,
                                    a.decay_input);
                            C10_CUDA_KERNEL_LAUNCH_CHECK();
                          });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_backward_cuda(
    const at::Tensor& grad_spikes, const std::optional<at::Tensor>& grad_h, const at::Tensor& h,
    const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold, double tau_value,
    double v_threshold_value, std::optional<double> v_reset, bool decay_input, bool detach_reset,
    c10::string_view surrogate, double alpha, bool tau_grad, bool v_threshold_grad) {
  return lif_backward_host(
      grad_spikes, grad_h, h, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input, detach_reset,
      surrogate, alpha, tau_grad, v_threshold_grad, [&](auto surrogate_tag, const auto& a) {
        using Args = std::decay_t<decltype(a)>;
        const c10::cuda::CUDAGuard guard(h.device());
        lif_backward_kernel<decltype(surrogate_tag)::value, typename Args::scalar, typename Args::store>
            <<<grid_for(a.layout.neurons), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                a.grad_spikes, a.grad_h, a.h, a.grad_x, a.grad_tau, a.grad_v_threshold, a.layout, a.tau,
                a.v_threshold, a.v_reset, a.hard_reset, a.decay_input, a.detach_reset, a.alpha);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CUDA, m) {
  m.impl("lif_forward", &lif_forward_cuda);
  m.impl("lif_backward", &lif_backward_cuda);
}

}  // namespace ndsnn
