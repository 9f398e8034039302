// Masked sparse 2-D convolution on the CPU: work proportional to the number of kept weights.
//
// The kept weights are given as flat indices into weight [C_out, C_in / groups, KH, KW], twice: grouped by
// output channel (CSR: out_ptr, out_flat) for the forward and the weight gradient, and grouped by input
// channel (in_ptr, in_flat) for the input gradient. Each kept weight adds one shifted, scaled input plane to
// one output plane (or the reverse), row by row over the valid output range, so the inner loops are
// contiguous for stride 1 and need no bounds checks.
#include <algorithm>
#include <vector>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../sparse_conv2d.h"

namespace ndsnn {
namespace {

// Output positions o in [lo, hi) whose input position o * stride - pad + k * dilation lies in [0, size).
struct ValidRange {
  int64_t lo;
  int64_t hi;
};

inline ValidRange valid_range(int64_t out_size, int64_t in_size, int64_t stride, int64_t offset) {
  // offset = k * dilation - pad; need 0 <= o * stride + offset < in_size.
  int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  int64_t hi = in_size - offset <= 0 ? 0 : (in_size - offset - 1) / stride + 1;
  lo = std::min(lo, out_size);
  hi = std::max(lo, std::min(hi, out_size));
  return {lo, hi};
}

template <typename scalar_t>
void forward_kernel(const scalar_t* x, const scalar_t* weight, const scalar_t* bias, const int64_t* out_ptr,
                    const int64_t* out_flat, scalar_t* out, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t planes = g.batch * g.out_channels;
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    std::vector<math_t> acc(g.out_h * g.out_w);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / g.out_channels;
      const int64_t o = plane % g.out_channels;
      const int64_t group = o / g.out_per_group();
      std::fill(acc.begin(), acc.end(), bias ? static_cast<math_t>(bias[o]) : math_t(0));
      for (int64_t k = out_ptr[o]; k < out_ptr[o + 1]; ++k) {
        const KeptTap tap = g.decode(out_flat[k]);
        const math_t w = static_cast<math_t>(weight[out_flat[k]]);
        const scalar_t* x_plane = x + (n * g.in_channels + group * g.in_per_group + tap.in_channel) * g.in_h * g.in_w;
        const int64_t off_y = tap.ky * g.dilation_h - g.pad_h;
        const int64_t off_x = tap.kx * g.dilation_w - g.pad_w;
        const ValidRange ry = valid_range(g.out_h, g.in_h, g.stride_h, off_y);
        const ValidRange rx = valid_range(g.out_w, g.in_w, g.stride_w, off_x);
        for (int64_t oy = ry.lo; oy < ry.hi; ++oy) {
          const scalar_t* x_row = x_plane + (oy * g.stride_h + off_y) * g.in_w + off_x;
          math_t* acc_row = acc.data() + oy * g.out_w;
          if (g.stride_w == 1) {
            for (int64_t ox = rx.lo; ox < rx.hi; ++ox) acc_row[ox] += w * static_cast<math_t>(x_row[ox]);
          } else {
            for (int64_t ox = rx.lo; ox < rx.hi; ++ox) {
              acc_row[ox] += w * static_cast<math_t>(x_row[ox * g.stride_w]);
            }
          }
        }
      }
      scalar_t* out_plane = out + plane * g.out_h * g.out_w;
      for (int64_t i = 0; i < g.out_h * g.out_w; ++i) out_plane[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

template <typename scalar_t>
void grad_input_kernel(const scalar_t* grad_out, const scalar_t* weight, const int64_t* in_ptr,
                       const int64_t* in_flat, scalar_t* grad_x, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t planes = g.batch * g.in_channels;
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    std::vector<math_t> acc(g.in_h * g.in_w);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / g.in_channels;
      const int64_t c = plane % g.in_channels;
      std::fill(acc.begin(), acc.end(), math_t(0));
      for (int64_t k = in_ptr[c]; k < in_ptr[c + 1]; ++k) {
        const int64_t flat = in_flat[k];
        const int64_t o = flat / g.taps_per_output();
        const KeptTap tap = g.decode(flat);
        const math_t w = static_cast<math_t>(weight[flat]);
        const scalar_t* go_plane = grad_out + (n * g.out_channels + o) * g.out_h * g.out_w;
        const int64_t off_y = tap.ky * g.dilation_h - g.pad_h;
        const int64_t off_x = tap.kx * g.dilation_w - g.pad_w;
        const ValidRange ry = valid_range(g.out_h, g.in_h, g.stride_h, off_y);
        const ValidRange rx = valid_range(g.out_w, g.in_w, g.stride_w, off_x);
        for (int64_t oy = ry.lo; oy < ry.hi; ++oy) {
          const scalar_t* go_row = go_plane + oy * g.out_w;
          math_t* acc_row = acc.data() + (oy * g.stride_h + off_y) * g.in_w + off_x;
          if (g.stride_w == 1) {
            for (int64_t ox = rx.lo; ox < rx.hi; ++ox) acc_row[ox] += w * static_cast<math_t>(go_row[ox]);
          } else {
            for (int64_t ox = rx.lo; ox < rx.hi; ++ox) {
              acc_row[ox * g.stride_w] += w * static_cast<math_t>(go_row[ox]);
            }
          }
        }
      }
      scalar_t* gx_plane = grad_x + plane * g.in_h * g.in_w;
      for (int64_t i = 0; i < g.in_h * g.in_w; ++i) gx_plane[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

// Gradient of each kept weight: a correlation of its output-gradient plane with the shifted input plane,
// summed over the batch. Written into a dense-shaped, zero-initialised gradient.
template <typename scalar_t>
void grad_weight_kernel(const scalar_t* grad_out, const scalar_t* x, const int64_t* out_flat, int64_t kept,
                        scalar_t* grad_weight, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, kept, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t flat = out_flat[k];
      const int64_t o = flat / g.taps_per_output();
      const int64_t group = o / g.out_per_group();
      const KeptTap tap = g.decode(flat);
      const int64_t off_y = tap.ky * g.dilation_h - g.pad_h;
      const int64_t off_x = tap.kx * g.dilation_w - g.pad_w;
      const ValidRange ry = valid_range(g.out_h, g.in_h, g.stride_h, off_y);
      const ValidRange rx = valid_range(g.out_w, g.in_w, g.stride_w, off_x);
      math_t total = 0;
      for (int64_t n = 0; n < g.batch; ++n) {
        const scalar_t* go_plane = grad_out + (n * g.out_channels + o) * g.out_h * g.out_w;
        const scalar_t* x_plane = x + (n * g.in_channels + group * g.in_per_group + tap.in_channel) * g.in_h * g.in_w;
        for (int64_t oy = ry.lo; oy < ry.hi; ++oy) {
          const scalar_t* go_row = go_plane + oy * g.out_w;
          const scalar_t* x_row = x_plane + (oy * g.stride_h + off_y) * g.in_w + off_x;
          math_t row = 0;
          for (int64_t ox = rx.lo; ox < rx.hi; ++ox) {
            row += static_cast<math_t>(go_row[ox]) * static_cast<math_t>(x_row[ox * g.stride_w]);
          }
          total += row;
        }
      }
      grad_weight[flat] = static_cast<scalar_t>(total);
    }
  });
}

at::Tensor sparse_conv2d_forward_cpu(const at::Tensor& x_in, const at::Tensor& weight_in,
                                     const std::optional<at::Tensor>& bias_in, const at::Tensor& out_ptr,
                                     const at::Tensor& out_flat, const at::Tensor& /*in_ptr*/,
                                     const at::Tensor& /*in_flat*/, at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups, bool /*dense_weight_grad*/) {
  const ConvGeometry g = conv_geometry(x_in, weight_in, bias_in, stride, padding, dilation, groups);
  check_index(out_ptr, out_flat, g.out_channels, weight_in, "out");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_forward_cpu", [&] {
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                             bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
                             out_ptr.const_data_ptr<int64_t>(), out_flat.const_data_ptr<int64_t>(),
                             out.data_ptr<scalar_t>(), g);
  });
  return out;
}

