// Masked sparse 2-D convolution on CUDA: work proportional to the number of kept weights.
//
// Each call first decodes its list of kept weights into a tap table (one small kernel): for kept weight k,
// its output channel, absolute input channel, the offsets (dy, dx) it reads at relative to the output
// pixel's origin, and its value. The main kernels then do no division per kept weight, only an add and a
// bounds test, and index in 32 bits when the tensors allow (64-bit division costs tens of instructions).
//
// forward: one thread per output element; the threads of a warp share an output channel, so they walk the
// same taps (broadcast loads) and read neighbouring inputs. grad input: one thread per input element, walking
// the taps of its input channel. grad weight: one block per kept weight, reducing grad_out * x over batch and
// output pixels (lanes over pixels, groups of lanes over samples) with warp shuffles. Accumulation in float for
// 16-bit types. Deterministic: no atomics.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <climits>
#include <initializer_list>

#include "../sparse_conv2d.h"
#include "launch.h"

namespace ndsnn {
namespace {

// The tap table: row 0 output channel, row 1 absolute input channel, rows 2-3 dy = ky * dilation - pad and
// dx = kx * dilation - pad (the input pixel read is (oy * stride + dy, ox * stride + dx)).
struct Taps {
  const int* out_channel;
  const int* in_channel;
  const int* dy;
  const int* dx;
};

template <typename scalar_t>
__global__ void decode_taps_kernel(const int64_t* __restrict__ flat, int64_t kept,
                                   const scalar_t* __restrict__ weight, int* __restrict__ table,
                                   scalar_t* __restrict__ values, const ConvGeometry g) {
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < kept;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t f = flat[k];
    const KeptTap tap = g.decode(f);
    table[k] = static_cast<int>(g.output_channel(f));
    table[kept + k] = static_cast<int>(g.input_channel(f));
    table[2 * kept + k] = static_cast<int>(tap.ky * g.dilation_h - g.pad_h);
    table[3 * kept + k] = static_cast<int>(tap.kx * g.dilation_w - g.pad_w);
    if (values != nullptr) values[k] = weight[f];
  }
}

// Decodes `flat` into a [4, kept] int32 table (and the kept values of weight into `values` when defined).
template <typename scalar_t>
at::Tensor decode_taps(const at::Tensor& flat, const at::Tensor& weight, const at::Tensor& values,
                       const ConvGeometry& g) {
  const int64_t kept = flat.numel();
  at::Tensor table = at::empty({4, kept}, flat.options().dtype(at::kInt));
  if (kept == 0) return table;
  decode_taps_kernel<scalar_t><<<grid_for(kept), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      flat.const_data_ptr<int64_t>(), kept, weight.const_data_ptr<scalar_t>(), table.data_ptr<int>(),
      values.defined() ? values.data_ptr<scalar_t>() : nullptr, g);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return table;
}

Taps taps_of(const at::Tensor& table) {
  const int* base = table.const_data_ptr<int>();
  const int64_t kept = table.size(1);
  return {base, base + kept, base + 2 * kept, base + 3 * kept};
}

// Whether every index of these tensors fits a signed 32-bit integer.
bool fits_int32(std::initializer_list<int64_t> sizes) {
  for (const int64_t n : sizes) {
    if (n >= INT_MAX) return false;
  }
  return true;
}

template <typename scalar_t, typename index_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ values,
                               const scalar_t* __restrict__ bias, const int64_t* __restrict__ out_ptr,
                               const Taps taps, scalar_t* __restrict__ out, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const index_t out_w = g.out_w, out_h = g.out_h, out_c = g.out_channels;
  const index_t in_w = g.in_w, in_h = g.in_h, plane = g.in_h * g.in_w;
  const index_t stride_h = g.stride_h, stride_w = g.stride_w;
  const index_t total = g.batch * g.out_channels * g.out_h * g.out_w;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t ox = i % out_w;
    index_t rest = i / out_w;
    const index_t oy = rest % out_h;
    rest /= out_h;
    const index_t o = rest % out_c;
    const index_t n = rest / out_c;
    const scalar_t* __restrict__ x_n = x + n * (g.in_channels * plane);
    const index_t y0 = oy * stride_h, x0 = ox * stride_w;
    math_t acc = bias ? static_cast<math_t>(bias[o]) : math_t(0);
    const index_t end = static_cast<index_t>(out_ptr[o + 1]);
    for (index_t k = static_cast<index_t>(out_ptr[o]); k < end; ++k) {
      const index_t iy = y0 + taps.dy[k];
      const index_t ix = x0 + taps.dx[k];
      if (iy < 0 || iy >= in_h || ix < 0 || ix >= in_w) continue;
      acc += static_cast<math_t>(values[k]) * static_cast<math_t>(x_n[taps.in_channel[k] * plane + iy * in_w + ix]);
    }
    out[i] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename index_t>
