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
import re
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
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


#: the terminal width the printed summary fits (summary.md has the full tables)
WIDTH = 120

DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10",
                 "nmnist": "N-MNIST"}
#: each training loss by a plain name (the keys are ``recipes.Recipe.loss``)
LOSS_NAMES = {"trace-mse": "trace MSE", "van-rossum": "van Rossum", "rate-mse": "vote MSE",
              "rate-ce": "rate CE", "ttfs-ce": "first-spike CE"}


def _f(x: Any, fmt: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, fmt)


def _rates(r: list[float] | None) -> str:
    return "–" if not r else " / ".join(f"{v:.3f}" for v in r)


def _sci(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def _count(n: int) -> str:
    return f"{n:,}".replace(",", " ")


#: a space between digit groups ("4 096"), which a wrapped line must not break
_GROUP_SPACE = re.compile(r"(?<=\d) (?=\d{3}(?!\d))")


def fill(text: str, width: int, **kwargs: Any) -> str:
    """:func:`textwrap.fill` that never breaks a number written in digit groups ("4 096")."""
    kept = _GROUP_SPACE.sub("\u00a0", text)
    return textwrap.fill(kept, width, **kwargs).replace("\u00a0", " ")


@dataclass
class Table:
    """One table: rendered as markdown (``summary.md``) or as aligned plain text (printed)."""

    title: str
    head: list[str]
    body: list[list[str]]
    notes: list[str] = field(default_factory=list)
    #: the columns (by name) that :meth:`text` may cut first: free text, never numbers
    cut: tuple[str, ...] = ("impl", "setting")

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.head) + " |",
                 "|---" * len(self.head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.body]
        for note in self.notes:
            lines += ["", note]
        return "\n".join(lines) + "\n"

    def text(self, width: int = WIDTH) -> str:
        """Columns two spaces apart, numbers right-aligned; a table wider than ``width`` has
        its free-text cells (:attr:`cut`; then the widest) cut, ending in "…", until it fits;
        notes wrapped at ``width``."""
        cols = list(zip(self.head, *self.body, strict=True))
        widths = [max(len(c) for c in col) for col in cols]
        free = [i for i, h in enumerate(self.head) if h in self.cut]
        while sum(widths) + 2 * (len(widths) - 1) > width:
            cuttable = [i for i in free if widths[i] > 12] or range(len(widths))
            widths[max(cuttable, key=lambda i: widths[i])] -= 1
        numeric = [all(_numeric(c) for c in col[1:]) for col in cols]

        def line(cells: list[str]) -> str:
            out = []
            for c, w, right in zip(cells, widths, numeric, strict=True):
                c = c if len(c) <= w else c[:w - 1] + "…"
                out.append(c.rjust(w) if right else c.ljust(w))
            return "  ".join(out).rstrip()

        lines = [self.title, line(self.head), line(["-" * w for w in widths])]
        lines += [line(row) for row in self.body]
        lines += [fill(n, width, subsequent_indent="  ") for n in self.notes]
        return "\n".join(lines) + "\n"


def _numeric(cell: str) -> bool:
    try:
        float(cell.split(" ")[0].rstrip("x"))
    except ValueError:
        return cell in ("–", "", "failed")
    return True


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


def _arch(r: dict[str, Any]) -> str:
    from spikegrad.adapters.network import PRESETS

    arch = r.get("arch")
    return f"network {arch}" + (f" ({PRESETS[arch]})" if arch in PRESETS else "")


def _images(r: dict[str, Any]) -> str:
    n_train = r.get("train_images") or r.get("train_subset")
    n_test = r.get("test_images") or r.get("test_subset")
    return (f"{'all' if n_train is None else _count(n_train)} training / "
            f"{'all' if n_test is None else _count(n_test)} test images")


