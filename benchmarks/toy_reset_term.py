"""The single-neuron toy study of Yang, arXiv:2011.09964 (Table 1, Figure 3), with and without
the reset term.

One LIF neuron (``ResetTermLeaky``, trace output ``τs = 2``) gets 50 fixed random input spike
trains (p = 1/10 per step, filtered by the same trace kernel and weighted by ``W``) over 100
steps and learns a fixed random target spike train (p = 1/20) with the van Rossum loss and plain
SGD for 200 iterations (``τm = 6``, sigmoid surrogate ``T = 0.3``, ``θ = 1``). Every
(seed, learning rate, variant) is one independent neuron; they are simulated side by side as
one batch, so the whole study takes seconds.

The paper does not state the weight initialisation; here ``W ~ U(0, w_max)`` with
``w_max = 2 / (50 p)`` (the neuron starts near threshold). Reported per learning rate: the
final loss (mean ± std over seeds), the mean of the best loss, and how many runs end below 10 %
of their initial loss.

Usage::

    python benchmarks/toy_reset_term.py --seeds 10 --lrs 0.001 0.005 0.01 0.05 0.1
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from spikegrad import neurons
from spikegrad.rules import reset_term, surrogate


def make_task(n_runs: int, seed: int, n_in: int, steps: int, p_in: float, p_out: float):
    g = torch.Generator().manual_seed(seed)
    inputs = (torch.rand(steps, n_runs, n_in, generator=g) < p_in).double()
    target = (torch.rand(steps, n_runs, 1, generator=g) < p_out).double()
    w_max = 2.0 / (n_in * p_in)
    weights = torch.rand(n_runs, n_in, generator=g, dtype=torch.float64) * w_max
    return inputs, target, weights


def silent_loss(args: argparse.Namespace) -> torch.Tensor:
    """Per seed: the loss of a neuron that never fires (what a dead neuron is stuck at)."""
    _, target, _ = make_task(args.seeds, 0, args.inputs, args.steps, args.p_in, args.p_out)
    return reset_term.van_rossum_loss(torch.zeros_like(target), target, tau_s=args.tau_s,
                                      reduction="none")


def train(args: argparse.Namespace, reset_grad: str) -> torch.Tensor:
    """Loss curves ``[iterations + 1, seeds, lrs]`` for one variant (same tasks for both)."""
    n_lr, n_seed = len(args.lrs), args.seeds
    # one task per seed, repeated for each learning rate: runs are ordered (seed, lr)
    inputs, target, w0 = make_task(n_seed, 0, args.inputs, args.steps, args.p_in, args.p_out)
    inputs = inputs.repeat_interleave(n_lr, dim=1)
    target = target.repeat_interleave(n_lr, dim=1)
    weights = w0.repeat_interleave(n_lr, dim=0).clone()
    lr = torch.tensor(args.lrs, dtype=torch.float64).repeat(n_seed)[:, None]
    psp_in = reset_term.trace(inputs, args.tau_s)
    neuron = neurons.ResetTermLeaky(
        beta=1 - 1 / args.tau_m, threshold=args.threshold,
        spike_grad=surrogate.Sigmoid(temperature=args.temperature),
        reset_grad=reset_grad, tau_s=args.tau_s,
    )
    losses = []
    for it in range(args.iterations + 1):
        weights.requires_grad_(True)
        current = torch.einsum("tbi,bi->tb", psp_in, weights)[..., None]
        mem = neuron.reset_mem()
        out = []
        for t in range(args.steps):
            a, mem = neuron(current[t], mem)
            out.append(a)
        # van Rossum loss on the traces: the neuron already outputs a = ε * S
        trace_out = torch.stack(out)
        per_run = 0.5 * (reset_term.trace(target, args.tau_s) - trace_out).pow(2).sum(dim=(0, 2))
        losses.append(per_run.detach().view(n_seed, n_lr))
        if it == args.iterations:
            break
        (grad,) = torch.autograd.grad(per_run.sum(), weights)
        with torch.no_grad():
            weights = weights - lr * grad
    return torch.stack(losses)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="independent tasks per setting (>= 1)")
    p.add_argument("--lrs", type=float, nargs="+", default=[0.001, 0.005, 0.01, 0.05, 0.1])
    p.add_argument("--iterations", type=int, default=200, help="SGD iterations (paper: 200)")
    p.add_argument("--inputs", type=int, default=50)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--p-in", type=float, default=0.1)
    p.add_argument("--p-out", type=float, default=0.05)
    p.add_argument("--tau-m", type=float, default=6.0)
    p.add_argument("--tau-s", type=float, default=2.0)
    p.add_argument("--temperature", type=float, default=0.3)
    p.add_argument("--threshold", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.seeds < 1 or args.iterations < 1 or min(args.lrs) <= 0:
        p.error("--seeds and --iterations must be >= 1 and every --lrs value > 0")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    curves = {v: train(args, v) for v in ("full", "detach")}
    silent = silent_loss(args)
    elapsed = time.perf_counter() - start

    print(f"Toy study (arXiv:2011.09964 Table 1): {args.seeds} seeds, {args.iterations} SGD "
          f"iterations, T={args.steps}, {args.inputs} inputs; loss = van Rossum distance; "
          f"a silent neuron scores {silent.mean():.2f}")
    print("| lr | initial loss | final loss, with reset term | final loss, without | "
          "best loss with / without | solved, with / without |")
    print("|---|---|---|---|---|---|")
    for j, lr in enumerate(args.lrs):
        init = curves["full"][0, :, j]
        cells = []
        for v in ("full", "detach"):
            final = curves[v][-1, :, j]
            cells.append(f"{final.mean():.2f} ± {final.std(unbiased=args.seeds > 1):.2f}")
        best = [f"{curves[v][:, :, j].min(0).values.mean():.2f}" for v in ("full", "detach")]
        conv = [f"{int((curves[v][-1, :, j] < 0.1 * silent).sum())}/{args.seeds}"
                for v in ("full", "detach")]
        print(f"| {lr:g} | {init.mean():.2f} | {cells[0]} | {cells[1]} | "
              f"{' / '.join(best)} | {' / '.join(conv)} |")
    print(f"({elapsed:.1f} s on {torch.get_num_threads()} CPU threads; "
          f"command: python benchmarks/toy_reset_term.py {' '.join(sys.argv[1:])})")


if __name__ == "__main__":
    main()