at::Tensor sparse_conv2d_grad_input_cpu(const at::Tensor& grad_out_in, const at::Tensor& weight_in,
                                        const at::Tensor& in_ptr, const at::Tensor& in_flat,
                                        at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                        at::IntArrayRef dilation, int64_t groups) {
  const ConvGeometry g =
      conv_geometry_from_sizes(input_size, weight_in.sizes(), grad_out_in, stride, padding, dilation, groups);
  check_index(in_ptr, in_flat, g.in_channels, weight_in, "in");
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  at::Tensor grad_x = at::empty(input_size, grad_out.options());
  if (grad_x.numel() == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_out.scalar_type(), "sparse_conv2d_grad_input_cpu",
                                  [&] {
                                    grad_input_kernel<scalar_t>(
                                        grad_out.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                        in_ptr.const_data_ptr<int64_t>(), in_flat.const_data_ptr<int64_t>(),
                                        grad_x.data_ptr<scalar_t>(), g);
                                  });
  return grad_x;
}

at::Tensor sparse_conv2d_grad_weight_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                         const at::Tensor& out_flat, at::IntArrayRef weight_size,
                                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                         int64_t groups) {
  const ConvGeometry g =
      conv_geometry_from_sizes(x_in.sizes(), weight_size, grad_out_in, stride, padding, dilation, groups);
  TORCH_CHECK(out_flat.scalar_type() == at::kLong && out_flat.dim() == 1,
              "ndsnn.sparse_conv2d: out_flat must be a 1-d int64 tensor");
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor flat = out_flat.contiguous();
  at::Tensor grad_weight = at::zeros(weight_size, x.options());
  if (flat.numel() == 0 || grad_out.numel() == 0) return grad_weight;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_grad_weight_cpu", [&] {
    grad_weight_kernel<scalar_t>(grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                 flat.const_data_ptr<int64_t>(), flat.numel(), grad_weight.data_ptr<scalar_t>(), g);
  });
  return grad_weight;
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CPU, m) {
  m.impl("sparse_conv2d_forward", &sparse_conv2d_forward_cpu);
  m.impl("sparse_conv2d_grad_input", &sparse_conv2d_grad_input_cpu);
  m.impl("sparse_conv2d_grad_weight", &sparse_conv2d_grad_weight_cpu);
}

}  // namespace ndsnn
