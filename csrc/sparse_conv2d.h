// Shapes and argument checks of the masked sparse convolution, shared by its device implementations.
#pragma once

#include <optional>

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>
#include <c10/util/accumulate.h>

namespace ndsnn {

// Position of one kept weight inside its output channel's [C_in / groups, KH, KW] filter.
struct KeptTap {
  int64_t in_channel;  // within the group
  int64_t ky;
  int64_t kx;
};

struct ConvGeometry {
  int64_t batch, in_channels, in_h, in_w;
  int64_t out_channels, out_h, out_w;
  int64_t in_per_group, kernel_h, kernel_w, groups;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;

  C10_HOST_DEVICE int64_t out_per_group() const { return out_channels / groups; }
  C10_HOST_DEVICE int64_t taps_per_output() const { return in_per_group * kernel_h * kernel_w; }
  C10_HOST_DEVICE int64_t output_channel(int64_t flat) const { return flat / taps_per_output(); }
  // The absolute input channel a kept weight reads (its group's first channel + its channel in the group).
  C10_HOST_DEVICE int64_t input_channel(int64_t flat) const {
    return (output_channel(flat) / out_per_group()) * in_per_group + (flat % taps_per_output()) / (kernel_h * kernel_w);
  }
  C10_HOST_DEVICE KeptTap decode(int64_t flat) const {
    const int64_t tap = flat % taps_per_output();
    const int64_t spatial = tap % (kernel_h * kernel_w);
    return {tap / (kernel_h * kernel_w), spatial / kernel_w, spatial % kernel_w};
  }
};

inline std::pair<int64_t, int64_t> pair_arg(at::IntArrayRef values, const char* name) {
  TORCH_CHECK(values.size() == 2, "ndsnn.sparse_conv2d: ", name, " must have two values, got ", values);
  return {values[0], values[1]};
}

inline ConvGeometry conv_geometry_from_sizes(at::IntArrayRef input_size, at::IntArrayRef weight_size,
                                             const std::optional<at::Tensor>& grad_out, at::IntArrayRef stride,
                                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(input_size.size() == 4, "ndsnn.sparse_conv2d: x must have shape [N, C, H, W], got ", input_size);
  TORCH_CHECK(weight_size.size() == 4,
              "ndsnn.sparse_conv2d: weight must have shape [C_out, C_in / groups, KH, KW], got ", weight_size);
  TORCH_CHECK(groups >= 1, "ndsnn.sparse_conv2d: groups must be >= 1, got ", groups);
  ConvGeometry g{};
  g.batch = input_size[0];
  g.in_channels = input_size[1];
  g.in_h = input_size[2];
  g.in_w = input_size[3];
  g.out_channels = weight_size[0];
  g.in_per_group = weight_size[1];
  g.kernel_h = weight_size[2];
  g.kernel_w = weight_size[3];
  g.groups = groups;
  TORCH_CHECK(g.in_per_group * groups == g.in_channels, "ndsnn.sparse_conv2d: x has ", g.in_channels,
              " channels but weight expects ", g.in_per_group, " x groups (", groups, ") = ", g.in_per_group * groups);
  TORCH_CHECK(g.out_channels % groups == 0, "ndsnn.sparse_conv2d: C_out = ", g.out_channels,
              " is not divisible by groups = ", groups);
  std::tie(g.stride_h, g.stride_w) = pair_arg(stride, "stride");
  std::tie(g.pad_h, g.pad_w) = pair_arg(padding, "padding");
  std::tie(g.dilation_h, g.dilation_w) = pair_arg(dilation, "dilation");
  TORCH_CHECK(g.stride_h >= 1 && g.stride_w >= 1 && g.dilation_h >= 1 && g.dilation_w >= 1 && g.pad_h >= 0 &&
                  g.pad_w >= 0,
              "ndsnn.sparse_conv2d: stride and dilation must be >= 1 and padding >= 0");
  g.out_h = (g.in_h + 2 * g.pad_h - g.dilation_h * (g.kernel_h - 1) - 1) / g.stride_h + 1;
  g.out_w = (g.in_w + 2 * g.pad_w - g.dilation_w * (g.kernel_w - 1) - 1) / g.stride_w + 1;
  TORCH_CHECK(g.out_h >= 1 && g.out_w >= 1, "ndsnn.sparse_conv2d: the kernel (", g.kernel_h, "x", g.kernel_w,
              ", dilation ", dilation, ") does not fit the padded input ", input_size);
  if (grad_out.has_value()) {
    TORCH_CHECK(grad_out->dim() == 4 && grad_out->size(0) == g.batch && grad_out->size(1) == g.out_channels &&
                    grad_out->size(2) == g.out_h && grad_out->size(3) == g.out_w,
                "ndsnn.sparse_conv2d: grad_out has shape ", grad_out->sizes(), ", expected [", g.batch, ", ",
                g.out_channels, ", ", g.out_h, ", ", g.out_w, "]");
  }
  return g;
}

inline ConvGeometry conv_geometry(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups) {
  TORCH_CHECK(x.device() == weight.device(), "ndsnn.sparse_conv2d: x is on ", x.device(), " but weight is on ",
              weight.device());
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), "ndsnn.sparse_conv2d: x is ", x.scalar_type(),
              " but weight is ", weight.scalar_type());
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0) && bias->scalar_type() == x.scalar_type() &&
                    bias->device() == x.device(),
                "ndsnn.sparse_conv2d: bias must be a [C_out] tensor like weight, got ", bias->sizes());
  }
  return conv_geometry_from_sizes(x.sizes(), weight.sizes(), std::nullopt, stride, padding, dilation, groups);
}