#: the settings of a training row in words: (keys, words); empty words are left out
TRAIN_WORDS: list[tuple[tuple[str, ...], Callable[[dict[str, Any]], str]]] = [
    (("dataset",), lambda r: DATASET_NAMES.get(r["dataset"], str(r["dataset"]))),
    (("arch",), _arch),
    (("T",), lambda r: f"T={r['T']}"),
    (("batch_size",), lambda r: f"batch {r.get('batch_size')}"),
    (("lr",), lambda r: ("each recipe's learning rate" if r.get("lr") is None
                         else f"learning rate {r['lr']:g}")),
    (("device", "amp"), lambda r: f"{r['device']}{' with AMP' if r.get('amp') else ''}"),
    (("train_subset", "test_subset"), _images),
    (("world_size",), lambda r: (f"{r['world_size']} processes"
                                 if (r.get("world_size") or 1) > 1 else "")),
    (("seed",), lambda r: f"seed {r['seed']}"),
]
SPEED_WORDS: list[tuple[tuple[str, ...], Callable[[dict[str, Any]], str]]] = [
    (("batch",), lambda r: f"batch {r['batch']}"),
    (("device",), lambda r: str(r["device"])),
    (("threads",), lambda r: f"{r['threads']} torch threads" if r.get("threads") else ""),
]


def settings(rows: list[dict[str, Any]], words=None) -> tuple[list[str], Callable]:
    """What ``rows`` share, in words (for a title or a "Setting:" line), and a function giving
    a row's settings that differ between them (for a column; "" when none differ)."""
    words = TRAIN_WORDS if words is None else words
    rep = next((r for r in rows if r.get("status") == "ok"), rows[0]) if rows else {}
    shared, varying = [], []
    for keys, fn in words:
        if len({tuple(r.get(k) for k in keys) for r in rows}) <= 1:
            if rep and fn(rep):
                shared.append(fn(rep))
        else:
            varying.append(fn)

    def differing(r: dict[str, Any]) -> str:
        return ", ".join(w for w in (fn(r) for fn in varying) if w)

    return shared, differing


def loaded(r: dict[str, Any]) -> bool:
    """Whether the machine was busier than its cores while this row was measured."""
    load, cores = r.get("load_avg"), r.get("cpu_cores")
    return bool(load and cores and max(load) > cores)


def _loss(r: dict[str, Any]) -> str:
    """The row's training loss by name (rows written before ``loss`` was recorded: its
    recipe's)."""
    loss = r.get("loss")
    if loss is None:
        from suite import recipes

        try:
            loss = recipes.recipe(r["rule"], r.get("recipe") or "paper").loss
        except ValueError:
            return "?"
    return LOSS_NAMES.get(loss, loss)


def _failure(r: dict[str, Any], differing: Callable, terminal: bool) -> str:
    what = ", ".join(w for w in (r.get("recipe"), differing(r)) if w)
    err = (r.get("error") or "").strip()
    if terminal:
        err = err.splitlines()[0][:300] if err else ""
    return (f"{r['framework']} {r['rule']} ({what}) failed after {r['epoch'] or 0} epochs: "
            f"{err}")


