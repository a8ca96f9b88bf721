// Neighborhood Aggregation on the CPU: the forward pass and the neighbor replay of
// spikegrad/rules/na/ (reference.py), one neuron per loop iteration, all neighbors replayed in
// registers. The equations and their derivation are in the docstring of
// spikegrad/rules/na/__init__.py; this file must compute exactly
// what na.forward / na.backward compute (tests/rules/test_na_cpu.py checks it).
//
// Layout: [T, M] (time-major, trailing dimensions flattened), contiguous rows.
// A replay stops early once the neighbor's state equals the original trajectory's post-reset
// state (then all later spikes agree): the rest of its loss change is the decaying trace gap
// times the discounted sum of later errors. Where the state entering a step was set from
// outside (`changed`, see na.loss_change), the neighbor merges there by definition.
//
// The kernels are the CPU implementations of the torch operators spikegrad::na_forward_cpp,
// spikegrad::na_step_cpp and spikegrad::na_replay_cpp (TORCH_LIBRARY at the end of this file;
// spikegrad/rules/na/ops.py adds their fake implementations and na_forward_cpp's autograd).
#include <torch/library.h>
#include <torch/torch.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <algorithm>
#include <bit>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <tuple>
#include <vector>

namespace {

struct Params {
  double beta, theta, ls, gain, clamp;
  bool trace, subtract, cube;
};

template <typename T>
inline T after_reset(T u, bool fire, const Params& p) {
  if (p.subtract) return fire ? u - static_cast<T>(p.theta) : u;
  return fire ? T(0) : u;
}

template <typename T>
inline T distance_weight(T u, const Params& p) {
  T w = T(1) / (static_cast<T>(p.theta) - u);
  if (p.cube) w = w * w * w;
  const T c = static_cast<T>(p.clamp);
  return w > c ? c : (w < -c ? -c : w);  // +inf (u == theta exactly) -> +clamp
}

template <typename T>
void forward_kernel(const T* c, T* u, T* a, const T* a_init, const T* u_init, int64_t steps,
                    int64_t m, const Params& p) {
  const T beta = p.beta, theta = p.theta, ls = p.ls, gain = p.gain;
  at::parallel_for(0, m, 4096, [&](int64_t lo, int64_t hi) {
    std::vector<T> v(hi - lo, T(0)), tr(hi - lo, T(0));
    if (a_init) std::copy(a_init + lo, a_init + hi, tr.begin());
    if (u_init)
      for (int64_t j = lo; j < hi; ++j) v[j - lo] = after_reset(u_init[j], u_init[j] > theta, p);
    for (int64_t t = 0; t < steps; ++t) {  // time outer, neurons inner: contiguous rows
      const T* ct = c + t * m;
      T* ut = u + t * m;
      T* at_ = a + t * m;
      for (int64_t j = lo; j < hi; ++j) {
        const T x = beta * v[j - lo] + ct[j];
        const bool f = x > theta;
        v[j - lo] = after_reset(x, f, p);
        tr[j - lo] = p.trace ? ls * tr[j - lo] + gain * T(f) : T(f);
        ut[j] = x;
        at_[j] = tr[j - lo];
      }
    }
  });
}

// Replay, vectorised over neurons: blocks of kBlock neurons advance in lock-step through time
// (time-major rows, contiguous in the neuron index, branch-free arithmetic the compiler turns
// into SIMD). A lane whose neighbor state equals the original post-reset state has merged:
// all its later spikes agree, so the rest of its loss change is the trace gap times the
// discounted later errors, added once; a block stops when all its lanes have merged.
// c/u/a/e rows t = 0..steps-1 of the window suffix, row stride m; a_init: [m] or null.
constexpr int64_t kBlock = 64;

template <typename T, bool kTrace, bool kSubtract>
void replay_block(const T* c, const T* u, const T* a, const T* e, const T* a_init,
                  const uint8_t* changed, T* delta, int64_t steps, int64_t m, int64_t neighbors,
                  int64_t lo, int64_t nb, const Params& p, T* later) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const T beta = p.beta, theta = p.theta, ls = p.ls, gain = p.gain;
  alignas(64) T vk[kBlock], ak[kBlock], dl[kBlock], act[kBlock];
  alignas(64) static const T zeros[kBlock] = {};
  alignas(64) static const uint8_t kept[kBlock] = {};
  if (kTrace) {  // later[t][j] = sum_{t' > t} ls^(t'-t) e[t'][j]
    for (int64_t j = 0; j < nb; ++j) later[(steps - 1) * kBlock + j] = T(0);
    for (int64_t t = steps - 2; t >= 0; --t) {
      const T* en = e + (t + 1) * m + lo;
      T* lt = later + t * kBlock;
      for (int64_t j = 0; j < nb; ++j) lt[j] = ls * (lt[j + kBlock] + en[j]);
    }
  }
  for (int64_t k = 0; k < neighbors; ++k) {
    const T *uk = u + k * m + lo, *ek = e + k * m + lo, *akr = a + k * m + lo;
    const T* before = k > 0 ? a + (k - 1) * m + lo : (a_init ? a_init + lo : zeros);
    for (int64_t j = 0; j < nb; ++j) {
      const T sk = static_cast<T>(uk[j] > theta);
      ak[j] = kTrace ? ls * before[j] + gain * (T(1) - sk) : T(1) - sk;
      vk[j] = theta * sk;  // removed spike: parked at exactly theta; added: reset to 0
      dl[j] = ek[j] * (ak[j] - akr[j]);
      act[j] = T(1);
    }
    for (int64_t t = k + 1; t < steps; ++t) {
      const T *up = u + (t - 1) * m + lo, *ap = a + (t - 1) * m + lo;
      const T *ct = c + t * m + lo, *et = e + t * m + lo, *at_ = a + t * m + lo;
      const T* lp = later + (t - 1) * kBlock;
      const uint8_t* cht = changed ? changed + t * m + lo : kept;
      for (int64_t j = 0; j < nb; ++j) {
        const T fo = static_cast<T>(up[j] > theta);
        const T vo = kSubtract ? up[j] - theta * fo : up[j] - up[j] * fo;  // original, reset
        const T merged = act[j] * static_cast<T>((vk[j] == vo) | (cht[j] != 0));
        if (kTrace) dl[j] += merged * (ak[j] - ap[j]) * lp[j];
        act[j] -= merged;
        const T x = beta * vk[j] + ct[j];
        const T f = static_cast<T>(x > theta);
        vk[j] = kSubtract ? x - theta * f : x - x * f;
        ak[j] = kTrace ? ls * ak[j] + gain * f : f;
        dl[j] += act[j] * et[j] * (ak[j] - at_[j]);
      }
      Bits alive = 0;  // any lane still replaying? (an integer OR, so it vectorises)
      for (int64_t j = 0; j < nb; ++j) alive |= std::bit_cast<Bits>(act[j]);
      if (alive == 0) break;
    }
    T* dk = delta + k * m + lo;
    for (int64_t j = 0; j < nb; ++j) dk[j] = dl[j] * distance_weight(uk[j], p);
  }
}

