"""PNG plots of one command's results (matplotlib, no display needed).

Every figure's title says what was run (dataset, network, T, epochs, training and test
images, batch, device; for speed: batch, device, threads, sizes), so that a plot read on its
own is not mistaken for another run's. Each configuration is its own bar or line: rows of
configurations that differ in anything but the framework are never joined.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from suite.recipes import RULES
from suite.store import SPEED_WORDS, TRAIN_WORDS, fill, final_rows, loaded, settings

#: a colour per framework (bars) and per rule (lines); ``native`` is the host's LIF
FRAMEWORK_COLORS = {"snntorch": "#4C72B0", "spikingjelly": "#DD8452"}
RULE_COLORS = {"native": "black", **{r: f"C{i}" for i, r in enumerate(RULES)}}
TRAIN_FILES = ("accuracy.png", "cost.png")
SPEED_FILES = ("speed.png",)


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


def _order(key: tuple[str, ...]) -> tuple:
    """Rules in :data:`RULES` order, each rule's paper recipe before the common one."""
    rest = ({"paper": "0", "common": "1"}.get(key[1], key[1]), *key[2:]) if len(key) > 1 else ()
    return (RULES.index(key[0]) if key[0] in RULES else len(RULES), *rest)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _train_title(what: str, finals: list[dict[str, Any]], epochs: int, width: int) -> str:
    """``what`` over a line of the shared settings with the epochs, wrapped to the figure."""
    shared = settings(finals)[0]
    words = [*shared[:3], _plural(epochs, "epoch"), *shared[3:]]
    return what + "\n" + fill(", ".join(words), width)


def _chars(fig) -> int:
    """About how many title characters fit across ``fig``."""
    return int(fig.get_figwidth() * 100 / 8.5)


def _keyer(rows: list[dict[str, Any]]):
    """A row's group: ``(rule, recipe, its settings that differ between rows)``, the seed
    aside (seeds of one group are drawn together, as a mean and a dot each)."""
    differ = settings(rows, [w for w in TRAIN_WORDS if w[0] != ("seed",)])[1]
    return lambda r: (r["rule"], r.get("recipe") or "–", differ(r))


def _groups(rows: list[dict[str, Any]], key) -> list[tuple[str, str, str]]:
    return sorted({key(r) for r in rows}, key=_order)


def _group_label(group: tuple[str, str, str], groups: list[tuple[str, str, str]],
                 sep: str = "\n") -> str:
    """The rule, and its recipe and settings where these differ between the groups."""
    parts = [group[0]]
    if len({g[1] for g in groups}) > 1:
        parts.append(f"{group[1]} recipe")
    if group[2]:
        parts.append(fill(group[2], 24) if sep == "\n" else group[2])
    return sep.join(parts)


def _color(group: tuple[str, str, str], groups: list[tuple[str, str, str]]) -> str:
    """The rule's colour (as in speed.png) when rules alone tell the groups apart."""
    if len({g[1:] for g in groups}) == 1 and group[0] in RULE_COLORS:
        return RULE_COLORS[group[0]]
    return f"C{groups.index(group) % 10}"


