"""The pictures of the rule pages (``docs/rules/*.md``), drawn from spikegrad's own code.

Every curve is computed by running the library: the surrogates, the rules' spike functions and
resets, the neuron classes in the host's per-step loop, and the gradients through autograd (NA's
through its replay backward). Nothing here re-types a formula, so a change of a rule changes its
picture. ``make(out_dir)`` is called by ``docs/conf.py`` at build time; it writes PNGs only.

Sizes are tiny (one neuron, ``T <= 30``): all figures take a few seconds of CPU.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import matplotlib
import snntorch as snn
import torch
from matplotlib.figure import Figure  # drawn without pyplot: no backend, no global state

from spikegrad import neurons
from spikegrad.rules import bpsta, multistrength, na, reset_term, surrogate, ttfs

DPI = 110
C_RULE, C_BASE, C_ALT, C_GREY = "#1f5fa8", "#d9822b", "#2a9d5b", "#888888"
STYLE = {"font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 8,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
         "axes.spines.right": False}


# --- helpers ---------------------------------------------------------------------------------
def _grad(fn, x: torch.Tensor) -> torch.Tensor:
    """d(sum fn(x))/dx elementwise, through autograd (x is a 1-D grid)."""
    x = x.detach().clone().double().requires_grad_(True)
    fn(x).sum().backward()
    return x.grad.detach()


def _np(x):
    """A tensor as a numpy array for matplotlib (anything else unchanged)."""
    return x.detach().numpy() if isinstance(x, torch.Tensor) else x


def _plot(ax, x, y, *args, **kwargs) -> None:
    ax.plot(_np(x), _np(y), *args, **kwargs)


def _save(fig: Figure, out_dir: Path, name: str) -> None:
    fig.savefig(out_dir / name, dpi=DPI)


def _run_snntorch(lif, cur: torch.Tensor):
    """The host's per-step loop over ``cur`` (``[T, 1, 1]``): the first output and ``mem`` of
    every step, stacked (``[T, 1, 1]`` each)."""
    mem = lif.init_leaky()
    outs, mems = [], []
    for t in range(cur.shape[0]):
        out, mem = lif(cur[t], mem)
        outs.append(out)
        mems.append(mem)
    return torch.stack(outs), torch.stack(mems)


def _fixed_input(T: int, base: float, swing: float, period: float = 9.0) -> torch.Tensor:
    """A fixed (not learnt) smooth input ``[T, 1, 1]``, the same for the rule and its baseline."""
    t = torch.arange(T, dtype=torch.float64)
    return (base + swing * torch.sin(2 * math.pi * t / period)).view(T, 1, 1)


def _raster(ax, spikes: torch.Tensor, color: str, y: float) -> None:
    steps = torch.nonzero(spikes.flatten() > 0).flatten().tolist()
    ax.vlines(steps, y - 0.35, y + 0.35, color=color, lw=2)


def _trace_axes(fig: Figure, ratios=(3, 1, 3)):
    axes = fig.subplots(len(ratios), 1, sharex=True,
                        gridspec_kw={"height_ratios": list(ratios)})
    for ax in axes:
        ax.grid(alpha=0.25, lw=0.5)
    return axes


def _raster_axis(ax, T: int, labels: list[str]) -> None:
    """The spike rows: row ``i`` (from the bottom) is named ``labels[i]``."""
    ax.set_yticks(range(len(labels)), labels)
    ax.tick_params(axis="y", length=0)
    ax.spines["left"].set_visible(False)
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.grid(False)


def _legend_above(ax, ncol: int = 2) -> None:
    """The legend in a row just above the axes (never over the curves)."""
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=ncol, frameon=False,
              borderaxespad=0.1, handlelength=1.8, columnspacing=1.2)


# --- (a) the spike functions' gradients --------------------------------------------------------
def _panel_surrogates(ax) -> None:
    u = torch.linspace(-0.5, 2.5, 601, dtype=torch.float64)
    theta = 1.0
    for sg, color, label in ((surrogate.Sigmoid(temperature=0.3), C_RULE,
                              "Sigmoid(temperature=0.3)"),
                             (surrogate.ATan(alpha=2.0), C_BASE, "ATan(alpha=2.0)")):
        _plot(ax, u, _grad(lambda x, sg=sg: sg(x - theta), u), color=color, label=label)
    ax.axvline(theta, color=C_GREY, ls=":", lw=1)
    ax.set_xlabel("membrane potential u  (threshold 1)")
    ax.set_ylabel("∂s/∂u (backward)")
    ax.set_title("surrogates: spikegrad.rules.surrogate")
    ax.set_ylim(0, 1.25)
    ax.legend(loc="upper left", frameon=False)


def _panel_reset_jacobian(ax) -> None:
    """∂u[t+1]/∂u[t] through the reset, by autograd through reset_term.step (input 0)."""
    beta, theta = 5.0 / 6.0, 1.0
    sg = surrogate.Sigmoid(temperature=0.3)
    u = torch.linspace(0.0, 2.0, 801, dtype=torch.float64)
    for scale, color, label in ((1.0, C_RULE, 'reset_grad="full"'),
                                (0.3, C_ALT, "reset_grad_scale=0.3 (the author's code)"),
                                (0.0, C_BASE, 'reset_grad="detach"')):
        def nxt(x, scale=scale):
            _, u_next = reset_term.step(torch.zeros_like(x), x, beta=beta, threshold=theta,
                                        spike_fn=sg, reset_grad_scale=scale)
            return u_next
        _plot(ax, u, _grad(nxt, u), color=color, label=label)
    ax.axvline(theta, color=C_GREY, ls=":", lw=1)
    ax.axhline(0, color=C_GREY, lw=0.6)
    ref = reset_term.jacobian(torch.tensor([1.2], dtype=torch.float64), beta=beta,
                              threshold=theta, surrogate_derivative=sg.derivative)
    _plot(ax, [1.2], ref.tolist(), "o", color=C_RULE, ms=4)
    ax.annotate(f"u = 1.2: {float(ref):.4f}", (1.2, float(ref)), xytext=(0.08, -0.62),
                fontsize=8, arrowprops={"arrowstyle": "-", "color": C_GREY, "lw": 0.6})
    ax.set_xlabel("pre-reset potential u[t]  (threshold 1, β = 5/6)")
    ax.set_ylabel("∂u[t+1]/∂u[t]")
    ax.set_title("reset term: the temporal Jacobian")
    ax.set_ylim(-0.95, 1.35)
    ax.legend(loc="upper right", frameon=False)


def _panel_na_weight(ax) -> None:
    gap = torch.linspace(-1.5, 1.5, 1201, dtype=torch.float64)
    for distance, color in (("inverse_cube", C_RULE), ("inverse", C_BASE)):
        cfg = na.NA(threshold=1.0, distance=distance, clamp=5.0, implementation="torch")
        w = na.distance_weight(cfg.threshold - gap, cfg)
        _plot(ax, gap, w, color=color, label=f'distance="{distance}"')
    ax.axhline(0, color=C_GREY, lw=0.6)
    ax.axvline(0, color=C_GREY, ls=":", lw=1)
    ax.set_xlabel("distance to threshold  ϑ − u[k]")
    ax.set_ylabel("weight w  (δ[k] = ΔL[k] · w)")
    ax.set_title("NA: finite-difference weight (clamp=5)")
    ax.text(1.15, 4.0, "neighbor adds\na spike (u < ϑ)", fontsize=8, ha="center")
    ax.text(-1.05, -2.6, "neighbor removes\nthe spike (u > ϑ)", fontsize=8, ha="center")
    ax.set_ylim(-6.2, 7.5)
    ax.legend(loc="upper left", frameon=False)


def _panel_bpsa(ax) -> None:
    h = torch.linspace(0.0, 2.0, 801, dtype=torch.float64)
    paper, braincog = bpsta.HTDGLIF(mode="paper"), bpsta.HTDGLIF(mode="braincog")
    _plot(ax, h, _grad(lambda x: bpsta.spike(x, paper), h), color=C_RULE,
            label='BPSA ∂o/∂h, mode="paper"')
    _plot(ax, h, _grad(lambda x: bpsta.spike(x, braincog), h), color=C_ALT, ls="--",
            label='∂o/∂h, mode="braincog"')
    _plot(ax, h, _grad(lambda x: bpsta.reset(x, paper), h), color=C_BASE,
            label="BPTA ∂v/∂h (alpha=0.2)")
    ax.axvline(paper.threshold, color=C_GREY, ls=":", lw=1)
    ax.set_ylim(-0.1, 2.6)
    ax.set_xlabel("pre-reset potential h  (threshold 0.5)")
    ax.set_ylabel("backward")
    ax.set_title("BPSA/BPTA: spike and reset gradients")
    ax.legend(loc="upper right", frameon=False)


def _panel_multistrength(ax) -> None:
    h = torch.linspace(-1.0, 4.5, 1101, dtype=torch.float64)
    for cap, color, style, label in ((None, C_RULE, "-", "max_strength=None (no cap)"),
                                     (2, C_BASE, "--", "max_strength=2")):
        cfg = multistrength.MultiStrength(threshold=1.0, max_strength=cap)
        g = _grad(lambda x, cfg=cfg: multistrength.strength(x, cfg), h)
        _plot(ax, h, g, color=color, ls=style, lw=2.2 if cap is None else 1.4, label=label)
    ax.set_ylim(-0.1, 1.35)
    ax.set_xlabel("potential before emission h  (τ = threshold = 1)")
    ax.set_ylabel("∂θ/∂h (straight-through)")
    ax.set_title("multi-strength: rectangular window")
    ax.legend(loc="upper right", frameon=False)


def _ttfs_record():
    """Four output neurons of snn.Leaky with spikegrad's ATan, driven by constant currents;
    the loss is ttfs.ce_temporal_loss with label 1. Returns what the TTFS figures draw."""
    T, N, label = 20, 4, 1
    drive = torch.tensor([0.14, 0.28, 0.42, 0.07], dtype=torch.float64)
    cur = drive.view(1, 1, N).expand(T, 1, N).clone().requires_grad_(True)
    lif = snn.Leaky(beta=0.9, spike_grad=surrogate.ATan(alpha=2.0))
    spk, mem = _run_snntorch(lif, cur)
    spk.retain_grad()
    loss = ttfs.ce_temporal_loss()(spk, torch.tensor([label]))
    loss.backward()
    first = ttfs.first_spike_time(spk.detach())
    return T, N, label, spk.detach()[:, 0], mem.detach()[:, 0], spk.grad[:, 0], \
        cur.grad[:, 0], first[0]


def _panel_ttfs(ax, record=None) -> None:
    T, N, label, spk, mem, g_spk, g_cur, first = record or _ttfs_record()
    lim = float(g_spk.abs().max())
    img = ax.imshow(_np(g_spk.T), aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                    interpolation="nearest", origin="lower")
    for n in range(N):
        steps = torch.nonzero(spk[:, n] > 0).flatten().tolist()
        _plot(ax, steps, [n] * len(steps), "|", color="k", ms=7, mew=1)
    ax.set_yticks(range(N), [f"{n}{' (label)' if n == label else ''}" for n in range(N)])
    ax.set_xlabel("time step t   (| = spike)")
    ax.set_ylabel("output neuron")
    ax.set_title("TTFS: ∂L/∂s[t] is non-zero only at the first spike")
    ax.grid(False)
    ax.figure.colorbar(img, ax=ax, fraction=0.04, pad=0.02, label="∂L/∂s")


# --- (b) one neuron through time -------------------------------------------------------------
def _fig_reset_term_trace(out_dir: Path) -> None:
    T, beta = 30, 0.9
    cur0 = _fixed_input(T, 0.26, 0.12)
    target = torch.zeros(T, 1, 1, dtype=torch.float64)
    target[4::5] = 1.0  # the desired spike train
    runs = {}
    for mode in ("full", "detach"):
        cur = cur0.clone().requires_grad_(True)
        lif = neurons.ResetTermLeaky(beta=beta, reset_grad=mode)
        spk, mem = _run_snntorch(lif, cur)
        reset_term.van_rossum_loss(spk, target, tau_s=2.0).backward()
        runs[mode] = (spk.detach().flatten(), mem.detach().flatten(), cur.grad.flatten())
    spk, mem, _ = runs["full"]
    t = torch.arange(T)
    fig = Figure(figsize=(7.2, 5.8), layout="constrained")
    fig.suptitle("ResetTermLeaky(beta=0.9), van Rossum loss to a target spike train", size=10)
    ax_u, ax_s, ax_g = _trace_axes(fig)
    _plot(ax_u, t, mem, color=C_RULE, marker=".", ms=4, label="mem = pre-reset u[t]")
    _plot(ax_u, t, cur0.flatten(), color=C_GREY, lw=0.9, label="input c[t]")
    ax_u.axhline(1.0, color="k", ls="--", lw=0.8, label="threshold 1 (spike if u > 1)")
    ax_u.set_ylabel("potential")
    ax_u.set_ylim(0, 1.3)
    _legend_above(ax_u, ncol=3)
    _raster(ax_s, spk, C_RULE, 1.0)
    _raster(ax_s, target.flatten(), C_GREY, 0.0)
    _raster_axis(ax_s, T, ["target", "output"])
    _plot(ax_g, t, runs["full"][2], color=C_RULE, marker="o", ms=3,
              label='reset_grad="full" (the reset term)')
    _plot(ax_g, t, runs["detach"][2], color=C_BASE, marker="s", ms=3,
              label='reset_grad="detach" (= snn.Leaky)')
    ax_g.axhline(0, color=C_GREY, lw=0.6)
    ax_g.set_ylabel("∂L/∂c[t]")
    ax_g.set_xlabel("time step t   (the spikes are the same in both: only the gradient differs)")
    _legend_above(ax_g)
    _save(fig, out_dir, "reset_term_trace.png")


@contextlib.contextmanager
def _na_reference():
    """Run NA's torch reference (the code its compiled CPU kernel is tested against, same
    values), so that a build on a machine without the kernel never starts compiling it."""
    old = os.environ.get("SPIKEGRAD_NA_CPP")
    os.environ["SPIKEGRAD_NA_CPP"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["SPIKEGRAD_NA_CPP"]
        else:
            os.environ["SPIKEGRAD_NA_CPP"] = old


def _fig_na_trace(out_dir: Path) -> None:
    T, beta = 25, 0.8
    cur0 = _fixed_input(T, 0.32, 0.16)
    desired = torch.zeros(T, 1, 1, dtype=torch.float64)
    desired[2::4] = 1.0
    target_trace = reset_term.trace(desired, 2.0)
    runs = {}
    with _na_reference():
        for name, lif in (
            ("na", neurons.NALeaky(beta=beta, tau_s=2.0, reset_mechanism="zero")),
            ("surrogate", neurons.ResetTermLeaky(beta=beta, tau_s=2.0, reset_grad="detach")),
        ):
            cur = cur0.clone().requires_grad_(True)
            trace, mem = _run_snntorch(lif, cur)
            (0.5 * (trace - target_trace).pow(2).sum()).backward()
            runs[name] = (trace.detach().flatten(), mem.detach().flatten(), cur.grad.flatten())
    trace, mem, _ = runs["na"]
    spk = reset_term.spikes_from_trace(trace.view(T, 1, 1), 2.0).flatten().round()
    t = torch.arange(T)
    fig = Figure(figsize=(7.2, 6.0), layout="constrained")
    fig.suptitle("NALeaky(beta=0.8, tau_s=2), trace loss ½ Σ_t (a[t] − (ε*d)[t])²", size=10)
    ax_u, ax_s, ax_g = _trace_axes(fig)
    _plot(ax_u, t, mem, color=C_RULE, marker=".", ms=4, label="mem = pre-reset u[t]")
    _plot(ax_u, t, trace, color=C_ALT, lw=1.2, label="output: trace a[t]")
    _plot(ax_u, t, target_trace.flatten(), color=C_GREY, lw=1.0, ls="-.",
              label="target trace (ε*d)[t]")
    ax_u.axhline(1.0, color="k", ls="--", lw=0.8, label="threshold ϑ = 1 (spike if u > ϑ)")
    ax_u.set_ylabel("potential / trace")
    ax_u.set_ylim(0, 1.3)
    _legend_above(ax_u)
    _raster(ax_s, spk, C_RULE, 1.0)
    _raster(ax_s, desired.flatten(), C_GREY, 0.0)
    _raster_axis(ax_s, T, ["target d", "spikes"])
    for name, color, marker, label in (
        ("na", C_RULE, "o", "NA (NALeaky)"),
        ("surrogate", C_BASE, "s", 'surrogate BPTT (ResetTermLeaky, reset_grad="detach")'),
    ):
        g = runs[name][2]
        peak = float(g.abs().max())
        _plot(ax_g, t, g / peak, color=color, marker=marker, ms=3,
                  label=f"{label}, max |∂L/∂c| = {peak:.2f}")
    ax_g.axhline(0, color=C_GREY, lw=0.6)
    ax_g.set_ylabel("∂L/∂c[t] / max |∂L/∂c|")
    ax_g.set_xlabel("time step t   (the same forward pass in both; each gradient scaled to 1)")
    _legend_above(ax_g, ncol=1)
    _save(fig, out_dir, "na_trace.png")


def _fig_bpsta_trace(out_dir: Path) -> None:
    T = 30
    x0 = _fixed_input(T, 0.12, 0.2, period=11.0)
    runs = {}
    for alpha in (0.2, 0.0):
        x = x0.clone().requires_grad_(True)
        lif = neurons.HTDGLIFLeaky(alpha=alpha)
        out, mem = _run_snntorch(lif, x)
        out.sum().backward()
        runs[alpha] = (out.detach().flatten(), mem.detach().flatten(), x.grad.flatten())
    out, mem, _ = runs[0.2]
    t = torch.arange(T)
    fig = Figure(figsize=(7.2, 5.6), layout="constrained")
    fig.suptitle('HTDGLIFLeaky() (mode="paper", decay 0.9), loss L = Σ_t o[t]', size=10)
    ax_u, ax_s, ax_g = _trace_axes(fig, ratios=(3, 0.8, 3))
    _plot(ax_u, t, mem, color=C_RULE, marker=".", ms=4, label="mem = pre-reset h[t]")
    _plot(ax_u, t, x0.flatten(), color=C_GREY, lw=0.9, label="input x[t] (relu'd inside)")
    ax_u.axhline(0.5, color="k", ls="--", lw=0.8, label="threshold 0.5 (spike if h ≥ 0.5)")
    ax_u.axhline(0.0, color=C_GREY, lw=0.6)
    ax_u.set_ylabel("potential")
    _legend_above(ax_u, ncol=3)
    _raster(ax_s, out, C_RULE, 0.0)
    _raster_axis(ax_s, T, ["spikes o"])
    _plot(ax_g, t, runs[0.2][2], color=C_RULE, marker="o", ms=3,
              label="BPSA + BPTA (alpha=0.2, the default)")
    _plot(ax_g, t, runs[0.0][2], color=C_BASE, marker="s", ms=3,
              label="BPSA only (alpha=0.0)")
    ax_g.axhline(0, color=C_GREY, lw=0.6)
    ax_g.set_ylabel("∂L/∂x[t]")
    ax_g.set_xlabel("time step t   (x < 0: relu passes nothing; after the last spike: nothing)")
    _legend_above(ax_g)
    _save(fig, out_dir, "bpsta_trace.png")


def _fig_multistrength_trace(out_dir: Path) -> None:
    T = 24
    z0 = torch.tensor([-0.25] * 4 + [0.45] * 6 + [1.3] * 8 + [0.15] * 6,
                      dtype=torch.float64).view(T, 1, 1)
    runs = {}
    for detach in (True, False):
        z = z0.clone().requires_grad_(True)
        lif = neurons.MultiStrengthLeaky(detach_reset=detach)
        theta, rem = _run_snntorch(lif, z)
        (0.5 * (theta - 1.0).pow(2).sum()).backward()  # target: strength 1 at every step
        runs[detach] = (theta.detach().flatten(), rem.detach().flatten(), z.grad.flatten())
    theta, rem, _ = runs[True]
    h = rem + 1.0 * theta  # the potential before emission: remainder + τ·θ
    t = torch.arange(T)
    fig = Figure(figsize=(7.2, 6.0), layout="constrained")
    fig.suptitle("MultiStrengthLeaky() (integrate-and-fire, τ = threshold = 1), "
                 "loss L = ½ Σ_t (θ[t] − 1)²", size=10)
    ax_u, ax_s, ax_g = _trace_axes(fig, ratios=(3, 1.6, 3))
    _plot(ax_u, t, h, color=C_RULE, marker=".", ms=4, label="h[t] = v[t−1] + z[t]")
    _plot(ax_u, t, rem, color=C_ALT, marker=".", ms=3, lw=0.9, label="mem = remainder v[t]")
    _plot(ax_u, t, z0.flatten(), color=C_GREY, lw=0.9, ls="-.", label="input z[t]")
    ax_u.axhline(1.0, color="k", ls="--", lw=0.8, label="τ = 1")
    ax_u.axhline(0.0, color=C_GREY, lw=0.6)
    ax_u.set_ylabel("potential")
    _legend_above(ax_u, ncol=4)
    ax_s.bar(_np(t), _np(theta), color=C_RULE, width=0.6)
    ax_s.set_ylabel("strength θ[t]")
    ax_s.set_yticks(range(int(theta.max()) + 1))
    ax_s.set_ylim(0, float(theta.max()) + 0.3)
    _plot(ax_g, t, runs[True][2], color=C_RULE, marker="o", ms=3,
              label="detach_reset=True (the default)")
    _plot(ax_g, t, runs[False][2], color=C_BASE, marker="s", ms=3,
              label="detach_reset=False")
    ax_g.axhline(0, color=C_GREY, lw=0.6)
    ax_g.set_ylabel("∂L/∂z[t]")
    ax_g.set_xlabel("time step t")
    _legend_above(ax_g)
    _save(fig, out_dir, "multistrength_trace.png")


def _fig_ttfs_trace(out_dir: Path, record) -> None:
    T, N, label, spk, mem, g_spk, g_cur, first = record
    t = torch.arange(T)
    colors = [C_GREY, C_RULE, C_BASE, C_ALT]
    fig = Figure(figsize=(7.2, 6.0), layout="constrained")
    fig.suptitle(f"snn.Leaky(beta=0.9, spike_grad=surrogate.ATan()) × {N} neurons, "
                 f"ttfs.ce_temporal_loss, label {label}", size=10)
    ax_u, ax_s, ax_g = _trace_axes(fig, ratios=(3, 1.6, 3))
    names = [f"neuron {n}{' (label)' if n == label else ''}" for n in range(N)]
    for n in range(N):
        lw = 1.9 if n == label else 1.0
        _plot(ax_u, t, mem[:, n], color=colors[n], lw=lw, label=names[n])
        _raster(ax_s, spk[:, n], colors[n], n)
        _plot(ax_s, [float(first[n])], [n], "o", mfc="none", mec="k", ms=8, mew=1.0)
        _plot(ax_g, t, g_cur[:, n], color=colors[n], lw=lw, marker=".", ms=4, label=names[n])
    ax_u.axhline(1.0, color="k", ls="--", lw=0.8, label="threshold 1")
    ax_u.set_ylabel("mem")
    ax_u.set_ylim(0, 1.4)
    _legend_above(ax_u, ncol=5)
    _raster_axis(ax_s, T, [f"{n}" for n in range(N)])
    ax_s.set_ylabel("spikes (○ = t_first)")
    ax_g.axhline(0, color=C_GREY, lw=0.6)
    ax_g.set_ylabel("∂L/∂c[t]")
    ax_g.set_xlabel("time step t   (a silent neuron counts as step T−1 = "
                    f"{T - 1})")
    _save(fig, out_dir, "ttfs_trace.png")


# --- the figures -----------------------------------------------------------------------------
def _single(out_dir: Path, name: str, *panels, size=(5.2, 3.4)) -> None:
    fig = Figure(figsize=(size[0] * len(panels), size[1]), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        ax.grid(alpha=0.25, lw=0.5)
        panel(ax)
    _save(fig, out_dir, name)


def make(out_dir: Path) -> None:
    """Write every rule figure into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE), torch.enable_grad():
        record = _ttfs_record()
        fig = Figure(figsize=(13.5, 7.4), layout="constrained")
        axes = fig.subplots(2, 3)
        panels = (_panel_surrogates, _panel_reset_jacobian, _panel_na_weight, _panel_bpsa,
                  _panel_multistrength, lambda ax: _panel_ttfs(ax, record))
        for ax, panel in zip(axes.flat, panels, strict=True):
            ax.grid(alpha=0.25, lw=0.5)
            panel(ax)
        _save(fig, out_dir, "rules_overview.png")
        _single(out_dir, "reset_term_gradients.png", _panel_surrogates, _panel_reset_jacobian)
        _single(out_dir, "na_weight.png", _panel_na_weight, size=(6.0, 3.6))
        _single(out_dir, "bpsta_gradients.png", _panel_bpsa, size=(6.0, 3.6))
        _single(out_dir, "multistrength_window.png", _panel_multistrength, size=(6.0, 3.4))
        _single(out_dir, "ttfs_record_grad.png", lambda ax: _panel_ttfs(ax, record),
                _panel_surrogates, size=(5.4, 3.3))
        _fig_reset_term_trace(out_dir)
        _fig_na_trace(out_dir)
        _fig_bpsta_trace(out_dir)
        _fig_multistrength_trace(out_dir)
        _fig_ttfs_trace(out_dir, record)


if __name__ == "__main__":
    import sys
    import time

    start = time.process_time()
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "_generated")
    print(f"rule figures: {time.process_time() - start:.1f} s CPU")