template <typename T, bool kTrace, bool kSubtract>
void replay_kernel(const T* c, const T* u, const T* a, const T* e, const T* a_init,
                   const uint8_t* changed, T* delta, int64_t steps, int64_t m,
                   int64_t neighbors, const Params& p) {
  at::parallel_for(0, (m + kBlock - 1) / kBlock, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> later(kTrace ? steps * kBlock + kBlock : 0);
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t lo = blk * kBlock;
      replay_block<T, kTrace, kSubtract>(c, u, a, e, a_init, changed, delta, steps, m,
                                         neighbors, lo, std::min(kBlock, m - lo), p,
                                         later.data());
    }
  });
}

Params make_params(double beta, double theta, double ls, double gain, double clamp, bool trace,
                   bool subtract, bool cube) {
  return Params{beta, theta, ls, gain, clamp, trace, subtract, cube};
}

// ---- the operators (schemas in TORCH_LIBRARY_FRAGMENT below) ---------------------------------
// Hyperparameters as spikegrad.rules.na.NA holds them; tau_s = None means a = s. Every tensor
// is [T, *] (or one step [*]) in any layout: it is made contiguous here; the outputs are new
// contiguous tensors shaped like the input.

Params params_of(double beta, double theta, std::optional<double> tau_s,
                 c10::string_view reset, c10::string_view distance, double clamp) {
  TORCH_CHECK(reset == "zero" || reset == "subtract",
              "spikegrad NA: reset must be 'zero' or 'subtract', got '", reset, "'");
  TORCH_CHECK(distance == "inverse_cube" || distance == "inverse",
              "spikegrad NA: distance must be 'inverse_cube' or 'inverse', got '", distance, "'");
  const bool trace = tau_s.has_value();
  const double ls = trace ? 1.0 - 1.0 / *tau_s : 0.0, gain = trace ? 1.0 / *tau_s : 1.0;
  return make_params(beta, theta, ls, gain, clamp, trace, reset == "subtract",
                     distance == "inverse_cube");
}