def _bar_chart(ax, finals: list[dict[str, Any]], value) -> None:
    """Bars per (rule, recipe), one per framework side by side, each labelled with its value;
    several seeds: the bar is their mean and a dot each; a failed configuration is marked."""
    key = _keyer(finals)
    groups = _groups(finals, key)
    fws = sorted({r["framework"] for r in finals})
    width = 0.8 / len(fws)
    seeds = len({r["seed"] for r in finals}) > 1
    dots = False
    for j, fw in enumerate(fws):
        xs, heights, labels = [], [], []
        for i, g in enumerate(groups):
            x = i + (j - (len(fws) - 1) / 2) * width
            sel = [r for r in finals if r["framework"] == fw and key(r) == g]
            vals = [value(r) for r in sel if r.get("status") == "ok" and value(r) is not None]
            if sel and not vals:
                ax.annotate("failed", (x, 0), xytext=(0, 3), textcoords="offset points",
                            rotation=90, ha="center", va="bottom", color="firebrick",
                            fontsize=8)
                continue
            if not vals:
                continue
            xs.append(x)
            heights.append(statistics.fmean(vals))
            labels.append(f"{heights[-1]:.1f}")
            if seeds:
                ax.plot([x] * len(vals), vals, "o", color="black", ms=3, zorder=3,
                        label="one seed" if not dots else "_nolegend_")
                dots = True
        bars = ax.bar(xs, heights, width * 0.95, label=fw,
                      color=FRAMEWORK_COLORS.get(fw, f"C{j}"), hatch="//" if j % 2 else None,
                      edgecolor="white")
        ax.bar_label(bars, labels, padding=2, fontsize=8)
    ax.set_xticks(range(len(groups)), [_group_label(g, groups) for g in groups])
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def accuracy(rows: list[dict[str, Any]], path: Path, epochs: int | None = None
             ) -> Path | None:
    """Test accuracy per rule: after one epoch, bars side by side per framework; over several
    epochs, a curve per configuration in a panel per framework."""
    finals = final_rows(rows, epochs)
    train = [r for r in rows if r.get("mode") == "train" and r.get("status") == "ok"
             and (epochs is None or r["epoch"] <= epochs)]
    if not train:
        return None
    last = max(r["epoch"] for r in train)
    plt = _plt()
    if last == 1:
        n = len(_groups(finals, _keyer(finals))) * len({r["framework"] for r in finals})
        fig, ax = plt.subplots(figsize=(max(8.0, 1.0 + 0.75 * n), 5), layout="constrained")
        _bar_chart(ax, finals, lambda r: r["test_acc"])
        ax.set_ylim(0, 105)
        n_seeds = len({r["seed"] for r in finals})
        ax.set_ylabel("test accuracy % after the epoch"
                      + (f"\n(bar: mean of {n_seeds} seeds)" if n_seeds > 1 else ""))
        fig.legend(title="framework", loc="outside lower center", ncols=4)
        fig.suptitle(_train_title("Test accuracy per rule", finals, last, _chars(fig)),
                     fontsize=11)
    else:
        fws = sorted({r["framework"] for r in train})
        fig, axes = plt.subplots(1, len(fws), figsize=(5.5 * len(fws) + 2.5, 4.8),
                                 squeeze=False, sharey=True, layout="constrained")
        key = _keyer(finals)
        groups = _groups(train + finals, key)
        seeds = sorted({r["seed"] for r in train + finals})
        status = {r["config_id"]: r.get("status") for r in finals}
        handles = {}
        for ax, fw in zip(axes[0], fws, strict=True):
            curves: dict[str, list[dict[str, Any]]] = {}
            for r in train:
                if r["framework"] == fw:
                    curves.setdefault(r["config_id"], []).append(r)
            for cid, pts in sorted(curves.items(),
                                   key=lambda kv: (_order(key(kv[1][0])), kv[1][0]["seed"])):
                pts.sort(key=lambda r: r["epoch"])
                r0 = pts[0]
                g = key(r0)
                label = _group_label(g, groups, sep=", ")
                if len(seeds) > 1:
                    label += f", seed {r0['seed']}"
                if status.get(cid) == "failed":
                    label += " (failed later)"
                (line,) = ax.plot([r["epoch"] for r in pts], [r["test_acc"] for r in pts],
                                  marker="o", ms=4, color=_color(g, groups),
                                  linestyle=("-", "--", ":", "-.")[seeds.index(r0["seed"]) % 4])
                handles.setdefault(label, line)
            never = [_group_label(key(r), groups, sep=", ")
                     + (f", seed {r['seed']}" if len(seeds) > 1 else "") for r in finals
                     if r["framework"] == fw and r["config_id"] not in curves]
            if never:  # failed before its first epoch: no point to draw, said in the panel
                ax.text(0.01, 0.01, "failed before epoch 1: " + "; ".join(never),
                        transform=ax.transAxes, color="firebrick", fontsize=8, va="bottom")
            ax.set_title(fw)
            ax.set_xlabel("epoch")
            ax.set_xticks(range(1, last + 1))
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("test accuracy %")
        fig.legend(handles.values(), handles.keys(), title="rule", loc="outside lower center",
               ncols=min(len(handles), 4))
        fig.suptitle(_train_title("Test accuracy after each epoch", finals, last, _chars(fig)),
                     fontsize=11)
    _save(fig, path)
    plt.close(fig)
    return path


