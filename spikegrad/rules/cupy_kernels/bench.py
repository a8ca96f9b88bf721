"""Forward + backward time of each rule's fused kernels vs its torch reference, on a GPU.

    python -m spikegrad.rules.cupy_kernels.bench [--steps 4 8 16 32] [--neurons 65536]
        [--dtype float32|float16] [--rules reset_term na bpsta multistrength] [--json]

Each measurement is one forward and one backward pass over ``[T, neurons]`` with random
upstream gradients, CUDA synchronised, median of ``torch.utils.benchmark`` blocked
measurements after a warm-up (which also compiles the kernels). The torch reference runs in
float32 for float16 requests too (the kernels' float16 semantics). Exits with a message, and
status 2, where the kernels cannot run (no CuPy, no CUDA device). ``--device cpu`` runs the
host shim instead: it checks this script, its times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

import torch

from spikegrad.rules import bpsta, dispatch, multistrength, na, reset_term, surrogate

__all__ = ["main", "cases"]

Fn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def _loop(step: Callable[..., tuple[torch.Tensor, torch.Tensor]], cfg: object) -> Fn:
    def run(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for t in range(x.shape[0]):
            o, v = step(x[t], v, cfg)
            outs.append(o)
        return (torch.stack(outs),)
    return run


def cases() -> dict[str, tuple[Fn, Fn]]:
    """``rule -> (torch reference, fused kernels)``, both ``(x, v0) -> outputs``."""
    sig = surrogate.Sigmoid(0.3, inclusive=True)
    rt = reset_term.cupy.spec(0.8, 1.0, sig, "zero", 1.0, None)
    na_cfg = na.NA(beta=0.8, tau_s=2.0, implementation="torch")
    ht_cfg, ms_cfg = bpsta.HTDGLIF(), multistrength.MultiStrength(max_strength=4)
    return {
        "reset_term": (
            lambda x, v: reset_term.SequenceFunction.apply(x, v, 0.8, 1.0, sig, "zero", 1.0)[:2],
            lambda x, v: reset_term.cupy.sequence(x, v, None, rt)),
        "na": (lambda x, v: na.NAFunction.apply(x, na_cfg, None, v, v),
               lambda x, v: na.cupy.sequence(x, na.cupy.spec(na_cfg), None, v, v)),
        "bpsta": (_loop(lambda x, v, c: bpsta.step_v(x, v, c)[::2], ht_cfg),
                  lambda x, v: bpsta.cupy.sequence(x, v, bpsta.cupy.spec(ht_cfg))),
        "multistrength": (
            _loop(multistrength.step, ms_cfg),
            lambda x, v: multistrength.cupy.sequence(
                x, v, multistrength.cupy.spec(ms_cfg))),
    }


def _time(fn: Fn, x: torch.Tensor, v: torch.Tensor, min_run_time: float) -> float:
    """Median milliseconds of one forward + backward pass (CUDA synchronised), with a random
    upstream gradient on the first output (spikes, trace or strengths)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # CPU-only noise
    from torch.utils import benchmark

    grad = torch.randn_like(fn(x, v)[0])
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def once() -> None:
        fn(x, v)[0].backward(grad)
        x.grad = None
        sync()

    for _ in range(3):  # warm-up: kernel compilation, allocator
        once()
    timer = benchmark.Timer(stmt="once()", globals={"once": once})
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spikegrad.rules.cupy_kernels.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--neurons", type=int, default=64 * 1024)
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--rules", nargs="+", default=list(cases()), choices=list(cases()))
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: the host shim (checks the script; meaningless times)")
    args = parser.parse_args(argv)
    problem = dispatch.cupy_problem() if args.device == "cuda" else None
    if problem is not None:
        print(f"spikegrad kernel benchmark: cannot run here: {problem[1]}", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (host shim)"
    table = cases()
    if not args.json:
        print(f"# {name}, {args.neurons} neurons, {args.dtype}; forward + backward, ms (median)")
        print(f"{'rule':<14}{'T':>4}{'torch':>11}{'cupy':>11}{'speed-up':>10}")
    for rule in args.rules:
        reference, fused = table[rule]
        for steps in args.steps:
            gen = torch.Generator(device=device).manual_seed(steps)
            x = (torch.randn(steps, args.neurons, device=device, generator=gen) * 0.7 + 0.45)
            v0 = torch.zeros(args.neurons, device=device)
            ms_ref = _time(reference, x.float().requires_grad_(), v0, args.min_run_time)
            ms_k = _time(fused, x.to(dtype).requires_grad_(), v0.to(dtype), args.min_run_time)
            row = dict(rule=rule, T=steps, neurons=args.neurons, dtype=args.dtype,
                       device=name, torch_ms=ms_ref,
                       cupy_ms=ms_k, speedup=ms_ref / ms_k)
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{rule:<14}{steps:>4}{ms_ref:>11.3f}{ms_k:>11.3f}{ms_ref / ms_k:>9.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