// The kept-weight index: ptr [channels + 1] int64 offsets into flat [kept] int64 flat weight indices.
inline void check_index(const at::Tensor& ptr, const at::Tensor& flat, int64_t channels, at::Device device,
                        int64_t weight_numel, const char* side) {
  TORCH_CHECK(ptr.scalar_type() == at::kLong && flat.scalar_type() == at::kLong && ptr.dim() == 1 &&
                  flat.dim() == 1 && ptr.is_contiguous() && flat.is_contiguous(),
              "ndsnn.sparse_conv2d: ", side, "_ptr / ", side, "_flat must be contiguous 1-d int64 tensors");
  TORCH_CHECK(ptr.numel() == channels + 1, "ndsnn.sparse_conv2d: ", side, "_ptr must have ", channels + 1,
              " entries, got ", ptr.numel());
  TORCH_CHECK(ptr.device() == device && flat.device() == device,
              "ndsnn.sparse_conv2d: the kept-weight index must be on weight's device");
  if (ptr.device().is_cpu() && flat.numel() > 0) {  // on CUDA these reads would synchronise
    TORCH_CHECK(ptr[channels].item<int64_t>() == flat.numel() && flat.min().item<int64_t>() >= 0 &&
                    flat.max().item<int64_t>() < weight_numel,
                "ndsnn.sparse_conv2d: the kept-weight index does not match weight (", weight_numel, " elements)");
  }
}

// The checks every device's entry points share: the geometry, devices, and the kept-weight index.
inline ConvGeometry forward_args(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 const at::Tensor& out_ptr, const at::Tensor& out_flat, const at::Tensor& in_ptr,
                                 const at::Tensor& in_flat, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t groups) {
  const ConvGeometry g = conv_geometry(x, weight, bias, stride, padding, dilation, groups);
  check_index(out_ptr, out_flat, g.out_channels, weight.device(), weight.numel(), "out");
  check_index(in_ptr, in_flat, g.in_channels, weight.device(), weight.numel(), "in");
  return g;
}

inline ConvGeometry grad_input_args(const at::Tensor& grad_out, const at::Tensor& weight, const at::Tensor& in_ptr,
                                    const at::Tensor& in_flat, at::IntArrayRef input_size, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const ConvGeometry g =
      conv_geometry_from_sizes(input_size, weight.sizes(), grad_out, stride, padding, dilation, groups);
  TORCH_CHECK(grad_out.device() == weight.device(), "ndsnn.sparse_conv2d: grad_out is on ", grad_out.device(),
              " but weight is on ", weight.device());
  check_index(in_ptr, in_flat, g.in_channels, weight.device(), weight.numel(), "in");
  return g;
}

inline ConvGeometry grad_weight_args(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& out_flat,
                                     const at::Tensor& in_ptr, const at::Tensor& in_flat, at::IntArrayRef weight_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups) {
  const ConvGeometry g = conv_geometry_from_sizes(x.sizes(), weight_size, grad_out, stride, padding, dilation, groups);
  TORCH_CHECK(grad_out.device() == x.device(), "ndsnn.sparse_conv2d: grad_out is on ", grad_out.device(),
              " but x is on ", x.device());
  TORCH_CHECK(out_flat.scalar_type() == at::kLong && out_flat.dim() == 1 && out_flat.device() == x.device(),
              "ndsnn.sparse_conv2d: out_flat must be a 1-d int64 tensor on x's device");
  check_index(in_ptr, in_flat, g.in_channels, x.device(), c10::multiply_integers(weight_size), "in");
  TORCH_CHECK(in_flat.numel() == out_flat.numel(), "ndsnn.sparse_conv2d: in_flat and out_flat differ in length");
  return g;
}

}  // namespace ndsnn
