"""Accuracy of NA against surrogate BPTT on real Fashion-MNIST, the paper's MNIST network.

The network is the NA paper's MNIST network ``15C5-P2-40C5-P2-300-10`` at ``T = 5`` (Yang,
Zhang & Li, ICML 2021; the authors' ``Networks/MNIST_CNN.yaml`` at commit ``bf8b564``), built
identically for both rules; only the neuron differs:

=========  ====================================================================================
rule       neuron (every layer; output = PSP trace ``a``, ``τs = 2``)
=========  ====================================================================================
na         ``neurons.NALeaky(beta=0.8, threshold=1.0, tau_s=2.0)``, whole window per layer
           through ``lif.sequence(cur_seq)`` (same outputs and gradients as the per-step loop)
baseline   ``neurons.ResetTermLeaky(beta=0.8, threshold=1.0, reset_grad="detach", tau_s=2.0)``:
           plain surrogate BPTT (sigmoid surrogate, temperature 0.3, reset detached), run in
           snntorch's per-step loop ``spk, mem = lif(cur[t], mem)``
=========  ====================================================================================

Forward, time-major ``[T, B, ...]``: the image ``x`` in ``[0, 1]`` (no normalisation, no
augmentation) is repeated ``T`` times and PSP-filtered, ``a_in[t] = (1 - 1/τs) a_in[t-1] +
x/τs``; each layer computes its ``T`` input currents at once (the conv or linear applied to
the ``[T*B, ...]`` reshaped input), runs its neuron over the window, and hands its trace on:

    a_in -> conv 1->15, 5x5 (no padding, no bias) -> neuron -> 2x2 sum pool x1.1
         -> conv 15->40, 5x5 (no padding, no bias) -> neuron -> 2x2 sum pool x1.1
         -> flatten 640 -> linear 300 (no bias) -> neuron -> linear 10 (no bias) -> neuron

No biases, as in the authors' layers (``bias=False``); initialisation as theirs too: the convs
keep PyTorch's default (Kaiming-uniform, ``a = sqrt(5)``), the linears get
``kaiming_normal_``. The same seed gives both rules the same initial weights and batches.

Loss: ``½ Σ_t Σ_n (d_trace[t] - a_out[t])²`` averaged over the batch, ``d_trace`` the PSP trace
of the target spike train (the label neuron spikes at every step, the others never); the
authors sum over the batch instead (the optimiser below is nearly invariant to that scale,
except for the gradient clipping). Prediction: ``argmax_n Σ_t a_out[t, n]``.

Optimiser, the authors' recipe at ``bf8b564`` for both rules: AdamW (lr 5e-4, betas
(0.9, 0.999), weight decay 0.01), ExponentialLR 0.985 per epoch, gradient norm clipped to 1,
weights clamped to ``[-4, 4]`` after every step. Mini-batches of 64 drawn without replacement
from a per-epoch permutation seeded by ``--seed`` (the last partial batch is kept).

Prints one markdown table: best and final test accuracy on all 10 000 test images (evaluated
after every epoch), train time per epoch (evaluation excluded), the machine and the command.

Usage::

    python benchmarks/na_accuracy.py --epochs 1 --train-subset 2000   # smoke run, ~1 min
    python benchmarks/na_accuracy.py --epochs 2 --out na_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm is in the bench extra
    def tqdm(it, **_):  # type: ignore[no-redef]
        return it

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import DatasetNotFound, fashion_mnist_tensors  # noqa: E402
from suite.metrics import machine as cpu_machine  # noqa: E402

from spikegrad import neurons, recipes  # noqa: E402
from spikegrad.rules import na as na_rule  # noqa: E402
from spikegrad.rules import reset_term  # noqa: E402

RULES = ("na", "baseline")
TAU_M = 5.0
BETA = 1.0 - 1.0 / TAU_M  # 0.8
TAU_S = 2.0
THRESHOLD = 1.0
POOL_SCALE = 1.1
WEIGHT_CLAMP = 4.0
LR_GAMMA = 0.985
WEIGHT_DECAY = 0.01
CLIP_NORM = 1.0


def make_neuron(rule: str) -> nn.Module:
    """The neuron of ``rule`` (trace output, ``τm = 5``, ``τs = 2``, ``ϑ = 1``)."""
    if rule == "na":
        return neurons.NALeaky(beta=BETA, threshold=THRESHOLD, tau_s=TAU_S,
                              reset_mechanism="zero")
    if rule == "baseline":
        return neurons.ResetTermLeaky(beta=BETA, threshold=THRESHOLD, reset_grad="detach",
                                      tau_s=TAU_S)
    raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")


class PaperCNN(nn.Module):
    """``15C5-P2-40C5-P2-300-10`` with a pluggable neuron; ``forward`` returns ``a_out [T, B, 10]``.

    ``rates`` (after a forward) holds each spiking layer's mean spike rate (spikes per neuron
    and step), recovered from the trace: ``s[t] = τs (a[t] - λs a[t-1])``.
    """

    def __init__(self, rule: str, T: int = 5) -> None:
        super().__init__()
        self.rule = rule
        self.T = T
        # synapses first, so that the same seed gives the same weights whatever the neuron
        self.conv1 = nn.Conv2d(1, 15, 5, bias=False)
        self.conv2 = nn.Conv2d(15, 40, 5, bias=False)
        self.fc1 = nn.Linear(640, 300, bias=False)
        self.fc2 = nn.Linear(300, 10, bias=False)
        nn.init.kaiming_normal_(self.fc1.weight)
        nn.init.kaiming_normal_(self.fc2.weight)
        self.lif1 = make_neuron(rule)
        self.lif2 = make_neuron(rule)
        self.lif3 = make_neuron(rule)
        self.lif4 = make_neuron(rule)
        self.rates: list[float] = []

    def _spiking(self, synapse: nn.Module, lif: nn.Module, a: torch.Tensor) -> torch.Tensor:
        T, B = a.shape[:2]
        cur = synapse(a.flatten(0, 1)).unflatten(0, (T, B))  # all T currents at once
        if self.rule == "na":
            out, _ = lif.sequence(cur)  # the whole window from rest
        else:
            mem = lif.init_leaky()  # zeroes mem and the trace
            rec = []
            for t in range(T):
                a_t, mem = lif(cur[t], mem)
                rec.append(a_t)
            out = torch.stack(rec)
        with torch.no_grad():
            spikes = reset_term.spikes_from_trace(out, TAU_S)
            self.rates.append(float(spikes.mean()))
        return out

    @staticmethod
    def _pool(a: torch.Tensor) -> torch.Tensor:
        """Non-spiking 2x2 sum pooling x1.1 of ``[T, B, C, H, W]``."""
        T, B = a.shape[:2]
        return (F.avg_pool2d(a.flatten(0, 1), 2) * (4.0 * POOL_SCALE)).unflatten(0, (T, B))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, 1, 28, 28]`` in ``[0, 1]``; returns ``a_out``: ``[T, B, 10]``."""
        self.rates = []
        a_in = input_trace(x, self.T)
        a = self._pool(self._spiking(self.conv1, self.lif1, a_in))
        a = self._pool(self._spiking(self.conv2, self.lif2, a))
        a = self._spiking(self.fc1, self.lif3, a.flatten(2))
        return self._spiking(self.fc2, self.lif4, a)


