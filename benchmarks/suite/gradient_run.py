"""``compare.py --mode gradient``: every rule's gradient against the smoothed loss's, per host.

One configuration is (framework, rule, dataset, arch, T, seed, batch, device, directions, σ,
coordinates per layer); its id hashes all of them, so a rerun skips what is recorded (resume).
For each, the rule's network is built with its paper recipe (outputs, pooling, loss, input
encoding) and the same seed, and every rule gets the NA authors' initialisation (kaiming-normal
linear layers), so that all rules start from the same weights; the network runs in eval mode
(dropout off, batch norm on its running statistics) on one fixed training batch. The estimator
is :mod:`suite.gradient` (one module for every rule); the rows carry its results.
"""

from __future__ import annotations

import hashlib
import json
import math
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from spikegrad import recipes as pieces
from suite import gradient, metrics, recipes
from suite.store import Store
from suite.train import Dist, fetch, subset_indices

DEFAULTS = {"directions": 128, "sigma": 0.2, "dims": 32, "batch_size": 32}
EXPLAIN = (
    "cosine: between the rule's weight gradient and the antithetic evolution-strategies estimate "
    "of the gradient of the Gaussian-smoothed loss (1.0 would be perfect agreement with the "
    "estimate); band: its spread over resampled direction sets; ceiling: the estimate's own "
    "cosine to the smoothed gradient (the most a rule can score here); sign agree: share of "
    "measured weights whose gradient signs agree; loss-drop ratio: the smoothed loss's decrease "
    "over a step along the rule's gradient divided by that along the estimate (same length); "
    "per layer: the cosine of each weight layer.")


