"""``results.jsonl`` written atomically, and the ``summary.md`` tables made from it.

Every row is one measurement: a training epoch (``mode == "train"``), one timing
(``mode == "speed"``) or a configuration that failed (``status == "failed"``, with ``error``).
Every row has at least the keys of :data:`KEYS`; a value that is not known is ``null``, never
guessed. The file is rewritten through a temporary file and ``os.replace`` (after ``fsync``), so
an interruption leaves either the old or the new file, never a half-written line.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

KEYS = ("framework", "rule", "dataset", "arch", "T", "seed", "device", "impl", "test_acc",
        "best_test_acc", "epoch", "step_ms_forward", "step_ms_backward", "peak_mem_mb",
        "spike_rate", "versions")


class CorruptResults(RuntimeError):
    """``results.jsonl`` holds a line that is not a JSON object (edited by hand?)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """The rows of ``DIR/results.jsonl``."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.dir = Path(out_dir)
        self.path = self.dir / "results.jsonl"
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            for n, line in enumerate(self.path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CorruptResults(f"{self.path}, line {n}: {exc}; fix or remove the "
                                         "line (or use another --out)") from None
                if not isinstance(row, dict):
                    raise CorruptResults(f"{self.path}, line {n}: not a JSON object")
                self.rows.append(row)

    def add(self, row: dict[str, Any]) -> None:
        missing = [k for k in KEYS if k not in row]
        if missing:
            raise ValueError(f"result row lacks the keys {missing}")
        self.rows.append(row)
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in self.rows)
        atomic_write(self.path, text.encode())

    def of(self, config_id: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("config_id") == config_id]

    def drop(self, config_id: str) -> None:
        """Forget the rows of ``config_id`` (to retry a failed configuration)."""
        self.rows = [r for r in self.rows if r.get("config_id") != config_id]
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in self.rows)
        atomic_write(self.path, text.encode())


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _f(x: Any, fmt: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, fmt)


def _rates(r: list[float] | None) -> str:
    return "–" if not r else " / ".join(f"{v:.3f}" for v in r)


def _sci(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def final_rows(rows: Iterable[dict[str, Any]], epochs: int | None = None
               ) -> list[dict[str, Any]]:
    """The last row of every training configuration: its latest epoch (up to ``epochs``, so
    that a configuration trained further by another command is shown at this one's budget),
    or its failure."""
    last: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("mode") != "train":
            continue
        if epochs is not None and r.get("status") == "ok" and r["epoch"] > epochs:
            continue
        last[r["config_id"]] = r
    return list(last.values())


def train_tables(rows: list[dict[str, Any]], epochs: int | None = None) -> str:
    finals = final_rows(rows, epochs)
    if not finals:
        return ""
    out = []
    for fw in sorted({r["framework"] for r in finals}):
        out += [f"### {fw} (training)", "",
                "| rule | recipe | dataset | arch | T | seed | impl | epochs | best acc % | "
                "last acc % | s/epoch | fwd ms/step | bwd ms/step | peak MB | spike rate per "
                "layer | ACs/sample | MACs/sample |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted((r for r in finals if r["framework"] == fw), key=_order):
            if r.get("status") == "failed":
                out.append(f"| {r['rule']} | {r.get('recipe')} | {r['dataset']} | {r['arch']} | "
                           f"{r['T']} | {r['seed']} | {r['impl'] or '–'} | {r['epoch'] or 0} | "
                           f"failed: {r.get('error', '')[:120]} ||||||||")
                continue
            syn = r.get("synops") or {}
            out.append(
                f"| {r['rule']} | {r.get('recipe')} | {r['dataset']} | {r['arch']} | {r['T']} | "
                f"{r['seed']} | {r['impl']} | {r['epoch']} | {_f(r['best_test_acc'])} | "
                f"{_f(r['test_acc'])} | {_f(r.get('epoch_train_s'), '.0f')} | "
                f"{_f(r['step_ms_forward'], '.1f')} | {_f(r['step_ms_backward'], '.1f')} | "
                f"{_f(r['peak_mem_mb'], '.0f')} | {_rates(r['spike_rate'])} | "
                f"{_sci(syn.get('acs'))} | {_sci(syn.get('macs'))} |")
        out.append("")
    by_rule: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in finals:
        key = (r["rule"], r.get("recipe"), r["dataset"], r["arch"], r["T"], r["seed"])
        by_rule.setdefault(key, {})[r["framework"]] = r
    pairs = {k: v for k, v in by_rule.items() if len(v) == 2}
    if pairs:
        out += ["### Cross-framework (same rule, recipe, data, network, seed)", "",
                "| rule | recipe | snntorch best acc % | spikingjelly best acc % | Δ (sj - snn) | "
                "snntorch ms/step | spikingjelly ms/step |", "|---|---|---|---|---|---|---|"]
        for key in sorted(pairs, key=lambda k: _order({"rule": k[0]})):
            a, b = pairs[key]["snntorch"], pairs[key]["spikingjelly"]
            delta = (None if a["best_test_acc"] is None or b["best_test_acc"] is None
                     else b["best_test_acc"] - a["best_test_acc"])
            out.append(f"| {key[0]} | {key[1]} | {_f(a['best_test_acc'])} | "
                       f"{_f(b['best_test_acc'])} | {_f(delta, '+.2f')} | {_f(_step_ms(a), '.1f')} "
                       f"| {_f(_step_ms(b), '.1f')} |")
        out.append("")
    return "\n".join(out)


def _step_ms(r: dict[str, Any]) -> float | None:
    f, b = r.get("step_ms_forward"), r.get("step_ms_backward")
    return None if f is None or b is None else f + b


def _order(r: dict[str, Any]) -> int:
    from suite.recipes import RULES

    return RULES.index(r["rule"]) if r["rule"] in RULES else len(RULES)


def speed_tables(rows: list[dict[str, Any]]) -> str:
    speed = [r for r in rows if r.get("mode") == "speed"]
    if not speed:
        return ""
    native = {(r["framework"], r["what"], r["neurons"], r["batch"], r["T"], r["device"]):
              _step_ms(r) for r in speed if r["rule"] == "native" and r.get("status") == "ok"}
    out = []
    for fw in sorted({r["framework"] for r in speed}):
        out += [f"### {fw} (speed, ms per call, median)", "",
                "| what | rule | impl | neurons | batch | T | forward ms | backward ms | "
                "total ms | / native LIF | peak MB |", "|---" * 11 + "|"]
        for r in sorted((r for r in speed if r["framework"] == fw),
                        key=lambda r: (r["what"], r["neurons"], r["T"], r["rule"] != "native",
                                       r["rule"])):
            if r.get("status") != "ok":
                out.append(f"| {r['what']} | {r['rule']} | {r['impl'] or '–'} | {r['neurons']} | "
                           f"{r['batch']} | {r['T']} | {r.get('status')}: "
                           f"{(r.get('error') or '')[:100]} |||||")
                continue
            base = native.get((fw, r["what"], r["neurons"], r["batch"], r["T"], r["device"]))
            total = _step_ms(r)
            ratio = None if base in (None, 0) or total is None else total / base
            out.append(f"| {r['what']} | {r['rule']} | {r['impl']} | {r['neurons']} | "
                       f"{r['batch']} | {r['T']} | {_f(r['step_ms_forward'], '.3f')} | "
                       f"{_f(r['step_ms_backward'], '.3f')} | {_f(total, '.3f')} | "
                       f"{_f(ratio, '.2f')}{'x' if ratio is not None else ''} | "
                       f"{_f(r['peak_mem_mb'], '.1f')} |")
        out.append("")
    return "\n".join(out)


def summary(rows: list[dict[str, Any]], header: str, epochs: int | None = None) -> str:
    """The markdown of ``summary.md``: a table per framework and a cross-framework table
    (training configurations at their last epoch up to ``epochs``), then the speed tables."""
    parts = [header, "", train_tables(rows, epochs), speed_tables(rows)]
    return "\n".join(p for p in parts if p) + "\n"
