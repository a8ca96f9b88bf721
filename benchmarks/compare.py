"""Compare every gradient rule in snntorch and spikingjelly: accuracy and cost, CPU and GPU.

Train mode (default) trains the ``--arch`` network on ``--dataset`` once per (framework, rule,
recipe, seed) and records, per epoch: test accuracy (and the best so far), train time per
epoch and the median forward / backward / optimiser time per step, peak GPU memory, the spike
rate of every neuron layer and NeuroBench's effective synaptic operations (ACs for spike
inputs, MACs for analog ones, per sample), which implementation ran and why. Speed mode times
one neuron layer and a Linear + neuron training step per rule against the host's native LIF
over T in {4, 8, 16, 32} and layer sizes up to the Open Neuromorphic workload (GPU only), and
the seed-002 tutorial network eager and under torch.compile. Gradient mode measures how well each
rule's weight gradient agrees with an evolution-strategies estimate of the gradient of the
Gaussian-smoothed loss (cosine with a bootstrap band, sign agreement, loss-drop ratio).

Rules: ``baseline`` (the host's own LIF and surrogate), ``reset-term``, ``na``, ``bpsa-bpta``,
``ttfs``, ``multi-strength``; each trained by its paper's recipe (``--recipe paper``) or one
common recipe for all (``--recipe common``); see ``benchmarks/suite/recipes.py``.

Output in ``--out``: ``results.jsonl`` (one JSON object per measurement, of every command
that used this ``--out``), ``summary.md`` (a table per framework and a cross-framework table;
printed narrower, to fit 120 columns), ``accuracy.png``, ``cost.png`` (train mode) and
``speed.png`` (speed mode), and ``checkpoints/``. The summary and the plots show this
command's configurations only (rows that an earlier command left in ``--out`` are kept, and
reused when a command asks for the same configuration). Rerunning the
same command skips finished measurements and resumes an interrupted training from its last
completed epoch; a failed configuration is recorded with its error and the others go on.
Data-parallel: ``torchrun --nproc_per_node N benchmarks/compare.py ...`` (gloo on CPU, NCCL on
GPU; rank 0 writes the results).

Examples::

    python benchmarks/compare.py --quick   # 87 s on a quiet 2-core CPU, about 10-13 min loaded
    python benchmarks/compare.py --framework spikingjelly --epochs 3
    python benchmarks/compare.py --rules baseline na --recipe paper common --seed 0 1 2
    python benchmarks/compare.py --mode speed --device cuda
    python benchmarks/compare.py --mode gradient   # 20 min measured on a loaded 2-core machine
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import DATASETS, DatasetNotFound, check_subsets, load_dataset  # noqa: E402
from suite import gradient_run, metrics, plots, recipes, speed, train  # noqa: E402
from suite.store import CorruptResults, Store, atomic_write, fill, printed, summary  # noqa: E402

from spikegrad.adapters.network import PRESETS  # noqa: E402

#: what ``--quick`` sets (unless given explicitly): 87 s on a quiet 2-core CPU, 10-13 min loaded.
QUICK = {"epochs": 1, "train_subset": 4096, "test_subset": 1000, "min_run_time": 0.05}
DEFAULTS = {"epochs": 2, "train_subset": None, "test_subset": None, "min_run_time": 0.5}
#: train-mode options and their defaults (speed mode refuses them when given explicitly)
TRAIN_ONLY = {"recipe": ["paper"], "dataset": "fashion-mnist", "arch": "na-mnist", "seed": [0],
              "epochs": None, "lr": None, "train_subset": None, "test_subset": None,
              "data_dir": None}
INSTALL = {"snntorch": 'pip install "snntorch>=0.9,<1.1"  (or pip install -e ".[snntorch]")',
           "spikingjelly": 'pip install "spikingjelly==2.0.0"  (or pip install -e '
                           '".[spikingjelly]")'}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="compare.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]).replace("``", "`"))  # reST -> plain
    p.add_argument("--framework", choices=("snntorch", "spikingjelly", "both"), default="both",
                   help="host framework(s) to run every rule in (default: both)")
    p.add_argument("--rules", nargs="+", choices=recipes.RULES, default=list(recipes.RULES),
                   metavar="RULE", help=f"rules to compare, from {', '.join(recipes.RULES)} "
                   "(default: all; 'baseline' is the host's own surrogate-gradient LIF)")
    p.add_argument("--recipe", nargs="+", choices=recipes.RECIPES, default=None,
                   help="'paper': each rule's own loss, readout and optimiser; 'common': the "
                   "same loss and optimiser for all (default: paper; both may be given)")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="training data (default: fashion-mnist, found offline via the Debian "
                   "package dataset-fashion-mnist)")
    p.add_argument("--data-dir", default=None,
                   help="directory with the dataset's files (else $SPIKEGRAD_DATA, the Debian "
                   "location, then a download)")
    p.add_argument("--arch", default=None,
                   help=f"a layer spec such as '32C3-P2-128-10' or a preset: "
                   f"{', '.join(sorted(PRESETS))} (default: na-mnist = {PRESETS['na-mnist']}); "
                   "its last number must be the number of classes")
    p.add_argument("--T", type=int, default=None,
                   help="time steps per sample (default: 5; speed mode: 4, 8, 16 and 32)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs (default: {DEFAULTS['epochs']}; --quick: 1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="global batch size (split across torchrun processes; default: 64; "
                   "speed mode: 16)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate for every rule (default: each recipe's own)")
    p.add_argument("--seed", type=int, nargs="+", default=None,
                   help="seeds (one run per seed; default: 0)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda if available, else cpu")
    p.add_argument("--amp", action="store_true",
                   help="automatic mixed precision (float16 on CUDA, bfloat16 on CPU)")
    p.add_argument("--out", default="runs/compare",
                   help="output directory (default: runs/compare)")
    p.add_argument("--quick", action="store_true",
                   help="a small subset (87 s on a quiet 2-core CPU, 10-13 min loaded): 1 epoch "
                   "on 4 096 training and 1 000 test images (train), N=256 and T in {4, 8} "
                   "(speed); explicit options still win")
    p.add_argument("--mode", choices=("train", "speed", "gradient"), default="train",
                   help="train: accuracy and cost per rule; speed: layer and step timings "
                   "against the host's native LIF; gradient: how well each rule's weight "
                   "gradient points where the loss goes down, against an evolution-strategies "
                   "estimate of the smoothed loss's gradient (default: train)")
    p.add_argument("--speed-set", choices=speed.SETS, default="all",
                   help="speed mode: 'layers' (one layer and a Linear + neuron step over T and "
                   "sizes), 'tutorial' (the seed-002 tutorial network at T=25, eager and under "
                   "torch.compile, against the host's LIF the same way) or 'all' (default; "
                   "--quick leaves the compiled network out)")
    p.add_argument("--directions", type=int, default=None,
                   help="gradient mode: antithetic direction pairs N (default: "
                   f"{gradient_run.DEFAULTS['directions']})")
    p.add_argument("--sigma", type=float, default=None,
                   help="gradient mode: perturbation scale σ in weight units (default: "
                   f"{gradient_run.DEFAULTS['sigma']})")
    p.add_argument("--gradient-dims", type=int, default=None,
                   help="gradient mode: weights measured per layer, a fixed random subset "
                   f"(default: {gradient_run.DEFAULTS['dims']}; 0: all, which needs far more "
                   "directions)")
    p.add_argument("--train-subset", type=int, default=None,
                   help="train on a fixed random subset of N images (default: all)")
    p.add_argument("--test-subset", type=int, default=None,
                   help="evaluate on a fixed random subset of N test images (default: all)")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="speed mode: seconds of timing per measurement (default: 0.5)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per process (default: torch's choice)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run configurations recorded as failed again")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    return p


def _settle(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    """Fill the defaults (those --quick and --mode change), and check the numbers."""
    if args.mode != "gradient":
        given = [n for n in ("directions", "sigma", "gradient_dims")
                 if getattr(args, n) is not None]
        if given:
            names = ", ".join("--" + n.replace("_", "-") for n in given)
            p.error(f"{names}: gradient mode only (--mode gradient)")
    else:
        if args.amp or args.epochs is not None or args.lr is not None or args.recipe is not None:
            p.error("--amp, --epochs, --lr and --recipe: gradient mode measures each rule's "
                    "paper recipe on one batch, without training")
        d = gradient_run.DEFAULTS
        args.directions = d["directions"] if args.directions is None else args.directions
        args.sigma = d["sigma"] if args.sigma is None else args.sigma
        dims = d["dims"] if args.gradient_dims is None else args.gradient_dims
        args.gradient_dims = None if dims == 0 else dims
        args.batch_size = d["batch_size"] if args.batch_size is None else args.batch_size
        if args.directions < 2 or not args.sigma > 0 or (dims is not None and dims < 0):
            p.error("--directions must be >= 2, --sigma > 0 and --gradient-dims >= 0")
    if args.mode == "speed":
        given = [k for k in TRAIN_ONLY if getattr(args, k) is not None]
        if given or args.amp:
            names = ", ".join(f"--{k.replace('_', '-')}" for k in given + (["amp"] * args.amp))
            p.error(f"{names}: train mode only; speed mode times float32 neurons on random "
                    "inputs (--T and --batch-size select its sizes)")
        args.epochs = 1  # unused; keeps the checks below uniform
    else:
        for key, value in TRAIN_ONLY.items():
            if getattr(args, key) is None and value is not None:
                setattr(args, key, value)
        args.T = 5 if args.T is None else args.T
        args.batch_size = 64 if args.batch_size is None else args.batch_size
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for name in ("T", "epochs", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("train_subset", "test_subset", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.lr is not None and not args.lr > 0:
        p.error(f"--lr must be > 0, got {args.lr}")
    if args.min_run_time <= 0:
        p.error("--min-run-time must be > 0")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device here (torch "
                f"{torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu")
    args.frameworks = (["snntorch", "spikingjelly"] if args.framework == "both"
                       else [args.framework])
    for fw in args.frameworks:
        if importlib.util.find_spec(fw) is None:
            p.error(f"--framework {fw}: {fw} is not installed; {INSTALL[fw]}")
    if args.mode == "train":
        try:
            recipes.spec_for(args.arch, recipes.recipe("baseline"), 10)
        except ValueError as exc:
            p.error(f"--arch: {exc}")


def _distributed(args: argparse.Namespace) -> train.Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return train.Dist()
    import torch.distributed as dist

    if args.device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
    dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    return train.Dist(rank=dist.get_rank(), world=dist.get_world_size())


def _check_arch(args: argparse.Namespace, data) -> None:
    """Build the network once on the data's shape, so that a spec that does not fit it is an
    error now, not a failed row per configuration."""
    rule, name = args.rules[0], args.recipe[0]
    recipes.build(recipes.recipe(rule, name), args.frameworks[0], args.arch, data.in_shape,
                  data.num_classes)


def _train_all(args: argparse.Namespace, ctx: train.Dist, store: Store, say) -> str | None:
    """Every training configuration; returns the data source, or None when the data is
    missing or the network does not fit it (the error is printed)."""
    try:
        data = load_dataset(args.dataset, T=args.T, data_dir=args.data_dir)
    except DatasetNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    try:
        check_subsets(data, args.train_subset, args.test_subset)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    try:
        _check_arch(args, data)
    except ValueError as exc:
        print(f"error: --arch {args.arch} does not fit {args.dataset} (samples of shape "
              f"{data.in_shape}, {data.num_classes} classes): {exc}", file=sys.stderr)
        return None
    source = f"{args.dataset} from {data.source}"
    def count(n: int) -> str:
        return f"{n:,}".replace(",", " ")

    used = [f"{count(n)} of {count(len(split))}" if n is not None and n < len(split)
            else f"all {count(len(split))}"
            for n, split in ((args.train_subset, data.train), (args.test_subset, data.test))]
    say(fill(f"{source}: {used[0]} training and {used[1]} test samples used", 120,
             subsequent_indent="  "))
    for fw, rule, name, seed in itertools.product(args.frameworks, args.rules, args.recipe,
                                                  args.seed):
        tag = f"[{fw}/{rule}/{name}/seed {seed}]"
        if name == "common" and "paper" in args.recipe and recipes.same_as_paper(rule):
            say(f"{tag} is the paper recipe of {rule}; trained once, as 'paper'")
            continue
        cfg = train.TrainConfig(
            framework=fw, rule=rule, recipe=name, dataset=args.dataset, arch=args.arch,
            T=args.T, seed=seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            device=args.device, amp=args.amp, train_subset=args.train_subset,
            test_subset=args.test_subset)
        args.wanted.add(cfg.config_id)
        status = train.run(cfg, data, store, dist=ctx, progress=args.progress,
                           retry_failed=args.retry_failed, log=say)
        if status == "skipped":
            say(f"{tag} already in {store.path}; skipped")
        elif status == "failed before":
            say(f"{tag} recorded as failed by an earlier run (see summary.md); "
                "--retry-failed runs it again")
    return source


def _gradient_all(args: argparse.Namespace, ctx: train.Dist, store: Store, say) -> str | None:
    """Every (framework, rule, seed) in gradient mode; returns the data source, or None."""
    try:
        data = load_dataset(args.dataset, T=args.T, data_dir=args.data_dir)
    except DatasetNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    say(f"{args.dataset} from {data.source}: one fixed batch of {args.batch_size} training "
        f"images; {args.directions} direction pairs, σ = {args.sigma:g}, "
        f"{args.gradient_dims or 'all'} weights per layer")
    args.gradient_ids = set()
    for fw, rule, seed in itertools.product(args.frameworks, args.rules, args.seed):
        cfg = gradient_run.GradientConfig(
            framework=fw, rule=rule, dataset=args.dataset, arch=args.arch, T=args.T, seed=seed,
            batch_size=args.batch_size, device=args.device, directions=args.directions,
            sigma=args.sigma, dims=args.gradient_dims)
        args.gradient_ids.add(cfg.config_id)
        status = gradient_run.run(cfg, data, store, dist=ctx, retry_failed=args.retry_failed,
                                  log=say)
        if status == "skipped":
            say(f"[gradient {fw}/{rule}] already in {store.path}; skipped")
        elif status == "failed before":
            say(f"[gradient {fw}/{rule}] recorded as failed by an earlier run; --retry-failed "
                "runs it again")
    return f"{args.dataset} from {data.source}"


def _speed_all(args: argparse.Namespace, store: Store, say) -> str:
    if "ttfs" in args.rules:
        say("ttfs is a loss, not a neuron: speed mode leaves it out (benchmarks/ttfs_speed.py "
            "times it against snntorch's)")
    for case in speed.cases(args.frameworks, args.rules, args.device, args.quick,
                            which=args.speed_set,
                            ts=None if args.T is None else (args.T,), batch=args.batch_size):
        args.wanted.add(case.config_id)
        speed.run(case, store, min_run_time=args.min_run_time, retry_failed=args.retry_failed,
                  log=say)
    return "random inputs"


def _interrupted(args: argparse.Namespace) -> str:
    """What an interruption leaves: this command's recorded rows, or that there are none."""
    ids = args.wanted | getattr(args, "gradient_ids", set())
    try:
        kept = [r for r in Store(args.out).rows if r.get("config_id") in ids]
    except CorruptResults:
        kept = []
    what = "epoch" if args.mode == "train" else "measurement"
    if not kept:
        return (f"interrupted before any of this command's {what}s finished: nothing of it was "
                "recorded; rerun the same command to start again")
    return (f"interrupted: this command's finished {what}s ({len(kept)}) are kept in "
            f"{Store(args.out).path}; rerun the same command to resume from there")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    _settle(args, p)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = shlex.join(["python", "benchmarks/compare.py",
                          *(sys.argv[1:] if argv is None else argv)])
    ctx = _distributed(args)
    say = print if ctx.rank == 0 else (lambda *_a, **_k: None)
    try:
        store = Store(args.out)
    except CorruptResults as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    args.wanted = set()  # this invocation's configurations: its summary and plots show these
    try:
        if args.mode == "speed":
            source = _speed_all(args, store, say) if ctx.rank == 0 else ""
        elif args.mode == "gradient":
            source = _gradient_all(args, ctx, store, say)
            if source is None:
                return 2
        else:
            source = _train_all(args, ctx, store, say)
            if source is None:
                return 2
    except KeyboardInterrupt:
        print(f"\n{_interrupted(args)}", file=sys.stderr)
        return 130
    if ctx.rank != 0:
        return 0
    store = Store(args.out)  # everything recorded, this run's and earlier ones
    header = (f"# spikegrad benchmark: {args.mode} mode\n\n`{command}`\n\n"
              f"Machine: {metrics.machine(torch.device(args.device))}; {source}; "
              f"{time.strftime('%Y-%m-%d %H:%M')}; this invocation took "
              f"{time.perf_counter() - t0:.0f} s.")
    if args.mode == "gradient":  # this invocation's configurations only
        mine = [r for r in store.rows if r.get("config_id") in args.gradient_ids]
        text = f"{header}\n\n{gradient_run.EXPLAIN}\n\n{gradient_run.table(mine)}\n"
        title = (f"{args.dataset}, {args.arch}, T={args.T}, one batch of {args.batch_size}, "
                 f"N={args.directions} pairs, σ={args.sigma:g}, "
                 f"{args.gradient_dims or 'all'} weights/layer, {args.device}")
        made = [m for m in [gradient_run.plot(mine, store.dir / "gradient.png", title)] if m]
        atomic_write(store.dir / "summary.md", text.encode())
        text = gradient_run.printed(text)
    else:  # this invocation's configurations only (earlier rows in --out are kept, not shown)
        mine = [r for r in store.rows if r.get("config_id") in args.wanted]
        epochs = args.epochs if args.mode == "train" else None
        atomic_write(store.dir / "summary.md", summary(mine, header, epochs=epochs).encode())
        made = plots.all_plots(mine, store.dir, epochs=epochs, mode=args.mode)
        text = printed(mine, header, epochs=epochs)
    print("\n" + text)
    print("\n  ".join(["wrote", str(store.path), str(store.dir / "summary.md"),
                       *map(str, made)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
