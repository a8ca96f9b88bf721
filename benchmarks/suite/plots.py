"""PNG plots of a results file (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from suite.recipes import RULES
from suite.store import final_rows


def _save(fig, path: Path) -> Path:
    """Save ``fig`` as PNG through a temporary file, so that a crash leaves no broken image."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt



def accuracy(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Test accuracy per epoch, one line per rule (and recipe), one panel per framework."""
    train = [r for r in rows if r.get("mode") == "train" and r.get("status") == "ok"]
    if not train:
        return None
    plt = _plt()
    fws = sorted({r["framework"] for r in train})
    fig, axes = plt.subplots(1, len(fws), figsize=(6 * len(fws), 4), squeeze=False, sharey=True)
    for ax, fw in zip(axes[0], fws, strict=True):
        curves: dict[str, list[tuple[int, float]]] = {}
        for r in train:
            if r["framework"] == fw:
                label = f"{r['rule']} ({r['recipe']})"
                curves.setdefault(label, []).append((r["epoch"], r["test_acc"]))
        for label in sorted(curves, key=lambda s: (RULES.index(s.split(" ")[0]), s)):
            pts = sorted(curves[label])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_title(fw)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("test accuracy %")
    from matplotlib.ticker import MaxNLocator

    axes[0][0].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def cost(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Median forward and backward time per training step, per rule and framework."""
    finals = [r for r in final_rows(rows) if r.get("status") == "ok"]
    if not finals:
        return None
    plt = _plt()
    fws = sorted({r["framework"] for r in finals})
    labels = sorted({(r["rule"], r["recipe"]) for r in finals},
                    key=lambda k: (RULES.index(k[0]), k[1]))
    width = 0.8 / len(fws)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(labels)), 4))
    for j, fw in enumerate(fws):
        by = {(r["rule"], r["recipe"]): r for r in finals if r["framework"] == fw}
        xs = [i + (j - (len(fws) - 1) / 2) * width for i in range(len(labels))]
        fwd = [by[k]["step_ms_forward"] if k in by else 0.0 for k in labels]
        bwd = [by[k]["step_ms_backward"] if k in by else 0.0 for k in labels]
        ax.bar(xs, fwd, width, label=f"{fw} forward")
        ax.bar(xs, bwd, width, bottom=fwd, label=f"{fw} backward", alpha=0.6)
    ax.set_xticks(range(len(labels)), [f"{r}\n({c})" for r, c in labels], fontsize=8)
    ax.set_ylabel("ms per training step (median)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def speed(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Forward + backward time against T, one panel per (framework, what), largest size."""
    ok = [r for r in rows if r.get("mode") == "speed" and r.get("status") == "ok"
          and r["T"] <= 64]
    if not ok:
        return None
    plt = _plt()
    panels = sorted({(r["framework"], r["what"]) for r in ok})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (fw, what) in zip(axes[0], panels, strict=True):
        sel = [r for r in ok if r["framework"] == fw and r["what"] == what]
        n = max(r["neurons"] for r in sel)
        for rule in sorted({r["rule"] for r in sel}):
            pts = sorted((r["T"], r["step_ms_forward"] + r["step_ms_backward"]) for r in sel
                         if r["rule"] == rule and r["neurons"] == n)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=rule)
        ax.set_title(f"{fw}: {what}, N={n}")
        ax.set_xlabel("T")
        ax.set_ylabel("forward + backward ms (median)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def all_plots(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    made = [accuracy(rows, out_dir / "accuracy.png"), cost(rows, out_dir / "cost.png"),
            speed(rows, out_dir / "speed.png")]
    return [p for p in made if p is not None]
