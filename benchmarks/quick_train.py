"""Train the seed-002 snntorch tutorial network with every available rule on real Fashion-MNIST.

The network is snntorch's tutorial MLP (784-1000-10, ``beta = 0.95``, 25 steps, the image fed
as a constant current at every step), written exactly as a snntorch user writes it: a per-step
loop with ``mem = lif.init_leaky()``. Only the neuron class (and, for TTFS, the loss) changes
between rules:

=================  ===========================================  ===================================
rule               neuron                                        loss
=================  ===========================================  ===================================
baseline           ``snn.Leaky(beta)`` (atan surrogate)          CE on the spike count
reset-term         ``neurons.ResetTermLeaky(beta)``              CE on the spike count
bpsa-bpta          ``neurons.HTDGLIFLeaky()`` (paper mode)       MSE of the rate to the one-hot
                                                                 label, 30 warm-up steps (paper)
multi-strength     ``neurons.MultiStrengthLeaky()``              CE on the mean strength
ttfs               ``snn.Leaky(beta)``                           ``ttfs.ce_temporal_loss()``
na                 ``neurons.NALeaky(beta)``                     CE on the spike count
=================  ===========================================  ===================================

Every rule gets the same budget, optimiser (Adam, lr 5e-4 as in the tutorial), batches and
initial weights; the loss follows the rule's paper where the common one does not fit it (BPSA
passes no gradient through silent neurons, so a count-based CE starves; integer strengths make
count logits saturate). Prints one table (test accuracy on the full 10 000-image test set).

Usage::

    python benchmarks/quick_train.py                # 300 steps per rule, about 5 min on 2 cores
    python benchmarks/quick_train.py --steps 50 --rules baseline reset-term
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm is in the bench extra
    def tqdm(it, **_):  # type: ignore[no-redef]
        return it

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import snntorch as snn  # noqa: E402
from datasets import DatasetNotFound, fashion_mnist_tensors  # noqa: E402
from suite.recipes import set_warm_up  # noqa: E402

from spikegrad import neurons  # noqa: E402
from spikegrad.rules import ttfs  # noqa: E402

BETA = 0.95


def _neuron(rule: str) -> nn.Module:
    if rule in ("baseline", "ttfs"):
        return snn.Leaky(beta=BETA)
    if rule == "reset-term":
        return neurons.ResetTermLeaky(beta=BETA)
    if rule == "bpsa-bpta":
        return neurons.HTDGLIFLeaky()
    if rule == "multi-strength":
        return neurons.MultiStrengthLeaky()
    if rule == "na":
        return neurons.NALeaky(beta=BETA, reset_mechanism="zero")
    raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")


RULES = ("baseline", "reset-term", "bpsa-bpta", "multi-strength", "ttfs", "na")


class TutorialNet(nn.Module):
    """snntorch tutorial 5's network with a pluggable neuron."""

    def __init__(self, rule: str, num_steps: int) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.fc1 = nn.Linear(784, 1000)
        self.lif1 = _neuron(rule)
        self.fc2 = nn.Linear(1000, 10)
        self.lif2 = _neuron(rule)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        cur1 = self.fc1(x.flatten(1))  # constant input: the same current at every step
        spk1_rec, spk2_rec = [], []
        for _ in range(self.num_steps):
            spk1, mem1 = self.lif1(cur1, mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk1_rec.append(spk1)
            spk2_rec.append(spk2)
        return torch.stack(spk2_rec), torch.stack(spk1_rec)


def _loss_fn(rule: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if rule == "ttfs":
        return ttfs.ce_temporal_loss()
    if rule == "bpsa-bpta":  # the paper's loss: MSE between the firing rate and the one-hot label
        return lambda out, y: F.mse_loss(out.mean(0), F.one_hot(y, 10).to(out.dtype))
    if rule == "multi-strength":  # integer strengths: the mean, not the sum, as logits
        return lambda out, y: F.cross_entropy(out.mean(0), y)
    return lambda out, y: F.cross_entropy(out.sum(0), y)


WARM_UP_STEPS = {"bpsa-bpta": 30}  # the paper's warm-up: HTDGLIF nodes run as ReLU at first


def _predict(rule: str, out: torch.Tensor) -> torch.Tensor:
    if rule == "ttfs":
        return ttfs.first_spike_time(out).argmin(dim=1)
    return out.sum(0).argmax(dim=1)


def run_rule(rule: str, data, args: argparse.Namespace) -> dict[str, float | str]:
    (x_train, y_train), (x_test, y_test) = data
    torch.manual_seed(args.seed)
    net = TutorialNet(rule, args.T)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.999))
    loss_fn = _loss_fn(rule)
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(args.seed))
    net.train()
    t0 = time.perf_counter()
    losses = []
    for step in tqdm(range(args.steps), desc=f"{rule:>14}", leave=False, mininterval=2):
        set_warm_up(net, step < WARM_UP_STEPS.get(rule, 0))
        idx = order[(step * args.batch_size) % len(order):][: args.batch_size]
        out, _ = net(x_train[idx])
        loss = loss_fn(out, y_train[idx])
        if not torch.isfinite(loss):
            return {"rule": rule, "error": f"non-finite loss at step {step}"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    train_s = time.perf_counter() - t0
    net.eval()
    correct, rate = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x_test), 1000):
            out, hidden = net(x_test[i : i + 1000])
            correct += int((_predict(rule, out) == y_test[i : i + 1000]).sum())
            rate += float((hidden > 0).float().mean()) * len(out[0])
    return {
        "rule": rule,
        "neuron": type(net.lif1).__name__,
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "test_acc": 100.0 * correct / len(x_test),
        "ms_per_step": 1000 * train_s / args.steps,
        "hidden_rate": rate / len(x_test),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    p.add_argument("--steps", type=int, default=300, help="training steps per rule")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--T", type=int, default=25, help="time steps per image")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=None, help="directory with the Fashion-MNIST files")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.T < 1:
        p.error("--steps, --batch-size and --T must be >= 1")
    torch.set_num_threads(args.threads)
    try:
        *data, source = fashion_mnist_tensors(args.data_dir)
    except DatasetNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Fashion-MNIST from {source}")
    rows = [run_rule(rule, data, args) for rule in args.rules]
    print(f"\nseed-002 tutorial MLP 784-1000-10, T={args.T}, {args.steps} Adam steps of batch "
          f"{args.batch_size}, lr {args.lr}, seed {args.seed}, {args.threads} CPU threads")
    print("| rule | neuron | final train loss | test acc % | ms/step | hidden spike rate |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['rule']} | failed: {r['error']} | | | | |")
            continue
        print(f"| {r['rule']} | {r['neuron']} | {r['final_loss']:.3f} | {r['test_acc']:.2f} | "
              f"{r['ms_per_step']:.0f} | {r['hidden_rate']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
