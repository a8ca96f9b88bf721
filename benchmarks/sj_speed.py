"""spikegrad's spikingjelly nodes against the host's own LIF node on the same layer (CPU).

Forward + backward of one neuron layer in ``step_mode="m"`` (no synapses), median of
``torch.utils.benchmark`` runs after warm-up: ``ResetTermLIFNode`` against the host's
``LIFNode`` with the same math (``decay_input=False``, ``v_reset=0``, ``detach_reset=False``,
sigmoid surrogate of temperature 0.3), and the other nodes for reference.

Usage::

    python benchmarks/sj_speed.py                  # T=8 and 32, batch 32, 4 096 neurons
"""

from __future__ import annotations

import argparse
import platform

import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from torch.utils import benchmark

from spikegrad import neurons
from spikegrad.adapters.spikingjelly import SPIKINGJELLY_VERSION

NODES = {
    "host LIFNode": lambda: neuron.LIFNode(
        tau=2.0, decay_input=False, v_reset=0.0, detach_reset=False,
        surrogate_function=surrogate.Sigmoid(alpha=1 / 0.3), step_mode="m"),
    "ResetTermLIFNode": lambda: neurons.ResetTermLIFNode(tau=2.0, step_mode="m"),
    "NALIFNode": lambda: neurons.NALIFNode(step_mode="m"),
    "HTDGLIFNode": lambda: neurons.HTDGLIFNode(step_mode="m"),
    "MultiStrengthIFNode": lambda: neurons.MultiStrengthIFNode(step_mode="m"),
}


def measure(make, T: int, batch: int, n: int, min_run_time: float) -> float:
    node = make()
    x = torch.rand(T, batch, n) * 1.5
    g = torch.randn(T, batch, n)

    def run():
        functional.reset_net(node)
        xx = x.clone().requires_grad_()
        node(xx).backward(g)

    run()  # warm-up (spikingjelly 2.x loads its operators on first use)
    timer = benchmark.Timer(stmt="run()", globals={"run": run})
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, nargs="+", default=[8, 32])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--neurons", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-run-time", type=float, default=1.0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"spikingjelly {SPIKINGJELLY_VERSION}, torch {torch.__version__}, "
          f"{platform.machine()}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.neurons} neurons, forward+backward of one layer, step_mode='m'")
    print("| node | T | ms | / host LIFNode |")
    print("|---|---|---|---|")
    for T in args.T:
        base = None
        for name, make in NODES.items():
            ms = measure(make, T, args.batch, args.neurons, args.min_run_time)
            base = ms if base is None else base
            print(f"| {name} | {T} | {ms:.2f} | {ms / base:.2f}x |")


if __name__ == "__main__":
    main()
