// The tile-resident sparse convolution kernels emulated on the CPU: every block stages its tile into a buffer
// as the CUDA block stages it into shared memory, then every (warp, lane) of the block runs the very functions
// of sparse_tiles.h that the CUDA threads run, and the weight gradient's lanes are added by the same shuffle
// tree. This is how the tile logic (plans, halos, phases, partial tiles, the work split) is tested without a
// GPU; it is not a fast CPU path (the CPU kernels in sparse_conv2d_cpu.cpp are).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../sparse_tiled.h"

namespace ndsnn {
namespace {

using tiles::kWarp;
using tiles::kWarps;

int64_t budget_or_default(int64_t budget) { return budget > 0 ? budget : kEmulatedSharedBytes; }

template <typename T, typename Offset>
void stage(std::vector<T>& buffer, int64_t count, const T* source, const Offset& offset_of) {
  buffer.assign(count, T(0));
  for (int64_t e = 0; e < count; ++e) {  // the block's threads take e = thread, thread + kThreads, ...
    const int64_t offset = offset_of(e);
    if (offset >= 0) buffer[e] = source[offset];
  }
}

at::Tensor tiled_forward_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             const at::Tensor& out_ptr, const at::Tensor& out_flat, const at::Tensor& in_ptr,
                             const at::Tensor& in_flat, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups, bool /*dense_weight_grad*/,
                             int64_t smem_budget) {
  return tiled_forward_host(
      x, weight, bias, out_ptr, out_flat, in_ptr, in_flat, stride, padding, dilation, groups,
      budget_or_default(smem_budget), [&](const auto& a) {
        using T = std::decay_t<decltype(*a.x)>;
        using A = at::opmath_type<T>;
        at::parallel_for(0, a.tiles.blocks(), 1, [&](int64_t begin, int64_t end) {
          std::vector<T> staged;
          for (int64_t block = begin; block < end; ++block) {
            const tiles::Origin o = a.tiles.origin(block);
            stage(staged, a.staged, a.x, [&](int64_t e) { return tiles::staged_input(a.conv, a.tiles, o, e); });
            for (int64_t warp = 0; warp < kWarps; ++warp) {
              for (int64_t lane = 0; lane < kWarp; ++lane) {
                tiles::forward_lane<T, A>(a.conv, a.tiles, o, staged.data(), a.weight, a.bias, a.out_ptr,
                                          a.out_flat, a.out, warp, lane);
              }
            }
          }
        });
      });
}

at::Tensor tiled_grad_input_cpu(const at::Tensor& grad_out, const at::Tensor& weight, const at::Tensor& in_ptr,
                                const at::Tensor& in_flat, at::IntArrayRef input_size, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                int64_t smem_budget) {
  return tiled_grad_input_host(
      grad_out, weight, in_ptr, in_flat, input_size, stride, padding, dilation, groups,
      budget_or_default(smem_budget), [&](const auto& a) {
        using T = std::decay_t<decltype(*a.grad_out)>;
        using A = at::opmath_type<T>;
        at::parallel_for(0, a.tiles.blocks(), 1, [&](int64_t begin, int64_t end) {
          std::vector<T> staged;
          for (int64_t block = begin; block < end; ++block) {
            const tiles::Origin o = a.tiles.origin(block);
            stage(staged, a.staged, a.grad_out,
                  [&](int64_t e) { return tiles::staged_window_grad(a.conv, a.tiles, o, e); });
            for (int64_t warp = 0; warp < kWarps; ++warp) {
              for (int64_t lane = 0; lane < kWarp; ++lane) {
                tiles::grad_input_lane<T, A>(a.conv, a.tiles, o, staged.data(), a.weight, a.in_ptr, a.in_flat,
                                             a.grad_x, warp, lane);
              }
            }
          }
        });
      });
}

// __shfl_down_sync's tree over 32 lane values, every lane at once: lane 0 ends with the sum.
template <typename A>
A shuffle_tree_sum(A (&lanes)[kWarp]) {
  for (int offset = kWarp / 2; offset >= 1; offset /= 2) {
    A next[kWarp];
    for (int lane = 0; lane < kWarp; ++lane) {
      next[lane] = lanes[lane] + (lane + offset < kWarp ? lanes[lane + offset] : lanes[lane]);
    }
    for (int lane = 0; lane < kWarp; ++lane) lanes[lane] = next[lane];
  }
  return lanes[0];
}

at::Tensor tiled_grad_weight_cpu(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& out_flat,
                                 const at::Tensor& in_ptr, const at::Tensor& in_flat, at::IntArrayRef weight_size,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups, int64_t smem_budget) {
  return tiled_grad_weight_host(
      grad_out, x, out_flat, in_ptr, in_flat, weight_size, stride, padding, dilation, groups,
      budget_or_default(smem_budget), [&](const auto& a) {
        using T = std::decay_t<decltype(*a.x)>;
        using A = at::opmath_type<T>;
        const int64_t input_part = a.tiles.images * a.conv.in_channels * a.tiles.span_h * a.tiles.span_w;
        at::parallel_for(0, a.tiles.blocks(), 1, [&](int64_t begin, int64_t end) {
          std::vector<T> staged;
          for (int64_t block = begin; block < end; ++block) {
            const tiles::Origin o = a.tiles.origin(block);
            staged.assign(a.staged, T(0));
            for (int64_t e = 0; e < a.staged; ++e) {
              const int64_t offset = e < input_part ? tiles::staged_input(a.conv, a.tiles, o, e)
                                                    : tiles::staged_tile_grad(a.conv, a.tiles, o, e - input_part);
              if (offset >= 0) staged[e] = e < input_part ? a.x[offset] : a.grad_out[offset];
            }
            for (int64_t k = 0; k < a.kept; ++k) {  // warp k % kWarps takes kept weight k
              A lanes[kWarp];
              for (int lane = 0; lane < kWarp; ++lane) {
                lanes[lane] = tiles::grad_weight_lane<T, A>(a.conv, a.tiles, o, staged.data(), a.out_flat[k], lane);
              }
              a.partial[block * a.kept + k] = shuffle_tree_sum(lanes);
            }
          }
        });
        for (int64_t k = 0; k < a.kept; ++k) {  // the second pass: block after block, in order
          A total = A(0);
          for (int64_t block = 0; block < a.tiles.blocks(); ++block) total += a.partial[block * a.kept + k];
          a.grad_weight[a.out_flat[k]] = static_cast<T>(total);
        }
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CPU, m) {
  m.impl("sparse_conv2d_tiled_forward", &tiled_forward_cpu);
  m.impl("sparse_conv2d_tiled_grad_input", &tiled_grad_input_cpu);
  m.impl("sparse_conv2d_tiled_grad_weight", &tiled_grad_weight_cpu);
}

}  // namespace ndsnn
