// The tile-resident sparse convolution on CUDA (design and per-thread code: ../sparse_tiles.h). A block of
// tiles::kThreads threads stages its tile into dynamic shared memory, synchronises, and each (warp, lane) runs
// the functions the CPU emulation runs too. The weight gradient adds each warp's lanes with a shuffle tree and
// writes one partial per (block, kept weight); a second kernel adds the partials block after block.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>

#include "../sparse_tiled.h"

namespace ndsnn {
namespace {

using tiles::kThreads;
using tiles::kWarp;
using tiles::kWarps;

// The opt-in maximum of dynamic shared memory per block on the current device, less what the kernels'
// static variables and the runtime may need, or the caller's budget.
int64_t shared_budget(int64_t requested) {
  int device = 0;
  int optin = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const int64_t available = std::max<int64_t>(0, static_cast<int64_t>(optin) - 1024);
  return requested > 0 ? std::min<int64_t>(requested, available) : available;
}

template <typename Kernel>
void allow_shared(Kernel kernel, int64_t bytes) {
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <typename T>
__device__ __forceinline__ T* shared_buffer() {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  return reinterpret_cast<T*>(shared_raw);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) tiled_forward_kernel(const TiledForwardArgs<T> a) {
  T* staged = shared_buffer<T>();
  const tiles::Origin o = a.tiles.origin(blockIdx.x);
  for (int64_t e = threadIdx.x; e < a.staged; e += kThreads) {
    const int64_t offset = tiles::staged_input(a.conv, a.tiles, o, e);
    staged[e] = offset >= 0 ? a.x[offset] : T(0);
  }
  __syncthreads();
  tiles::forward_lane<T, at::opmath_type<T>>(a.conv, a.tiles, o, staged, a.weight, a.bias, a.out_ptr, a.out_flat,
                                             a.out, threadIdx.x / kWarp, threadIdx.x % kWarp);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) tiled_grad_input_kernel(const TiledGradInputArgs<T> a) {
  T* staged = shared_buffer<T>();
  const tiles::Origin o = a.tiles.origin(blockIdx.x);
  for (int64_t e = threadIdx.x; e < a.staged; e += kThreads) {
    const int64_t offset = tiles::staged_window_grad(a.conv, a.tiles, o, e);
    staged[e] = offset >= 0 ? a.grad_out[offset] : T(0);
  }
  __syncthreads();
  tiles::grad_input_lane<T, at::opmath_type<T>>(a.conv, a.tiles, o, staged, a.weight, a.in_ptr, a.in_flat,
                                                a.grad_x, threadIdx.x / kWarp, threadIdx.x % kWarp);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) tiled_grad_weight_kernel(const TiledGradWeightArgs<T> a) {
  using A = at::opmath_type<T>;
  T* staged = shared_buffer<T>();
  const tiles::Origin o = a.tiles.origin(blockIdx.x);
  const int64_t input_part = a.tiles.images * a.conv.in_channels * a.tiles.span_h * a.tiles.span_w;
  for (int64_t e = threadIdx.x; e < a.staged; e += kThreads) {
    const int64_t offset = e < input_part ? tiles::staged_input(a.conv, a.tiles, o, e)
                                          : tiles::staged_tile_grad(a.conv, a.tiles, o, e - input_part);
    staged[e] = offset >= 0 ? (e < input_part ? a.x[offset] : a.grad_out[offset]) : T(0);
  }
  __syncthreads();
  const int64_t warp = threadIdx.x / kWarp;
  const int64_t lane = threadIdx.x % kWarp;
  for (int64_t k = warp; k < a.kept; k += kWarps) {
    A sum = tiles::grad_weight_lane<T, A>(a.conv, a.tiles, o, staged, a.out_flat[k], lane);
    for (int offset = kWarp / 2; offset >= 1; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0) a.partial[blockIdx.x * a.kept + k] = sum;
  }
}

template <typename T>
__global__ void tiled_grad_weight_sum_kernel(const TiledGradWeightArgs<T> a) {
  using A = at::opmath_type<T>;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < a.kept;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    A total = A(0);
    for (int64_t block = 0; block < a.tiles.blocks(); ++block) total += a.partial[block * a.kept + k];
    a.grad_weight[a.out_flat[k]] = static_cast<T>(total);
  }
}

template <typename Args, typename Kernel>
void launch_tiles(Kernel kernel, const Args& a) {
  using T = std::remove_const_t<std::remove_pointer_t<decltype(a.weight)>>;
  const int64_t bytes = a.staged * static_cast<int64_t>(sizeof(T));
  allow_shared(kernel, bytes);
  kernel<<<a.tiles.blocks(), kThreads, bytes, c10::cuda::getCurrentCUDAStream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor tiled_forward_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              const at::Tensor& out_ptr, const at::Tensor& out_flat, const at::Tensor& in_ptr,
                              const at::Tensor& in_flat, at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, int64_t groups, bool /*dense_weight_grad*/,
                              int64_t smem_budget) {
  const c10::cuda::CUDAGuard guard(x.device());
  return tiled_forward_host(x, weight, bias, out_ptr, out_flat, in_ptr, in_flat, stride, padding, dilation, groups,
                            shared_budget(smem_budget), [&](const auto& a) {
                              using T = std::remove_const_t<std::remove_pointer_t<decltype(a.x)>>;
                              launch_tiles(tiled_forward_kernel<T>, a);
                            });
}

at::Tensor tiled_grad_input_cuda(const at::Tensor& grad_out, const at::Tensor& weight, const at::Tensor& in_ptr,
                                 const at::Tensor& in_flat, at::IntArrayRef input_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                 int64_t smem_budget) {
  const c10::cuda::CUDAGuard guard(grad_out.device());
  return tiled_grad_input_host(grad_out, weight, in_ptr, in_flat, input_size, stride, padding, dilation, groups,
                               shared_budget(smem_budget), [&](const auto& a) {
                                 using T = std::remove_const_t<std::remove_pointer_t<decltype(a.grad_out)>>;
                                 launch_tiles(tiled_grad_input_kernel<T>, a);
                               });
}

at::Tensor tiled_grad_weight_cuda(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& out_flat,
                                  const at::Tensor& in_ptr, const at::Tensor& in_flat, at::IntArrayRef weight_size,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups, int64_t smem_budget) {
  const c10::cuda::CUDAGuard guard(x.device());
  return tiled_grad_weight_host(
      grad_out, x, out_flat, in_ptr, in_flat, weight_size, stride, padding, dilation, groups,
      shared_budget(smem_budget), [&](const auto& a) {
        using T = std::remove_const_t<std::remove_pointer_t<decltype(a.x)>>;
        const int64_t bytes = a.staged * static_cast<int64_t>(sizeof(T));
        allow_shared(tiled_grad_weight_kernel<T>, bytes);
        const auto stream = c10::cuda::getCurrentCUDAStream();
        tiled_grad_weight_kernel<T><<<a.tiles.blocks(), kThreads, bytes, stream>>>(a);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        const int64_t sum_blocks = std::min<int64_t>((a.kept + 255) / 256, 4096);
        tiled_grad_weight_sum_kernel<T><<<sum_blocks, 256, 0, stream>>>(a);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CUDA, m) {
  m.impl("sparse_conv2d_tiled_forward", &tiled_forward_cuda);
  m.impl("sparse_conv2d_tiled_grad_input", &tiled_grad_input_cuda);
  m.impl("sparse_conv2d_tiled_grad_weight", &tiled_grad_weight_cuda);
}

}  // namespace ndsnn