void check_float(const torch::Tensor& x, const char* op, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), op, ": ", name, " must be a CPU tensor (the compiled kernel "
              "is CPU-only), got ", x.device());
  TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble, op, ": ",
              name, " must be float32 or float64 for the compiled kernel, got ", x.scalar_type());
}

// Flat [M] contiguous copy of an optional per-neuron state (one step of c), or an empty tensor.
torch::Tensor state_of(const std::optional<torch::Tensor>& x, const torch::Tensor& c,
                       const char* op, const char* name) {
  if (!x.has_value()) return torch::Tensor();
  TORCH_CHECK(x->sizes() == c.sizes().slice(1), op, ": ", name, " must have the shape of one "
              "step of c, ", c.sizes().slice(1), ", got ", x->sizes());
  TORCH_CHECK(x->scalar_type() == c.scalar_type(), op, ": ", name, " must have c's dtype");
  return x->reshape({-1}).contiguous();
}

template <typename T>
const T* ptr_or_null(const torch::Tensor& x) {
  return x.defined() && x.numel() ? x.data_ptr<T>() : nullptr;
}

// c: [T, *]; returns (u, a), both [T, *]. distance, clamp and error do not enter the forward
// pass: they are the op's backward (registered from Python, spikegrad/rules/na/ops.py).
std::tuple<torch::Tensor, torch::Tensor> na_forward_cpp(
    const torch::Tensor& c, const std::optional<torch::Tensor>& a_init,
    const std::optional<torch::Tensor>& u_init, double beta, double threshold,
    std::optional<double> tau_s, c10::string_view reset, c10::string_view distance,
    double clamp, c10::string_view error) {
  const char* op = "spikegrad::na_forward_cpp";
  check_float(c, op, "c");
  TORCH_CHECK(c.dim() >= 1, op, ": c must be time-major [T, *]");
  TORCH_CHECK(error == "accumulated" || error == "local", op, ": error must be 'accumulated' "
              "or 'local', got '", error, "'");
  const Params p = params_of(beta, threshold, tau_s, reset, distance, clamp);
  const int64_t steps = c.size(0), m = steps ? c.numel() / steps : 0;
  auto flat = c.contiguous();
  auto ai = state_of(a_init, c, op, "a_init"), ui = state_of(u_init, c, op, "u_init");
  auto u = torch::empty(c.sizes(), c.options().memory_format(c10::MemoryFormat::Contiguous));
  auto a = torch::empty_like(u);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "na_forward_cpp", [&] {
    forward_kernel<scalar_t>(flat.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                             a.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(ai),
                             ptr_or_null<scalar_t>(ui), steps, m, p);
  });
  return {u, a};
}

// One step: c, u_prev, a_prev of one shape [*]. Returns (s, u, a).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> na_step_cpp(
    const torch::Tensor& c, const torch::Tensor& u_prev, const torch::Tensor& a_prev,
    double beta, double threshold, std::optional<double> tau_s, c10::string_view reset) {
  const char* op = "spikegrad::na_step_cpp";
  check_float(c, op, "c");
  for (const auto* x : {&u_prev, &a_prev}) {
    TORCH_CHECK(x->device().is_cpu() && x->sizes() == c.sizes() &&
                x->scalar_type() == c.scalar_type(), op, ": u_prev and a_prev must be CPU "
                "tensors with c's shape and dtype");
  }
  const Params p = params_of(beta, threshold, tau_s, reset, "inverse_cube", 1.0);
  auto cc = c.contiguous(), uc = u_prev.contiguous(), ac = a_prev.contiguous();
  auto opts = c.options().memory_format(c10::MemoryFormat::Contiguous);
  auto s = torch::empty(c.sizes(), opts), u = torch::empty(c.sizes(), opts),
       a = torch::empty(c.sizes(), opts);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "na_step_cpp", [&] {
    const scalar_t *cp = cc.data_ptr<scalar_t>(), *up = uc.data_ptr<scalar_t>(),
                   *ap = ac.data_ptr<scalar_t>();
    scalar_t *sp = s.data_ptr<scalar_t>(), *uo = u.data_ptr<scalar_t>(),
             *ao = a.data_ptr<scalar_t>();
    const scalar_t b = p.beta, th = p.theta, l = p.ls, g = p.gain;
    at::parallel_for(0, c.numel(), 16384, [&](int64_t lo, int64_t hi) {
      for (int64_t j = lo; j < hi; ++j) {
        const scalar_t v = after_reset(up[j], up[j] > th, p);
        const scalar_t ut = b * v + cp[j];
        const scalar_t f = ut > th ? scalar_t(1) : scalar_t(0);
        sp[j] = f;
        uo[j] = ut;
        ao[j] = p.trace ? l * ap[j] + g * f : f;
      }
    });
  });
  return {s, u, a};
}

