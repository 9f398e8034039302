// Host side of the tile-resident sparse convolution ops (see sparse_tiles.h for the kernels' design): the
// argument checks, the plan of tiles for a shared-memory budget, outputs, dtype dispatch. The device part
// (CUDA kernels, or the CPU emulation that runs the same per-thread code serially) is a launch callback.
#pragma once

#include <optional>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "sparse_conv2d.h"
#include "sparse_tiles.h"

namespace ndsnn {

// The shared memory a block may use when the caller gives no budget: the CPU emulation's default (the CUDA
// launcher asks the device for its opt-in maximum instead).
constexpr int64_t kEmulatedSharedBytes = 48 * 1024;

inline tiles::Conv tile_conv(const ConvGeometry& g) {
  return {g.batch, g.in_channels, g.in_h, g.in_w, g.out_channels, g.out_h, g.out_w, g.kernel_h, g.kernel_w,
          g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dilation_h, g.dilation_w, g.groups};
}

// The plan of one kind (0 forward, 1 input gradient, 2 weight gradient), with a clear error when not even one
// pixel of one image fits the budget.
inline tiles::Tiles tile_plan(const tiles::Conv& c, int64_t budget_bytes, int64_t element_bytes, int kind) {
  const tiles::Tiles t = tiles::plan_tiles(c, budget_bytes / element_bytes, kind);
  TORCH_CHECK(!t.empty(), "ndsnn.sparse_conv2d_tiled: one pixel of one image needs more than the ", budget_bytes,
              " bytes of shared memory a block may use (every ", kind == 1 ? "output" : "input",
              " channel of the kernel window is staged); this layer runs on the other kernels");
  return t;
}

// The plans of all three kinds as six integers each (tile_h, tile_w, images, span_h, span_w, blocks), zeros
// for a kind that does not fit: what sparse_conv2d_tiled_plan returns, for Python's dispatch and the tests.
inline std::vector<int64_t> tile_plans(at::IntArrayRef input_size, at::IntArrayRef weight_size,
                                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                       int64_t groups, int64_t element_bytes, int64_t budget_bytes) {
  TORCH_CHECK(element_bytes > 0 && budget_bytes > 0, "ndsnn.sparse_conv2d_tiled_plan: sizes must be positive");
  const tiles::Conv c = tile_conv(
      conv_geometry_from_sizes(input_size, weight_size, std::nullopt, stride, padding, dilation, groups));
  std::vector<int64_t> out;
  for (int kind = 0; kind < 3; ++kind) {
    const tiles::Tiles t = tiles::plan_tiles(c, budget_bytes / element_bytes, kind);
    for (int64_t v : {t.tile_h, t.tile_w, t.images, t.span_h, t.span_w, t.empty() ? int64_t(0) : t.blocks()}) {
      out.push_back(v);
    }
  }
  return out;
}

template <typename T>
struct TiledForwardArgs {
  const T* x;
  const T* weight;
  const T* bias;
  const int64_t* out_ptr;
  const int64_t* out_flat;
  T* out;
  tiles::Conv conv;
  tiles::Tiles tiles;
  int64_t staged;  // elements per block
};

template <typename T>
struct TiledGradInputArgs {
  const T* grad_out;
  const T* weight;
  const int64_t* in_ptr;
  const int64_t* in_flat;
  T* grad_x;
  tiles::Conv conv;
  tiles::Tiles tiles;
  int64_t staged;
};

template <typename T>
struct TiledGradWeightArgs {
  const T* grad_out;
  const T* x;
  const int64_t* out_flat;
  at::opmath_type<T>* partial;  // [blocks, kept]
  T* grad_weight;
  int64_t kept;
  tiles::Conv conv;
  tiles::Tiles tiles;
  int64_t staged;
};

template <typename Launch>
at::Tensor tiled_forward_host(const at::Tensor& x_in, const at::Tensor& weight_in,
                              const std::optional<at::Tensor>& bias_in, const at::Tensor& out_ptr,
                              const at::Tensor& out_flat, const at::Tensor& in_ptr, const at::Tensor& in_flat,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              int64_t groups, int64_t budget_bytes, const Launch& launch) {
  const ConvGeometry g = forward_args(x_in, weight_in, bias_in, out_ptr, out_flat, in_ptr, in_flat, stride, padding,
                                      dilation, groups);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  std::optional<at::Tensor> bias;
  if (bias_in.has_value()) bias = bias_in->contiguous();
  at::Tensor out = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, x.options());
  if (out.numel() == 0) return out;
  const tiles::Conv c = tile_conv(g);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sparse_conv2d_tiled_forward", [&] {
    const tiles::Tiles t = tile_plan(c, budget_bytes, sizeof(scalar_t), 0);
    launch(TiledForwardArgs<scalar_t>{x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                      bias ? bias->const_data_ptr<scalar_t>() : nullptr,
                                      out_ptr.const_data_ptr<int64_t>(), out_flat.const_data_ptr<int64_t>(),
                                      out.data_ptr<scalar_t>(), c, t, tiles::output_staged(c, t, false)});
  });
  return out;
}

template <typename Launch>
at::Tensor tiled_grad_input_host(const at::Tensor& grad_out_in, const at::Tensor& weight_in, const at::Tensor& in_ptr,
                                 const at::Tensor& in_flat, at::IntArrayRef input_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                 int64_t budget_bytes, const Launch& launch) {
  const ConvGeometry g =
      grad_input_args(grad_out_in, weight_in, in_ptr, in_flat, input_size, stride, padding, dilation, groups);
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  at::Tensor grad_x = at::empty(input_size, grad_out.options());
  if (grad_x.numel() == 0) return grad_x;
  if (grad_out.numel() == 0) return grad_x.zero_();
  const tiles::Conv c = tile_conv(g);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "sparse_conv2d_tiled_grad_input",
                                  [&] {
                                    const tiles::Tiles t = tile_plan(c, budget_bytes, sizeof(scalar_t), 1);
                                    launch(TiledGradInputArgs<scalar_t>{
                                        grad_out.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                        in_ptr.const_data_ptr<int64_t>(), in_flat.const_data_ptr<int64_t>(),
                                        grad_x.data_ptr<scalar_t>(), c, t, tiles::input_staged(c, t)});
                                  });
  return grad_x;
}

template <typename Launch>
at::Tensor tiled_grad_weight_host(const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& out_flat,
                                  const at::Tensor& in_ptr, const at::Tensor& in_flat, at::IntArrayRef weight_size,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups, int64_t budget_bytes, const Launch& launch) {
  const ConvGeometry g = grad_weight_args(grad_out_in, x_in, out_flat, in_ptr, in_flat, weight_size, stride, padding,
                                          dilation, groups);
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  at::Tensor grad_weight = at::zeros(weight_size, x.options());
  const int64_t kept = out_flat.numel();
  if (kept == 0 || grad_out.numel() == 0 || x.numel() == 0) return grad_weight;
  const tiles::Conv c = tile_conv(g);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sparse_conv2d_tiled_grad_weight", [&] {
    const tiles::Tiles t = tile_plan(c, budget_bytes, sizeof(scalar_t), 2);
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor partial = at::empty({t.blocks(), kept}, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    launch(TiledGradWeightArgs<scalar_t>{grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                         out_flat.const_data_ptr<int64_t>(), partial.data_ptr<acc_t>(),
                                         grad_weight.data_ptr<scalar_t>(), kept, c, t,
                                         tiles::output_staged(c, t, true)});
  });
  return grad_weight;
}

}  // namespace ndsnn
