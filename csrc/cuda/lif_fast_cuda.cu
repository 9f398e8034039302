// The LIF neuron on CUDA for the common case (a number for tau and for v_threshold, no gradient for them):
// built to move its bytes at the memory roofline.
//
// Each thread owns V consecutive neurons (V = 4 when every row of a time step is aligned for 16-byte fp32
// or 8-byte 16-bit accesses, else 1) and walks time in chunks of steps: the loads of a whole chunk are
// issued before any arithmetic, so chunk * V independent loads are in flight per thread instead of one
// dependent load per step, and the chunk's values live in registers (fully unrolled, compile-time indices:
// no local-memory arrays). T is any length: the last chunk is predicated. The arithmetic is lif_math.h's,
// as in lif_cuda.cu, so both kernels compute the same numbers. Per-channel or learnable parameters, and
// float64, go to the general kernel (lif_cuda.cu); the Python op chooses.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "../lif.h"
#include "launch.h"

namespace ndsnn {
namespace {

// Steps per chunk: 8 forward (one input pack per step), 4 backward (three packs per step: h, the spike
// gradient, the gradient of h), which keeps the backward near 64 registers per thread.
constexpr int kForwardChunk = 8;
constexpr int kBackwardChunk = 4;

// V elements moved by one vector instruction (16 bytes of fp32, 8 bytes of a 16-bit type when V = 4).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}

template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& value) {
  *reinterpret_cast<Pack<T, V>*>(p) = value;
}

template <typename scalar_t, typename store_t, int V>
__global__ void __launch_bounds__(kThreads)
    lif_forward_fast_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ spikes,
                            store_t* __restrict__ h_out, const int64_t neurons, const int64_t steps,
                            const at::opmath_type<scalar_t> tau, const at::opmath_type<scalar_t> th,
                            const at::opmath_type<scalar_t> v_reset, const bool hard_reset, const bool decay_input) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t groups = neurons / V;
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t base = g * V;
    math_t v[V];
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = hard_reset ? v_reset : math_t(0);
    for (int64_t t0 = 0; t0 < steps; t0 += kForwardChunk) {
      Pack<scalar_t, V> xs[kForwardChunk];
#pragma unroll
      for (int c = 0; c < kForwardChunk; ++c) {
        if (t0 + c < steps) xs[c] = load_pack<scalar_t, V>(x + (t0 + c) * neurons + base);
      }
#pragma unroll
      for (int c = 0; c < kForwardChunk; ++c) {
        if (t0 + c < steps) {
          Pack<scalar_t, V> s;
          Pack<store_t, V> hs;
#pragma unroll
          for (int k = 0; k < V; ++k) {
            const math_t h = lif_charge<math_t>(v[k], static_cast<math_t>(xs[c].v[k]), tau, v_reset, decay_input);
            const bool spike = h >= th;
            s.v[k] = static_cast<scalar_t>(spike ? 1 : 0);
            hs.v[k] = SpikeConsistentStore<store_t>::store(h, spike, th);
            v[k] = lif_reset<math_t>(h, spike, th, v_reset, hard_reset);
          }
          const int64_t offset = (t0 + c) * neurons + base;
          store_pack<scalar_t, V>(spikes + offset, s);
          store_pack<store_t, V>(h_out + offset, hs);
        }
      }
    }
  }
}

template <Surrogate S, typename scalar_t, typename store_t, int V>
__global__ void __launch_bounds__(kThreads)
    lif_backward_fast_kernel(const scalar_t* __restrict__ grad_spikes, const store_t* __restrict__ grad_h,
                             const store_t* __restrict__ h_seq, scalar_t* __restrict__ grad_x, const int64_t neurons,
                             const int64_t steps, const at::opmath_type<scalar_t> tau,
                             const at::opmath_type<scalar_t> th, const at::opmath_type<scalar_t> v_reset,
                             const bool hard_reset, const bool decay_input, const bool detach_reset,
                             const at::opmath_type<scalar_t> alpha) {
  using math_t = at::opmath_type<scalar_t>;
  const auto mode = ResetMode<math_t>::make(hard_reset, detach_reset);
  const math_t keep = math_t(1) - math_t(1) / tau;
  const int64_t groups = neurons / V;
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t base = g * V;
    math_t grad_v[V];
#pragma unroll
    for (int k = 0; k < V; ++k) grad_v[k] = math_t(0);
    for (int64_t end = steps; end > 0; end -= kBackwardChunk) {  // steps end-1, end-2, ..., down to end-kBackwardChunk
      Pack<store_t, V> hs[kBackwardChunk];
      Pack<scalar_t, V> gs[kBackwardChunk];
      Pack<store_t, V> ghs[kBackwardChunk];
#pragma unroll
      for (int c = 0; c < kBackwardChunk; ++c) {
        const int64_t t = end - 1 - c;
        if (t >= 0) {
          const int64_t offset = t * neurons + base;
          hs[c] = load_pack<store_t, V>(h_seq + offset);
          gs[c] = load_pack<scalar_t, V>(grad_spikes + offset);
          if (grad_h != nullptr) ghs[c] = load_pack<store_t, V>(grad_h + offset);
        }
      }
#pragma unroll
      for (int c = 0; c < kBackwardChunk; ++c) {
        const int64_t t = end - 1 - c;
        if (t >= 0) {
          Pack<scalar_t, V> gx;
#pragma unroll
          for (int k = 0; k < V; ++k) {
            const math_t gh_out = grad_h != nullptr ? static_cast<math_t>(ghs[c].v[k]) : math_t(0);
            const LifStepGrad<math_t> step = lif_step_grad<S, math_t>(
                static_cast<math_t>(hs[c].v[k]), th, static_cast<math_t>(gs[c].v[k]), gh_out, grad_v[k], v_reset,
                alpha, mode);
            gx.v[k] = static_cast<scalar_t>(decay_input ? step.h / tau : step.h);
            grad_v[k] = step.h * keep;
          }
          store_pack<scalar_t, V>(grad_x + t * neurons + base, gx);
        }
      }
    }
  }
}

