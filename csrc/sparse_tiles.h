// Tile-resident direct sparse convolution: the plan of the work and what every thread of a block does, shared
// by the CUDA kernels (cuda/sparse_conv2d_tiled_cuda.cu) and their CPU emulation
// (cpu/sparse_conv2d_tiled_emulate.cpp), which calls these very functions for every thread of every block, so
// that the tile logic is tested on a machine without a GPU.
//
// Forward: a block owns `images` images x one tile of tile_h x tile_w output pixels. It stages, once, every
// input channel of the tile plus its halo in shared memory (zeros where the window leaves the image, so
// padding costs nothing later). Warps own output channels and walk each one's kept weights (the kept-weight
// index grouped by output channel; every lane reads the same weight, a broadcast); every lane owns up to
// kMaxItems (image, pixel) items of the tile. One shared-memory load and one FMA per useful multiply-add; each
// activation is read from global memory once per tile (plus its halo).
//
// Input gradient: the roles swapped. A block owns a tile of input pixels and stages every output channel's
// gradient over the window those pixels reach; warps own input channels and walk their kept weights (the
// index grouped by input channel). A strided convolution's tile is split into stride_h x stride_w phases:
// within a phase a kernel row reaches all of the phase's pixels or none, so that test is the same for every
// lane of the warp and no lane multiplies by a weight that does not apply to its pixel.
//
// Weight gradient at kept positions: a block stages the input tile (as forward) and its tile of the output
// gradient for every output channel; warps take the kept weights in turn, lanes multiply over the tile's
// items, a fixed shuffle tree adds the lanes, and each block's sum for each kept weight goes to a
// [blocks, kept] buffer that a second pass adds up block after block: deterministic, no atomics.
#pragma once

#include <algorithm>
#include <cstdint>

#include <c10/macros/Macros.h>

