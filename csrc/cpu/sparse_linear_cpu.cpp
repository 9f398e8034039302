// Masked sparse linear layer on the CPU: y = x (weight * mask)^T + bias for x [B, I], weight [O, I], with work
// proportional to the kept weights (and, for spike inputs, to the active inputs).
//
// The kept weights arrive as the kept-weight index of the mask (flat positions o * I + i, grouped by output
// row: out_ptr / out_flat, and by input column: in_ptr / in_flat). Per call their values are gathered into the
// order each loop walks, with the row and column each one reaches, so the inner loops read contiguous arrays:
//   forward, inputs with few nonzeros (spikes) and many kept weights per input: per sample, each active input
//     adds w * x to the outputs of its column's kept weights (work: active inputs x kept per column);
//   forward otherwise: per sample, each output gathers its row's inputs (work: kept weights);
//   input gradient: per sample, one flat loop over the kept weights (grouped by input) adds w * grad_out;
//   weight gradient at kept positions: with few kept weights, gathered sample by sample in fixed chunks of
//     samples; otherwise x and the output gradient transposed once, then one dot product of length B per
//     kept weight (vectorised). Both deterministic, whatever the number of threads, with no atomics.
// The input gradient loops over the kept weights flat rather than per input: at high sparsity an input has
// 0-3 kept weights, and a loop per input costs a branch misprediction each, more than its arithmetic.
// Samples are split across threads; 16-bit inputs compute in float.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../sparse_conv2d.h"
#include "sparse_conv2d_events.h"

namespace ndsnn {
namespace {

struct LinearShape {
  int64_t batch, in_features, out_features;
};

// Gathering over the kept weights beats the event scan (forward) and the transposed dot products (weight
// gradient) while there are at most this many kept weights per input feature (per feature of x and
// grad_out for the weight gradient).
constexpr int64_t kGatherPerInput = 3;
// The gathered weight gradient sums samples in at most kGatherChunks chunks of at least kGatherChunkRows
// samples, each chunk a row of partial sums (at most kMaxGatherPartials of them in all).
constexpr int64_t kGatherChunks = 16;
constexpr int64_t kGatherChunkRows = 32;
constexpr int64_t kMaxGatherPartials = int64_t(1) << 22;

void check_linear_index(const at::Tensor& ptr, const at::Tensor& flat, int64_t entries, const at::Tensor& weight,
                        const char* side) {
  check_index(ptr, flat, entries, weight.device(), weight.numel(), side);
}

LinearShape linear_shape(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1),
              "ndsnn.sparse_linear: x must be [B, I] and weight [O, I], got ", x.sizes(), " and ", weight.sizes());
  TORCH_CHECK(x.scalar_type() == weight.scalar_type() && x.device() == weight.device(),
              "ndsnn.sparse_linear: x and weight differ in dtype or device");
  return {x.size(0), x.size(1), weight.size(0)};
}

// The kept weights' values in the order of `flat`, in the arithmetic type, and the row (out_of_flat) or column
// each one reaches.
template <typename scalar_t>
std::vector<at::opmath_type<scalar_t>> gather_values(const scalar_t* weight, const int64_t* flat, int64_t kept) {
  std::vector<at::opmath_type<scalar_t>> values(kept);
  for (int64_t k = 0; k < kept; ++k) values[k] = static_cast<at::opmath_type<scalar_t>>(weight[flat[k]]);
  return values;
}

std::vector<int32_t> rows_of(const int64_t* flat, int64_t kept, int64_t in_features) {
  std::vector<int32_t> rows(kept);
  for (int64_t k = 0; k < kept; ++k) rows[k] = static_cast<int32_t>(flat[k] / in_features);
  return rows;
}

std::vector<int32_t> columns_of(const int64_t* flat, int64_t kept, int64_t in_features) {
  std::vector<int32_t> columns(kept);
  for (int64_t k = 0; k < kept; ++k) columns[k] = static_cast<int32_t>(flat[k] % in_features);
  return columns;
}

// sum a[b] * c[b] in a fixed order: kLanes interleaved partial sums (which the compiler keeps in one vector
// register), added lane by lane at the end.
template <typename scalar_t, typename math_t>
math_t dot(const scalar_t* a, const scalar_t* c, int64_t n) {
  constexpr int kLanes = 8;
  math_t partial[kLanes] = {};
  int64_t b = 0;
  for (; b + kLanes <= n; b += kLanes) {
    for (int l = 0; l < kLanes; ++l) partial[l] += static_cast<math_t>(a[b + l]) * static_cast<math_t>(c[b + l]);
  }
  math_t sum = math_t(0);
  for (int l = 0; l < kLanes; ++l) sum += partial[l];
  for (; b < n; ++b) sum += static_cast<math_t>(a[b]) * static_cast<math_t>(c[b]);
  return sum;
}

