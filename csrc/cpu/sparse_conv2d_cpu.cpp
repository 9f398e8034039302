// Masked sparse 2-D convolution on the CPU: work proportional to the number of kept weights.
//
// The kept weights are given as flat indices into weight [C_out, C_in / groups, KH, KW], twice: grouped by
// output channel (CSR: out_ptr, out_flat) for the forward and the weight gradient, and grouped by input
// channel (in_ptr, in_flat) for the input gradient. Each kept weight adds one shifted, scaled input plane to
// one output plane (or the reverse), row by row over the valid output range, so the inner loops are
// contiguous for stride 1 and need no bounds checks.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../sparse_conv2d.h"
#include "sparse_conv2d_events.h"
#include "sparse_conv2d_shifted.h"

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

// Where one kept weight's shifted input window meets the output: input offsets and valid output ranges.
struct TapWindow {
  int64_t off_y;  // input row = output row * stride_h + off_y
  int64_t off_x;
  ValidRange rows;
  ValidRange cols;
};

inline TapWindow tap_window(const ConvGeometry& g, const KeptTap& tap) {
  const int64_t off_y = tap.ky * g.dilation_h - g.pad_h;
  const int64_t off_x = tap.kx * g.dilation_w - g.pad_w;
  return {off_y, off_x, valid_range(g.out_h, g.in_h, g.stride_h, off_y),
          valid_range(g.out_w, g.in_w, g.stride_w, off_x)};
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
        const TapWindow win = tap_window(g, tap);
        for (int64_t oy = win.rows.lo; oy < win.rows.hi; ++oy) {
          const scalar_t* x_row = x_plane + (oy * g.stride_h + win.off_y) * g.in_w + win.off_x;
          math_t* acc_row = acc.data() + oy * g.out_w;
          if (g.stride_w == 1) {
            for (int64_t ox = win.cols.lo; ox < win.cols.hi; ++ox) acc_row[ox] += w * static_cast<math_t>(x_row[ox]);
          } else {
            for (int64_t ox = win.cols.lo; ox < win.cols.hi; ++ox) {
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
        const TapWindow win = tap_window(g, tap);
        for (int64_t oy = win.rows.lo; oy < win.rows.hi; ++oy) {
          const scalar_t* go_row = go_plane + oy * g.out_w;
          math_t* acc_row = acc.data() + (oy * g.stride_h + win.off_y) * g.in_w + win.off_x;
          if (g.stride_w == 1) {
            for (int64_t ox = win.cols.lo; ox < win.cols.hi; ++ox) acc_row[ox] += w * static_cast<math_t>(go_row[ox]);
          } else {
            for (int64_t ox = win.cols.lo; ox < win.cols.hi; ++ox) {
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
      const TapWindow win = tap_window(g, tap);
      math_t total = 0;
      for (int64_t n = 0; n < g.batch; ++n) {
        const scalar_t* go_plane = grad_out + (n * g.out_channels + o) * g.out_h * g.out_w;
        const scalar_t* x_plane = x + (n * g.in_channels + group * g.in_per_group + tap.in_channel) * g.in_h * g.in_w;
        for (int64_t oy = win.rows.lo; oy < win.rows.hi; ++oy) {
          const scalar_t* go_row = go_plane + oy * g.out_w;
          const scalar_t* x_row = x_plane + (oy * g.stride_h + win.off_y) * g.in_w + win.off_x;
          math_t row = 0;
          for (int64_t ox = win.cols.lo; ox < win.cols.hi; ++ox) {
            row += static_cast<math_t>(go_row[ox]) * static_cast<math_t>(x_row[ox * g.stride_w]);
          }
          total += row;
        }
      }
      grad_weight[flat] = static_cast<scalar_t>(total);
    }
  });
}

// Batch-innermost variants: tensors laid out [C, H, W, N] so that each kept weight scales whole length-N
// vectors. Used when the batch is longer than an output row, where the NCHW loops above are dominated by
// loop overhead (for example 8x8 feature maps with N = 64).
template <typename T>
void forward_batch_inner(const T* x, const T* weight, const T* bias, const int64_t* out_ptr, const int64_t* out_flat,
                         T* out, const ConvGeometry g) {
  const int64_t n_batch = g.batch;
  const int64_t out_plane = g.out_h * g.out_w * n_batch;
  at::parallel_for(0, g.out_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      T* out_o = out + o * out_plane;
      std::fill(out_o, out_o + out_plane, bias ? bias[o] : T(0));
      const int64_t group = o / g.out_per_group();
      for (int64_t k = out_ptr[o]; k < out_ptr[o + 1]; ++k) {
        const KeptTap tap = g.decode(out_flat[k]);
        const T w = weight[out_flat[k]];
        const T* x_c = x + (group * g.in_per_group + tap.in_channel) * g.in_h * g.in_w * n_batch;
        const TapWindow win = tap_window(g, tap);
        for (int64_t oy = win.rows.lo; oy < win.rows.hi; ++oy) {
          for (int64_t ox = win.cols.lo; ox < win.cols.hi; ++ox) {
            const T* src = x_c + ((oy * g.stride_h + win.off_y) * g.in_w + ox * g.stride_w + win.off_x) * n_batch;
            T* dst = out_o + (oy * g.out_w + ox) * n_batch;
            for (int64_t n = 0; n < n_batch; ++n) dst[n] += w * src[n];
          }
        }
      }
    }
  });
}

template <typename T>
void grad_input_batch_inner(const T* grad_out, const T* weight, const int64_t* in_ptr, const int64_t* in_flat,
                            T* grad_x, const ConvGeometry g) {
  const int64_t n_batch = g.batch;
  const int64_t in_plane = g.in_h * g.in_w * n_batch;
  at::parallel_for(0, g.in_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      T* gx_c = grad_x + c * in_plane;
      std::fill(gx_c, gx_c + in_plane, T(0));
      for (int64_t k = in_ptr[c]; k < in_ptr[c + 1]; ++k) {
        const int64_t flat = in_flat[k];
        const KeptTap tap = g.decode(flat);
        const T w = weight[flat];
        const T* go_o = grad_out + (flat / g.taps_per_output()) * g.out_h * g.out_w * n_batch;
        const TapWindow win = tap_window(g, tap);
        for (int64_t oy = win.rows.lo; oy < win.rows.hi; ++oy) {
          for (int64_t ox = win.cols.lo; ox < win.cols.hi; ++ox) {
            const T* src = go_o + (oy * g.out_w + ox) * n_batch;
            T* dst = gx_c + ((oy * g.stride_h + win.off_y) * g.in_w + ox * g.stride_w + win.off_x) * n_batch;
            for (int64_t n = 0; n < n_batch; ++n) dst[n] += w * src[n];
          }
        }
      }
    }
  });
}

