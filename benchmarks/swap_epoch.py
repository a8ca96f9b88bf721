"""One full Fashion-MNIST epoch of every example (each rule swapped into each host), several
seeds: the runner and the table of ``benchmarks/results/swap_learning_epoch.md``.

Each run is the example script as a user runs it (``python examples/<host>/<rule>.py`` with
``--train-images 60000 --test-images 10000``), in a fresh process, from a snapshot of a commit
(``git archive``, so that edits in the checkout while the grid runs change nothing); its
stdout/stderr go to ``<logs>/<name>.log`` and its result line to ``<logs>/runs.jsonl``. Runs
already in that file are not run again, so the grid can be started in pieces and resumed.

    # run a piece of the grid in the background (2 jobs at a time, 1 thread each)
    OMP_NUM_THREADS=1 nohup nice -n 5 python benchmarks/swap_epoch.py run --jobs 2 \\
        --hosts snntorch_tutorial --rules baseline na --seeds 0 1 2 > /tmp/swap_runs/grid.log &
    # the table, from whatever has finished
    python benchmarks/swap_epoch.py table --out benchmarks/results/swap_learning_epoch.md
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOSTS = ("snntorch_tutorial", "spikingjelly_csnn")
RULES = ("baseline", "reset_term", "na", "bpsa_bpta", "ttfs", "multi_strength")
#: (host, rule) whose --recipe trains exactly as the default (nothing to add): run once
SAME_WITH_RECIPE = {("snntorch_tutorial", "baseline"), ("spikingjelly_csnn", "baseline"),
                    ("snntorch_tutorial", "multi_strength")}
#: rules whose CSNN run does not depend on --swap (the host's node everywhere)
NO_SWAP = {"baseline", "ttfs"}
#: (host, rule) -> [(swap, --neuron-option)]: the setting that trains, where a rule's default
#: is more than 5 points below the host for a reason of the rule (its default row stays)
FIXES = {("snntorch_tutorial", "na"): [(None, "reset_mechanism=subtract")],
         ("spikingjelly_csnn", "multi_strength"): [("all", "max_strength=1")]}
RESULT = re.compile(r"^result: .*test_acc=(?P<acc>[\d.]+)% .*final_loss=(?P<loss>\S+) "
                    r"finite=(?P<finite>\S+) min_weight_grad=(?P<grad>\S+) "
                    r"train_s=(?P<train>[\d.]+) total_s=(?P<total>[\d.]+)", re.M)
_lock = threading.Lock()


def configs(hosts, rules, swaps, recipes, fixes=True):
    """(host, rule, recipe, swap, option) of the grid; swap is None for the tutorial (every
    layer); option is a --neuron-option or None."""
    for host in hosts:
        for rule in rules:
            for recipe in recipes:
                if recipe and (host, rule) in SAME_WITH_RECIPE:
                    continue
                if host == "snntorch_tutorial":
                    yield host, rule, recipe, None, None
                    continue
                for swap in (["all"] if rule in NO_SWAP else swaps):
                    yield host, rule, recipe, swap, None
            if fixes and False in recipes:
                for swap, option in FIXES.get((host, rule), []):
                    if swap is None or swap in swaps:
                        yield host, rule, False, swap, option


def name(host, rule, recipe, swap, option, seed) -> str:
    return "-".join(x for x in (host, rule, "recipe" if recipe else "default", swap,
                                option and option.replace("=", "_"), f"seed{seed}") if x)


def command(host, rule, recipe, swap, option, seed, channels) -> list[str]:
    cmd = ["python", f"examples/{host}/{rule}.py", "--train-images", "60000", "--test-images",
           "10000", "--epochs", "1", "--seed", str(seed)]
    if host == "spikingjelly_csnn":
        cmd += ["--channels", str(channels), "--swap", swap]
    if option:
        cmd += ["--neuron-option", option]
    return cmd + (["--recipe"] if recipe else [])


def snapshot(ref: str, into: Path) -> tuple[Path, str]:
    """``git archive`` of ``ref`` unpacked under ``into``; returns (tree, commit)."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout.strip()
    tree = into / f"tree-{commit[:10]}"
    if not tree.exists():
        tmp = Path(tempfile.mkdtemp(dir=into))
        archive = subprocess.run(["git", "archive", commit], cwd=REPO, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(tree)
    return tree, commit


def done(jsonl: Path) -> dict[str, dict]:
    rows = {}
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            row = json.loads(line)
            if "acc" in row:
                rows[row["name"]] = row
    return rows


def run_one(cfg, seed, channels, tree: Path, commit: str, logs: Path) -> dict:
    host, rule, recipe, swap, option = cfg
    cmd = command(host, rule, recipe, swap, option, seed, channels)
    n = name(host, rule, recipe, swap, option, seed)
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS":
           os.environ.get("OMP_NUM_THREADS", "1")}
    start, started = time.perf_counter(), datetime.datetime.now().isoformat(timespec="seconds")
    with open(logs / f"{n}.log", "w") as log:
        log.write(f"# {shlex.join(cmd)}\n# tree {tree} (commit {commit}), started {started}\n")
        log.flush()
        proc = subprocess.run([sys.executable, *cmd[1:]], cwd=tree, env=env, stdout=log,
                              stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    out = (logs / f"{n}.log").read_text()
    row = {"name": n, "host": host, "rule": rule, "recipe": recipe, "swap": swap,
           "option": option, "seed": seed,
           "channels": channels if host == "spikingjelly_csnn" else None,
           "command": shlex.join(cmd), "commit": commit, "rc": proc.returncode,
           "wall_s": round(wall, 1), "started": started}
    match = RESULT.search(out)
    if match:
        row.update(acc=float(match["acc"]), loss=float(match["loss"]),
                   finite=match["finite"] == "True", min_grad=float(match["grad"]),
                   train_s=float(match["train"]), total_s=float(match["total"]),
                   line=next(ln for ln in out.splitlines() if ln.startswith("result: ")),
                   warnings=[ln.strip() for ln in out.splitlines() if "Warning:" in ln])
    with _lock, open(logs / "runs.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{n}: {row.get('acc', 'FAILED rc=' + str(proc.returncode))} ({wall:.0f} s)",
          flush=True)
    return row


def cmd_run(args) -> None:
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    tree, commit = snapshot(args.ref, logs)
    have = set(done(logs / "runs.jsonl")) | set(args.exclude)
    todo = [(cfg, seed) for seed in args.seeds
            for cfg in configs(args.hosts, args.rules, args.swaps, args.recipes,
                               not args.no_fixes)
            if name(*cfg, seed) not in have]
    print(f"{len(todo)} runs from commit {commit} ({tree}), {args.jobs} at a time", flush=True)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda job: run_one(job[0], job[1], args.channels, tree, commit, logs),
                      todo))


