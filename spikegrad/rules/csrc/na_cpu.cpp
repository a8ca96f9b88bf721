// Neighborhood Aggregation on the CPU: the forward pass and the neighbor replay of
// spikegrad/rules/na.py, one neuron per loop iteration, all neighbors replayed in registers.
// The equations and their derivation are in na.py's docstring; this file must compute exactly
// what na.forward / na.backward compute (tests/rules/test_na_cpu.py checks it).
//
// Layout: [T, M] (time-major, trailing dimensions flattened), contiguous rows.
// A replay stops early once the neighbor's state equals the original trajectory's post-reset
// state (then all later spikes agree): the rest of its loss change is the decaying trace gap
// times the discounted sum of later errors. Where the state entering a step was set from
// outside (`changed`, see na.loss_change), the neighbor merges there by definition.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <algorithm>
#include <bit>
#include <cstdint>
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

void check(const torch::Tensor& x, const char* name, int64_t dim) {
  TORCH_CHECK(x.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(x.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(x.dim() == dim, name, " must have ", dim, " dimensions");
}

}  // namespace

// c: [T, M]; a_init, u_init: [M] or empty (the trace and pre-reset potential before the
// window). Returns (u, a).
std::vector<torch::Tensor> na_forward(torch::Tensor c, torch::Tensor a_init, torch::Tensor u_init,
                                      double beta, double theta, double ls, double gain,
                                      bool trace, bool subtract) {
  check(c, "c", 2);
  for (auto* x : {&a_init, &u_init})
    TORCH_CHECK(x->numel() == 0 || (x->numel() == c.size(1) && x->is_contiguous()),
                "na_forward: a_init/u_init: one contiguous value per neuron");
  auto u = torch::empty_like(c), a = torch::empty_like(c);
  const Params p = make_params(beta, theta, ls, gain, 1.0, trace, subtract, true);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "na_forward", [&] {
    forward_kernel<scalar_t>(c.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                             a.data_ptr<scalar_t>(),
                             a_init.numel() ? a_init.data_ptr<scalar_t>() : nullptr,
                             u_init.numel() ? u_init.data_ptr<scalar_t>() : nullptr, c.size(0),
                             c.size(1), p);
  });
  return {u, a};
}

// One step: c, u_prev, a_prev: [M] (any contiguous layout). Returns (s, u, a).
std::vector<torch::Tensor> na_step(torch::Tensor c, torch::Tensor u_prev, torch::Tensor a_prev,
                                   double beta, double theta, double ls, double gain, bool trace,
                                   bool subtract) {
  for (auto* x : {&c, &u_prev, &a_prev}) {
    TORCH_CHECK(x->device().is_cpu() && x->is_contiguous(), "na_step: contiguous CPU tensors");
    TORCH_CHECK(x->numel() == c.numel(), "na_step: c, u_prev, a_prev differ in size");
  }
  auto s = torch::empty_like(c), u = torch::empty_like(c), a = torch::empty_like(c);
  const Params p = make_params(beta, theta, ls, gain, 1.0, trace, subtract, true);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "na_step", [&] {
    const scalar_t *cp = c.data_ptr<scalar_t>(), *up = u_prev.data_ptr<scalar_t>(),
                   *ap = a_prev.data_ptr<scalar_t>();
    scalar_t *sp = s.data_ptr<scalar_t>(), *uo = u.data_ptr<scalar_t>(),
             *ao = a.data_ptr<scalar_t>();
    const scalar_t b = beta, th = theta, l = ls, g = gain;
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

// c, u, a, e: [L, M] (time-major window suffix, contiguous rows, one row stride); a_init:
// [M] contiguous or empty; changed: bool [L, M] contiguous or empty. Returns delta
// [neighbors, M].
torch::Tensor na_replay(torch::Tensor c, torch::Tensor u, torch::Tensor a, torch::Tensor e,
                        torch::Tensor a_init, torch::Tensor changed, int64_t neighbors,
                        double beta, double theta,
                        double ls, double gain, double clamp, bool trace, bool subtract,
                        bool cube) {
  for (auto* x : {&c, &u, &a, &e}) {
    TORCH_CHECK(x->device().is_cpu() && x->dim() == 2 && x->is_contiguous(),
                "na_replay: contiguous 2-d CPU tensors");
    TORCH_CHECK(x->sizes() == c.sizes() && x->scalar_type() == c.scalar_type(),
                "na_replay: c/u/a/e must share one shape and dtype");
  }
  const int64_t steps = c.size(0), m = c.size(1);
  TORCH_CHECK(neighbors >= 0 && neighbors <= steps, "neighbors out of range");
  TORCH_CHECK(a_init.numel() == 0 || (a_init.numel() == m && a_init.is_contiguous()),
              "a_init: contiguous, one value per neuron");
  TORCH_CHECK(changed.numel() == 0 || (changed.sizes() == c.sizes() && changed.is_contiguous()
                                       && changed.scalar_type() == torch::kBool),
              "changed: a contiguous bool tensor shaped like c, or empty");
  auto delta = torch::empty({neighbors, m}, c.options());
  const Params p = make_params(beta, theta, ls, gain, clamp, trace, subtract, cube);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "na_replay", [&] {
    const scalar_t* ai = a_init.numel() ? a_init.data_ptr<scalar_t>() : nullptr;
    const uint8_t* ch =
        changed.numel() ? reinterpret_cast<const uint8_t*>(changed.data_ptr<bool>()) : nullptr;
    auto args = std::make_tuple(c.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                                a.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(), ai, ch,
                                delta.data_ptr<scalar_t>(), steps, m, neighbors, p);
    if (trace && subtract) std::apply(replay_kernel<scalar_t, true, true>, args);
    else if (trace) std::apply(replay_kernel<scalar_t, true, false>, args);
    else if (subtract) std::apply(replay_kernel<scalar_t, false, true>, args);
    else std::apply(replay_kernel<scalar_t, false, false>, args);
  });
  return delta;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("na_forward", &na_forward, "NA forward (CPU)");
  m.def("na_step", &na_step, "NA forward, one step (CPU)");
  m.def("na_replay", &na_replay, "NA neighbor replay and distance weighting (CPU)");
}