namespace ndsnn {
namespace tiles {

constexpr int kWarp = 32;
constexpr int kWarps = 8;  // warps per block
constexpr int kThreads = kWarp * kWarps;
constexpr int kMaxItems = 4;  // items per lane: a tile (or a phase of one) holds at most kWarp * kMaxItems
constexpr int kMaxImages = 32;
constexpr int64_t kMaxTileItems = kWarp * kMaxItems;

C10_HOST_DEVICE inline int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

C10_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One convolution call: x [batch, in_channels, in_h, in_w], weight [out_channels, in_channels / groups, kh, kw].
struct Conv {
  int64_t batch, in_channels, in_h, in_w, out_channels, out_h, out_w;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
  C10_HOST_DEVICE int64_t in_per_group() const { return in_channels / groups; }
  C10_HOST_DEVICE int64_t out_per_group() const { return out_channels / groups; }
  C10_HOST_DEVICE int64_t taps() const { return in_per_group() * kh * kw; }
};

// A kept weight decoded from its flat index into weight: output channel, input channel of x, kernel row, column.
struct Tap {
  int64_t co, ci, ky, kx;
};

C10_HOST_DEVICE inline Tap decode_tap(const Conv& c, int64_t flat) {
  const int64_t co = flat / c.taps();
  const int64_t rest = flat % c.taps();
  const int64_t k = rest % (c.kh * c.kw);
  return {co, (co / c.out_per_group()) * c.in_per_group() + rest / (c.kh * c.kw), k / c.kw, k % c.kw};
}

// Where a block's tile starts: its first image, row and column.
struct Origin {
  int64_t image0, y0, x0;
};

// Tiles of pixels (output pixels for the forward and weight gradient, input pixels for the input gradient).
struct Tiles {
  int64_t tile_h = 0, tile_w = 0, images = 0;
  int64_t tiles_y = 0, tiles_x = 0, image_groups = 0;
  // forward / weight gradient: the input rows and columns a tile reads; input gradient: the output-gradient
  // rows and columns its pixels reach (the window)
  int64_t span_h = 0, span_w = 0;
  C10_HOST_DEVICE bool empty() const { return tile_h == 0; }
  C10_HOST_DEVICE int64_t blocks() const { return image_groups * tiles_y * tiles_x; }
  C10_HOST_DEVICE Origin origin(int64_t block) const {
    const int64_t per_group = tiles_y * tiles_x;
    const int64_t rest = block % per_group;
    return {(block / per_group) * images, (rest / tiles_x) * tile_h, (rest % tiles_x) * tile_w};
  }
};

// ---- planning (host) ----------------------------------------------------------------------------------------

inline Tiles output_tiles(const Conv& c, int64_t tile_h, int64_t tile_w, int64_t images) {
  Tiles t;
  t.tile_h = tile_h;
  t.tile_w = tile_w;
  t.images = images;
  t.span_h = (tile_h - 1) * c.sh + (c.kh - 1) * c.dh + 1;
  t.span_w = (tile_w - 1) * c.sw + (c.kw - 1) * c.dw + 1;
  t.tiles_y = ceil_div(c.out_h, tile_h);
  t.tiles_x = ceil_div(c.out_w, tile_w);
  t.image_groups = ceil_div(c.batch, images);
  return t;
}

// Elements a block stages: the input tile, and for the weight gradient also the output-gradient tile.
inline int64_t output_staged(const Conv& c, const Tiles& t, bool with_grad) {
  const int64_t input = t.images * c.in_channels * t.span_h * t.span_w;
  return input + (with_grad ? t.images * c.out_channels * t.tile_h * t.tile_w : 0);
}

// The first output row (column) that input tile row (column) y0 reaches.
C10_HOST_DEVICE inline int64_t window_origin(int64_t y0, int64_t pad, int64_t k, int64_t d, int64_t s) {
  return floor_div(y0 + pad - (k - 1) * d, s);
}

inline Tiles input_tiles(const Conv& c, int64_t tile_h, int64_t tile_w, int64_t images) {
  Tiles t;
  t.tile_h = tile_h;  // multiples of the stride, so every tile starts on phase (0, 0)
  t.tile_w = tile_w;
  t.images = images;
  t.span_h = floor_div(tile_h - 1 + c.ph, c.sh) - window_origin(0, c.ph, c.kh, c.dh, c.sh) + 1;
  t.span_w = floor_div(tile_w - 1 + c.pw, c.sw) - window_origin(0, c.pw, c.kw, c.dw, c.sw) + 1;
  t.tiles_y = ceil_div(c.in_h, tile_h);
  t.tiles_x = ceil_div(c.in_w, tile_w);
  t.image_groups = ceil_div(c.batch, images);
  return t;
}

inline int64_t input_staged(const Conv& c, const Tiles& t) { return t.images * c.out_channels * t.span_h * t.span_w; }

// The largest tile, then the most images, whose items (per phase for the input gradient) fit the lanes and whose
// staged elements fit `budget`. kind: 0 forward, 1 input gradient, 2 weight gradient. An empty plan when not
// even one pixel of one image fits.
inline Tiles plan_tiles(const Conv& c, int64_t budget, int kind) {
  const int64_t sy = kind == 1 ? c.sh : 1;  // the input gradient tiles whole phases
  const int64_t sx = kind == 1 ? c.sw : 1;
  const int64_t rows_total = kind == 1 ? ceil_div(c.in_h, sy) : c.out_h;
  const int64_t cols_total = kind == 1 ? ceil_div(c.in_w, sx) : c.out_w;
  int64_t rows = std::max<int64_t>(1, std::min<int64_t>(rows_total, 8));  // pixels per phase, per image
  int64_t cols = std::max<int64_t>(1, std::min<int64_t>(cols_total, 8));
  while (true) {
    const int64_t most = std::min<int64_t>({kMaxImages, std::max<int64_t>(1, c.batch), kMaxTileItems / (rows * cols)});
    for (int64_t images = std::max<int64_t>(1, most); images >= 1; images /= 2) {
      const Tiles t = kind == 1 ? input_tiles(c, rows * sy, cols * sx, images) : output_tiles(c, rows, cols, images);
      const int64_t staged = kind == 1 ? input_staged(c, t) : output_staged(c, t, kind == 2);
      if (images * rows * cols <= kMaxTileItems && staged <= budget) return t;
    }
    if (rows == 1 && cols == 1) return Tiles{};
    if (rows >= cols) {
      rows = std::max<int64_t>(1, rows / 2);
    } else {
      cols = std::max<int64_t>(1, cols / 2);
    }
  }
}

// ---- staging: the global element that goes to shared-memory element e (-1: a zero) ---------------------------

// The input tile of an output tile: layout [image][in_channel][span_h][span_w].
C10_HOST_DEVICE inline int64_t staged_input(const Conv& c, const Tiles& t, const Origin& o, int64_t e) {
  const int64_t hx = e % t.span_w;
  int64_t rest = e / t.span_w;
  const int64_t hy = rest % t.span_h;
  rest /= t.span_h;
  const int64_t ci = rest % c.in_channels;
  const int64_t n = o.image0 + rest / c.in_channels;
  const int64_t iy = o.y0 * c.sh - c.ph + hy;
  const int64_t ix = o.x0 * c.sw - c.pw + hx;
  if (n >= c.batch || iy < 0 || iy >= c.in_h || ix < 0 || ix >= c.in_w) return -1;
  return ((n * c.in_channels + ci) * c.in_h + iy) * c.in_w + ix;
}

// The output gradient of an output tile: layout [image][out_channel][tile_h][tile_w].
C10_HOST_DEVICE inline int64_t staged_tile_grad(const Conv& c, const Tiles& t, const Origin& o, int64_t e) {
  const int64_t x = e % t.tile_w;
  int64_t rest = e / t.tile_w;
  const int64_t y = rest % t.tile_h;
  rest /= t.tile_h;
  const int64_t co = rest % c.out_channels;
  const int64_t n = o.image0 + rest / c.out_channels;
  const int64_t oy = o.y0 + y;
  const int64_t ox = o.x0 + x;
  if (n >= c.batch || oy >= c.out_h || ox >= c.out_w) return -1;
  return ((n * c.out_channels + co) * c.out_h + oy) * c.out_w + ox;
}

// The output gradient over an input tile's window: layout [image][out_channel][span_h][span_w].
C10_HOST_DEVICE inline int64_t staged_window_grad(const Conv& c, const Tiles& t, const Origin& o, int64_t e) {
  const int64_t wx = e % t.span_w;
  int64_t rest = e / t.span_w;
  const int64_t wy = rest % t.span_h;
  rest /= t.span_h;
  const int64_t co = rest % c.out_channels;
  const int64_t n = o.image0 + rest / c.out_channels;
  const int64_t oy = window_origin(o.y0, c.ph, c.kh, c.dh, c.sh) + wy;
  const int64_t ox = window_origin(o.x0, c.pw, c.kw, c.dw, c.sw) + wx;
  if (n >= c.batch || oy < 0 || oy >= c.out_h || ox < 0 || ox >= c.out_w) return -1;
  return ((n * c.out_channels + co) * c.out_h + oy) * c.out_w + ox;
}

// ---- items: the (image, pixel) pairs a lane computes ------------------------------------------------------------

struct Item {
  bool valid;        // inside the tile's item count, the batch and the image
  int64_t image;     // image within the block
  int64_t y, x;      // pixel within the tile (forward, weight gradient) or within its phase (input gradient)
  int64_t global;    // offset of the result for channel 0 (output for forward, input for the input gradient)
};

// Item i of an output tile.
C10_HOST_DEVICE inline Item output_item(const Conv& c, const Tiles& t, const Origin& o, int64_t i) {
  const int64_t per_image = t.tile_h * t.tile_w;
  const int64_t g = i / per_image;
  const int64_t y = (i % per_image) / t.tile_w;
  const int64_t x = (i % per_image) % t.tile_w;
  const int64_t n = o.image0 + g;
  const bool valid = g < t.images && n < c.batch && o.y0 + y < c.out_h && o.x0 + x < c.out_w;
  const int64_t global = valid ? (n * c.out_channels * c.out_h + o.y0 + y) * c.out_w + o.x0 + x : 0;
  return {valid, g, y, x, global};
}

// Item i of phase (ry, rx) of an input tile: its pixel is (ry + y * sh, rx + x * sw) within the tile.
C10_HOST_DEVICE inline Item input_item(const Conv& c, const Tiles& t, const Origin& o, int64_t ry, int64_t rx,
                                       int64_t i) {
  const int64_t rows = t.tile_h / c.sh;
  const int64_t cols = t.tile_w / c.sw;
  const int64_t g = i / (rows * cols);
  const int64_t y = (i % (rows * cols)) / cols;
  const int64_t x = (i % (rows * cols)) % cols;
  const int64_t n = o.image0 + g;
  const int64_t iy = o.y0 + ry + y * c.sh;
  const int64_t ix = o.x0 + rx + x * c.sw;
  const bool valid = g < t.images && n < c.batch && iy < c.in_h && ix < c.in_w;
  return {valid, g, y, x, valid ? (n * c.in_channels * c.in_h + iy) * c.in_w + ix : 0};
}

// ---- the work of one lane ------------------------------------------------------------------------------------

// Forward: out[n, co, oy, ox] = bias[co] + sum of weight * input over co's kept weights, for the lane's items,
// for every output channel of the warp (co = warp, warp + kWarps, ...). T: element type, A: accumulator.
template <typename T, typename A>
C10_HOST_DEVICE inline void forward_lane(const Conv& c, const Tiles& t, const Origin& o, const T* staged,
                                         const T* weight, const T* bias, const int64_t* out_ptr,
                                         const int64_t* out_flat, T* out, int64_t warp, int64_t lane) {
  Item items[kMaxItems];
  int64_t base[kMaxItems];
  for (int j = 0; j < kMaxItems; ++j) {
    items[j] = output_item(c, t, o, lane + j * kWarp);
    base[j] = (items[j].image * c.in_channels * t.span_h + items[j].y * c.sh) * t.span_w + items[j].x * c.sw;
  }
  const int64_t plane = c.out_h * c.out_w;
  for (int64_t co = warp; co < c.out_channels; co += kWarps) {
    A acc[kMaxItems];
    for (int j = 0; j < kMaxItems; ++j) acc[j] = A(0);
    for (int64_t k = out_ptr[co]; k < out_ptr[co + 1]; ++k) {
      const int64_t flat = out_flat[k];
      const Tap tap = decode_tap(c, flat);
      const A w = static_cast<A>(weight[flat]);
      const int64_t offset = (tap.ci * t.span_h + tap.ky * c.dh) * t.span_w + tap.kx * c.dw;
      for (int j = 0; j < kMaxItems; ++j) {
        if (items[j].valid) acc[j] += w * static_cast<A>(staged[base[j] + offset]);
      }
    }
    const A b = bias != nullptr ? static_cast<A>(bias[co]) : A(0);
    for (int j = 0; j < kMaxItems; ++j) {
      if (items[j].valid) out[items[j].global + co * plane] = static_cast<T>(acc[j] + b);
    }
  }
}

// Input gradient: grad_x[n, ci, iy, ix] = sum over ci's kept weights of weight * grad_out at the output pixel
// the weight connects, for the lane's items of every phase, for every input channel of the warp.
template <typename T, typename A>
C10_HOST_DEVICE inline void grad_input_lane(const Conv& c, const Tiles& t, const Origin& o, const T* staged,
                                            const T* weight, const int64_t* in_ptr, const int64_t* in_flat,
                                            T* grad_x, int64_t warp, int64_t lane) {
  const int64_t plane = c.in_h * c.in_w;
  const int64_t oy0 = window_origin(o.y0, c.ph, c.kh, c.dh, c.sh);
  const int64_t ox0 = window_origin(o.x0, c.pw, c.kw, c.dw, c.sw);
  for (int64_t ci = warp; ci < c.in_channels; ci += kWarps) {
    for (int64_t ry = 0; ry < c.sh; ++ry) {
      for (int64_t rx = 0; rx < c.sw; ++rx) {
        Item items[kMaxItems];
        int64_t base[kMaxItems];
        A acc[kMaxItems];
        for (int j = 0; j < kMaxItems; ++j) {
          items[j] = input_item(c, t, o, ry, rx, lane + j * kWarp);
          base[j] = (items[j].image * c.out_channels * t.span_h + items[j].y) * t.span_w + items[j].x;
          acc[j] = A(0);
        }
        for (int64_t k = in_ptr[ci]; k < in_ptr[ci + 1]; ++k) {
          const int64_t flat = in_flat[k];
          const Tap tap = decode_tap(c, flat);
          const int64_t ay = o.y0 + ry + c.ph - tap.ky * c.dh;  // the same for every pixel of the phase
          const int64_t ax = o.x0 + rx + c.pw - tap.kx * c.dw;
          if (ay % c.sh != 0 || ax % c.sw != 0) continue;  // this kernel tap reaches no pixel of the phase
          const A w = static_cast<A>(weight[flat]);
          const int64_t offset = (tap.co * t.span_h + (ay / c.sh - oy0)) * t.span_w + (ax / c.sw - ox0);
          for (int j = 0; j < kMaxItems; ++j) {
            if (items[j].valid) acc[j] += w * static_cast<A>(staged[base[j] + offset]);
          }
        }
        for (int j = 0; j < kMaxItems; ++j) {
          if (items[j].valid) grad_x[items[j].global + ci * plane] = static_cast<T>(acc[j]);
        }
      }
    }
  }
}

// Weight gradient: the lane's share of sum over the tile's items of grad_out * input for kept weight `flat`.
// staged: the input tile followed by the output-gradient tile (output_staged(..., true) elements).
template <typename T, typename A>
C10_HOST_DEVICE inline A grad_weight_lane(const Conv& c, const Tiles& t, const Origin& o, const T* staged,
                                          int64_t flat, int64_t lane) {
  const Tap tap = decode_tap(c, flat);
  const T* grad = staged + t.images * c.in_channels * t.span_h * t.span_w;
  A sum = A(0);
  for (int j = 0; j < kMaxItems; ++j) {
    const Item item = output_item(c, t, o, lane + j * kWarp);
    if (!item.valid) continue;
    const int64_t input = ((item.image * c.in_channels + tap.ci) * t.span_h + item.y * c.sh + tap.ky * c.dh) *
                              t.span_w + item.x * c.sw + tap.kx * c.dw;  // clang-format off
    const int64_t g = ((item.image * c.out_channels + tap.co) * t.tile_h + item.y) * t.tile_w + item.x;
    sum += static_cast<A>(grad[g]) * static_cast<A>(staged[input]);
  }
  return sum;
}

}  // namespace tiles
}  // namespace ndsnn