// V = 4 when every row of a time step starts on a vector boundary in every array, else 1.
inline bool vectorizable(int64_t neurons, std::initializer_list<const void*> pointers, int64_t element_bytes) {
  if (neurons % 4 != 0) return false;
  for (const void* p : pointers) {
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % (4 * element_bytes) != 0) return false;
  }
  return true;
}

void check_fast_args(const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold,
                     const at::Tensor& x) {
  TORCH_CHECK(!tau.has_value() && !v_threshold.has_value(),
              "ndsnn.lif_*_fast: tau and v_threshold must be numbers (tensors go to lif_forward / lif_backward)");
  TORCH_CHECK(x.scalar_type() != at::kDouble, "ndsnn.lif_*_fast: float64 goes to lif_forward / lif_backward");
}

template <typename Args>
void launch_forward(const Args& a) {
  using scalar_t = typename Args::scalar;
  using store_t = typename Args::store;
  if constexpr (std::is_same_v<scalar_t, double>) {
    TORCH_CHECK(false, "ndsnn.lif_forward_fast: float64 goes to lif_forward");
  } else {
    const int64_t neurons = a.layout.neurons;
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const bool wide = vectorizable(neurons, {a.x, a.spikes}, sizeof(scalar_t)) &&
                      vectorizable(neurons, {a.h}, sizeof(store_t));
    if (wide) {
      lif_forward_fast_kernel<scalar_t, store_t, 4><<<grid_for(neurons / 4), kThreads, 0, stream>>>(
          a.x, a.spikes, a.h, neurons, a.layout.steps, a.tau.value, a.v_threshold.value, a.v_reset, a.hard_reset,
          a.decay_input);
    } else {
      lif_forward_fast_kernel<scalar_t, store_t, 1><<<grid_for(neurons), kThreads, 0, stream>>>(
          a.x, a.spikes, a.h, neurons, a.layout.steps, a.tau.value, a.v_threshold.value, a.v_reset, a.hard_reset,
          a.decay_input);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <Surrogate S, typename Args>
void launch_backward(const Args& a) {
  using scalar_t = typename Args::scalar;
  using store_t = typename Args::store;
  if constexpr (std::is_same_v<scalar_t, double>) {
    TORCH_CHECK(false, "ndsnn.lif_backward_fast: float64 goes to lif_backward");
  } else {
    const int64_t neurons = a.layout.neurons;
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const bool wide = vectorizable(neurons, {a.grad_spikes, a.grad_x}, sizeof(scalar_t)) &&
                      vectorizable(neurons, {a.h, a.grad_h}, sizeof(store_t));
    if (wide) {
      lif_backward_fast_kernel<S, scalar_t, store_t, 4><<<grid_for(neurons / 4), kThreads, 0, stream>>>(
          a.grad_spikes, a.grad_h, a.h, a.grad_x, neurons, a.layout.steps, a.tau.value, a.v_threshold.value,
          a.v_reset, a.hard_reset, a.decay_input, a.detach_reset, a.alpha);
    } else {
      lif_backward_fast_kernel<S, scalar_t, store_t, 1><<<grid_for(neurons), kThreads, 0, stream>>>(
          a.grad_spikes, a.grad_h, a.h, a.grad_x, neurons, a.layout.steps, a.tau.value, a.v_threshold.value,
          a.v_reset, a.hard_reset, a.decay_input, a.detach_reset, a.alpha);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

std::tuple<at::Tensor, at::Tensor> lif_forward_fast_cuda(
    const at::Tensor& x, const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold,
    double tau_value, double v_threshold_value, std::optional<double> v_reset, bool decay_input,
    bool /*detach_reset*/, c10::string_view surrogate, double alpha, std::optional<at::ScalarType> saved_dtype) {
  check_fast_args(tau, v_threshold, x);
  return lif_forward_host(x, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input, surrogate, alpha,
                          saved_dtype, [&](const auto& a) {
                            const c10::cuda::CUDAGuard guard(x.device());
                            launch_forward(a);
                          });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_backward_fast_cuda(
    const at::Tensor& grad_spikes, const std::optional<at::Tensor>& grad_h, const at::Tensor& h,
    const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold, double tau_value,
    double v_threshold_value, std::optional<double> v_reset, bool decay_input, bool detach_reset,
    c10::string_view surrogate, double alpha, bool tau_grad, bool v_threshold_grad) {
  check_fast_args(tau, v_threshold, grad_spikes);
  return lif_backward_host(grad_spikes, grad_h, h, tau, v_threshold, tau_value, v_threshold_value, v_reset,
                           decay_input, detach_reset, surrogate, alpha, tau_grad, v_threshold_grad,
                           [&](auto surrogate_tag, const auto& a) {
                             const c10::cuda::CUDAGuard guard(h.device());
                             launch_backward<decltype(surrogate_tag)::value>(a);
                           });
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CUDA, m) {
  m.impl("lif_forward_fast", &lif_forward_fast_cuda);
  m.impl("lif_backward_fast", &lif_backward_fast_cuda);
}

}  // namespace ndsnn