__global__ void grad_input_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ values,
                                  const int64_t* __restrict__ in_ptr, const Taps taps, scalar_t* __restrict__ grad_x,
                                  const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const index_t in_w = g.in_w, in_h = g.in_h, in_c = g.in_channels;
  const index_t out_w = g.out_w, out_h = g.out_h, out_plane = g.out_h * g.out_w;
  const index_t stride_h = g.stride_h, stride_w = g.stride_w;
  const bool unit_stride = stride_h == 1 && stride_w == 1;
  const index_t total = g.batch * g.in_channels * g.in_h * g.in_w;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t ix = i % in_w;
    index_t rest = i / in_w;
    const index_t iy = rest % in_h;
    rest /= in_h;
    const index_t c = rest % in_c;
    const index_t n = rest / in_c;
    const scalar_t* __restrict__ grad_n = grad_out + n * (g.out_channels * out_plane);
    math_t acc = 0;
    const index_t end = static_cast<index_t>(in_ptr[c + 1]);
    for (index_t k = static_cast<index_t>(in_ptr[c]); k < end; ++k) {
      index_t oy = iy - taps.dy[k];  // = oy * stride_h for the output pixel that reads (iy, ix) through tap k
      index_t ox = ix - taps.dx[k];
      if (oy < 0 || ox < 0) continue;
      if (!unit_stride) {
        if (oy % stride_h || ox % stride_w) continue;
        oy /= stride_h;
        ox /= stride_w;
      }
      if (oy >= out_h || ox >= out_w) continue;
      acc += static_cast<math_t>(values[k]) *
             static_cast<math_t>(grad_n[taps.out_channel[k] * out_plane + oy * out_w + ox]);
    }
    grad_x[i] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename index_t>