def cmd_adopt(args) -> None:
    """Rows for runs that finished after their runner was stopped (the log is the record)."""
    logs = Path(args.logs)
    have = done(logs / "runs.jsonl")
    every = {name(*cfg, seed): (cfg, seed) for seed in range(10)
             for cfg in configs(HOSTS, RULES, ["hidden", "all"], [False, True])}
    for n in args.names:
        if n in have:
            continue
        (host, rule, recipe, swap, option), seed = every[n]
        out = (logs / f"{n}.log").read_text()
        header = out.splitlines()[:2]
        commit = header[1].split("commit ")[1].split(")")[0]
        started = header[1].split("started ")[1]
        match = RESULT.search(out)
        if not match:
            print(f"{n}: no result line yet")
            continue
        wall = (datetime.datetime.fromtimestamp((logs / f"{n}.log").stat().st_mtime)
                - datetime.datetime.fromisoformat(started)).total_seconds()
        row = {"name": n, "host": host, "rule": rule, "recipe": recipe, "swap": swap,
               "option": option, "seed": seed,
               "channels": args.channels if host == "spikingjelly_csnn" else None,
               "command": header[0][2:], "commit": commit, "rc": 0, "wall_s": round(wall, 1),
               "started": started, "adopted": True,
               "acc": float(match["acc"]), "loss": float(match["loss"]),
               "finite": match["finite"] == "True", "min_grad": float(match["grad"]),
               "train_s": float(match["train"]), "total_s": float(match["total"]),
               "line": next(ln for ln in out.splitlines() if ln.startswith("result: ")),
               "warnings": [ln.strip() for ln in out.splitlines() if "Warning:" in ln]}
        with open(logs / "runs.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{n}: adopted {row['acc']}")


def _short(warning: str) -> str:
    """``...: RuntimeWarning: Node: k of this layer's n neurons (p %) ...`` -> ``Node k/n``."""
    m = re.search(r"RuntimeWarning: (\w+): (?:(\d+) of this layer's (\d+) neurons( \(\d+ %\))?"
                  r"|this layer emitted no spike)", warning)
    if not m:
        return warning[:50]
    if m[2] is None:
        return f"{m[1]} silent sequence"
    return f"{m[1]} {m[2]}/{m[3]} {'no gradient' if m[4] else 'output never spikes'}"


def _fmt(accs: list[float]) -> str:
    if not accs:
        return "—"
    mean = statistics.mean(accs)
    spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
    return f"{mean:.2f}{spread} ({', '.join(f'{a:.1f}' for a in accs)})"


