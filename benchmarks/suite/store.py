"""``results.jsonl`` written atomically, and the ``summary.md`` tables made from it.

Every row is one measurement: a training epoch (``mode == "train"``), one timing
(``mode == "speed"``) or a configuration that failed (``status == "failed"``, with ``error``).
Every row has at least the keys of :data:`KEYS`; a value that is not known is ``null``, never
guessed. The file is rewritten through a temporary file and ``os.replace`` (after ``fsync``), so
an interruption leaves either the old or the new file, never a half-written line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

KEYS = ("framework", "rule", "dataset", "arch", "T", "seed", "device", "impl", "test_acc",
        "best_test_acc", "epoch", "step_ms_forward", "step_ms_backward", "peak_mem_mb",
        "spike_rate", "versions")


class CorruptResults(RuntimeError):
    """``results.jsonl`` holds a line that is not a result row (edited by hand?)."""


#: keys every row needs to be matched to its configuration and summarised
REQUIRED = ("mode", "config_id", "status", "framework", "rule", "epoch", "test_acc")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new file, whole
    (permissions as a new file of this process would get: ``0o666`` minus the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """The rows of ``DIR/results.jsonl``.

    Writers hold an exclusive lock on ``DIR/.results.lock`` and re-read the file under it, so
    two runs sharing ``--out`` never lose each other's rows.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.dir = Path(out_dir)
        self.path = self.dir / "results.jsonl"
        self.rows: list[dict[str, Any]] = self._read()

    def _read(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        if not self.path.exists():
            return rows
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            where = f"{self.path}, line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorruptResults(f"{where}: {exc}; fix or remove the line (or use another "
                                     "--out)") from None
            if not isinstance(row, dict):
                raise CorruptResults(f"{where}: not a JSON object")
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise CorruptResults(f"{where}: no {', '.join(missing)}; fix or remove the "
                                     "line (or use another --out)")
            rows.append(row)
        return rows

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".results.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.rows = self._read()
                yield
                text = "".join(json.dumps(r, default=_json_default) + "\n" for r in self.rows)
                atomic_write(self.path, text.encode())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, row: dict[str, Any]) -> None:
        missing = [k for k in (*KEYS, *REQUIRED) if k not in row]
        if missing:
            raise ValueError(f"result row lacks the keys {missing}")
        with self._locked():
            self.rows.append(row)

    def of(self, config_id: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("config_id") == config_id]

    def drop(self, config_id: str) -> None:
        """Forget the rows of ``config_id`` (to retry a failed configuration)."""
        with self._locked():
            self.rows = [r for r in self.rows if r.get("config_id") != config_id]


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


#: what makes two trainings comparable, besides the framework (the config id minus the host)
SETTING = ("rule", "recipe", "dataset", "arch", "T", "seed", "batch_size", "lr", "device", "amp",
           "train_subset", "test_subset", "world_size")


def _setting(r: dict[str, Any]) -> str:
    lr = "recipe" if r.get("lr") is None else f"{r['lr']:g}"
    subset = f"{r.get('train_subset') or 'all'}/{r.get('test_subset') or 'all'}"
    world = f" ×{r['world_size']}" if (r.get("world_size") or 1) > 1 else ""
    return (f"b{r.get('batch_size')} lr {lr} {r['device']}{' amp' if r.get('amp') else ''}"
            f"{world} {subset}")


def _loaded(r: dict[str, Any]) -> bool:
    """Whether the machine was busier than its cores while this row was measured."""
    load, cores = r.get("load_avg"), r.get("cpu_cores")
    return bool(load and cores and max(load) > cores)


def train_tables(rows: list[dict[str, Any]], epochs: int | None = None) -> str:
    finals = final_rows(rows, epochs)
    if not finals:
        return ""
    out = []
    for fw in sorted({r["framework"] for r in finals}):
        out += [f"### {fw} (training)", "",
                "| rule | recipe | dataset | arch | T | seed | setting (batch, lr, device, "
                "train/test images) | impl | epochs | best acc % | last acc % | s/epoch | fwd "
                "ms/step | bwd ms/step | peak MB | spike rate per layer | ACs/sample | "
                "MACs/sample |", "|---" * 18 + "|"]
        for r in sorted((r for r in finals if r["framework"] == fw), key=_order):
            head = (f"| {r['rule']} | {r.get('recipe')} | {r['dataset']} | {r['arch']} | "
                    f"{r['T']} | {r['seed']} | {_setting(r)} | {r['impl'] or '–'} | ")
            if r.get("status") == "failed":
                out.append(f"{head}{r['epoch'] or 0} | failed: {r.get('error', '')[:120]} "
                           "||||||||")
                continue
            syn = r.get("synops") or {}
            out.append(
                f"{head}{r['epoch']} | {_f(r['best_test_acc'])} | {_f(r['test_acc'])} | "
                f"{_f(r.get('epoch_train_s'), '.0f')}{' (loaded)' if _loaded(r) else ''} | "
                f"{_f(r['step_ms_forward'], '.1f')} | {_f(r['step_ms_backward'], '.1f')} | "
                f"{_f(r['peak_mem_mb'], '.0f')} | {_rates(r['spike_rate'])} | "
                f"{_sci(syn.get('acs'))} | {_sci(syn.get('macs'))} |")
        out.append("")
    if any(_loaded(r) for r in finals):
        out += ["(loaded): the load average exceeded the CPU cores during that epoch, so its "
                "times are inflated by other work; its accuracy is not affected.", ""]
    by_setting: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in finals:
        by_setting.setdefault(tuple(r.get(k) for k in SETTING), {})[r["framework"]] = r
    pairs = {k: v for k, v in by_setting.items() if len(v) == 2}
    if pairs:
        out += ["### Cross-framework (same rule, recipe, data, network, seed and setting)", "",
                "| rule | recipe | setting | snntorch best acc % | spikingjelly best acc % | "
                "Δ (sj - snn) | snntorch ms/step | spikingjelly ms/step |", "|---" * 8 + "|"]
        for key in sorted(pairs, key=lambda k: (_order({"rule": k[0]}), str(k))):
            a, b = pairs[key]["snntorch"], pairs[key]["spikingjelly"]
            delta = (None if a["best_test_acc"] is None or b["best_test_acc"] is None
                     else b["best_test_acc"] - a["best_test_acc"])
            out.append(f"| {key[0]} | {key[1]} | {_setting(a)} | {_f(a['best_test_acc'])} | "
                       f"{_f(b['best_test_acc'])} | {_f(delta, '+.2f')} | "
                       f"{_f(_step_ms(a), '.1f')} | {_f(_step_ms(b), '.1f')} |")
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