at::Tensor sparse_linear_forward_cpu(const at::Tensor& x_in, const at::Tensor& weight_in,
                                     const std::optional<at::Tensor>& bias_in, const at::Tensor& out_ptr,
                                     const at::Tensor& out_flat, const at::Tensor& in_ptr, const at::Tensor& in_flat,
                                     bool /*dense_weight_grad*/, int64_t input_kind) {
  TORCH_CHECK(input_kind >= 0 && input_kind <= 2, "ndsnn.sparse_linear: input_kind must be 0, 1 or 2");
  const LinearShape s = linear_shape(x_in, weight_in);
  check_linear_index(out_ptr, out_flat, s.out_features, weight_in, "out");
  check_linear_index(in_ptr, in_flat, s.in_features, weight_in, "in");
  if (bias_in.has_value()) {
    TORCH_CHECK(bias_in->dim() == 1 && bias_in->size(0) == s.out_features &&
                    bias_in->scalar_type() == x_in.scalar_type(),
                "ndsnn.sparse_linear: bias must be a [O] tensor of x's dtype");
  }
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty({s.batch, s.out_features}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sparse_linear_forward_cpu", [&] {
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = out.data_ptr<scalar_t>();
    const scalar_t* bp = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    const int64_t kept = out_flat.numel();
    // input_kind 1: spikes, 2: real-valued, 0: not known (then x's nonzeros are counted)
    // Events pay a scan of every input per sample; gathering pays one multiply-add per kept weight. With few
    // kept weights per input (kept <= kGatherPerInput * I) gathering is faster even for spikes.
    const bool few_kept = out_flat.numel() <= kGatherPerInput * s.in_features;
    const bool events =
        !few_kept && (input_kind == 1 || (input_kind == 0 && events::sparse_enough(xp, x.numel())));
    const int64_t* ptr = (events ? in_ptr : out_ptr).const_data_ptr<int64_t>();
    const int64_t* flat = (events ? in_flat : out_flat).const_data_ptr<int64_t>();
    const std::vector<math_t> w = gather_values(weight.const_data_ptr<scalar_t>(), flat, kept);
    const std::vector<int32_t> reach =
        events ? rows_of(flat, kept, s.in_features) : columns_of(flat, kept, s.in_features);
    at::parallel_for(0, s.batch, 1, [&](int64_t begin, int64_t end) {
      std::vector<math_t> acc(s.out_features);
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* row = xp + b * s.in_features;
        for (int64_t o = 0; o < s.out_features; ++o) acc[o] = bp ? static_cast<math_t>(bp[o]) : math_t(0);
        if (events) {  // each active input adds to its column's outputs
          for (int64_t i = 0; i < s.in_features; ++i) {
            const math_t v = static_cast<math_t>(row[i]);
            if (v == math_t(0)) continue;
            for (int64_t k = ptr[i]; k < ptr[i + 1]; ++k) acc[reach[k]] += w[k] * v;
          }
        } else {  // each output gathers its row's inputs (a sum in a register: the kept weights of one
                  // output are many in a row, unlike those of one input)
          for (int64_t o = 0; o < s.out_features; ++o) {
            math_t sum = math_t(0);
            for (int64_t k = ptr[o]; k < ptr[o + 1]; ++k) sum += w[k] * static_cast<math_t>(row[reach[k]]);
            acc[o] += sum;
          }
        }
        scalar_t* y = yp + b * s.out_features;
        for (int64_t o = 0; o < s.out_features; ++o) y[o] = static_cast<scalar_t>(acc[o]);
      }
    });
  });
  return out;
}

at::Tensor sparse_linear_grad_input_cpu(const at::Tensor& grad_out_in, const at::Tensor& weight_in,
                                        const at::Tensor& in_ptr, const at::Tensor& in_flat) {
  TORCH_CHECK(grad_out_in.dim() == 2 && weight_in.dim() == 2 && grad_out_in.size(1) == weight_in.size(0),
              "ndsnn.sparse_linear: grad_out must be [B, O] for weight [O, I]");
  const int64_t batch = grad_out_in.size(0), out_features = weight_in.size(0), in_features = weight_in.size(1);
  check_linear_index(in_ptr, in_flat, in_features, weight_in, "in");
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  at::Tensor grad_x = at::empty({batch, in_features}, grad_out.options());
  if (grad_x.numel() == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_out.scalar_type(), "sparse_linear_grad_input_cpu",
                                  [&] {
    using math_t = at::opmath_type<scalar_t>;
    const int64_t* flat = in_flat.const_data_ptr<int64_t>();
    const int64_t kept = in_flat.numel();
    const std::vector<math_t> w = gather_values(weight.const_data_ptr<scalar_t>(), flat, kept);
    const std::vector<int32_t> rows = rows_of(flat, kept, in_features);
    const std::vector<int32_t> columns = columns_of(flat, kept, in_features);
    const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_x.data_ptr<scalar_t>();
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      std::vector<math_t> g(out_features);
      std::vector<math_t> sums(in_features);
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t o = 0; o < out_features; ++o) g[o] = static_cast<math_t>(gp[b * out_features + o]);
        // One flat loop over the kept weights (grouped by input, so each input's terms add in the same order
        // as a per-input sum): no loop per input whose trip count the branch predictor cannot learn.
        std::fill(sums.begin(), sums.end(), math_t(0));
        for (int64_t k = 0; k < kept; ++k) sums[columns[k]] += w[k] * g[rows[k]];
        scalar_t* out = gx + b * in_features;
        for (int64_t i = 0; i < in_features; ++i) out[i] = static_cast<scalar_t>(sums[i]);
      }
    });
  });
  return grad_x;
}

