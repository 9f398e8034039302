// C++ checks of the ndsnn ops, called through the dispatcher as any libtorch user would call them.
// Built and run by CMakeLists.txt (ctest); prints one line per check and "N passed, M failed".
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <tuple>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

namespace {

using Forward = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor& x, const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold,
    double tau_value, double v_threshold_value, std::optional<double> v_reset, bool decay_input, bool detach_reset,
    c10::string_view surrogate, double alpha, std::optional<at::ScalarType> saved_dtype);
using Backward = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& grad_spikes, const std::optional<at::Tensor>& grad_h, const at::Tensor& h,
    const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold, double tau_value,
    double v_threshold_value, std::optional<double> v_reset, bool decay_input, bool detach_reset,
    c10::string_view surrogate, double alpha, bool tau_grad, bool v_threshold_grad);

constexpr int64_t T = 6, N = 3, C = 4;
constexpr double kTau = 2.0, kThreshold = 1.0, kAlpha = 2.0;

int passed = 0, failed = 0;

void check(const std::string& name, bool ok, const std::string& detail = "") {
  (ok ? passed : failed) += 1;
  std::printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.empty() ? "" : ": ", detail.c_str());
}

// Runs a check body; an exception thrown by it is a failure, not a crash.
void run_check(const std::string& name, const std::function<void()>& body) {
  try {
    body();
  } catch (const std::exception& e) {
    check(name, false, std::string("threw: ") + e.what());
  }
}

auto forward_op() {
  return c10::Dispatcher::singleton().findSchemaOrThrow("ndsnn::lif_forward", "").typed<Forward>();
}

auto backward_op() {
  return c10::Dispatcher::singleton().findSchemaOrThrow("ndsnn::lif_backward", "").typed<Backward>();
}

std::tuple<at::Tensor, at::Tensor> lif_forward(const at::Tensor& x, const std::optional<at::Tensor>& tau,
                                               double tau_value, std::optional<double> v_reset, bool decay_input) {
  return forward_op().call(x, tau, std::nullopt, tau_value, kThreshold, v_reset, decay_input, true, "atan", kAlpha,
                           std::nullopt);
}

// Inputs around the threshold so that a good share of the neurons fire (as tests/lif_cases.py does).
at::Tensor lif_input(at::ScalarType dtype) { return (at::randn({T, N, C}, at::kDouble) * 1.5 + 0.8).to(dtype); }

std::string config_name(std::optional<double> v_reset, bool decay_input) {
  return std::string(v_reset ? "hard" : "soft") + " reset, decay_input=" + (decay_input ? "true" : "false");
}

// The semantics in lif_math.h's header comment, one neuron at a time, in float.
std::tuple<at::Tensor, at::Tensor> reference_forward(const at::Tensor& x, float tau, float v_threshold,
                                                     std::optional<double> v_reset, bool decay_input) {
  const at::Tensor xs = x.contiguous().view({T, -1});
  at::Tensor spikes = at::zeros_like(xs), h = at::zeros_like(xs);
  auto xa = xs.accessor<float, 2>();
  auto sa = spikes.accessor<float, 2>();
  auto ha = h.accessor<float, 2>();
  const float vr = static_cast<float>(v_reset.value_or(0.0));  // soft reset: v_reset taken as 0
  for (int64_t i = 0; i < xs.size(1); ++i) {
    float v = vr;
    for (int64_t t = 0; t < T; ++t) {
      const float ht = decay_input ? v + (xa[t][i] - (v - vr)) / tau : v - (v - vr) / tau + xa[t][i];
      const bool s = ht >= v_threshold;
      v = v_reset ? (s ? vr : ht) : ht - v_threshold * (s ? 1.0f : 0.0f);
      sa[t][i] = s ? 1.0f : 0.0f;
      ha[t][i] = ht;
    }
  }
  return {spikes.view(x.sizes()), h.view(x.sizes())};
}

std::string max_diff(const at::Tensor& a, const at::Tensor& b) {
  char text[48];
  std::snprintf(text, sizeof text, "max |diff| %.3g", (a - b).abs().max().item<double>());
  return text;
}

// (a) build_info reports the torch it was compiled against.
void check_build_info() {
  run_check("build_info", [] {
    const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("ndsnn::build_info", "").typed<std::string()>();
    const std::string info = op.call();
    check("build_info contains torch=", info.find("torch=") != std::string::npos, info);
  });
}

