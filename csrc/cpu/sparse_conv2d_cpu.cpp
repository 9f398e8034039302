// Masked sparse 2-D convolution on the CPU: work proportional to the number of kept weights.
//
// The kept weights are given as flat indices into weight [C_out, C_in / groups, KH, KW], twice: grouped by
// output channel (CSR: out_ptr, out_flat) and by input channel (in_ptr, in_flat). Two families of loops,
// both reducing every stride, padding and dilation to stride-1 shifts over phase planes:
//   events  (sparse_conv2d_events.h): inputs with few nonzeros (spikes), forward and weight gradient;
//   shifted (sparse_conv2d_shifted.h): real-valued inputs, and the input gradient in every case.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#include "../sparse_conv2d.h"
#include "sparse_conv2d_events.h"
#include "sparse_conv2d_shifted.h"

namespace ndsnn {
namespace {

at::Tensor sparse_conv2d_forward_cpu(const at::Tensor& x_in, const at::Tensor& weight_in,
                                     const std::optional<at::Tensor>& bias_in, const at::Tensor& out_ptr,
                                     const at::Tensor& out_flat, const at::Tensor& in_ptr, const at::Tensor& in_flat,
                                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups, bool /*dense_weight_grad*/) {
  const ConvGeometry g =
      forward_args(x_in, weight_in, bias_in, out_ptr, out_flat, in_ptr, in_flat, stride, padding, dilation, groups);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_forward_cpu", [&] {
    const scalar_t* b = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    if (events::sparse_enough(x.const_data_ptr<scalar_t>(), x.numel())) {
      events::forward<scalar_t>(x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), b,
                                in_ptr.const_data_ptr<int64_t>(), in_flat.const_data_ptr<int64_t>(),
                                out.data_ptr<scalar_t>(), g);
    } else {
      shifted::forward<scalar_t>(x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), b,
                                 out_ptr.const_data_ptr<int64_t>(), out_flat.const_data_ptr<int64_t>(),
                                 out.data_ptr<scalar_t>(), g);
    }
  });
  return out;
}

at::Tensor sparse_conv2d_grad_input_cpu(const at::Tensor& grad_out_in, const at::Tensor& weight_in,
                                        const at::Tensor& in_ptr, const at::Tensor& in_flat,
                                        at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                        at::IntArrayRef dilation, int64_t groups) {
  const ConvGeometry g =
      grad_input_args(grad_out_in, weight_in, in_ptr, in_flat, input_size, stride, padding, dilation, groups);
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  at::Tensor grad_x = at::empty(input_size, grad_out.options());
  if (grad_x.numel() == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_out.scalar_type(), "sparse_conv2d_grad_input_cpu",
                                  [&] {
                                    shifted::grad_input<scalar_t>(
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
      grad_weight_args(grad_out_in, x_in, out_flat, in_ptr, in_flat, weight_size, stride, padding, dilation, groups);
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor flat = out_flat.contiguous();
  at::Tensor grad_weight = at::zeros(weight_size, x.options());
  if (flat.numel() == 0 || grad_out.numel() == 0) return grad_weight;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_conv2d_grad_weight_cpu", [&] {
    if (events::sparse_enough(x.const_data_ptr<scalar_t>(), x.numel())) {
      events::grad_weight<scalar_t>(grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                    in_ptr.const_data_ptr<int64_t>(), in_flat.const_data_ptr<int64_t>(),
                                    grad_weight.data_ptr<scalar_t>(), g);
    } else {
      shifted::grad_weight<scalar_t>(grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                     flat.const_data_ptr<int64_t>(), flat.numel(), grad_weight.data_ptr<scalar_t>(),
                                     g);
    }
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