def input_trace(x: torch.Tensor, T: int, tau_s: float = TAU_S) -> torch.Tensor:
    """The PSP trace of ``x`` repeated ``T`` times (the authors' direct input); ``[T, *x]``."""
    return reset_term.trace(x.expand(T, *x.shape).contiguous(), tau_s)


def loss_fn(a_out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NA's trace-target loss (:func:`spikegrad.recipes.trace_target_loss`)."""
    return recipes.trace_target_loss(a_out, labels, tau_s=TAU_S)


def make_optimiser(net: nn.Module, lr: float):
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.999),
                            weight_decay=WEIGHT_DECAY)
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma=LR_GAMMA)


def train_step(net: PaperCNN, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
               ) -> tuple[float, int]:
    """One optimiser step; returns ``(loss, correct predictions in the batch)``."""
    a_out = net(x)
    loss = loss_fn(a_out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), CLIP_NORM)
    opt.step()
    with torch.no_grad():
        for p in net.parameters():
            p.clamp_(-WEIGHT_CLAMP, WEIGHT_CLAMP)
    correct = int((a_out.detach().sum(0).argmax(1) == y).sum())
    return float(loss.detach()), correct


@torch.no_grad()
def evaluate(net: PaperCNN, x: torch.Tensor, y: torch.Tensor, chunk: int = 1000
             ) -> tuple[float, float, list[float]]:
    """``(accuracy %, mean loss, mean spike rate per layer)`` on ``(x, y)``."""
    net.eval()
    correct, loss_sum, rates = 0, 0.0, None
    for i in range(0, len(x), chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        a_out = net(xb)
        correct += int((a_out.sum(0).argmax(1) == yb).sum())
        loss_sum += float(loss_fn(a_out, yb)) * len(xb)
        r = [v * len(xb) for v in net.rates]
        rates = r if rates is None else [p + q for p, q in zip(rates, r, strict=True)]
    net.train()
    return 100.0 * correct / len(x), loss_sum / len(x), [v / len(x) for v in rates]


def warm_up(rule: str, T: int) -> None:
    """One untimed forward and backward (builds or loads the compiled NA kernel: ~40 s once)."""
    net = PaperCNN(rule, T)
    loss_fn(net(torch.rand(2, 1, 28, 28)), torch.tensor([0, 1])).backward()


def run_rule(rule: str, data, args: argparse.Namespace, log=print) -> dict:
    """Train ``rule`` for ``args.epochs`` epochs; evaluate on the test set after each."""
    (x_train, y_train), (x_test, y_test) = data
    warm_up(rule, args.T)
    torch.manual_seed(args.seed)
    net = PaperCNN(rule, args.T)
    opt, sched = make_optimiser(net, args.lr)
    n = len(x_train)
    steps_per_epoch = math.ceil(n / args.batch_size)
    history, train_s, steps = [], 0.0, 0
    row = {"rule": rule, "neuron": type(net.lif1).__name__, "lr": args.lr, "epochs": args.epochs,
           "batch_size": args.batch_size, "train_images": n}
    for epoch in range(args.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"{rule} epoch {epoch + 1}/{args.epochs}",
                   leave=False, mininterval=5, disable=not args.progress)
        for i in bar:
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            loss, c = train_step(net, opt, x_train[idx], y_train[idx])
            steps += 1
            if not math.isfinite(loss):
                row.update(error=f"non-finite loss at step {steps}", train_steps=steps,
                           history=history)
                return row
            loss_sum += loss * len(idx)
            correct += c
            seen += len(idx)
        sched.step()
        epoch_s = time.perf_counter() - t0
        train_s += epoch_s
        acc, test_loss, rates = evaluate(net, x_test, y_test)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen,
                        "train_acc": 100.0 * correct / seen, "test_acc": acc,
                        "test_loss": test_loss, "spike_rates": rates, "train_s": epoch_s})
        log(f"[{rule}] epoch {epoch + 1}: train loss {loss_sum / seen:.4f}, train acc "
            f"{100.0 * correct / seen:.2f} %, test acc {acc:.2f} %, test loss {test_loss:.4f}, "
            f"spike rates {', '.join(f'{r:.3f}' for r in rates)}, {epoch_s:.0f} s")
    row.update(
        train_steps=steps,
        best_test_acc=max(h["test_acc"] for h in history),
        final_test_acc=history[-1]["test_acc"],
        s_per_epoch=train_s / args.epochs,
        ms_per_step=1000.0 * train_s / steps,
        history=history,
    )
    return row