// (b) The kernel matches the scalar reference: spikes exactly, h to float precision.
void check_forward_reference() {
  for (std::optional<double> v_reset : {std::optional<double>(0.0), std::optional<double>()}) {
    for (bool decay_input : {true, false}) {
      const std::string name = "forward matches reference (" + config_name(v_reset, decay_input) + ")";
      run_check(name, [&] {
        const at::Tensor x = lif_input(at::kFloat);
        const auto [spikes, h] = lif_forward(x, std::nullopt, kTau, v_reset, decay_input);
        const auto [ref_spikes, ref_h] = reference_forward(x, kTau, kThreshold, v_reset, decay_input);
        const int64_t fired = spikes.sum().item<int64_t>();
        const bool ok = at::equal(spikes, ref_spikes) && at::allclose(h, ref_h, 1e-6, 1e-6) && fired > 0 &&
                        fired < spikes.numel();
        check(name, ok, std::to_string(fired) + " spikes, h " + max_diff(h, ref_h));
      });
    }
  }
}

// (c) A per-channel tau of shape [C] acts on each channel as that channel's scalar tau would.
void check_per_channel_tau() {
  for (bool decay_input : {true, false}) {
    const std::string name = "per-channel tau (decay_input=" + std::string(decay_input ? "true" : "false") + ")";
    run_check(name, [&] {
      const at::Tensor x = lif_input(at::kFloat);
      const at::Tensor tau = at::tensor({1.5f, 2.0f, 3.0f, 4.5f});
      const auto [spikes, h] = lif_forward(x, tau, kTau, 0.0, decay_input);
      bool ok = true;
      for (int64_t c = 0; c < C; ++c) {
        const at::Tensor xc = x.select(2, c).contiguous();
        const auto [sc, hc] = lif_forward(xc, std::nullopt, tau[c].item<double>(), 0.0, decay_input);
        ok = ok && at::equal(spikes.select(2, c), sc) && at::equal(h.select(2, c), hc);
      }
      check(name, ok);
    });
  }
}

// (d) With detach_reset, grad_x of sum(h * g) agrees with central finite differences (in double).
void check_backward_finite_differences() {
  for (std::optional<double> v_reset : {std::optional<double>(0.0), std::optional<double>()}) {
    for (bool decay_input : {true, false}) {
      const std::string name = "backward vs finite differences (" + config_name(v_reset, decay_input) + ")";
      run_check(name, [&] {
        const at::Tensor x = lif_input(at::kDouble);
        const at::Tensor g = at::randn({T, N, C}, at::kDouble);
        const auto loss = [&](const at::Tensor& xin) {
          const auto [s, h] = forward_op().call(xin, std::nullopt, std::nullopt, kTau, kThreshold, v_reset,
                                                decay_input, true, "atan", kAlpha, std::nullopt);
          return (h * g).sum().item<double>();
        };
        const auto [spikes, h] = lif_forward(x, std::nullopt, kTau, v_reset, decay_input);
        const auto grads = backward_op().call(at::zeros_like(spikes), g, h, std::nullopt, std::nullopt, kTau,
                                              kThreshold, v_reset, decay_input, true, "atan", kAlpha, false, false);
        const at::Tensor grad_x = std::get<0>(grads);
        const double eps = 1e-6;
        at::Tensor numeric = at::empty_like(x);
        auto flat = x.view(-1);
        auto out = numeric.view(-1);
        for (int64_t i = 0; i < flat.numel(); ++i) {
          at::Tensor plus = flat.clone(), minus = flat.clone();
          plus[i] += eps;
          minus[i] -= eps;
          out[i] = (loss(plus.view(x.sizes())) - loss(minus.view(x.sizes()))) / (2 * eps);
        }
        const bool ok = at::allclose(grad_x, numeric, 0.0, 1e-5);
        check(name, ok, max_diff(grad_x, numeric));
      });
    }
  }
}

// (e) Invalid x is rejected with a c10::Error that names x_seq.
void check_invalid_input() {
  const auto expect_error = [](const std::string& name, const at::Tensor& x) {
    try {
      lif_forward(x, std::nullopt, kTau, 0.0, true);
      check(name, false, "no error");
    } catch (const c10::Error& e) {
      const std::string msg = e.msg();
      check(name, msg.find("x_seq") != std::string::npos, msg);
    } catch (const std::exception& e) {
      check(name, false, std::string("not a c10::Error: ") + e.what());
    }
  };
  expect_error("int64 x rejected", at::ones({T, N, C}, at::kLong));
  expect_error("1-d x rejected", at::ones({T}, at::kFloat));
}

}  // namespace

int main() {
  at::manual_seed(0);
  check_build_info();
  check_forward_reference();
  check_per_channel_tau();
  check_backward_finite_differences();
  check_invalid_input();
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
