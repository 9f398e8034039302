// Fused batch norm + multi-step LIF on CUDA (see ../batch_norm_lif.h for the math): one thread per neuron,
// the time loop in registers, coalesced accesses at every step as in lif_cuda.cu. The backward keeps the
// recomputed h of its neuron in a local array of kMaxFusedSteps; per-channel sums go through per-neuron
// partials reduced by at::sum (deterministic, no atomics). Statistics come from ATen's batch_norm_stats.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "../batch_norm_lif.h"
#include "launch.h"

namespace ndsnn {
namespace {

// y = x * scale + shift rounded as on the CPU (no FMA contraction, which nvcc would otherwise apply), so the
// forward and the backward's recomputation see the same y and the spikes agree with the CPU kernels.
__device__ inline float affine_rn(float x, float scale, float shift) { return __fadd_rn(__fmul_rn(x, scale), shift); }
__device__ inline double affine_rn(double x, double scale, double shift) {
  return __dadd_rn(__dmul_rn(x, scale), shift);
}

__device__ inline int64_t channel_of(int64_t neuron, const BnLifLayout& layout) {
  return (neuron / layout.inner) % layout.channels;
}

template <typename scalar_t>
__global__ void bn_lif_forward_kernel(const BnLifForwardArgs<scalar_t> a) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t neurons = a.layout.neurons;
  const BnLifNeuron<math_t> n = a.neuron;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < neurons;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(i, a.layout);
    const math_t scale = a.affine.scale(c);
    const math_t shift = a.affine.shift(c, scale);
    math_t v = n.hard_reset ? n.v_reset : math_t(0);
    for (int64_t t = 0, offset = i; t < a.layout.steps; ++t, offset += neurons) {
      math_t y = affine_rn(static_cast<math_t>(a.x[offset]), scale, shift);
      if (a.residual) y += static_cast<math_t>(a.residual[offset]);
      const math_t h = lif_charge<math_t>(v, y, n.tau, n.v_reset, n.decay_input);
      const bool spike = h >= n.v_threshold;
      a.spikes[offset] = static_cast<scalar_t>(spike ? 1 : 0);
      v = lif_reset<math_t>(h, spike, n.v_threshold, n.v_reset, n.hard_reset);
    }
  }
}

template <Surrogate S, typename scalar_t>
__global__ void bn_lif_backward_phase1_kernel(const BnLifBackwardArgs<scalar_t> a,
                                              at::opmath_type<scalar_t>* __restrict__ partial_dy,
                                              at::opmath_type<scalar_t>* __restrict__ partial_dyxc) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t neurons = a.layout.neurons;
  const int64_t steps = a.layout.steps;
  const BnLifNeuron<math_t> n = a.neuron;
  const auto mode = ResetMode<math_t>::make(n.hard_reset, n.detach_reset);
  const math_t keep = math_t(1) - math_t(1) / n.tau;
  const math_t input_divisor = n.decay_input ? n.tau : math_t(1);
  math_t h_all[kMaxFusedSteps];
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < neurons;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(i, a.layout);
    const math_t scale = a.affine.scale(c);
    const math_t shift = a.affine.shift(c, scale);
    const math_t mean = a.affine.mean[c];
    math_t v = n.hard_reset ? n.v_reset : math_t(0);
    for (int64_t t = 0, offset = i; t < steps; ++t, offset += neurons) {
      math_t y = affine_rn(static_cast<math_t>(a.x[offset]), scale, shift);
      if (a.residual) y += static_cast<math_t>(a.residual[offset]);
      const math_t h = lif_charge<math_t>(v, y, n.tau, n.v_reset, n.decay_input);
      h_all[t] = h;
      v = lif_reset<math_t>(h, h >= n.v_threshold, n.v_threshold, n.v_reset, n.hard_reset);
    }
    math_t grad_v = 0;
    math_t acc_dy = 0;
    math_t acc_dyxc = 0;
    for (int64_t t = steps - 1; t >= 0; --t) {
      const int64_t offset = t * neurons + i;
      const LifStepGrad<math_t> g = lif_step_grad<S, math_t>(
          h_all[t], n.v_threshold, static_cast<math_t>(a.grad_spikes[offset]), math_t(0), grad_v, n.v_reset, n.alpha,
          mode);
      const math_t dy = g.h / input_divisor;
      a.grad_y[offset] = static_cast<scalar_t>(dy);
      acc_dy += dy;
      acc_dyxc += dy * (static_cast<math_t>(a.x[offset]) - mean);
      grad_v = g.h * keep;
    }
    partial_dy[i] = acc_dy;
    partial_dyxc[i] = acc_dyxc;
  }
}