def machine() -> str:
    return (f"{cpu_machine(torch.device('cpu'))}, torch {torch.__version__}, Python "
            f"{platform.python_version()}")


def format_table(rows: list[dict], args: argparse.Namespace, source: str, command: str) -> str:
    lines = [
        f"Fashion-MNIST ({source}); network 15C5-P2-40C5-P2-300-10, T={args.T}, batch "
        f"{args.batch_size}, AdamW lr {args.lr} wd {WEIGHT_DECAY}, ExponentialLR {LR_GAMMA}/epoch, "
        f"clip 1, |w| <= 4, seed {args.seed}; test accuracy on all test images.",
        f"NA implementation: {na_rule.implementation(na_rule.NA(beta=BETA, tau_s=TAU_S))}.",
        "",
        "| rule | neuron | epochs | train steps (train images) | best test acc % | "
        "final test acc % | train time / epoch | machine | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['rule']} | {r['neuron']} | {args.epochs} | {r['train_steps']} | "
                         f"failed: {r['error']} | | | {machine()} | `{command}` |")
            continue
        lines.append(
            f"| {r['rule']} | {r['neuron']} | {r['epochs']} | {r['train_steps']} "
            f"({r['train_images']}) | {r['best_test_acc']:.2f} | {r['final_test_acc']:.2f} | "
            f"{r['s_per_epoch']:.0f} s ({r['ms_per_step']:.0f} ms/step) | {machine()} | "
            f"`{command}` |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--T", type=int, default=5, help="time steps per image")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=None, help="directory with the Fashion-MNIST files")
    p.add_argument("--train-subset", type=int, default=None,
                   help="train on the first N images of a fixed shuffle (default: all 60 000)")
    p.add_argument("--out", default=None, help="also write the results (with history) as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no tqdm progress bar")
    args = p.parse_args(argv)
    if min(args.epochs, args.batch_size, args.T, args.threads) < 1:
        p.error("--epochs, --batch-size, --T and --threads must be >= 1")
    if args.train_subset is not None and args.train_subset < 1:
        p.error("--train-subset must be >= 1")
    command = shlex.join(["python", "benchmarks/na_accuracy.py",
                          *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(args.threads)
    try:
        (x_train, y_train), (x_test, y_test), source = fashion_mnist_tensors(args.data_dir)
    except DatasetNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Fashion-MNIST from {source}", flush=True)
    x_train, x_test = x_train.unsqueeze(1), x_test.unsqueeze(1)
    if args.train_subset is not None and args.train_subset < len(x_train):
        keep = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(12345))
        keep = keep[:args.train_subset]
        x_train, y_train = x_train[keep], y_train[keep]
    data = ((x_train, y_train), (x_test, y_test))
    t0 = time.perf_counter()
    rows = [run_rule(rule, data, args, log=lambda s: print(s, flush=True))
            for rule in args.rules]
    wall = time.perf_counter() - t0
    table = format_table(rows, args, source, command)
    print()
    print(table)
    print(f"\ntotal wall time {wall:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"command": command, "machine": machine(), "source": source, "wall_s": wall,
             "args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
