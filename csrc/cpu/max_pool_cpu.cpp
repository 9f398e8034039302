// Max pooling with the window equal to the stride (no padding, no overlap) on the CPU, as spiking networks pool
// between stages. Forward writes the maximum and a one-byte index of its place in the window (PyTorch's CPU rule:
// the first maximum in row-major order, a NaN taken wherever it is); backward zero-fills the input gradient and
// writes the gradient at each kept place, so neither pass needs the int64 index tensor of max_pool2d_with_indices.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace ndsnn {
namespace {

void check_window_size(int64_t window) {
  TORCH_CHECK(window >= 1 && window <= 16, "max_pool_window: window must be in [1, 16], got ", window);
}

void check_window(const at::Tensor& x, int64_t window) {
  TORCH_CHECK(x.dim() == 4, "max_pool_window: x must have shape [N, C, H, W], got ", x.sizes());
  check_window_size(window);
  TORCH_CHECK(x.size(2) >= window && x.size(3) >= window, "max_pool_window: the ", window, "x", window,
              " window does not fit an input of ", x.size(2), "x", x.size(3));
}

#if defined(__AVX2__)
// float32 2x2 with AVX2 (the AVX2 build of the kernels): 8 windows at a time, the rows' even and odd columns
// split by shuffles, the same comparisons in the same order as the scalar loop; the last windows of a row (the
// rows of 14x14 and 28x28 maps are 7 and 14 windows) through a small buffer.
// The even and odd columns of 16 floats (of which `count` are read) as windows 0..7.
inline void split_columns(const float* row, int64_t count, __m256& even, __m256& odd) {
  __m256 a, b;
  if (count >= 16) {
    a = _mm256_loadu_ps(row);
    b = _mm256_loadu_ps(row + 8);
  } else {  // staged through a buffer: masked stores and loads are slow on some x86 cores (AMD's)
    alignas(32) float staged[16] = {};
    std::memcpy(staged, row, static_cast<size_t>(count) * sizeof(float));
    a = _mm256_load_ps(staged);
    b = _mm256_load_ps(staged + 8);
  }
  // [a0 a2 b0 b2 | a4 a6 b4 b6] are windows [0 1 4 5 | 2 3 6 7]; the 64-bit lanes reordered to 0..7
  even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
  odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}

inline void forward_windows_avx2(const float* top, const float* bottom, float* out, uint8_t* index, int64_t count) {
  __m256 v[4];
  split_columns(top, 2 * count, v[0], v[1]);
  split_columns(bottom, 2 * count, v[2], v[3]);
  __m256 best = v[0];
  __m256 place = _mm256_setzero_ps();  // the place as a float (0..3), selected with the values
  for (int k = 1; k < 4; ++k) {
    const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v[k], best, _CMP_GT_OQ), _mm256_cmp_ps(v[k], v[k], _CMP_UNORD_Q));
    best = _mm256_blendv_ps(best, v[k], take);
    place = _mm256_blendv_ps(place, _mm256_set1_ps(static_cast<float>(k)), take);
  }
  const __m256i places = _mm256_cvtps_epi32(place);
  const __m128i low = _mm256_castsi256_si128(places), high = _mm256_extracti128_si256(places, 1);
  const __m128i bytes = _mm_packus_epi16(_mm_packs_epi32(low, high), _mm_setzero_si128());
  if (count == 8) {
    _mm256_storeu_ps(out, best);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(index), bytes);
  } else {
    alignas(32) float staged[8];
    _mm256_store_ps(staged, best);
    std::memcpy(out, staged, static_cast<size_t>(count) * sizeof(float));
    alignas(16) uint8_t staged_index[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(staged_index), bytes);
    std::memcpy(index, staged_index, static_cast<size_t>(count));
  }
}

void forward_row_2x2_avx2(const float* top, const float* bottom, float* out, uint8_t* index, int64_t out_w) {
  for (int64_t ox = 0; ox < out_w; ox += 8) {
    forward_windows_avx2(top + 2 * ox, bottom + 2 * ox, out + ox, index + ox, std::min<int64_t>(8, out_w - ox));
  }
}

#endif

template <typename scalar_t>
void forward_kernel(const scalar_t* x, scalar_t* out, uint8_t* index, int64_t planes, int64_t height,
                    int64_t width, int64_t window) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t out_h = height / window, out_w = width / window;
  at::parallel_for(0, planes * out_h, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t plane = row / out_h, oy = row % out_h;
      const scalar_t* in_row = x + (plane * height + oy * window) * width;
      scalar_t* out_row = out + row * out_w;
      uint8_t* index_row = index + row * out_w;
      for (int64_t ox = 0; ox < out_w; ++ox) {
        math_t best = -std::numeric_limits<math_t>::infinity();
        int best_place = 0;
        for (int64_t dy = 0; dy < window; ++dy) {
          const scalar_t* in = in_row + dy * width + ox * window;
          for (int64_t dx = 0; dx < window; ++dx) {
            const math_t value = static_cast<math_t>(in[dx]);
            if (value > best || std::isnan(value)) {
              best = value;
              best_place = static_cast<int>(dy * window + dx);
            }
          }
        }
        out_row[ox] = static_cast<scalar_t>(best);
        index_row[ox] = static_cast<uint8_t>(best_place);
      }
    }
  });
}