template <typename scalar_t>
__global__ void bn_lif_backward_phase2_kernel(const BnLifInputGradArgs<scalar_t> a) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t neurons = a.layout.neurons;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < neurons;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(i, a.layout);
    const math_t scale = a.scale[c];
    const math_t coef_a = a.a[c];
    const math_t coef_b = a.b[c];
    for (int64_t t = 0, offset = i; t < a.layout.steps; ++t, offset += neurons) {
      const math_t gy = static_cast<math_t>(a.grad_y[offset]);
      a.grad_x[offset] = static_cast<scalar_t>(gy * scale + static_cast<math_t>(a.x[offset]) * coef_a + coef_b);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> batch_norm_stats_cuda(const at::Tensor& x_in) {
  const BnLifLayout layout = bn_lif_layout(x_in, "ndsnn.batch_norm_stats");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous().view({layout.steps * layout.batch, layout.channels, layout.inner});
  const at::ScalarType math_type = at::toOpMathType(x.scalar_type());
  if (layout.steps * layout.batch * layout.inner == 0 || layout.channels == 0) {
    const at::Tensor nan = at::full({layout.channels}, NAN, x.options().dtype(math_type));
    return {nan, nan.clone()};
  }
  // eps = 0: invstd = 1 / sqrt(var), so var = invstd^-2; ATen returns invstd = 0 (not inf) for a constant
  // channel (var = 0, eps = 0), whose variance is then 0.
  auto [mean, invstd] = at::batch_norm_stats(x, 0.0);
  const at::Tensor var = at::where(invstd == 0, at::zeros_like(invstd), invstd.pow(-2));
  return {mean.to(math_type), var.to(math_type)};
}

at::Tensor batch_norm_lif_forward_cuda(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                       const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                       const at::Tensor& mean, const at::Tensor& invstd, double tau,
                                       double v_threshold, std::optional<double> v_reset, bool decay_input,
                                       bool detach_reset, c10::string_view surrogate, double alpha,
                                       bool /*batch_stats*/) {
  // The guards are taken inside the launches, after the argument checks have run on whatever devices were given.
  return bn_lif_forward_host(x, residual, weight, bias, mean, invstd, tau, v_threshold, v_reset, decay_input,
                             detach_reset, surrogate, alpha, [&](const auto& a) {
                               using Args = std::decay_t<decltype(a)>;
                               const c10::cuda::CUDAGuard guard(x.device());
                               bn_lif_forward_kernel<typename Args::scalar>
                                   <<<grid_for(a.layout.neurons), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(a);
                               C10_CUDA_KERNEL_LAUNCH_CHECK();
                             });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_lif_backward_cuda(
    const at::Tensor& grad_spikes, const at::Tensor& x, const std::optional<at::Tensor>& residual,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, const at::Tensor& mean,
    const at::Tensor& invstd, double tau, double v_threshold, std::optional<double> v_reset, bool decay_input,
    bool detach_reset, c10::string_view surrogate, double alpha, bool batch_stats) {
  auto phase1 = [&](auto surrogate_tag, const auto& a) -> std::tuple<at::Tensor, at::Tensor> {
    using Args = std::decay_t<decltype(a)>;
    using math_t = typename Args::math_t;
    const at::ScalarType math_type = c10::CppTypeToScalarType<math_t>::value;
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor partial_dy = at::empty({a.layout.neurons}, x.options().dtype(math_type));
    at::Tensor partial_dyxc = at::empty({a.layout.neurons}, x.options().dtype(math_type));
    bn_lif_backward_phase1_kernel<decltype(surrogate_tag)::value, typename Args::scalar>
        <<<grid_for(a.layout.neurons), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            a, partial_dy.data_ptr<math_t>(), partial_dyxc.data_ptr<math_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {channel_sum(partial_dy, a.layout), channel_sum(partial_dyxc, a.layout)};
  };
  auto phase2 = [&](const auto& a) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(a.grad_x)>>;
    const c10::cuda::CUDAGuard guard(x.device());
    bn_lif_backward_phase2_kernel<scalar_t>
        <<<grid_for(a.layout.neurons), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  return bn_lif_backward_host(grad_spikes, x, residual, weight, bias, mean, invstd, tau, v_threshold, v_reset,
                              decay_input, detach_reset, surrogate, alpha, batch_stats, phase1, phase2);
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CUDA, m) {
  m.impl("batch_norm_stats", &batch_norm_stats_cuda);
  m.impl("batch_norm_lif_forward", &batch_norm_lif_forward_cuda);
  m.impl("batch_norm_lif_backward", &batch_norm_lif_backward_cuda);
}

}  // namespace ndsnn