__global__ void grad_weight_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                                   const int64_t* __restrict__ out_flat, int64_t kept, const Taps taps,
                                   scalar_t* __restrict__ grad_weight, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  __shared__ math_t warp_sums[kThreads / 32];
  const index_t out_w = g.out_w, pixels = g.out_h * g.out_w;
  const index_t in_w = g.in_w, in_h = g.in_h, plane = g.in_h * g.in_w;
  const index_t stride_h = g.stride_h, stride_w = g.stride_w;
  const index_t batch = g.batch;
  const index_t grad_stride = g.out_channels * pixels, x_stride = g.in_channels * plane;
  // The block's threads split into `groups` groups of `lanes`: lanes walk output pixels (neighbouring addresses),
  // groups walk samples. The pixel's coordinates are computed once per pixel, outside the loop over samples.
  const index_t lanes = pixels < static_cast<index_t>(blockDim.x) ? pixels : static_cast<index_t>(blockDim.x);
  const index_t groups = static_cast<index_t>(blockDim.x) / lanes;
  const index_t lane = threadIdx.x % lanes, group = threadIdx.x / lanes;
  for (int64_t k = blockIdx.x; k < kept; k += gridDim.x) {
    const index_t o = taps.out_channel[k], c = taps.in_channel[k], dy = taps.dy[k], dx = taps.dx[k];
    const scalar_t* __restrict__ grad_o = grad_out + o * pixels;
    const scalar_t* __restrict__ x_c = x + c * plane;
    math_t sum = 0;
    if (group < groups) {
      for (index_t p = lane; p < pixels; p += lanes) {
        const index_t oy = p / out_w;
        const index_t iy = oy * stride_h + dy;
        const index_t ix = (p - oy * out_w) * stride_w + dx;
        if (iy < 0 || iy >= in_h || ix < 0 || ix >= in_w) continue;
        const index_t offset = iy * in_w + ix;
        for (index_t n = group; n < batch; n += groups) {
          sum += static_cast<math_t>(grad_o[n * grad_stride + p]) * static_cast<math_t>(x_c[n * x_stride + offset]);
        }
      }
    }
    for (int shift = 16; shift > 0; shift /= 2) sum += __shfl_down_sync(0xffffffffu, sum, shift);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
    __syncthreads();
    if (threadIdx.x < 32) {
      sum = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : math_t(0);
      for (int shift = 16; shift > 0; shift /= 2) sum += __shfl_down_sync(0xffffffffu, sum, shift);
      if (threadIdx.x == 0) grad_weight[out_flat[k]] = static_cast<scalar_t>(sum);
    }
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
  const bool small = fits_int32({x.numel(), out.numel(), out_flat.numel()});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_forward_cuda", [&] {
    at::Tensor values = at::empty({out_flat.numel()}, weight.options());
    const at::Tensor table = decode_taps<scalar_t>(out_flat, weight, values, g);
    const scalar_t* bias_data = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    const auto stream = c10::cuda::getCurrentCUDAStream();
    if (small) {
      forward_kernel<scalar_t, int><<<grid_for(out.numel()), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), values.const_data_ptr<scalar_t>(), bias_data,
          out_ptr.const_data_ptr<int64_t>(), taps_of(table), out.data_ptr<scalar_t>(), g);
    } else {
      forward_kernel<scalar_t, int64_t><<<grid_for(out.numel()), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), values.const_data_ptr<scalar_t>(), bias_data,
          out_ptr.const_data_ptr<int64_t>(), taps_of(table), out.data_ptr<scalar_t>(), g);
    }
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
  const bool small = fits_int32({grad_x.numel(), grad_out.numel(), in_flat.numel()});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_out.scalar_type(), "sparse_conv2d_grad_input_cuda",
                                  [&] {
                                    at::Tensor values = at::empty({in_flat.numel()}, weight.options());
                                    const at::Tensor table = decode_taps<scalar_t>(in_flat, weight, values, g);
                                    const auto stream = c10::cuda::getCurrentCUDAStream();
                                    if (small) {
                                      grad_input_kernel<scalar_t, int>
                                          <<<grid_for(grad_x.numel()), kThreads, 0, stream>>>(
                                              grad_out.const_data_ptr<scalar_t>(), values.const_data_ptr<scalar_t>(),
                                              in_ptr.const_data_ptr<int64_t>(), taps_of(table),
                                              grad_x.data_ptr<scalar_t>(), g);
                                    } else {
                                      grad_input_kernel<scalar_t, int64_t>
                                          <<<grid_for(grad_x.numel()), kThreads, 0, stream>>>(
                                              grad_out.const_data_ptr<scalar_t>(), values.const_data_ptr<scalar_t>(),
                                              in_ptr.const_data_ptr<int64_t>(), taps_of(table),
                                              grad_x.data_ptr<scalar_t>(), g);
                                    }
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
  const bool small = fits_int32({x.numel(), grad_out.numel()});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_grad_weight_cuda", [&] {
    const at::Tensor table = decode_taps<scalar_t>(flat, grad_weight, at::Tensor(), g);
    const int64_t blocks = std::min<int64_t>(flat.numel(), 65535);
    const auto stream = c10::cuda::getCurrentCUDAStream();
    if (small) {
      grad_weight_kernel<scalar_t, int><<<blocks, kThreads, 0, stream>>>(
          grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), flat.const_data_ptr<int64_t>(),
          flat.numel(), taps_of(table), grad_weight.data_ptr<scalar_t>(), g);
    } else {
      grad_weight_kernel<scalar_t, int64_t><<<blocks, kThreads, 0, stream>>>(
          grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), flat.const_data_ptr<int64_t>(),
          flat.numel(), taps_of(table), grad_weight.data_ptr<scalar_t>(), g);
    }
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