template <typename T>
void grad_weight_batch_inner(const T* grad_out, const T* x, const int64_t* out_flat, int64_t kept, T* grad_weight,
                             const ConvGeometry g) {
  const int64_t n_batch = g.batch;
  at::parallel_for(0, kept, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t flat = out_flat[k];
      const int64_t o = flat / g.taps_per_output();
      const KeptTap tap = g.decode(flat);
      const T* go_o = grad_out + o * g.out_h * g.out_w * n_batch;
      const T* x_c = x + ((o / g.out_per_group()) * g.in_per_group + tap.in_channel) * g.in_h * g.in_w * n_batch;
      const TapWindow win = tap_window(g, tap);
      T total = 0;
      for (int64_t oy = win.rows.lo; oy < win.rows.hi; ++oy) {
        for (int64_t ox = win.cols.lo; ox < win.cols.hi; ++ox) {
          const T* a = go_o + (oy * g.out_w + ox) * n_batch;
          const T* b = x_c + ((oy * g.stride_h + win.off_y) * g.in_w + ox * g.stride_w + win.off_x) * n_batch;
          T dot = 0;
          for (int64_t n = 0; n < n_batch; ++n) dot += a[n] * b[n];
          total += dot;
        }
      }
      grad_weight[flat] = total;
    }
  });
}

// The batch-innermost layout pays off when the batch is at least as long as an output row.
inline bool use_batch_inner(const ConvGeometry& g) { return g.batch >= std::max<int64_t>(8, g.out_w); }

// [N, C, H, W] <-> [C, H, W, N] in the arithmetic type.
inline at::Tensor to_batch_inner(const at::Tensor& t, at::ScalarType math_type) {
  return t.to(math_type).permute({1, 2, 3, 0}).contiguous();
}
inline at::Tensor from_batch_inner(const at::Tensor& t, at::ScalarType out_type) {
  return t.permute({3, 0, 1, 2}).to(out_type).contiguous();
}