@dataclass(frozen=True)
class GradientConfig:
    framework: str
    rule: str
    dataset: str
    arch: str
    T: int
    seed: int
    batch_size: int
    device: str
    directions: int
    sigma: float
    dims: int | None  # weights measured per layer (None: all)

    @property
    def config_id(self) -> str:
        d = {"mode": "gradient", **asdict(self)}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _row(cfg: GradientConfig, **fields: Any) -> dict[str, Any]:
    base = {"mode": "gradient", "config_id": cfg.config_id, **asdict(cfg), "recipe": "paper",
            "status": "ok", "impl": None, "impl_reason": None, "test_acc": None,
            "best_test_acc": None, "epoch": None, "step_ms_forward": None,
            "step_ms_backward": None, "peak_mem_mb": None, "spike_rate": None,
            "versions": metrics.versions(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    base.update(fields)
    return base


def run(cfg: GradientConfig, data: Any, store: Store, *, dist: Dist,
        retry_failed: bool = False, log: Callable[[str], None] = print) -> str:
    """Measure one configuration and record its row (rank 0); ``"done"``, ``"skipped"`` (a row
    exists), ``"failed before"`` or ``"failed"``."""
    rows = store.of(cfg.config_id)
    if rows and rows[-1]["status"] == "ok":
        return "skipped"
    if rows and not retry_failed:
        return "failed before"
    if rows and dist.rank == 0:
        store.drop(cfg.config_id)
    tag = f"[gradient {cfg.framework}/{cfg.rule}]"
    t0 = time.perf_counter()
    try:
        fields = measure(cfg, data, dist)
    except Exception as exc:  # noqa: BLE001 - recorded, and the run goes on
        if dist.rank == 0:
            store.add(_row(cfg, status="failed", error=f"{type(exc).__name__}: {exc}"))
        log(f"{tag} failed: {type(exc).__name__}: {exc}")
        return "failed"
    fields["seconds"] = time.perf_counter() - t0
    if dist.rank == 0:
        store.add(_row(cfg, **fields))
    o = fields["overall"]
    log(f"{tag} cosine {_band(o)}, ceiling {_f(o['grad_cosine_ceiling'])}, "
        f"loss-drop ratio {_f(fields['loss_drop_ratio'])} ({fields['seconds']:.0f} s)")
    return "done"


def _f(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _band(r: dict[str, Any]) -> str:
    if r["grad_cosine"] is None:
        return "n/a (flat loss: try a larger --sigma)"
    return f"{r['grad_cosine']:.3f} [{r['grad_cosine_lo']:.3f}, {r['grad_cosine_hi']:.3f}]"


def measure(cfg: GradientConfig, data: Any, dist: Dist) -> dict[str, Any]:
    """The rule's gradient, the estimate and their agreement (see :mod:`suite.gradient`)."""
    device = torch.device(cfg.device)
    rec = recipes.recipe(cfg.rule, "paper")
    torch.manual_seed(cfg.seed)
    net = recipes.build(rec, cfg.framework, cfg.arch, data.in_shape, data.num_classes)
    pieces.na_init_(net)
    net = net.to(device).eval()
    idx = subset_indices(len(data.train), cfg.batch_size, seed=cfg.seed)
    x, y = fetch(data.train, idx)
    x_seq = recipes.encode(rec, x.to(device), cfg.T, data.temporal)
    y = y.to(device)
    loss_fn = recipes.loss_fn(rec)
    loss, full = gradient.rule_gradient(net, x_seq, y, loss_fn)
    index = gradient.coordinates(net, cfg.dims, cfg.seed)
    g_rule = gradient.restrict(full, index)
    losses = gradient.network_losses(net, x_seq, y, loss_fn, cfg.sigma, index)
    est = gradient.estimate(
        losses, [g.shape for g in g_rule], n_pairs=cfg.directions, sigma=cfg.sigma,
        seed=cfg.seed, device=device, rank=dist.rank, world=dist.world,
        gather=lambda d: torch.tensor(dist.all_sum(d.tolist(), device), dtype=torch.float64))
    q = gradient.quality(g_rule, est, seed=cfg.seed)
    step = 2.0 * cfg.sigma  # a step of the length of two perturbation scales
    ratio = gradient.loss_drop_ratio(losses, g_rule, est, pairs=min(32, cfg.directions),
                                     step=step, device=device)
    layers = {k: v for k, v in q.items() if k != "overall"}
    impl, why = metrics.implementation(net.neurons(), device, x_seq.dtype)
    return {"loss": loss, **q["overall"], "overall": q["overall"], "layers": layers,
            "loss_drop_ratio": ratio, "loss_drop_step": step, "impl": impl, "impl_reason": why,
            "measured_weights": sum(g.numel() for g in g_rule),
            "nonzero_pairs": int((est.diffs != 0).sum()), "world_size": dist.world,
            "pairs_rank0": est.evaluated}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per (rule, framework), overall and per-layer cosines."""
    done = [r for r in rows if r.get("mode") == "gradient" and r.get("status") == "ok"]
    if not done:
        return ""
    lines = ["| rule | framework | cosine [band] | ceiling | sign agree | loss-drop ratio | "
             "per layer | s |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(done, key=lambda r: (recipes.RULES.index(r["rule"]), r["framework"])):
        per = " / ".join("n/a" if v["grad_cosine"] is None else f"{v['grad_cosine']:.2f}"
                         for v in r["layers"].values())
        lines.append(
            f"| {r['rule']} | {r['framework']} | {_band(r).split(' (')[0]} | "
            f"{_f(r['grad_cosine_ceiling'])} | {r['grad_sign_agree']:.3f} | "
            f"{_f(r['loss_drop_ratio'])} | {per} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def printed(text: str, width: int = 120) -> str:
    """``text`` for a terminal: paragraphs wrapped to ``width``; table lines kept whole."""
    out = []
    for para in text.split("\n\n"):
        keep = para.startswith("|")
        out.append(para if keep else textwrap.fill(para, width, break_on_hyphens=False,
                                                   break_long_words=False))
    return "\n\n".join(out)


def plot(rows: list[dict[str, Any]], path: Any, title: str = "") -> Any:
    """``gradient.png``: each rule's overall cosine with its band, per framework side by side,
    and the ceiling (the most any rule could score against that estimate) as a tick."""
    done = [r for r in rows if r.get("mode") == "gradient" and r.get("status") == "ok"]
    if not done:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = [r for r in recipes.RULES if any(x["rule"] == r for x in done)]
    frameworks = [f for f in recipes.FRAMEWORKS if any(x["framework"] == f for x in done)]
    fig, ax = plt.subplots(figsize=(8.5, max(3.8, 0.55 * len(rules) * len(frameworks) + 2.0)))
    height = 0.8 / len(frameworks)
    for j, fw in enumerate(frameworks):
        for i, rule in enumerate(rules):
            hit = [x for x in done if x["rule"] == rule and x["framework"] == fw]
            if not hit:
                continue
            r = hit[-1]
            yv = i + (j - (len(frameworks) - 1) / 2) * height
            c, lo, hi = r["grad_cosine"], r["grad_cosine_lo"], r["grad_cosine_hi"]
            if c is None:
                ax.text(0.02, yv, "n/a: flat loss", va="center", fontsize=8)
                continue
            ax.barh(yv, c, height=height * 0.9, color=f"C{j}",
                    label=fw if i == 0 else None, xerr=[[c - lo], [hi - c]], capsize=3)
            if r.get("grad_cosine_ceiling") is not None:
                ax.plot([r["grad_cosine_ceiling"]] * 2, [yv - height / 2, yv + height / 2],
                        color="k", lw=2)
    ax.plot([], [], color="k", lw=2, label="ceiling (estimate vs smoothed gradient)")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(rules)), rules)
    ax.invert_yaxis()
    ax.set_xlim(-1, 1)
    ax.set_xlabel("cosine(rule's weight gradient, ES estimate of the smoothed loss's gradient)")
    ax.set_title(textwrap.fill(title, 100), fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