def train_tables(rows: list[dict[str, Any]], epochs: int | None = None,
                 terminal: bool = False) -> list[Table | str]:
    """A table per framework and a cross-framework one, after a "Setting:" line; the
    terminal's tables leave out the columns only summary.md has room for."""
    finals = final_rows(rows, epochs)
    if not finals:
        return []
    shared, differing = settings(finals)
    out: list[Table | str] = [f"Training: {', '.join(shared)}."]
    extra = ["setting"] if any(differing(r) for r in finals) else []
    if terminal:
        head = ["rule", "recipe", *extra, "epochs", "acc %", "best %", "train loss", "s/epoch",
                "ms/step", "impl"]
    else:
        head = ["rule", "recipe", *extra, "epochs", "test acc %", "best test acc %", "loss",
                "train loss", "test loss", "s/epoch", "fwd ms/step", "bwd ms/step", "peak MB",
                "impl", "spike rate per layer", "ACs/sample", "MACs/sample"]
    for fw in sorted({r["framework"] for r in finals}):
        table = Table(f"{fw}: test accuracy after the last epoch, cost per epoch and per "
                      "training step (median)" if terminal else f"{fw} (training)", head, [])
        for r in sorted((r for r in finals if r["framework"] == fw), key=_order):
            first = [r["rule"], r.get("recipe") or "–", *([differing(r)] if extra else []),
                     str(r["epoch"] or 0)]
            if r.get("status") == "failed":
                table.body.append(first + ["failed"] + ["–"] * (len(head) - len(first) - 1))
                table.notes.append(_failure(r, differing, terminal))
                continue
            s_epoch = (_f(r.get("epoch_train_s"), ".0f")
                       + (" (loaded)" if loaded(r) else ""))
            fwd, bwd = _f(r["step_ms_forward"], ".1f"), _f(r["step_ms_backward"], ".1f")
            if terminal:
                impl = (r["impl"] or "–").removeprefix(f"{fw} ")  # the table's host: its title
                table.body.append(first + [
                    _f(r["test_acc"]), _f(r["best_test_acc"]),
                    f"{_loss(r)} {_f(r.get('train_loss'), '.4f')}", s_epoch,
                    _f(_step_ms(r), ".1f"), impl])
                continue
            syn = r.get("synops") or {}
            table.body.append(first + [
                _f(r["test_acc"]), _f(r["best_test_acc"]), _loss(r),
                _f(r.get("train_loss"), ".4f"), _f(r.get("test_loss"), ".4f"), s_epoch, fwd,
                bwd, _f(r["peak_mem_mb"], ".0f"), r["impl"] or "–", _rates(r["spike_rate"]),
                _sci(syn.get("acs")), _sci(syn.get("macs"))])
        out.append(table)
    if any(loaded(r) for r in finals):
        out.append("(loaded): the load average exceeded the CPU cores during that epoch, so "
                   "its times are inflated by other work; its accuracy is not affected.")
    by_setting: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in finals:
        by_setting.setdefault(tuple(r.get(k) for k in SETTING), {})[r["framework"]] = r
    pairs = {k: v for k, v in by_setting.items() if len(v) == 2}
    if pairs:
        cross = Table("Cross-framework: best test accuracy % and ms per training step of the same "
                      "rule, recipe and setting in both hosts", [
                          "rule", "recipe", *extra, "snntorch acc %", "spikingjelly acc %",
                          "Δ sj-snn", "snntorch ms/step", "spikingjelly ms/step"], [])
        for key in sorted(pairs, key=lambda k: (_order({"rule": k[0]}), str(k))):
            a, b = pairs[key]["snntorch"], pairs[key]["spikingjelly"]
            delta = (None if a["best_test_acc"] is None or b["best_test_acc"] is None
                     else b["best_test_acc"] - a["best_test_acc"])
            cross.body.append([key[0], key[1] or "–", *([differing(a)] if extra else []),
                               _acc(a), _acc(b),
                               _f(delta, "+.2f"), _f(_step_ms(a), ".1f"),
                               _f(_step_ms(b), ".1f")])
        out.append(cross)
    return out


def _acc(r: dict[str, Any]) -> str:
    return "failed" if r.get("status") == "failed" else _f(r["best_test_acc"])


def _step_ms(r: dict[str, Any]) -> float | None:
    f, b = r.get("step_ms_forward"), r.get("step_ms_backward")
    return None if f is None or b is None else f + b


def _order(r: dict[str, Any]) -> int:
    from suite.recipes import RULES

    return RULES.index(r["rule"]) if r["rule"] in RULES else len(RULES)


