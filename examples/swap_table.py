"""Measure every example: each rule swapped into each host network, default-constructed and
with its recipe, against the host's own neuron in the same budget; write one markdown table.

Each run is the example script as a user runs it (a fresh ``python examples/<host>/<rule>.py``
process); its result line is kept verbatim. Runs already in ``--raw`` are not run again.

    nice -n 5 python examples/swap_table.py --out benchmarks/results/swap_learning.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOSTS = {"snntorch_tutorial": "seed-002 snntorch tutorial MLP",
         "spikingjelly_csnn": "spikingjelly's Fashion-MNIST CSNN"}
RULES = ("baseline", "reset_term", "na", "bpsa_bpta", "ttfs", "multi_strength")
#: runs whose --recipe trains exactly as the default does (nothing to add), run once
SAME_WITH_RECIPE = {("snntorch_tutorial", "baseline"), ("spikingjelly_csnn", "baseline"),
                    ("snntorch_tutorial", "multi_strength")}
RESULT = re.compile(r"^result: .*test_acc=(?P<acc>[\d.]+)% .*final_loss=(?P<loss>\S+) "
                    r"finite=(?P<finite>\S+) .*train_s=(?P<train>[\d.]+) "
                    r"total_s=(?P<total>[\d.]+)", re.M)


def _command(host: str, rule: str, recipe: bool, seed: int, budget: list[str]) -> list[str]:
    return ["python", f"examples/{host}/{rule}.py", *budget, "--seed", str(seed),
            *(["--recipe"] if recipe else [])]


def _run(cmd: list[str]) -> dict[str, object]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=HERE.parent, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    match = RESULT.search(proc.stdout)
    row: dict[str, object] = {"command": shlex.join(cmd), "rc": proc.returncode, "wall_s": wall}
    if match is None:
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return row
    row.update(acc=float(match["acc"]),
               loss=float(match["loss"]), finite=match["finite"] == "True",
               train_s=float(match["train"]), total_s=float(match["total"]))
    row["line"] = next(ln for ln in proc.stdout.splitlines() if ln.startswith("result: "))
    return row


def _machine() -> str:
    from importlib.metadata import version

    import snntorch
    import torch

    cpu = platform.processor() or platform.machine()
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} CPU cores visible, torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), snntorch "
            f"{snntorch.__version__}, spikingjelly {version('spikingjelly')}, Python "
            f"{platform.python_version()}")


def _goal(delta: float | None, recipe: bool) -> str:
    if delta is None:
        return ""
    bound = 2.0 if recipe else 5.0
    return "met" if delta >= -bound else f"**not met** (< -{bound:g})"


def table(rows: dict[str, dict], seeds: list[int], budget: list[str]) -> list[str]:
    """Markdown rows: rule × host × {default, recipe} -> accuracy (mean over seeds), Δ, time."""
    out = ["| host | rule | setting | test acc % | Δ vs host neuron (points) | goal | "
           "train s | whole run s |", "|---|---|---|---|---|---|---|---|"]
    for host in HOSTS:
        ref = _mean(rows, host, "baseline", False, seeds, budget)
        for rule in RULES:
            for recipe in (False, True):
                if recipe and (host, rule) in SAME_WITH_RECIPE:
                    continue
                cell = _mean(rows, host, rule, recipe, seeds, budget)
                setting = ("default" if not recipe else "recipe") + (
                    " = recipe (nothing to add)" if (host, rule) in SAME_WITH_RECIPE else "")
                if cell is None:
                    out.append(f"| {host} | {rule} | {setting} | failed or missing | | | | |")
                    continue
                acc, train_s, total_s, accs = cell
                delta = None if ref is None or rule == "baseline" else acc - ref[0]
                shown = f"{acc:.2f}" + (f" ({', '.join(f'{a:.1f}' for a in accs)})"
                                        if len(accs) > 1 else "")
                out.append(f"| {host} | {rule} | {setting} | {shown} | "
                           f"{'' if delta is None else f'{delta:+.2f}'} | "
                           f"{'reference' if rule == 'baseline' else _goal(delta, recipe)} | "
                           f"{train_s:.0f} | {total_s:.0f} |")
    return out


def _mean(rows, host, rule, recipe, seeds, budget):
    got = [rows.get(shlex.join(_command(host, rule, recipe, s, budget))) for s in seeds]
    if not got or any(r is None or "acc" not in r or not r["finite"] for r in got):
        return None
    n = len(got)
    return (sum(r["acc"] for r in got) / n, sum(r["train_s"] for r in got) / n,
            sum(r["wall_s"] for r in got) / n, [r["acc"] for r in got])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--hosts", nargs="+", default=list(HOSTS), choices=list(HOSTS))
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--raw", default="/tmp/swap_learning.jsonl",
                   help="one JSON row per run, reused by later invocations")
    p.add_argument("--out", default=None, help="write the markdown here (else print it)")
    args = p.parse_args(argv)
    budget = ["--train-images", str(args.train_images), "--test-images", str(args.test_images),
              "--epochs", str(args.epochs)]
    raw = Path(args.raw)
    rows = {}
    if raw.exists():
        rows = {r["command"]: r for r in map(json.loads, raw.read_text().splitlines())}
    started = datetime.datetime.now().isoformat(timespec="seconds")
    for host in args.hosts:
        for rule in args.rules:
            for recipe in (False, True):
                if recipe and (host, rule) in SAME_WITH_RECIPE:
                    continue
                for seed in args.seeds:
                    cmd = _command(host, rule, recipe, seed, budget)
                    key = shlex.join(cmd)
                    if key in rows and "acc" in rows[key]:
                        continue
                    row = _run(cmd)
                    rows[key] = row
                    with raw.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(row.get("line") or f"FAILED {key}: {row.get('error')}", flush=True)
    text = [f"Machine: {_machine()}. Table run started {started} (runs reused from {raw}).", "",
            *table(rows, args.seeds, budget), "", "Commands (run from the repository root; "
            "`nice -n 5` on a shared machine) and each run's result line:", ""]
    for host in HOSTS:
        for rule in RULES:
            for recipe in (False, True):
                if recipe and (host, rule) in SAME_WITH_RECIPE:
                    continue
                for seed in args.seeds:
                    key = shlex.join(_command(host, rule, recipe, seed, budget))
                    if key in rows:
                        r = rows[key]
                        text += [f"- `{key}` ({r['wall_s']:.0f} s)", "",
                                 f"  `{r.get('line') or r.get('error')}`", ""]
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(text) + "\n")
    else:
        print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