def cost(rows: list[dict[str, Any]], path: Path, epochs: int | None = None) -> Path | None:
    """Median forward and backward time per training step, per rule, frameworks side by
    side (stacked: forward below, backward above)."""
    finals = final_rows(rows, epochs)
    ok = [r for r in finals if r.get("status") == "ok"]
    if not ok:
        return None
    plt = _plt()
    key = _keyer(finals)
    groups = _groups(finals, key)
    fws = sorted({r["framework"] for r in finals})
    n = len(groups) * len(fws)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.0 + 0.75 * n), 5), layout="constrained")
    width = 0.8 / len(fws)
    any_loaded = False
    for j, fw in enumerate(fws):
        color = FRAMEWORK_COLORS.get(fw, f"C{j}")
        xs, fwd, bwd, busy = [], [], [], []
        for i, g in enumerate(groups):
            sel = [r for r in ok if r["framework"] == fw and key(r) == g]
            x = i + (j - (len(fws) - 1) / 2) * width
            if not sel:
                if any(r["framework"] == fw and key(r) == g for r in finals):
                    ax.annotate("failed", (x, 0), xytext=(0, 3), textcoords="offset points",
                                rotation=90, ha="center", va="bottom", color="firebrick",
                                fontsize=8)
                continue
            xs.append(x)
            fwd.append(statistics.fmean(r["step_ms_forward"] for r in sel))
            bwd.append(statistics.fmean(r["step_ms_backward"] for r in sel))
            busy.append(any(loaded(r) for r in sel))
        ax.bar(xs, fwd, width * 0.95, color=color, label=f"{fw}: forward (with the loss)")
        top = ax.bar(xs, bwd, width * 0.95, bottom=fwd, color=color, alpha=0.45, hatch="//",
                     edgecolor="white", label=f"{fw}: backward")
        ax.bar_label(top, [f"{f + b:.1f}" + ("\n(loaded)" if m else "")
                           for f, b, m in zip(fwd, bwd, busy, strict=True)], padding=2,
                     fontsize=8)
        any_loaded = any_loaded or any(busy)
    ax.set_xticks(range(len(groups)), [_group_label(g, groups) for g in groups])
    seeds = len({r["seed"] for r in ok}) > 1
    ax.set_ylabel("ms per training step (median" + (", mean over seeds)" if seeds else ")"))
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", ncols=2)
    if any_loaded:
        ax.set_xlabel("(loaded): the load average exceeded the CPU cores during that epoch, so "
                      "its times are inflated by other work", fontsize=8, color="firebrick")
    last = max(r["epoch"] for r in ok)
    fig.suptitle(_train_title("Median time per training step (on each bar: forward + backward "
                              "ms)", finals, last, _chars(fig)), fontsize=11)
    _save(fig, path)
    plt.close(fig)
    return path


#: the speed plot's panel titles, by measurement ("what")
SPEED_TITLES = {
    "layer": "one neuron layer", "train-step": "Linear + neuron step",
    "tutorial": "tutorial network, eager", "tutorial-compiled": "tutorial network, compiled",
    "tutorial-neuron": "its hidden neuron, eager",
    "tutorial-neuron-compiled": "its hidden neuron, compiled",
}


#: bar colours of the speed bars: eager and compiled
VARIANT_COLORS = {"eager": "#4C72B0", "compiled": "#55A868"}