// The 2x2 window, the common case: two input rows at a time, branch-free selects that GCC vectorises.
template <typename scalar_t>
void forward_kernel_2x2(const scalar_t* x, scalar_t* out, uint8_t* index, int64_t planes, int64_t height,
                        int64_t width) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t out_h = height / 2, out_w = width / 2;
  at::parallel_for(0, planes * out_h, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t plane = row / out_h, oy = row % out_h;
      const scalar_t* top = x + (plane * height + oy * 2) * width;
      const scalar_t* bottom = top + width;
      scalar_t* out_row = out + row * out_w;
      uint8_t* index_row = index + row * out_w;
      int64_t first = 0;
#if defined(__AVX2__)
      if constexpr (std::is_same_v<scalar_t, float>) {
        forward_row_2x2_avx2(top, bottom, out_row, index_row, out_w);
        first = out_w;
      }
#endif
      for (int64_t ox = first; ox < out_w; ++ox) {
        const math_t v[4] = {static_cast<math_t>(top[2 * ox]), static_cast<math_t>(top[2 * ox + 1]),
                             static_cast<math_t>(bottom[2 * ox]), static_cast<math_t>(bottom[2 * ox + 1])};
        math_t best = v[0];
        uint8_t place = 0;
        for (uint8_t k = 1; k < 4; ++k) {
          const bool take = v[k] > best || v[k] != v[k];  // v[k] != v[k]: NaN
          best = take ? v[k] : best;
          place = take ? k : place;
        }
        out_row[ox] = static_cast<scalar_t>(best);
        index_row[ox] = place;
      }
    }
  });
}


std::tuple<at::Tensor, at::Tensor> max_pool_window_forward_cpu(const at::Tensor& x_in, int64_t window) {
  check_window(x_in, window);
  const at::Tensor x = x_in.contiguous();
  const int64_t n = x.size(0), c = x.size(1), height = x.size(2), width = x.size(3);
  at::Tensor out = at::empty({n, c, height / window, width / window}, x.options());
  at::Tensor index = at::empty(out.sizes(), x.options().dtype(at::kByte));
  if (out.numel() == 0) return {out, index};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool_window_forward", [&] {
    if (window == 2) {
      forward_kernel_2x2<scalar_t>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                                   index.mutable_data_ptr<uint8_t>(), n * c, height, width);
    } else {
      forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                               index.mutable_data_ptr<uint8_t>(), n * c, height, width, window);
    }
  });
  return {out, index};
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_out, const uint8_t* index, scalar_t* grad_in, int64_t planes,
                     int64_t height, int64_t width, int64_t window) {
  const int64_t out_h = height / window, out_w = width / window;
  const int64_t plane_size = height * width, windows = out_h * out_w;
  // Per plane: one memset (every input position the maximum did not come from, the rows and columns past the
  // last window included; the all-zero bits are +0 in every floating type), then the gradient written where
  // each window's index says. Measured against writing each input row whole (zeros and gradient interleaved
  // per window): about 3x faster on 14x14 maps, whose rows of 7 windows are too short for vector stores.
  at::parallel_for(0, planes, 4, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      scalar_t* plane_in = grad_in + plane * plane_size;
      std::memset(static_cast<void*>(plane_in), 0, static_cast<size_t>(plane_size) * sizeof(scalar_t));
      const scalar_t* grad_plane = grad_out + plane * windows;
      const uint8_t* index_plane = index + plane * windows;
      for (int64_t oy = 0; oy < out_h; ++oy) {
        scalar_t* rows = plane_in + oy * window * width;
        for (int64_t ox = 0; ox < out_w; ++ox) {
          const int64_t k = oy * out_w + ox;
          const int64_t place = index_plane[k];
          const int64_t dy = window == 2 ? place >> 1 : place / window;
          const int64_t dx = place - dy * window;
          rows[dy * width + ox * window + dx] = grad_plane[k];
        }
      }
    }
  });
}

at::Tensor max_pool_window_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& index_in,
                                        at::IntArrayRef input_size, int64_t window) {
  TORCH_CHECK(input_size.size() == 4, "max_pool_window_backward: input_size must have 4 entries, got ",
              input_size.size());
  TORCH_CHECK(index_in.scalar_type() == at::kByte, "max_pool_window_backward: index must be uint8");
  check_window_size(window);
  const int64_t n = input_size[0], c = input_size[1], height = input_size[2], width = input_size[3];
  const std::vector<int64_t> out_size = {n, c, height / window, width / window};
  TORCH_CHECK(grad_out_in.sizes() == at::IntArrayRef(out_size) && index_in.sizes() == at::IntArrayRef(out_size),
              "max_pool_window_backward: grad_out and index must have shape ", at::IntArrayRef(out_size));
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor index = index_in.contiguous();
  at::Tensor grad_in = at::empty(input_size, grad_out.options());
  if (grad_in.numel() == 0) return grad_in;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "max_pool_window_backward",
                                  [&] {
                                    backward_kernel<scalar_t>(grad_out.const_data_ptr<scalar_t>(),
                                                              index.const_data_ptr<uint8_t>(),
                                                              grad_in.mutable_data_ptr<scalar_t>(), n * c, height,
                                                              width, window);
                                  });
  return grad_in;
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CPU, m) {
  m.impl("max_pool_window_forward", &max_pool_window_forward_cpu);
  m.impl("max_pool_window_backward", &max_pool_window_backward_cpu);
}

}  // namespace ndsnn
