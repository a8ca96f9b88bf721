"""Gradient quality: how well a rule's weight gradient points where the spiking loss goes down.

The loss of a spiking network is piecewise constant in its weights, so its "true" gradient is
taken as the gradient of the Gaussian-smoothed loss ``L_σ(w) = E_ε[L(w + σ ε)]``, ``ε ~ N(0, I)``,
which antithetic evolution strategies estimate without any surrogate (Salimans et al. 2017,
"Evolution Strategies as a Scalable Alternative to Reinforcement Learning", arXiv:1703.03864;
the smoothed-gradient identity is Nesterov & Spokoiny 2017, "Random Gradient-Free Minimization
of Convex Functions")::

    ĝ = 1 / (2 N σ) Σ_i [L(w + σ ε_i) - L(w - σ ε_i)] ε_i

Every rule is measured with this one estimator, on its own network's forward pass and loss, on
the same weights and batch. Reported per synapse layer and overall: the cosine between the
rule's gradient and ``ĝ`` with a bootstrap interval over the ``N`` direction pairs, the share of
weights whose signs agree, and the ratio of the smoothed-loss decrease of one step along the
rule's gradient to that of a step of the same length along ``ĝ``.

Parallel over directions: the ``K`` perturbed copies of the network run as one batch of ``K·B``
samples. A forward hook on each convolution and linear layer adds ``σ (x_k ε_k)`` to the output
of group ``k`` (grouped convolutions, a batched ``einsum``), so any neuron of either host runs
unchanged (every neuron is elementwise over the batch). Under ``torchrun`` the direction pairs
are split across the processes and their loss differences gathered.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Directions", "perturbed", "estimate", "bootstrap_cosine", "quality", "Estimate", "ceiling",
    "coordinates", "restrict", "network_losses", "rule_gradient", "loss_drop_ratio",
    "weight_layers",
]

@dataclass(frozen=True)
class Directions:
    """The ``N`` Gaussian direction pairs, regenerated from ``seed`` on demand (never stored
    for all ``N`` at once while the losses are evaluated)."""

    shapes: tuple[torch.Size, ...]
    n_pairs: int
    seed: int

    def chunk(self, start: int, stop: int, device: torch.device | str = "cpu"
              ) -> list[torch.Tensor]:
        """Directions ``start .. stop-1``: one tensor ``[stop - start, *shape]`` per parameter."""
        out: list[list[torch.Tensor]] = [[] for _ in self.shapes]
        for i in range(start, stop):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            for j, shape in enumerate(self.shapes):
                out[j].append(torch.randn(shape, generator=g))
        return [torch.stack(x).to(device) for x in out]

    def matrix(self, j: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """All directions of parameter ``j`` as ``[N, numel]`` (for the statistics)."""
        rows = []
        for i in range(self.n_pairs):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            for k, shape in enumerate(self.shapes):
                x = torch.randn(shape, generator=g)
                if k == j:
                    rows.append(x.reshape(-1))
                    break
        return torch.stack(rows).to(device)


def _group_delta(module: nn.Module, x: torch.Tensor, eps: torch.Tensor, batch: int,
                 out_shape: torch.Size) -> torch.Tensor:
    """``x_k ε_k`` for each of the ``K`` groups of ``batch`` samples, laid out like the output.

    ``x`` is the layer's input as the layer sees it, ``[lead · K · batch, *feat]`` or
    ``[lead, K · batch, *feat]``: every leading slice (a time step) holds the ``K`` groups one
    after the other, as both hosts lay out ``[T, K · B, ...]``.
    """
    K = eps.shape[0]
    e = eps.to(x.dtype)
    if isinstance(module, nn.Linear):
        xr = x.reshape(-1, K, batch, x.shape[-1])
        return torch.einsum("tkbi,koi->tkbo", xr, e).reshape(out_shape)
    if isinstance(module, nn.Conv2d):
        c, h, w = x.shape[-3:]
        xr = x.reshape(-1, K, batch, c, h, w)
        lead = xr.shape[0]
        xg = xr.permute(0, 2, 1, 3, 4, 5).reshape(lead * batch, K * c, h, w)
        y = F.conv2d(xg, e.reshape(K * e.shape[1], *e.shape[2:]), None, module.stride,
                     module.padding, module.dilation, groups=K * module.groups)
        y = y.reshape(lead, batch, K, e.shape[1], *y.shape[-2:]).permute(0, 2, 1, 3, 4, 5)
        return y.reshape(out_shape)
    raise TypeError(f"cannot perturb a {type(module).__name__}; only nn.Linear and nn.Conv2d")


@contextlib.contextmanager
def perturbed(layers: Sequence[nn.Module], eps: Sequence[torch.Tensor], sigma: float,
              batch: int) -> Iterator[None]:
    """Within the block, a forward of ``K · batch`` samples (group-major: sample
    ``k · batch + b``) runs group ``k`` with the weights ``W + σ eps[j][k]`` of layer ``j``."""
    handles = []
    try:
        for layer, e in zip(layers, eps, strict=True):
            def hook(module: nn.Module, args: tuple, out: torch.Tensor, e: torch.Tensor = e
                     ) -> torch.Tensor:
                x = args[0]
                return out + sigma * _group_delta(module, x, e, batch, out.shape)
            handles.append(layer.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass
class Estimate:
    """The loss differences of the ``N`` pairs and the estimate ``ĝ`` per parameter."""

    diffs: torch.Tensor  # [N]: L(w + σ ε_i) - L(w - σ ε_i)
    grads: list[torch.Tensor]  # ĝ per parameter (the parameter's shape)
    sigma: float
    directions: Directions
    evaluated: int = 0  # pairs this process evaluated itself


def estimate(loss_of_groups: Callable[[list[torch.Tensor]], torch.Tensor],
             shapes: Sequence[torch.Size], *, n_pairs: int, sigma: float, seed: int = 0,
             chunk: int = 16, device: torch.device | str = "cpu", rank: int = 0, world: int = 1,
             gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Estimate:
    """The antithetic estimate of the smoothed loss's gradient.

    Args:
        loss_of_groups: ``f(eps)`` with ``eps[j]`` of shape ``[K, *shapes[j]]`` returns the
            ``K`` losses ``L(w + σ eps[·][k])`` (one batched forward; see :func:`perturbed`).
        shapes: the parameters' shapes.
        n_pairs: ``N``; sigma: ``σ > 0``; seed: the directions' seed.
        chunk: direction pairs per batched forward (``2 · chunk`` groups).
        rank, world, gather: split the pairs across ``world`` processes; ``gather`` sums a
            tensor over the processes (each fills its own pairs, zeros elsewhere).
    """
    if n_pairs < 2 or sigma <= 0:
        raise ValueError(f"need n_pairs >= 2 and sigma > 0, got {n_pairs}, {sigma}")
    dirs = Directions(tuple(torch.Size(s) for s in shapes), n_pairs, seed)
    diffs = torch.zeros(n_pairs, dtype=torch.float64)
    mine = range(rank * n_pairs // world, (rank + 1) * n_pairs // world)
    for start in range(mine.start, mine.stop, chunk):
        stop = min(start + chunk, mine.stop)
        eps = dirs.chunk(start, stop, device)
        losses = loss_of_groups([torch.cat([e, -e]) for e in eps]).double().cpu()
        m = stop - start
        diffs[start:stop] = losses[:m] - losses[m:]
    if world > 1:
        if gather is None:
            raise ValueError("world > 1 needs a gather function")
        diffs = gather(diffs)
    grads = []
    for j, shape in enumerate(dirs.shapes):
        E = dirs.matrix(j)
        grads.append((diffs.float() @ E / (2 * n_pairs * sigma)).reshape(shape))
    return Estimate(diffs, grads, sigma, dirs, evaluated=len(mine))


def bootstrap_cosine(g: torch.Tensor, diffs: torch.Tensor, E: torch.Tensor, *,
                     resamples: int = 1000, seed: int = 0, level: float = 0.95
                     ) -> tuple[float, float, float]:
    """``(cosine, low, high)`` between ``g`` and the estimate.

    The interval is the spread of the cosine when the ``N`` direction pairs are resampled with
    replacement (``level`` of the replicates), re-centred on the full-``N`` cosine; computed
    through the Gram matrix of the directions (no ``[resamples, P]`` tensor).
    """
    g = g.reshape(-1).double()
    E = E.double()
    a = E @ g  # [N]: g · ε_i
    G = E @ E.T  # [N, N]
    n = diffs.shape[0]
    d = diffs.double()

    def cos(c: torch.Tensor) -> torch.Tensor:  # c: [R, N] resample counts
        w = c * d
        dot = w @ a
        norm2 = ((w @ G) * w).sum(-1).clamp_min(0)
        return dot / (norm2.sqrt() * g.norm()).clamp_min(1e-300)

    point = float(cos(torch.ones(1, n, dtype=torch.float64))[0])
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (resamples, n), generator=gen)
    counts = torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones(resamples, n, dtype=torch.float64))
    boot = cos(counts)
    q_lo, q_mid, q_hi = torch.quantile(
        boot, torch.tensor([(1 - level) / 2, 0.5, (1 + level) / 2], dtype=torch.float64)).tolist()
    # Resampling with replacement repeats directions, which adds noise and so lowers every
    # replicate's cosine: the band is the replicates' spread, re-centred on the full estimate.
    return point, max(-1.0, point - (q_mid - q_lo)), min(1.0, point + (q_hi - q_mid))


def ceiling(diffs: torch.Tensor, E: torch.Tensor) -> float | None:
    """The cosine between the estimate and the smoothed gradient itself: the most any rule can
    score against this estimate (``None`` where the data cannot tell).

    Each pair alone, ``v_i = Δ_i ε_i / (2σ)``, is an unbiased estimate of ``∇L_σ``, so the mean
    of ``v_i · v_j`` over ``i ≠ j`` estimates ``|∇L_σ|²`` without the noise that inflates
    ``|ĝ|²``; the ratio of the two norms is the estimate's own alignment.
    """
    d = diffs.double()
    G = E.double() @ E.double().T
    n = d.shape[0]
    total = d @ G @ d
    off = (total - (d * d * G.diagonal()).sum()) / (n * (n - 1))
    raw = total / (n * n)
    if off <= 0 or raw <= 0:
        return None
    return float(min(1.0, math.sqrt(off / raw)))


def quality(rule_grads: Sequence[torch.Tensor], est: Estimate, *, resamples: int = 1000,
            seed: int = 0) -> dict[str, dict[str, float | None]]:
    """Per layer (``"layer<j>"``) and ``"overall"``: ``grad_cosine`` with ``grad_cosine_lo`` /
    ``grad_cosine_hi``, ``grad_sign_agree`` (share of weights with equal signs) and
    ``grad_cosine_ceiling`` (:func:`ceiling`). The cosines are ``None`` (not measurable, never
    guessed) where the loss did not change under any perturbation or the gradient is zero."""
    out: dict[str, dict[str, float | None]] = {}
    mats = [est.directions.matrix(j) for j in range(len(rule_grads))]
    parts = [(f"layer{j}", [g], [e], E)
             for j, (g, e, E) in enumerate(zip(rule_grads, est.grads, mats, strict=True))]
    parts.append(("overall", list(rule_grads), list(est.grads), torch.cat(mats, dim=1)))
    flat = not bool((est.diffs != 0).any())  # the loss never moved: nothing to compare with
    for name, gs, es, E in parts:
        g = torch.cat([x.reshape(-1) for x in gs])
        if flat or not bool((g != 0).any()):
            out[name] = {"grad_cosine": None, "grad_cosine_lo": None, "grad_cosine_hi": None,
                         "grad_sign_agree": _sign_agree(gs, es), "grad_cosine_ceiling": None}
            continue
        c, lo, hi = bootstrap_cosine(g, est.diffs, E, resamples=resamples, seed=seed)
        out[name] = {"grad_cosine": c, "grad_cosine_lo": lo, "grad_cosine_hi": hi,
                     "grad_sign_agree": _sign_agree(gs, es),
                     "grad_cosine_ceiling": ceiling(est.diffs, E)}
    return out


def _sign_agree(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    x = torch.cat([t.reshape(-1) for t in a])
    y = torch.cat([t.reshape(-1) for t in b])
    return float((torch.sign(x) == torch.sign(y)).double().mean())


# --- a spiking network of either host ---------------------------------------------------------
def weight_layers(net: nn.Module) -> list[nn.Module]:
    """The convolution and linear layers whose weights are measured, in order."""
    return [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _reset(net: nn.Module) -> None:
    reset = getattr(net, "reset", None)
    if callable(reset):
        reset()


def coordinates(net: nn.Module, per_layer: int | None, seed: int) -> list[torch.Tensor | None]:
    """A fixed random subset of ``per_layer`` weights of each layer (``None``: all of them).

    The estimator's noise grows with the number of perturbed weights (for ``N`` pairs in ``P``
    dimensions the estimate's own cosine to the smoothed gradient is about ``sqrt(N / P)``),
    so the measurement perturbs the same random coordinates for every rule and compares the
    gradients there: an unbiased sample of each layer's alignment.
    """
    out: list[torch.Tensor | None] = []
    for j, m in enumerate(weight_layers(net)):
        n = m.weight.numel()
        if per_layer is None or per_layer >= n:
            out.append(None)
            continue
        g = torch.Generator().manual_seed(seed * 7919 + j)
        out.append(torch.randperm(n, generator=g)[:per_layer].sort().values)
    return out


def restrict(grads: Sequence[torch.Tensor], index: Sequence[torch.Tensor | None]
             ) -> list[torch.Tensor]:
    """Each gradient at the measured coordinates (flat), or whole where ``index`` is ``None``."""
    return [g.reshape(-1) if i is None else g.reshape(-1)[i] for g, i in
            zip(grads, index, strict=True)]


def network_losses(net: nn.Module, x_seq: torch.Tensor, y: torch.Tensor,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   sigma: float, index: Sequence[torch.Tensor | None] | None = None
                   ) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """``f(eps)``: the losses of the ``K`` perturbed copies of ``net`` on the batch
    ``(x_seq [T, B, *], y [B])``, one batched forward without autograd. With ``index``
    (:func:`coordinates`), ``eps[j]`` is ``[K, len(index[j])]`` and moves those weights only."""
    layers = weight_layers(net)
    batch = x_seq.shape[1]
    index = [None] * len(layers) if index is None else list(index)

    def full(e: torch.Tensor, layer: nn.Module, i: torch.Tensor | None) -> torch.Tensor:
        if i is None:
            return e.reshape(e.shape[0], *layer.weight.shape)
        out = e.new_zeros(e.shape[0], layer.weight.numel())
        out[:, i.to(e.device)] = e
        return out.reshape(e.shape[0], *layer.weight.shape)

    @torch.no_grad()
    def losses(eps: list[torch.Tensor]) -> torch.Tensor:
        eps = [full(e, m, i) for e, m, i in zip(eps, layers, index, strict=True)]
        K = eps[0].shape[0]
        xs = x_seq.repeat(1, K, *([1] * (x_seq.dim() - 2)))
        _reset(net)
        with perturbed(layers, eps, sigma, batch):
            out = net(xs)
        _reset(net)
        return torch.stack([loss_fn(out[:, k * batch:(k + 1) * batch], y) for k in range(K)])

    return losses


def rule_gradient(net: nn.Module, x_seq: torch.Tensor, y: torch.Tensor,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                  ) -> tuple[float, list[torch.Tensor]]:
    """``(loss, weight gradients)`` of the rule itself (its neurons' backward) on the batch."""
    layers = weight_layers(net)
    _reset(net)
    loss = loss_fn(net(x_seq), y)
    grads = torch.autograd.grad(loss, [m.weight for m in layers], allow_unused=True)
    _reset(net)
    return float(loss.detach()), [torch.zeros_like(m.weight) if g is None else g.detach()
                                  for m, g in zip(layers, grads, strict=True)]


def loss_drop_ratio(losses: Callable[[list[torch.Tensor]], torch.Tensor],
                    rule_grads: Sequence[torch.Tensor], est: Estimate, *, pairs: int,
                    step: float, device: torch.device | str = "cpu") -> float | None:
    """Decrease of the smoothed loss over a step of length ``step`` along ``-g_rule`` divided
    by that along ``-ĝ`` (same length), both measured with the same ``pairs`` direction pairs
    (common random numbers); ``None`` when the step along ``ĝ`` does not decrease it."""
    pairs = min(pairs, est.directions.n_pairs)
    eps = est.directions.chunk(0, pairs, device)

    def smoothed(shift: Sequence[torch.Tensor] | None) -> float:
        groups = []
        for j, e in enumerate(eps):
            base = torch.cat([e, -e])
            groups.append(base if shift is None else base + shift[j].to(device) / est.sigma)
        return float(losses(groups).double().mean())

    def unit(gs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in gs)).clamp_min(1e-300)
        return [-(step * g.double() / norm).float() for g in gs]

    here = smoothed(None)
    drop_rule = here - smoothed(unit(rule_grads))
    drop_est = here - smoothed(unit(est.grads))
    if drop_est <= 0:
        return None
    return drop_rule / drop_est