def speed_tables(rows: list[dict[str, Any]], terminal: bool = False) -> list[Table | str]:
    speed = [r for r in rows if r.get("mode") == "speed"]
    if not speed:
        return []
    shared, differing = settings(speed, SPEED_WORDS)
    extra = ["setting"] if any(differing(r) for r in speed) else []
    native = {(r["framework"], r["what"], r["neurons"], r["batch"], r["T"], r["device"],
               r.get("threads")): _step_ms(r)
              for r in speed if r["rule"] == "native" and r.get("status") == "ok"}
    peak = any(r.get("peak_mem_mb") is not None for r in speed)
    # a compiled case's eager twin: the same rule and size, "-compiled" dropped from "what"
    eager = {(r["framework"], r["rule"], r["what"], r["neurons"], r["batch"], r["T"],
              r["device"], r.get("threads")): _step_ms(r)
             for r in speed if r.get("status") == "ok" and not r["what"].endswith("-compiled")}
    speedup = any(r["what"].endswith("-compiled") for r in speed)
    limit = any(r.get("fused_bytes_per_neuron_step") is not None for r in speed)
    out: list[Table | str] = [
        f"Speed: {', '.join(shared)}; milliseconds per call (median); \"vs native\" is the "
        "time over the host's own LIF at the same size (below 1: faster)"
        + ("; \"compile gain\" is a compiled case's eager time over its compiled time "
           "(same rule and size; above 1: compiling pays)." if speedup else "."),
        *_bandwidth_lines(speed, limit)]
    for fw in sorted({r["framework"] for r in speed}):
        table = Table(f"{fw} (speed)", [
            "what", "rule", "impl", *extra, "neurons", "T", "forward ms", "backward ms",
            "total ms", "vs native", *(["compile gain"] if speedup else []),
            *(["peak MB"] if peak else [])], [])
        for r in sorted((r for r in speed if r["framework"] == fw),
                        key=lambda r: (r["what"], r["neurons"], r["T"], r["rule"] != "native",
                                       _order(r))):
            first = [r["what"], r["rule"], r["impl"] or "–", *([differing(r)] if extra else []),
                     str(r["neurons"]), str(r["T"])]
            if r.get("status") != "ok":
                table.body.append(first + [r.get("status") or "?"]
                                  + ["–"] * (len(table.head) - len(first) - 1))
                err = (r.get("error") or "").strip()
                if terminal and err:
                    err = err.splitlines()[0][:300]
                table.notes.append(f"{r['what']} {r['rule']} N={r['neurons']} T={r['T']}: "
                                   f"{r.get('status')}: {err}")
                continue
            base = native.get((fw, r["what"], r["neurons"], r["batch"], r["T"], r["device"],
                               r.get("threads")))
            total = _step_ms(r)
            ratio = None if base in (None, 0) or total is None else total / base
            gain = None
            if r["what"].endswith("-compiled") and total:
                twin = eager.get((fw, r["rule"], r["what"].removesuffix("-compiled"),
                                  r["neurons"], r["batch"], r["T"], r["device"],
                                  r.get("threads")))
                gain = None if twin is None else twin / total
            table.body.append(first + [
                _f(r["step_ms_forward"], ".3f"), _f(r["step_ms_backward"], ".3f"),
                _f(total, ".3f"), _f(ratio, ".2f") + ("x" if ratio is not None else ""),
                *([_f(gain, ".2f") + ("x" if gain is not None else "")] if speedup else []),
                *([_f(r["peak_mem_mb"], ".1f")] if peak else [])])
        out.append(table)
        if limit:
            out.append(_limit_table(fw, [r for r in speed if r["framework"] == fw], extra,
                                    differing))
    return out


