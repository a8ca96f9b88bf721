// Neighborhood Aggregation on the CPU: the forward pass and the neighbor replay of
// spikegrad/rules/na.py, one neuron per loop iteration, all neighbors replayed in registers.
// The equations and their derivation are in na.py's docstring; this file must compute exactly
// what na.forward / na.backward compute (tests/rules/test_na_cpu.py checks it).
//
// Layout: every tensor is [T, M] (time-major, trailing dimensions flattened), contiguous.
// A replay stops early once the neighbor's state equals the original trajectory's post-reset
// state (then all later spikes agree): the rest of its loss change is the decaying trace gap
// times the discounted sum of later errors.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
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
void forward_kernel(const T* c, T* u, T* a, const T* a_init, int64_t steps, int64_t m,
                    const Params& p) {
  const T beta = p.beta, theta = p.theta, ls = p.ls, gain = p.gain;
  at::parallel_for(0, m, 2048, [&](int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; ++j) {
      T v = 0, tr = a_init ? a_init[j] : T(0);
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t i = t * m + j;
        const T ut = beta * v + c[i];
        const bool f = ut > theta;
        v = after_reset(ut, f, p);
        tr = p.trace ? ls * tr + gain * T(f) : T(f);
        u[i] = ut;
        a[i] = tr;
      }
    }
  });
}

template <typename T>
void backward_kernel(const T* c, const T* u, const T* a, const T* e, const T* a_init, T* delta,
                     int64_t steps, int64_t m, int64_t neighbors, const Params& p) {
  const T beta = p.beta, theta = p.theta, ls = p.ls, gain = p.gain;
  at::parallel_for(0, m, 1024, [&](int64_t lo, int64_t hi) {
    std::vector<T> later(steps);  // later[t] = sum_{t' > t} ls^(t'-t) e[t']
    for (int64_t j = lo; j < hi; ++j) {
      if (p.trace) {
        T acc = 0;
        for (int64_t t = steps - 1; t >= 0; --t) {
          later[t] = acc;
          acc = ls * (acc + e[t * m + j]);
        }
      }
      for (int64_t k = 0; k < neighbors; ++k) {
        const int64_t ik = k * m + j;
        const bool sk = u[ik] > theta;
        const T before = k == 0 ? (a_init ? a_init[j] : T(0)) : a[ik - m];
        T ak = p.trace ? ls * before + gain * T(!sk) : T(!sk);
        T vk = sk ? theta : T(0);  // removed spike: parked at exactly theta; added: reset
        T dl = e[ik] * (ak - a[ik]);
        for (int64_t t = k + 1; t < steps; ++t) {
          const int64_t prev = (t - 1) * m + j;
          if (vk == after_reset(u[prev], u[prev] > theta, p)) {  // merged with the original
            if (p.trace) dl += (ak - a[prev]) * later[t - 1];
            break;
          }
          const int64_t i = t * m + j;
          const T ut = beta * vk + c[i];
          const bool f = ut > theta;
          vk = after_reset(ut, f, p);
          ak = p.trace ? ls * ak + gain * T(f) : T(f);
          dl += e[i] * (ak - a[i]);
        }
        delta[ik] = dl * distance_weight(u[ik], p);
      }
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

// c: [T, M]; a_init: [M] or empty. Returns (u, a).
std::vector<torch::Tensor> na_forward(torch::Tensor c, torch::Tensor a_init, double beta,
                                      double theta, double ls, double gain, bool trace,
                                      bool subtract) {
  check(c, "c", 2);
  auto u = torch::empty_like(c), a = torch::empty_like(c);
  const Params p = make_params(beta, theta, ls, gain, 1.0, trace, subtract, true);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "na_forward", [&] {
    forward_kernel<scalar_t>(c.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                             a.data_ptr<scalar_t>(),
                             a_init.numel() ? a_init.data_ptr<scalar_t>() : nullptr, c.size(0),
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

// c, u, a, e: [T, M]; a_init: [M] or empty. Returns delta for the first `neighbors` steps.
torch::Tensor na_backward(torch::Tensor c, torch::Tensor u, torch::Tensor a, torch::Tensor e,
                          torch::Tensor a_init, int64_t neighbors, double beta, double theta,
                          double ls, double gain, double clamp, bool trace, bool subtract,
                          bool cube) {
  for (auto* x : {&c, &u, &a, &e}) check(*x, "c/u/a/e", 2);
  TORCH_CHECK(neighbors >= 0 && neighbors <= c.size(0), "neighbors out of range");
  auto delta = torch::empty({neighbors, c.size(1)}, c.options());
  const Params p = make_params(beta, theta, ls, gain, clamp, trace, subtract, cube);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "na_backward", [&] {
    backward_kernel<scalar_t>(c.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                              a.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(),
                              a_init.numel() ? a_init.data_ptr<scalar_t>() : nullptr,
                              delta.data_ptr<scalar_t>(), c.size(0), c.size(1), neighbors, p);
  });
  return delta;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("na_forward", &na_forward, "NA forward (CPU)");
  m.def("na_step", &na_step, "NA forward, one step (CPU)");
  m.def("na_backward", &na_backward, "NA neighbor replay and distance weighting (CPU)");
}