// c, u, a, e: [L, *] (a window or its suffix); a_init: one step [*] or None; changed: bool
// [L, *] or None. Returns delta [neighbors, *].
torch::Tensor na_replay_cpp(const torch::Tensor& c, const torch::Tensor& u,
                            const torch::Tensor& a, const torch::Tensor& e,
                            const std::optional<torch::Tensor>& a_init,
                            const std::optional<torch::Tensor>& changed, int64_t neighbors,
                            double beta, double threshold, std::optional<double> tau_s,
                            c10::string_view reset, c10::string_view distance, double clamp) {
  const char* op = "spikegrad::na_replay_cpp";
  check_float(c, op, "c");
  TORCH_CHECK(c.dim() >= 1, op, ": c must be time-major [L, *]");
  for (const auto* x : {&u, &a, &e}) {
    TORCH_CHECK(x->device().is_cpu() && x->sizes() == c.sizes() &&
                x->scalar_type() == c.scalar_type(), op, ": u, a and e must be CPU tensors "
                "with c's shape and dtype");
  }
  const int64_t steps = c.size(0), m = steps ? c.numel() / steps : 0;
  TORCH_CHECK(neighbors >= 0 && neighbors <= steps, op, ": neighbors must be in [0, ",
              steps, "], got ", neighbors);
  auto ai = state_of(a_init, c, op, "a_init");
  torch::Tensor mask;
  if (changed.has_value()) {
    TORCH_CHECK(changed->sizes() == c.sizes() && changed->scalar_type() == torch::kBool, op,
                ": changed must be a bool tensor shaped like c");
    mask = changed->contiguous();
  }
  const Params p = params_of(beta, threshold, tau_s, reset, distance, clamp);
  auto cc = c.contiguous(), uc = u.contiguous(), ac = a.contiguous(), ec = e.contiguous();
  std::vector<int64_t> out_shape(c.sizes().begin(), c.sizes().end());
  out_shape[0] = neighbors;
  auto delta = torch::empty(out_shape, c.options().memory_format(c10::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "na_replay_cpp", [&] {
    const uint8_t* ch =
        mask.defined() && mask.numel() ? reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>())
                                       : nullptr;
    auto args = std::make_tuple(cc.data_ptr<scalar_t>(), uc.data_ptr<scalar_t>(),
                                ac.data_ptr<scalar_t>(), ec.data_ptr<scalar_t>(),
                                ptr_or_null<scalar_t>(ai), ch, delta.data_ptr<scalar_t>(), steps,
                                m, neighbors, p);
    if (p.trace && p.subtract) std::apply(replay_kernel<scalar_t, true, true>, args);
    else if (p.trace) std::apply(replay_kernel<scalar_t, true, false>, args);
    else if (p.subtract) std::apply(replay_kernel<scalar_t, false, true>, args);
    else std::apply(replay_kernel<scalar_t, false, false>, args);
  });
  return delta;
}

}  // namespace

// Defined here, so an operator exists exactly when its kernel is built; the fake (meta)
// implementations and the autograd of na_forward_cpp are registered from Python.
TORCH_LIBRARY_FRAGMENT(spikegrad, m) {
  m.def("na_forward_cpp(Tensor c, Tensor? a_init, Tensor? u_init, float beta, float threshold, "
        "float? tau_s, str reset, str distance, float clamp, str error) -> (Tensor, Tensor)");
  m.def("na_step_cpp(Tensor c, Tensor u_prev, Tensor a_prev, float beta, float threshold, "
        "float? tau_s, str reset) -> (Tensor, Tensor, Tensor)");
  m.def("na_replay_cpp(Tensor c, Tensor u, Tensor a, Tensor e, Tensor? a_init, "
        "Tensor? changed, int neighbors, float beta, float threshold, float? tau_s, str reset, "
        "str distance, float clamp) -> Tensor");
}

TORCH_LIBRARY_IMPL(spikegrad, CPU, m) {
  m.impl("na_forward_cpp", &na_forward_cpp);
  m.impl("na_step_cpp", &na_step_cpp);
  m.impl("na_replay_cpp", &na_replay_cpp);
}