at::Tensor sparse_conv2d_forward_cpu(const at::Tensor& x_in, const at::Tensor& weight_in,
                                     const std::optional<at::Tensor>& bias_in, const at::Tensor& out_ptr,
                                     const at::Tensor& out_flat, const at::Tensor& in_ptr,
                                     const at::Tensor& in_flat, at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups, bool /*dense_weight_grad*/) {
  const ConvGeometry g = conv_geometry(x_in, weight_in, bias_in, stride, padding, dilation, groups);
  check_index(out_ptr, out_flat, g.out_channels, weight_in.device(), weight_in.numel(), "out");
  check_index(in_ptr, in_flat, g.in_channels, weight_in.device(), weight_in.numel(), "in");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, x.options());
  if (out.numel() == 0) return out;
  bool done = false;
  if (events::applies(g)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_forward_events", [&] {
      if (!events::sparse_enough(x.const_data_ptr<scalar_t>(), x.numel())) return;
      events::forward<scalar_t>(x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
                                in_ptr.const_data_ptr<int64_t>(), in_flat.const_data_ptr<int64_t>(),
                                out.data_ptr<scalar_t>(), g);
      done = true;
    });
  }
  if (done) return out;
  if (shifted::applies(g)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_forward_shifted", [&] {
      shifted::forward<scalar_t>(x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                 bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
                                 out_ptr.const_data_ptr<int64_t>(), out_flat.const_data_ptr<int64_t>(),
                                 out.data_ptr<scalar_t>(), g);
    });
    return out;
  }
  if (use_batch_inner(g)) {
    const at::ScalarType math_type = at::toOpMathType(x.scalar_type());
    const at::Tensor x_t = to_batch_inner(x, math_type);
    const at::Tensor w = weight.to(math_type);
    const at::Tensor b = bias.defined() ? bias.to(math_type) : at::Tensor();
    at::Tensor out_t = at::empty({g.out_channels, g.out_h, g.out_w, g.batch}, x_t.options());
    AT_DISPATCH_FLOATING_TYPES(math_type, "sparse_conv2d_forward_cpu", [&] {
      forward_batch_inner<scalar_t>(x_t.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                    b.defined() ? b.const_data_ptr<scalar_t>() : nullptr,
                                    out_ptr.const_data_ptr<int64_t>(), out_flat.const_data_ptr<int64_t>(),
                                    out_t.data_ptr<scalar_t>(), g);
    });
    return from_batch_inner(out_t, x.scalar_type());
  }
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
  check_index(in_ptr, in_flat, g.in_channels, weight_in.device(), weight_in.numel(), "in");
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  at::Tensor grad_x = at::empty(input_size, grad_out.options());
  if (grad_x.numel() == 0) return grad_x;
  if (shifted::applies(g)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_out.scalar_type(), "sparse_conv2d_grad_input", [&] {
      shifted::grad_input<scalar_t>(grad_out.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                   in_ptr.const_data_ptr<int64_t>(), in_flat.const_data_ptr<int64_t>(),
                                   grad_x.data_ptr<scalar_t>(), g);
    });
    return grad_x;
  }
  if (use_batch_inner(g)) {
    const at::ScalarType math_type = at::toOpMathType(grad_out.scalar_type());
    const at::Tensor go_t = to_batch_inner(grad_out, math_type);
    const at::Tensor w = weight.to(math_type);
    at::Tensor gx_t = at::empty({g.in_channels, g.in_h, g.in_w, g.batch}, go_t.options());
    AT_DISPATCH_FLOATING_TYPES(math_type, "sparse_conv2d_grad_input_cpu", [&] {
      grad_input_batch_inner<scalar_t>(go_t.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                       in_ptr.const_data_ptr<int64_t>(), in_flat.const_data_ptr<int64_t>(),
                                       gx_t.data_ptr<scalar_t>(), g);
    });
    return from_batch_inner(gx_t, grad_out.scalar_type());
  }
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
                                         const at::Tensor& out_flat, const at::Tensor& in_ptr,
                                         const at::Tensor& in_flat, at::IntArrayRef weight_size,
                                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                         int64_t groups) {
  const ConvGeometry g =
      conv_geometry_from_sizes(x_in.sizes(), weight_size, grad_out_in, stride, padding, dilation, groups);
  TORCH_CHECK(out_flat.scalar_type() == at::kLong && out_flat.dim() == 1,
              "ndsnn.sparse_conv2d: out_flat must be a 1-d int64 tensor");
  check_index(in_ptr, in_flat, g.in_channels, x_in.device(), c10::multiply_integers(weight_size), "in");
  TORCH_CHECK(in_flat.numel() == out_flat.numel(), "ndsnn.sparse_conv2d: in_flat and out_flat differ in length");
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor flat = out_flat.contiguous();
  if (flat.numel() == 0 || grad_out.numel() == 0) return at::zeros(weight_size, x.options());
  if (events::applies(g)) {
    at::Tensor grad_weight = at::zeros(weight_size, x.options());
    bool done = false;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_grad_weight_events", [&] {
      if (!events::sparse_enough(x.const_data_ptr<scalar_t>(), x.numel())) return;
      events::grad_weight<scalar_t>(grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                    in_ptr.const_data_ptr<int64_t>(), in_flat.const_data_ptr<int64_t>(),
                                    grad_weight.data_ptr<scalar_t>(), g);
      done = true;
    });
    if (done) return grad_weight;
  }
  if (shifted::applies(g)) {
    at::Tensor grad_weight = at::zeros(weight_size, x.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_grad_weight_shifted", [&] {
      shifted::grad_weight<scalar_t>(grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                     flat.const_data_ptr<int64_t>(), flat.numel(), grad_weight.data_ptr<scalar_t>(),
                                     g);
    });
    return grad_weight;
  }
  if (use_batch_inner(g)) {
    const at::ScalarType math_type = at::toOpMathType(x.scalar_type());
    const at::Tensor go_t = to_batch_inner(grad_out, math_type);
    const at::Tensor x_t = to_batch_inner(x, math_type);
    at::Tensor gw = at::zeros(weight_size, x_t.options());
    AT_DISPATCH_FLOATING_TYPES(math_type, "sparse_conv2d_grad_weight_cpu", [&] {
      grad_weight_batch_inner<scalar_t>(go_t.const_data_ptr<scalar_t>(), x_t.const_data_ptr<scalar_t>(),
                                        flat.const_data_ptr<int64_t>(), flat.numel(), gw.data_ptr<scalar_t>(), g);
    });
    return gw.to(x.scalar_type());
  }
  at::Tensor grad_weight = at::zeros(weight_size, x.options());
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