def _limit_table(fw: str, rows: list[dict[str, Any]], extra: list[str],
                 differing: Callable) -> Table:
    """The neuron-alone rows against the memory limit: the fused path's bytes per
    neuron-step, the achieved bandwidth, and its share of the copy's."""
    table = Table(f"{fw} (speed against the memory limit: the neuron alone)", [
        "what", "rule", "impl", *extra, "neurons", "T", "fwd B", "bwd B", "fwd GB/s",
        "bwd GB/s", "GB/s", "of copy"], [])
    for r in sorted((r for r in rows if r.get("status") == "ok"
                     and r.get("fused_bytes_per_neuron_step") is not None),
                    key=lambda r: (r["what"], r["neurons"], r["T"], _order(r))):
        share = r.get("of_copy")
        table.body.append([
            r["what"], r["rule"], r["impl"] or "–", *([differing(r)] if extra else []),
            str(r["neurons"]), str(r["T"]),
            _f(r["fused_bytes_per_neuron_step_forward"], ".1f"),
            _f(r["fused_bytes_per_neuron_step_backward"], ".1f"),
            _f(r.get("gbps_forward"), ".2f"), _f(r.get("gbps_backward"), ".2f"),
            _f(r.get("gbps"), ".2f"), "–" if share is None else f"{100 * share:.1f} %"])
    return table


def _bandwidth_lines(speed: list[dict[str, Any]], limit: bool) -> list[str]:
    """The memory bandwidth the rows were measured against (one line per distinct copy
    measurement: rows reused from earlier runs carry their own) and what the columns mean."""
    copies = sorted({(r["device"], r.get("threads"), r["copy_mib"], round(r["copy_gbps"], 2),
                      round(r.get("copy_gbps_best") or r["copy_gbps"], 2), r.get("copy_blocks"))
                     for r in speed if r.get("copy_gbps")}, key=str)
    lines = [f"Memory bandwidth ({dev}{f', {th} threads' if th else ''}): a copy of {mib} MiB "
             f"(dst.copy_(src), read + write bytes counted, GB = 1e9 bytes), {med:.2f} GB/s "
             f"median of {n} blocks (best {best:.2f}), measured in the run that timed the rows."
             for dev, th, mib, med, best, n in copies]
    if limit:
        lines.append(
            "Against the memory limit (the neuron alone, spikegrad's rules): \"fwd B\" / "
            "\"bwd B\" are the bytes the rule's fused kernels (Triton / CuPy) move per "
            "neuron-step (T x batch x neurons of them), each distinct element read or written "
            "once (spikegrad/rules/traffic.py; float32, the gradient of the output only); "
            "\"fwd GB/s\" / \"bwd GB/s\": those bytes over the measured forward / backward "
            "time, \"GB/s\" both over both; \"of copy\": GB/s over the copy's bandwidth. The "
            "bytes are those of the fused path whatever \"impl\" ran: the torch references "
            "(and NA's C++ kernel) that run on the CPU move more, so their share says how far "
            "they are from what the fused path would need. The host's LIF has no byte model.")
    return lines


def _render(parts: list[Table | str], terminal: bool) -> str:
    if terminal:
        return "\n".join(p.text() if isinstance(p, Table)
                         else fill(p, WIDTH) + "\n" for p in parts)
    return "\n".join(p.markdown() if isinstance(p, Table) else p + "\n" for p in parts)


def summary(rows: list[dict[str, Any]], header: str, epochs: int | None = None) -> str:
    """The markdown of ``summary.md``: a table per framework and a cross-framework table
    (training configurations at their last epoch up to ``epochs``), then the speed tables."""
    body = _render(train_tables(rows, epochs) + speed_tables(rows), terminal=False)
    return f"{header}\n\n{body}"


def printed(rows: list[dict[str, Any]], header: str, epochs: int | None = None) -> str:
    """The summary for a terminal: the markdown ``header`` as plain text and the tables
    aligned in columns, every line at most :data:`WIDTH` characters."""
    text = []
    for para in header.split("\n\n"):
        para = para.strip().lstrip("#").strip().strip("`")
        text.append(fill(para, WIDTH, subsequent_indent="  ", break_on_hyphens=False,
                                  break_long_words=True))
    body = _render(train_tables(rows, epochs, terminal=True) + speed_tables(rows, terminal=True),
                   terminal=True)
    return "\n".join(text) + "\n\n" + body
