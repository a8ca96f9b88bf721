"""Cost of the NA layer against plain surrogate BPTT, on the CPU (issue: NA speed goals).

Two measurements, each forward + backward of one neuron layer (no synapses), median of
``torch.utils.benchmark`` runs after warm-up:

1. whole window: ``NALeaky.sequence`` (NA; the torch reference and, where it builds, the
   compiled CPU kernel) vs spikegrad's reset-term neuron with the reset detached (plain
   surrogate BPTT, its whole-sequence path ``reset_term.SequenceFunction`` with
   ``reset_grad_scale=0``, as ``ResetTermLIFNode(detach_reset=True, step_mode="m")`` runs it,
   which is faster than spikingjelly's own ``LIFNode``), batch 32, 4 096 neurons, T = 5, 20;
2. per-step loop (``spk, mem = lif(cur, mem)`` T times): ``NALeaky`` vs ``snn.Leaky``, batch
   64, 1 000 neurons, T = 25.

Usage::

    python benchmarks/na_speed.py                 # 2 threads, as the goals are stated
    python benchmarks/na_speed.py --threads 1 --T 5 10 20
"""

from __future__ import annotations

import argparse
import platform

import snntorch as snn
import torch
from torch.utils import benchmark

from spikegrad import neurons
from spikegrad.rules import na, reset_term, surrogate


def _time(fn, min_run_time: float) -> float:
    fn()  # warm-up
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(
        min_run_time=min_run_time).median * 1e3


def whole_window(T: int, batch: int, n: int, min_run_time: float, impl: str
                 ) -> tuple[float, float]:
    c = torch.rand(T, batch, n) * 1.2
    g = torch.randn(T, batch, n)
    cfg = na.NA(beta=0.8, tau_s=2.0, implementation=impl)  # what NALeaky.sequence runs
    spike_fn = surrogate.Sigmoid(temperature=0.3)

    def run_na():
        x = c.clone().requires_grad_()
        out, _ = na.NAFunction.apply(x, cfg, None)
        out.backward(g)

    v0 = torch.zeros_like(c[0])

    def run_bptt():  # what ResetTermLIFNode(detach_reset=True, step_mode="m") runs
        x = c.clone().requires_grad_()
        s, _, _ = reset_term.SequenceFunction.apply(x, v0, 0.8, 1.0, spike_fn, "zero", 0.0)
        reset_term.trace(s, 2.0).backward(g)

    return _time(run_na, min_run_time), _time(run_bptt, min_run_time)


def per_step(T: int, batch: int, n: int, min_run_time: float) -> tuple[float, float]:
    c = torch.rand(T, batch, n) * 1.2
    g = torch.randn(T, batch, n)

    def loop(lif):
        def run():
            x = c.clone().requires_grad_()
            mem = lif.init_leaky()
            outs = []
            for t in range(T):
                spk, mem = lif(x[t], mem)
                outs.append(spk)
            torch.stack(outs).backward(g)
        return run

    return (_time(loop(neurons.NALeaky(beta=0.8, reset_mechanism="zero")), min_run_time),
            _time(loop(snn.Leaky(beta=0.8)), min_run_time))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--T", type=int, nargs="+", default=[5, 20], help="whole-window T values")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--neurons", type=int, default=4096)
    p.add_argument("--step-T", type=int, default=25)
    p.add_argument("--step-batch", type=int, default=64)
    p.add_argument("--step-neurons", type=int, default=1000)
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, NA implementation: {na.implementation()}")
    print("| measurement | T | NA ms | baseline ms | NA / baseline |")
    print("|---|---|---|---|---|")
    impls = ["torch"] + (["cpp"] if na.implementation().startswith("cpp") else [])
    for impl in impls:
        for T in args.T:
            t_na, t_base = whole_window(T, args.batch, args.neurons, args.min_run_time, impl)
            print(f"| whole window ({impl}), B={args.batch}, N={args.neurons}, vs reset-term "
                  f"(detached) | {T} | {t_na:.2f} | {t_base:.2f} | {t_na / t_base:.2f}x |")
    t_na, t_base = per_step(args.step_T, args.step_batch, args.step_neurons, args.min_run_time)
    print(f"| per-step loop, B={args.step_batch}, N={args.step_neurons}, NALeaky vs snn.Leaky | "
          f"{args.step_T} | {t_na:.2f} | {t_base:.2f} | {t_na / t_base:.2f}x |")


if __name__ == "__main__":
    main()
