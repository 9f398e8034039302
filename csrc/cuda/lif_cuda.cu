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

namespace ndsnn {
namespace {

constexpr int kThreads = 256;

inline int64_t grid_for(int64_t neurons) {
  int device = 0;
  int sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t max_blocks = static_cast<int64_t>(sms) * 32;
  return std::max<int64_t>(1, std::min<int64_t>((neurons + kThreads - 1) / kThreads, max_blocks));
}

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

std::tuple<at::Tensor, at::Tensor> lif_forward_cuda(const at::Tensor& x_in, const std::optional<at::Tensor>& tau,
                                                    const std::optional<at::Tensor>& v_threshold, double tau_value,
                                                    double v_threshold_value, std::optional<double> v_reset,
                                                    bool decay_input, bool /*detach_reset*/,
                                                    c10::string_view surrogate, double alpha,
                                                    std::optional<at::ScalarType> saved_dtype) {
  surrogate_from_name(std::string(surrogate));
  const LifLayout layout = lif_layout(x_in, tau, tau_value, v_threshold, alpha);
  const c10::cuda::CUDAGuard guard(x_in.device());
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
    lif_forward_kernel<scalar_t, store_t>
        <<<grid_for(layout.neurons), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            x.const_data_ptr<scalar_t>(), spikes.data_ptr<scalar_t>(), h.data_ptr<store_t>(), layout,
            channel_param<math_t>(tau_values, tau_value), channel_param<math_t>(th_values, v_threshold_value),
            static_cast<math_t>(v_reset.value_or(0.0)), v_reset.has_value(), decay_input);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {spikes, h};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_backward_cuda(
    const at::Tensor& grad_spikes_in, const std::optional<at::Tensor>& grad_h_in, const at::Tensor& h_in,
    const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold, double tau_value,
    double v_threshold_value, std::optional<double> v_reset, bool decay_input, bool detach_reset,
    c10::string_view surrogate, double alpha, bool tau_grad, bool v_threshold_grad) {
  const LifLayout layout = check_backward_args(grad_spikes_in, grad_h_in, h_in, tau, tau_value, v_threshold, alpha);
  TORCH_CHECK(!tau_grad || tau.has_value(), "ndsnn.lif_backward: tau_grad needs tau as a tensor");
  TORCH_CHECK(!v_threshold_grad || v_threshold.has_value(),
              "ndsnn.lif_backward: v_threshold_grad needs v_threshold as a tensor");
  const c10::cuda::CUDAGuard guard(h_in.device());
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
      dispatch_surrogate(surrogate, [&](auto surrogate_tag) {
        lif_backward_kernel<decltype(surrogate_tag)::value, scalar_t, store_t>
            <<<grid_for(layout.neurons), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                grad_spikes.const_data_ptr<scalar_t>(), grad_h ? grad_h->const_data_ptr<store_t>() : nullptr,
                h.const_data_ptr<store_t>(), grad_x.data_ptr<scalar_t>(),
                tau_grad ? tau_partial.data_ptr<math_t>() : nullptr,
                v_threshold_grad ? th_partial.data_ptr<math_t>() : nullptr, layout,
                channel_param<math_t>(tau_values, tau_value), channel_param<math_t>(th_values, v_threshold_value),
                static_cast<math_t>(v_reset.value_or(0.0)), v_reset.has_value(), decay_input, detach_reset,
                static_cast<math_t>(alpha));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
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

TORCH_LIBRARY_IMPL(ndsnn, CUDA, m) {
  m.impl("lif_forward", &lif_forward_cuda);
  m.impl("lif_backward", &lif_backward_cuda);
}

}  // namespace ndsnn
