// Masked sparse 2-D convolution on CUDA: work proportional to the number of kept weights.
//
// forward: one thread per output element; the threads of a warp share an output channel, so they walk the
// same list of kept weights (broadcast loads) and read neighbouring inputs. grad input: one thread per input
// element, walking the kept weights of its input channel. grad weight: one block per kept weight, reducing
// grad_out * x over batch and output pixels. Accumulation in float for 16-bit types.
#include <ATen/OpMathType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "../sparse_conv2d.h"
#include "launch.h"

namespace ndsnn {
namespace {

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ weight,
                               const scalar_t* __restrict__ bias, const int64_t* __restrict__ out_ptr,
                               const int64_t* __restrict__ out_flat, scalar_t* __restrict__ out,
                               const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t total = g.batch * g.out_channels * g.out_h * g.out_w;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ox = i % g.out_w;
    const int64_t oy = (i / g.out_w) % g.out_h;
    const int64_t o = (i / (g.out_w * g.out_h)) % g.out_channels;
    const int64_t n = i / (g.out_w * g.out_h * g.out_channels);
    const int64_t first_channel = (o / g.out_per_group()) * g.in_per_group;
    math_t acc = bias ? static_cast<math_t>(bias[o]) : math_t(0);
    for (int64_t k = out_ptr[o]; k < out_ptr[o + 1]; ++k) {
      const int64_t flat = out_flat[k];
      const KeptTap tap = g.decode(flat);
      const int64_t iy = oy * g.stride_h - g.pad_h + tap.ky * g.dilation_h;
      const int64_t ix = ox * g.stride_w - g.pad_w + tap.kx * g.dilation_w;
      if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
      const int64_t c = first_channel + tap.in_channel;
      acc += static_cast<math_t>(weight[flat]) * static_cast<math_t>(x[((n * g.in_channels + c) * g.in_h + iy) * g.in_w + ix]);
    }
    out[i] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void grad_input_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ weight,
                                  const int64_t* __restrict__ in_ptr, const int64_t* __restrict__ in_flat,
                                  scalar_t* __restrict__ grad_x, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t total = g.batch * g.in_channels * g.in_h * g.in_w;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ix = i % g.in_w;
    const int64_t iy = (i / g.in_w) % g.in_h;
    const int64_t c = (i / (g.in_w * g.in_h)) % g.in_channels;
    const int64_t n = i / (g.in_w * g.in_h * g.in_channels);
    math_t acc = 0;
    for (int64_t k = in_ptr[c]; k < in_ptr[c + 1]; ++k) {
      const int64_t flat = in_flat[k];
      const int64_t o = g.output_channel(flat);
      const KeptTap tap = g.decode(flat);
      const int64_t ty = iy + g.pad_h - tap.ky * g.dilation_h;
      const int64_t tx = ix + g.pad_w - tap.kx * g.dilation_w;
      if (ty < 0 || tx < 0 || ty % g.stride_h || tx % g.stride_w) continue;
      const int64_t oy = ty / g.stride_h;
      const int64_t ox = tx / g.stride_w;
      if (oy >= g.out_h || ox >= g.out_w) continue;
      acc += static_cast<math_t>(weight[flat]) *
             static_cast<math_t>(grad_out[((n * g.out_channels + o) * g.out_h + oy) * g.out_w + ox]);
    }
    grad_x[i] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void grad_weight_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                                   const int64_t* __restrict__ out_flat, int64_t kept,
                                   scalar_t* __restrict__ grad_weight, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  __shared__ math_t partial[kThreads];
  const int64_t pixels = g.out_h * g.out_w;
  for (int64_t k = blockIdx.x; k < kept; k += gridDim.x) {
    const int64_t flat = out_flat[k];
    const int64_t o = g.output_channel(flat);
    const KeptTap tap = g.decode(flat);
    const int64_t c = g.input_channel(flat);
    math_t sum = 0;
    for (int64_t j = threadIdx.x; j < g.batch * pixels; j += blockDim.x) {
      const int64_t n = j / pixels;
      const int64_t oy = (j % pixels) / g.out_w;
      const int64_t ox = j % g.out_w;
      const int64_t iy = oy * g.stride_h - g.pad_h + tap.ky * g.dilation_h;
      const int64_t ix = ox * g.stride_w - g.pad_w + tap.kx * g.dilation_w;
      if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
      sum += static_cast<math_t>(grad_out[(n * g.out_channels + o) * pixels + oy * g.out_w + ox]) *
             static_cast<math_t>(x[((n * g.in_channels + c) * g.in_h + iy) * g.in_w + ix]);
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0) grad_weight[flat] = static_cast<scalar_t>(partial[0]);
    __syncthreads();
  }
}

at::Tensor sparse_conv2d_forward_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                                      const std::optional<at::Tensor>& bias_in, const at::Tensor& out_ptr,
                                      const at::Tensor& out_flat, const at::Tensor& in_ptr, const at::Tensor& in_flat,
                                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups, bool /*dense_weight_grad*/) {
  const ConvGeometry g =
      forward_args(x_in, weight_in, bias_in, out_ptr, out_flat, in_ptr, in_flat, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_forward_cuda", [&] {
    forward_kernel<scalar_t><<<grid_for(out.numel()), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
        bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, out_ptr.const_data_ptr<int64_t>(),
        out_flat.const_data_ptr<int64_t>(), out.data_ptr<scalar_t>(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor sparse_conv2d_grad_input_cuda(const at::Tensor& grad_out_in, const at::Tensor& weight_in,
                                         const at::Tensor& in_ptr, const at::Tensor& in_flat,
                                         at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                         at::IntArrayRef dilation, int64_t groups) {
  const ConvGeometry g =
      grad_input_args(grad_out_in, weight_in, in_ptr, in_flat, input_size, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard guard(grad_out_in.device());
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  at::Tensor grad_x = at::empty(input_size, grad_out.options());
  if (grad_x.numel() == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_out.scalar_type(), "sparse_conv2d_grad_input_cuda",
                                  [&] {
                                    grad_input_kernel<scalar_t>
                                        <<<grid_for(grad_x.numel()), kThreads, 0,
                                           c10::cuda::getCurrentCUDAStream()>>>(
                                            grad_out.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                            in_ptr.const_data_ptr<int64_t>(), in_flat.const_data_ptr<int64_t>(),
                                            grad_x.data_ptr<scalar_t>(), g);
                                    C10_CUDA_KERNEL_LAUNCH_CHECK();
                                  });
  return grad_x;
}

at::Tensor sparse_conv2d_grad_weight_cuda(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                          const at::Tensor& out_flat, const at::Tensor& in_ptr,
                                          const at::Tensor& in_flat, at::IntArrayRef weight_size,
                                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                          int64_t groups) {
  const ConvGeometry g =
      grad_weight_args(grad_out_in, x_in, out_flat, in_ptr, in_flat, weight_size, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor flat = out_flat.contiguous();
  at::Tensor grad_weight = at::zeros(weight_size, x.options());
  if (flat.numel() == 0 || grad_out.numel() == 0) return grad_weight;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_grad_weight_cuda", [&] {
    const int64_t blocks = std::min<int64_t>(flat.numel(), 65535);
    grad_weight_kernel<scalar_t><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), flat.const_data_ptr<int64_t>(),
        flat.numel(), grad_weight.data_ptr<scalar_t>(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_weight;
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CUDA, m) {
  m.impl("sparse_conv2d_forward", &sparse_conv2d_forward_cuda);
  m.impl("sparse_conv2d_grad_input", &sparse_conv2d_grad_input_cuda);
  m.impl("sparse_conv2d_grad_weight", &sparse_conv2d_grad_weight_cuda);
}

}  // namespace ndsnn