def speed(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Per (framework, what) at the largest size: forward + backward time against T (top,
    log scale, in ms) and the time over the host's native LIF (bottom; below 1: faster).
    One T only (the tutorial set): bars instead (:func:`speed_bars`)."""
    ok = [r for r in rows if r.get("mode") == "speed" and r.get("status") == "ok"
          and r["T"] <= 64]
    if not ok:
        return None
    if len({r["T"] for r in ok}) == 1:
        return speed_bars(ok, path)
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    plt = _plt()
    panels = sorted({(r["framework"], r["what"]) for r in ok})
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels) + 2.2, 7),
                             squeeze=False, sharex="col", sharey="row", layout="constrained")
    ms = FuncFormatter(lambda v, _: f"{v:g}")
    handles = {}
    for col, (fw, what) in enumerate(panels):
        sel = [r for r in ok if r["framework"] == fw and r["what"] == what]
        n = max(r["neurons"] for r in sel)
        sel = [r for r in sel if r["neurons"] == n]
        native = {r["T"]: r["step_ms_forward"] + r["step_ms_backward"] for r in sel
                  if r["rule"] == "native"}
        top, bottom = axes[0][col], axes[1][col]
        rules = sorted({r["rule"] for r in sel}, key=lambda x: (x != "native", _order((x,))))
        for rule in rules:
            pts = sorted((r["T"], r["step_ms_forward"] + r["step_ms_backward"]) for r in sel
                         if r["rule"] == rule)
            label = "host's native LIF" if rule == "native" else rule
            style = {"marker": "o", "ms": 4, "color": RULE_COLORS.get(rule, "grey"),
                     "linestyle": "--" if rule == "native" else "-"}
            (line,) = top.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
            handles.setdefault(label, line)
            ratio = [(t, v / native[t]) for t, v in pts if native.get(t)]
            bottom.plot([p[0] for p in ratio], [p[1] for p in ratio], **style)
        ts = sorted({r["T"] for r in sel})
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(ts))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3)
        top.set_yscale("log")
        top.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        top.yaxis.set_major_formatter(ms)
        top.yaxis.set_minor_formatter(NullFormatter())
        size = "784-1000-10" if what in ("tutorial", "tutorial-compiled") else f"{n} neurons"
        top.set_title(f"{fw}: {SPEED_TITLES.get(what, what)}\n{size}", fontsize=10)
        bottom.axhline(1.0, color="black", lw=0.8)
        bottom.set_xlabel("time steps T")
        if col == 0:
            top.set_ylabel("forward + backward\nms (median, log scale)")
            bottom.set_ylabel("time / host's native LIF\n(below 1: faster)")
    shared = settings(ok, SPEED_WORDS)[0]
    fig.legend(handles.values(), handles.keys(), title="rule", loc="outside lower center",
               ncols=min(len(handles), 4))
    fig.suptitle("Speed per rule against the host's own LIF\n" + fill(
        ", ".join(shared) + "; largest layer size measured (all sizes in summary.md)",
        _chars(fig)), fontsize=11)
    _save(fig, path)
    plt.close(fig)
    return path


def speed_bars(ok: list[dict[str, Any]], path: Path) -> Path:
    """One T: a panel per (measurement, framework), a group of bars per rule, one bar per
    variant (eager, compiled) side by side, forward below and backward above, each labelled
    with its total ms and its ratio to the host's LIF in the same variant."""
    plt = _plt()
    base = sorted({r["what"].removesuffix("-compiled") for r in ok},
                  key=lambda w: list(SPEED_TITLES).index(w) if w in SPEED_TITLES else 99)
    fws = sorted({r["framework"] for r in ok})
    n_rules = len({r["rule"] for r in ok})
    fig, axes = plt.subplots(len(base), len(fws), squeeze=False, layout="constrained",
                             figsize=(max(6.5, 1.6 * n_rules + 1.5) * len(fws) + 0.5,
                                      3.9 * len(base) + 1.2))
    handles = {}
    for i, what in enumerate(base):
        for j, fw in enumerate(fws):
            ax = axes[i][j]
            sel = [r for r in ok if r["framework"] == fw
                   and r["what"].removesuffix("-compiled") == what]
            if not sel:
                ax.set_axis_off()
                continue
            n = max(r["neurons"] for r in sel)
            sel = [r for r in sel if r["neurons"] == n]
            rules = sorted({r["rule"] for r in sel},
                           key=lambda x: (x != "native", _order((x,))))
            variants = [v for v in ("eager", "compiled")
                        if any((r["what"].endswith("-compiled")) == (v == "compiled")
                               for r in sel)]
            width = 0.8 / len(variants)
            for k, variant in enumerate(variants):
                name = what + ("-compiled" if variant == "compiled" else "")
                by_rule = {r["rule"]: r for r in sel if r["what"] == name}
                native = by_rule.get("native")
                ref = (native["step_ms_forward"] + native["step_ms_backward"]) if native else None
                xs = [x + (k - (len(variants) - 1) / 2) * width
                      for x, rule in enumerate(rules) if rule in by_rule]
                pick = [by_rule[rule] for rule in rules if rule in by_rule]
                fwd = [r["step_ms_forward"] for r in pick]
                bwd = [r["step_ms_backward"] for r in pick]
                color = VARIANT_COLORS[variant]
                h1 = ax.bar(xs, fwd, width * 0.95, color=color, edgecolor="white")
                h2 = ax.bar(xs, bwd, width * 0.95, bottom=fwd, color=color, alpha=0.45,
                            hatch="//", edgecolor="white")
                handles.setdefault(f"{variant}: forward", h1)
                handles.setdefault(f"{variant}: backward", h2)
                labels = [f"{f + b:.1f}" + (f"\n{(f + b) / ref:.2f}x" if ref else "")
                          for f, b in zip(fwd, bwd, strict=True)]
                ax.bar_label(h2, labels, padding=2, fontsize=7)
            ax.set_xticks(range(len(rules)),
                          ["host's LIF" if r == "native" else r for r in rules], fontsize=8)
            ax.margins(y=0.22)
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
            size = "784-1000-10" if what == "tutorial" else f"{n} neurons"
            ax.set_title(f"{fw}: {SPEED_TITLES.get(what, what).replace(', eager', '')}, "
                         f"{size}", fontsize=10)
            if j == 0:
                ax.set_ylabel("ms per call (median)")
    shared = settings(ok, SPEED_WORDS)[0]
    fig.legend(handles.values(), handles.keys(), loc="outside lower center",
               ncols=min(len(handles), 4))
    T = ok[0]["T"]
    fig.suptitle("Speed per rule against the host's own LIF (on each bar: forward + backward "
                 "ms, and its ratio to the host's LIF in the same variant)\n" + fill(
                     ", ".join([f"T={T}", *shared]) + "; largest layer size measured (all "
                     "sizes in summary.md)", _chars(fig)), fontsize=11)
    _save(fig, path)
    plt.close(fig)
    return path


def _speed_words():
    from suite.store import _SPEED_WORDS

    return _SPEED_WORDS


def all_plots(rows: list[dict[str, Any]], out_dir: Path, epochs: int | None = None,
              mode: str | None = None) -> list[Path]:
    """The plots of ``rows`` (one command's) for ``mode`` (``"train"``, ``"speed"``, or both
    when None); a plot of that mode left from an earlier command that this one has nothing
    to draw for is removed, so that every plot of the mode belongs to this command."""
    made: list[Path | None] = []
    stale: list[str] = []
    if mode in (None, "train"):
        made += [accuracy(rows, out_dir / "accuracy.png", epochs),
                 cost(rows, out_dir / "cost.png", epochs)]
        stale += TRAIN_FILES
    if mode in (None, "speed"):
        made += [speed(rows, out_dir / "speed.png")]
        stale += SPEED_FILES
    for name in stale:
        if out_dir / name not in made:
            (out_dir / name).unlink(missing_ok=True)
    return [p for p in made if p is not None]
