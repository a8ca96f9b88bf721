"""Forward + backward time of spikegrad's TTFS losses against snntorch's.

Usage::

    python benchmarks/ttfs_speed.py --T 25 --batch 128 --outputs 10 --repeat 7

Prints one row per loss setting: the median time of ``loss(spk_rec, targets).backward()`` for
each library (``torch.utils.benchmark.Timer``, 2 threads), the speed-up, and whether values and
gradients agree (they should wherever all target times are non-negative; snntorch's default
``off_target=-1`` builds all-zero targets and its multi-spike search mixes neurons, both fixed in
spikegrad, so those rows differ on purpose).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import snntorch.functional as SF
import torch
import torch.utils.benchmark as benchmark

from spikegrad.rules import ttfs

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def settings(steps: int) -> list[tuple[str, Loss, Loss]]:
    """(name, spikegrad loss, snntorch loss) for each compared setting."""
    late = (steps - 2, steps - 1)
    return [
        ("ce_temporal (negate)", ttfs.ce_temporal_loss(), SF.ce_temporal_loss()),
        ("ce_temporal (reciprocal)", ttfs.ce_temporal_loss("reciprocal"),
         SF.ce_temporal_loss("reciprocal")),
        ("mse_temporal (0, T-1)", ttfs.mse_temporal_loss(off_target=steps - 1),
         SF.mse_temporal_loss(off_target=steps - 1)),
        ("mse_temporal (0, T-1, tol=2)", ttfs.mse_temporal_loss(off_target=steps - 1, tolerance=2),
         SF.mse_temporal_loss(off_target=steps - 1, tolerance=2)),
        ("mse_temporal (defaults)", ttfs.mse_temporal_loss(), SF.mse_temporal_loss()),
        ("mse_temporal (multi_spike, F=2)",
         ttfs.mse_temporal_loss(on_target=(0, 3), off_target=late, multi_spike=True),
         SF.mse_temporal_loss(on_target=(0, 3), off_target=late, multi_spike=True)),
    ]  # fmt: skip


def value_and_grad(fn: Loss, spk: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = spk.clone().requires_grad_(True)
    loss = fn(x, y.clone())
    loss.backward()
    return loss.detach(), x.grad


def make_timer(fn: Loss, spk: torch.Tensor, y: torch.Tensor) -> benchmark.Timer:
    x = spk.clone().requires_grad_(True)
    return benchmark.Timer(
        stmt="x.grad = None; fn(x, y).backward()",
        globals={"fn": fn, "x": x, "y": y},
        num_threads=torch.get_num_threads(),
    )


def median_times(fns: list[Loss], spk: torch.Tensor, y: torch.Tensor, repeat: int) -> list[float]:
    """Median seconds of one forward + backward of each loss; the timed blocks of the losses
    are interleaved so that a busy machine slows all of them alike."""
    timers = [make_timer(fn, spk, y) for fn in fns]
    numbers = [max(1, t.blocked_autorange(min_run_time=0.2).number_per_run) for t in timers]
    runs: list[list[benchmark.Measurement]] = [[] for _ in timers]
    for _ in range(repeat):
        for timer, number, out in zip(timers, numbers, runs, strict=True):
            out.append(timer.timeit(number))
    return [benchmark.Measurement.merge(out)[0].median for out in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=25, help="time steps")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--outputs", type=int, default=10, help="output neurons")
    parser.add_argument("--repeat", type=int, default=7, help="timed blocks (median taken)")
    parser.add_argument("--rate", type=float, default=0.1, help="spike probability per step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spk = (torch.rand(args.T, args.batch, args.outputs) < args.rate).float().to(args.device)
    y = torch.randint(0, args.outputs, (args.batch,), device=args.device)

    print(
        f"T={args.T} batch={args.batch} outputs={args.outputs} device={args.device} "
        f"threads={torch.get_num_threads()} torch={torch.__version__} (median of {args.repeat})"
    )
    header = f"{'loss':<32} {'snntorch':>11} {'spikegrad':>11} {'speed-up':>9}  same values+grads"
    print(header)
    print("-" * len(header))
    for name, ours, theirs in settings(args.T):
        (v1, g1), (v2, g2) = value_and_grad(ours, spk, y), value_and_grad(theirs, spk, y)
        same = torch.allclose(v1, v2) and torch.allclose(g1, g2)
        t_ours, t_theirs = median_times([ours, theirs], spk, y, args.repeat)
        print(
            f"{name:<32} {t_theirs * 1e3:>8.3f} ms {t_ours * 1e3:>8.3f} ms "
            f"{t_theirs / t_ours:>8.1f}x  {'yes' if same else 'no (fixed defect)'}"
        )


if __name__ == "__main__":
    main()