def cmd_table(args) -> None:
    rows = list(done(Path(args.logs) / "runs.jsonl").values())
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["host"], r["rule"], r["recipe"], r["swap"], r.get("option")),
                          []).append(r)
    ref = {h: {r["seed"]: r["acc"] for r in groups.get((h, "baseline", False, s, None), [])}
           for h, s in (("snntorch_tutorial", None), ("spikingjelly_csnn", "all"))}
    out = ["| host | rule | swap | setting | test acc % mean ± sd (seeds) | Δ vs host, same "
           "seeds | wall s per run | warnings |", "|---|---|---|---|---|---|---|---|"]
    order = {r: i for i, r in enumerate(RULES)}
    for key in sorted(groups, key=lambda k: (HOSTS.index(k[0]), order[k[1]], k[2],
                                             k[3] or "", k[4] or "")):
        host, rule, recipe, swap, option = key
        rs = sorted(groups[key], key=lambda r: r["seed"])
        accs = [r["acc"] for r in rs]
        paired = [r["acc"] - ref[host][r["seed"]] for r in rs if r["seed"] in ref[host]]
        delta = ("ref" if rule == "baseline" else f"{statistics.mean(paired):+.2f}"
                 + (f" (seeds {', '.join(str(r['seed']) for r in rs)})"
                    if len(paired) < len(ref[host]) else "") if paired else "")
        nwarn = sum(bool(r["warnings"]) for r in rs)
        said = sorted({_short(w) for r in rs for w in r["warnings"]})
        setting = (f"`{option}`" if option else "default = recipe"
                   if (host, rule) in SAME_WITH_RECIPE else "recipe" if recipe else "default")
        out.append(f"| {host} | {rule} | {swap or 'all'} | {setting} | {_fmt(accs)} | {delta} | "
                   f"{statistics.mean(r['wall_s'] for r in rs):.0f} | "
                   f"{f'{nwarn}/{len(rs)} runs: ' + '; '.join(said) if nwarn else '—'} |")
    commits = sorted({r["commit"][:10] for r in rows})
    started = sorted(r["started"] for r in rows)
    head = [
        "# Every rule swapped into each host's example: one full Fashion-MNIST epoch, 3 seeds",
        "",
        f"{len(rows)} runs of `python examples/<host>/<rule>.py --train-images 60000 "
        "--test-images 10000 --epochs 1 --seed S` (CSNN: `--channels 16 --swap hidden|all`; "
        "`--recipe`, `--neuron-option` where the row says), each in a fresh process from a "
        "`git archive` of its commit, made with `python benchmarks/swap_epoch.py run` and this "
        "table with `python benchmarks/swap_epoch.py table --out "
        "benchmarks/results/swap_learning_epoch.md`. "
        f"Commits: {', '.join(commits)} (the rules' arithmetic is the same at all of them; "
        f"later commits changed warnings, host contracts and tests). Runs {started[0]} to "
        f"{started[-1]} on a 2-core CPU, 2 runs at a time with 1 thread each, next to other "
        "jobs (load 2-7): wall times are that machine's under that load. Δ: mean over seeds "
        "of the run minus the host's own neuron on the same seed. Warnings: the rule-limit "
        "warnings the runs printed (spikegrad.adapters.silence).",
        "", ""]
    text = "\n".join(head + out) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--hosts", nargs="+", default=list(HOSTS), choices=HOSTS)
    r.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    r.add_argument("--swaps", nargs="+", default=["hidden", "all"], choices=("hidden", "all"))
    r.add_argument("--recipes", nargs="+", type=lambda s: s == "recipe",
                   default=[False, True], help="default and/or recipe")
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--channels", type=int, default=16)
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--no-fixes", action="store_true", help="skip the FIXES rows")
    r.add_argument("--exclude", nargs="+", default=[], metavar="NAME",
                   help="runs not to start (e.g. still running elsewhere; see adopt)")
    r.add_argument("--ref", default="HEAD", help="the commit to run (a git archive snapshot)")
    r.add_argument("--logs", default="/tmp/swap_runs")
    a = sub.add_parser("adopt", help="record finished runs whose runner was stopped: their "
                                     "logs have a result line but runs.jsonl has no row")
    a.add_argument("names", nargs="+")
    a.add_argument("--logs", default="/tmp/swap_runs")
    a.add_argument("--channels", type=int, default=16)
    t = sub.add_parser("table")
    t.add_argument("--logs", default="/tmp/swap_runs")
    t.add_argument("--out", default=None)
    args = p.parse_args(argv)
    {"run": cmd_run, "table": cmd_table, "adopt": cmd_adopt}[args.cmd](args)


if __name__ == "__main__":
    main()