// Weight gradient at the kept positions by gathering, sample by sample: each kept weight adds
// grad_out[b, o] * x[b, i] for every sample b, with no transposed copies of x and grad_out (which cost more
// than the products when few weights are kept). Samples are summed in fixed chunks, and the chunks in order,
// so the result does not depend on the number of threads.
template <typename scalar_t>
void grad_weight_by_gather(const scalar_t* gp, const scalar_t* xp, const int64_t* flat, int64_t kept, int64_t batch,
                           int64_t in_features, int64_t out_features, scalar_t* gw) {
  using math_t = at::opmath_type<scalar_t>;
  const std::vector<int32_t> rows = rows_of(flat, kept, in_features);
  const std::vector<int32_t> columns = columns_of(flat, kept, in_features);
  const int64_t chunk_rows = std::max<int64_t>(kGatherChunkRows, (batch + kGatherChunks - 1) / kGatherChunks);
  const int64_t chunks = (batch + chunk_rows - 1) / chunk_rows;
  std::vector<math_t> partial(static_cast<size_t>(chunks * kept), math_t(0));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      math_t* acc = partial.data() + c * kept;
      for (int64_t b = c * chunk_rows; b < std::min(batch, (c + 1) * chunk_rows); ++b) {
        const scalar_t* g = gp + b * out_features;
        const scalar_t* x = xp + b * in_features;
        for (int64_t k = 0; k < kept; ++k) {
          acc[k] += static_cast<math_t>(g[rows[k]]) * static_cast<math_t>(x[columns[k]]);
        }
      }
    }
  });
  for (int64_t k = 0; k < kept; ++k) {
    math_t total = math_t(0);
    for (int64_t c = 0; c < chunks; ++c) total += partial[c * kept + k];
    gw[flat[k]] = static_cast<scalar_t>(total);
  }
}

at::Tensor sparse_linear_grad_weight_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                         const at::Tensor& out_flat, at::IntArrayRef weight_size) {
  TORCH_CHECK(weight_size.size() == 2 && grad_out_in.dim() == 2 && x_in.dim() == 2 &&
                  grad_out_in.size(0) == x_in.size(0) && grad_out_in.size(1) == weight_size[0] &&
                  x_in.size(1) == weight_size[1],
              "ndsnn.sparse_linear: grad_out [B, O], x [B, I] and weight_size [O, I] do not agree");
  TORCH_CHECK(out_flat.scalar_type() == at::kLong && out_flat.dim() == 1,
              "ndsnn.sparse_linear: out_flat must be a 1-d int64 tensor");
  const int64_t in_features = weight_size[1], out_features = weight_size[0];
  at::Tensor grad_weight = at::zeros(weight_size, x_in.options());
  const int64_t kept = out_flat.numel();
  const int64_t batch = x_in.size(0);
  if (kept == 0 || batch == 0) return grad_weight;
  // Gathering reads x and grad_out in place; the dot products need them transposed (a copy of each).
  const bool gather = kept <= kGatherPerInput * (in_features + out_features) &&
                      kept * std::min<int64_t>(kGatherChunks, batch) <= kMaxGatherPartials;
  const at::Tensor grad_out = gather ? grad_out_in.contiguous() : grad_out_in.t().contiguous();
  const at::Tensor x = gather ? x_in.contiguous() : x_in.t().contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x_in.scalar_type(), "sparse_linear_grad_weight_cpu", [&] {
    using math_t = at::opmath_type<scalar_t>;
    const int64_t* flat = out_flat.const_data_ptr<int64_t>();
    TORCH_CHECK(flat[kept - 1] < grad_weight.numel() && flat[0] >= 0, "ndsnn.sparse_linear: out_flat out of range");
    const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* gw = grad_weight.data_ptr<scalar_t>();
    if (gather) {
      grad_weight_by_gather(gp, xp, flat, kept, batch, in_features, out_features, gw);
      return;
    }
    // Transposed, so each kept weight's dot product runs over two contiguous rows of length B.
    at::parallel_for(0, kept, 64, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const scalar_t* a = gp + (flat[k] / in_features) * batch;
        const scalar_t* c = xp + (flat[k] % in_features) * batch;
        gw[flat[k]] = static_cast<scalar_t>(dot<scalar_t, math_t>(a, c, batch));
      }
    });
  });
  return grad_weight;
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CPU, m) {
  m.impl("sparse_linear_forward", &sparse_linear_forward_cpu);
  m.impl("sparse_linear_grad_input", &sparse_linear_grad_input_cpu);
  m.impl("sparse_linear_grad_weight", &sparse_linear_grad_weight_cpu);
}

}  // namespace ndsnn
