"""``python -m spikegrad.check``: every implementation of every rule on this machine, checked
against the torch reference.

For each rule (reset-term, NA, BPSA/BPTA, multi-strength; two configurations each) and each
implementation that exists for it (``torch``: the rules' torch operators; ``cpp``: NA's compiled
CPU kernel; ``triton``; ``cupy``) on each device (the CPU, and CUDA when there is one) and each
storage dtype the implementation takes, a forward and a backward pass on a small input
(``T = 6`` steps, 389 neurons: more than one kernel block, odd) with random initial states and
random upstream gradients on every output are compared with the torch implementation run on the
CPU in float32 (float64 for float64) on the same inputs rounded to the storage dtype, the
reference's outputs rounded to it too. Printed per row: the largest absolute error of the outputs
(spikes or traces), of the states and of the gradients (input and initial state), the
per-dtype tolerance (``|a - b| <= atol + rtol |b|``, rtol = atol), pass/FAIL, and the time of one
forward + backward on a larger input (``T = 16``, 16 384 neurons) against the torch
implementation on the same device and dtype (kernels run in Triton's interpreter are not timed).
Implementations that cannot run here are listed once per device with the reason.
The CPU's torch rows are the reference itself (timed only).

    python -m spikegrad.check                 # the table; exit status 1 on any mismatch
    python -m spikegrad.check --json out.json # the same rows as JSON too
    python -m spikegrad.check --interpret     # also the Triton kernels on the CPU, interpreted

Unlike the first-use probe of :mod:`spikegrad.rules.first_use` (does the kernel compile, launch
and stay finite), this compares values: a kernel that miscompiles shows here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["Row", "run", "main", "TOLERANCE"]

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
#: rtol = atol per storage dtype (for float16/bfloat16 one rounding of a float32 result and of
#: the upstream gradients)
TOLERANCE = {F64: 1e-10, F32: 1e-5, F16: 2e-3, BF16: 1.6e-2}
DTYPES = {"torch": (F32, F64, F16, BF16), "cpp": (F32, F64), "triton": (F32, F16, BF16),
          "cupy": (F32, F16)}
#: the CPU's torch rows are the reference: timed in the dtypes CPU training uses
_CPU_TORCH = (F32, F64)
_SHAPE, _TIMED = (6, 389), (16, 16384)


@dataclass
class Row:
    """One line of the table (``status``: ``"pass"``, ``"FAIL"``, ``"reference"`` or
    ``"unavailable"``)."""

    rule: str
    config: str
    implementation: str
    dtype: str
    device: str
    status: str
    out_err: float | None = None
    state_err: float | None = None
    grad_err: float | None = None
    tolerance: float | None = None
    ms: float | None = None
    reference_ms: float | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- the rules: configurations, the torch implementation and each kernel family ---------------
def _cases() -> list[tuple[str, str, Any, Callable[..., Any], dict[str, Callable[..., Any]]]]:
    """``(rule, label, config, torch implementation, {implementation: function})``; every
    function maps ``(x, state, trace)`` to ``(outputs, states)`` tensors (``trace``: the initial
    trace, used where the configuration has one)."""
    from spikegrad.rules import bpsta, multistrength, na, reset_term, surrogate
    from spikegrad.rules.reset_term.spec import reset_term_spec

    cases = []
    for label, (mechanism, sur, k, tau_s) in {
            "zero, Sigmoid(0.3)": ("zero", surrogate.Sigmoid(0.3), 1.0, None),
            "subtract ATan k=.5 tau_s=2": ("subtract", surrogate.ATan(2.0), 0.5, 2.0),
    }.items():
        def rt_torch(x, v0, a0, mechanism=mechanism, sur=sur, k=k, tau_s=tau_s):
            s, v, _ = reset_term.SequenceFunction.apply(x, v0, 0.75, 1.0, sur, mechanism, k)
            return (s if tau_s is None else reset_term.trace(s, tau_s, a0=a0)), v

        def rt_triton(x, v0, a0, cfg=(0.75, 1.0, sur, mechanism, k, tau_s)):
            return _kernels("reset_term", "triton").sequence(x, v0, a0, reset_term_spec(*cfg))

        def rt_cupy(x, v0, a0, cfg=(0.75, 1.0, sur, mechanism, k, tau_s)):
            return reset_term.cupy.sequence(x, v0, a0, reset_term.cupy.spec(*cfg))
        cases.append(("reset_term", label, None, rt_torch,
                      {"triton": rt_triton, "cupy": rt_cupy}))
    for label, cfg in {"default": na.NA(),
                       "tau_s=2 subtract inv local": na.NA(
                           tau_s=2.0, reset="subtract", distance="inverse", error="local")
                       }.items():
        def na_with(implementation, cfg=cfg):
            import dataclasses

            use = dataclasses.replace(cfg, implementation=implementation)

            def fn(x, u0, a0):
                return na.sequence(x, use, None, u0.float(), a0)
            return fn

        def na_triton(x, u0, a0, cfg=cfg):
            return _kernels("na", "triton").sequence(x, cfg, None, u0.float(), a0)

        def na_cupy(x, u0, a0, cfg=cfg):
            return na.cupy.sequence(x, na.cupy.spec(cfg), None, u0.float(), a0)
        cases.append(("na", label, cfg, na_with("torch"),
                      {"cpp": na_with("cpp"), "triton": na_triton, "cupy": na_cupy}))
    # HTDGLIF and multi-strength: the same three entry points in each rule's folder
    fused = {
        bpsta: ({"paper": bpsta.HTDGLIF(),
                 "braincog dt=.5 alpha=.3": bpsta.HTDGLIF(mode="braincog", dt=0.5, alpha=0.3)},
                lambda c: (c.mode, c.threshold, c.decay, c.alpha, c.dt)),
        multistrength: ({"default": multistrength.MultiStrength(),
                         "max_strength=2 no detach": multistrength.MultiStrength(
                             max_strength=2, detach_reset=False)},
                        lambda c: (c.threshold, c.beta, c.max_strength, c.detach_reset)),
    }
    for module, (configs, torch_args) in fused.items():
        rule = module.__name__.rsplit(".", 1)[1]
        for label, cfg in configs.items():
            def on_torch(x, v0, a0, cfg=cfg, module=module, args=torch_args, rule=rule):
                out, v, _ = getattr(module.ops, f"{rule}_sequence")(x, v0, *args(cfg))
                return out, v

            def on_triton(x, v0, a0, cfg=cfg, rule=rule):
                return _kernels(rule, "triton").sequence(x, v0, cfg)

            def on_cupy(x, v0, a0, cfg=cfg, module=module):
                return module.cupy.sequence(x, v0, module.cupy.spec(cfg))
            cases.append((rule, label, cfg, on_torch, {"triton": on_triton, "cupy": on_cupy}))
    return cases


def _kernels(rule: str, family: str) -> Any:
    """``spikegrad.rules.<rule>.<family>`` (the Triton modules import Triton: on first use)."""
    return importlib.import_module(f"spikegrad.rules.{rule}.{family}")


# --- what can run here --------------------------------------------------------------------------
def _problem(implementation: str, device: torch.device, dtype: torch.dtype | None,
             interpret: bool) -> str | None:
    from spikegrad.rules import dispatch

    if implementation == "cpp":
        problem = dispatch.cpp_problem(device, dtype)
        return None if problem is None else problem[1]
    if implementation == "triton":
        from spikegrad.rules.triton_kernels import spec

        if device.type == "cpu" and not interpret:
            return ("the Triton kernels run on CUDA tensors; rerun with --interpret to check "
                    "them on the CPU in Triton's interpreter")
        return spec.available(device, dtype)
    if implementation == "cupy":
        if device.type != "cuda":
            return "the CuPy kernels run on CUDA tensors"
        problem = dispatch.cupy_problem(device)
        return None if problem is None else problem[1]
    return None


# --- one comparison -----------------------------------------------------------------------------
def _inputs(shape: tuple[int, int], seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 0.8 + 0.5
    state = torch.randn(shape[1:], generator=gen) * 0.3 + 0.2
    trace = torch.rand(shape[1:], generator=gen)
    return x, state, trace


def _forward_backward(fn: Callable[..., Any], args: list[torch.Tensor], ups: list[torch.Tensor]
                      ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    outs = list(fn(*args))
    wanted = [a for a in args if a.requires_grad]
    loss = sum((o.float() * g.float()).sum() for o, g in zip(outs, ups, strict=True))
    grads = torch.autograd.grad(loss, wanted, allow_unused=True)  # NA: no state gradient
    return [o.detach() for o in outs], list(grads)


def _max_err(got: list[Any], want: list[Any], tol: float
             ) -> tuple[float, bool]:
    err, ok = 0.0, True
    for g, w in zip(got, want, strict=True):
        if g is None or w is None:  # no gradient on one side: both must have none
            ok = ok and g is None and w is None
            continue
        g64, w64 = g.detach().double().cpu(), w.detach().double().cpu()
        if g64.shape != w64.shape:
            return float("inf"), False
        diff = (g64 - w64).abs()
        finite = torch.isfinite(g64) | ~torch.isfinite(w64)
        err = max(err, float(diff.nan_to_num(float("inf")).max()) if diff.numel() else 0.0)
        ok = ok and bool(finite.all()) and bool((diff <= tol + tol * w64.abs()).all())
    return err, ok


def compare(fn: Callable[..., Any], reference: Callable[..., Any], device: torch.device,
            dtype: torch.dtype, seed: int = 0) -> dict[str, Any]:
    """``fn`` on ``device``/``dtype`` against ``reference`` on the CPU (float32, or float64 for
    float64) from the same rounded inputs: the errors and whether each is within tolerance."""
    tol = TOLERANCE[dtype]
    x, state, trace = _inputs(_SHAPE, seed)
    x, state, trace = (t.to(dtype) for t in (x, state, trace))  # the rounded inputs
    ref_dtype = F64 if dtype == F64 else F32
    ref_args = [x.to(ref_dtype).requires_grad_(), state.to(ref_dtype).requires_grad_(),
                trace.to(ref_dtype).abs()]
    with torch.enable_grad():
        probe = list(reference(*[a.detach() for a in ref_args]))
        gen = torch.Generator().manual_seed(seed + 1)
        ups = [torch.randn(o.shape, generator=gen).to(dtype) for o in probe]
        want_out, want_grad = _forward_backward(reference, ref_args, [u.to(ref_dtype) for u in ups])
        args = [x.to(device).requires_grad_(), state.to(device).requires_grad_(),
                trace.to(device).abs()]
        got_out, got_grad = _forward_backward(fn, args, [u.to(device) for u in ups])
    # the reference's outputs rounded to the storage dtype (NA's u stays float32 in the kernels)
    want_out = [w.to(g.dtype) for w, g in zip(want_out, got_out, strict=True)]
    want_grad = [None if w is None else w.to(dtype) for w in want_grad]
    out_err, out_ok = _max_err(got_out[:1], want_out[:1], tol)
    state_err, state_ok = _max_err(got_out[1:], want_out[1:], tol)
    grad_err, grad_ok = _max_err(got_grad, want_grad, tol)
    return {"out_err": out_err, "state_err": state_err, "grad_err": grad_err,
            "tolerance": tol, "ok": out_ok and state_ok and grad_ok}


def _time(fn: Callable[..., Any], device: torch.device, dtype: torch.dtype,
          min_run_time: float) -> float:
    """Median ms of one forward + backward on ``[16, 16384]`` (torch.utils.benchmark, which
    synchronises CUDA)."""
    from torch.utils import benchmark

    x, state, trace = (t.to(device, dtype) for t in _inputs(_TIMED, 7))
    x.requires_grad_()

    def once() -> None:
        outs = fn(x, state, trace.abs())
        torch.autograd.grad(sum(o.float().sum() for o in outs), x)

    once()  # compile / build outside the timing
    timer = benchmark.Timer(stmt="once()", globals={"once": once})
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


# --- the run ------------------------------------------------------------------------------------
def run(*, devices: list[str] | None = None, implementations: list[str] | None = None,
        interpret: bool = False, timing: bool = True, min_run_time: float = 0.1,
        say: Callable[[str], None] | None = None) -> list[Row]:
    """Every row of the table (see the module docstring)."""
    devs = [torch.device(d) for d in (devices or (["cpu"] + (["cuda"] if
                                                               torch.cuda.is_available() else [])))]
    impls = implementations or ["torch", "cpp", "triton", "cupy"]
    rows: list[Row] = []
    cases = _cases()
    for device in devs:
        for impl in impls:
            reason = _problem(impl, device, None, interpret)
            if reason is not None:
                rows.append(Row("all", "", impl, "", str(device), "unavailable", reason=reason))
                continue
            interpreted = impl == "triton" and device.type == "cpu"
            for rule, label, _cfg, torch_fn, kernels in cases:
                fn = torch_fn if impl == "torch" else kernels.get(impl)
                if fn is None:
                    continue
                for dtype in (_CPU_TORCH if impl == "torch" and device.type == "cpu"
                              else DTYPES[impl]):
                    name = str(dtype).replace("torch.", "")
                    if say:
                        say(f"{rule} [{label}] {impl} {name} {device}")
                    why = _problem(impl, device, dtype, interpret)
                    if why is not None:
                        rows.append(Row(rule, label, impl, name, str(device), "unavailable",
                                        reason=why))
                        continue
                    row = Row(rule, label, impl, name, str(device), "pass")
                    if impl == "torch" and device.type == "cpu":
                        row.status = "reference"
                    else:
                        try:
                            res = compare(fn, torch_fn, device, dtype)
                        except Exception as exc:  # noqa: BLE001 - a failure is a row
                            row.status, row.reason = "FAIL", f"{type(exc).__name__}: {exc}"[:300]
                        else:
                            row.out_err, row.state_err = res["out_err"], res["state_err"]
                            row.grad_err, row.tolerance = res["grad_err"], res["tolerance"]
                            row.status = "pass" if res["ok"] else "FAIL"
                    if timing and row.status != "FAIL" and not interpreted:
                        try:
                            row.ms = _time(fn, device, dtype, min_run_time)
                            row.reference_ms = (row.ms if impl == "torch" else
                                                _time(torch_fn, device, dtype, min_run_time))
                        except Exception as exc:  # noqa: BLE001 - timing is secondary
                            row.extra["timing_error"] = f"{type(exc).__name__}: {exc}"[:200]
                    elif interpreted:
                        row.extra["timing"] = "not timed: Triton's interpreter"
                    rows.append(row)
    return rows


def _fmt(x: float | None) -> str:
    return "" if x is None else ("inf" if x == float("inf") else f"{x:.1e}" if x else "0")


def table(rows: list[Row]) -> str:
    """The rows as a table that fits 120 columns; unavailable implementations below it."""
    head = (f"{'rule':<13} {'configuration':<26} {'impl':<6} {'dtype':<8} {'device':<6} "
            f"{'out err':>7} {'state':>7} {'grad':>7} {'tol':>6} {'status':<9} "
            f"{'ms':>6} {'vs torch':>8}")  # 120 columns
    lines = [head, "-" * len(head)]
    notes = []
    for r in rows:
        if r.status == "unavailable":
            notes.append(f"{r.implementation} on {r.device}"
                         + (f" ({r.rule}, {r.dtype})" if r.rule != "all" else "")
                         + f": unavailable: {r.reason}")
            continue
        tol = "" if r.tolerance is None else f"{r.tolerance:.0e}"
        ratio = ("" if r.ms is None or not r.reference_ms else
                 "ref" if r.implementation == "torch" else f"{r.reference_ms / r.ms:.2f}x")
        lines.append(f"{r.rule:<13} {r.config[:26]:<26} {r.implementation:<6} {r.dtype:<8} "
                     f"{r.device[:6]:<6} {_fmt(r.out_err):>7} {_fmt(r.state_err):>7} "
                     f"{_fmt(r.grad_err):>7} {tol:>6} {r.status:<9} "
                     f"{'' if r.ms is None else f'{r.ms:.2f}':>6} {ratio:>8}")
        if r.status == "FAIL" and r.reason:
            lines.append(f"    {r.reason}")
    failed = sum(r.status == "FAIL" for r in rows)
    checked = sum(r.status in ("pass", "FAIL") for r in rows)
    lines.append("")
    if any(r.ms is not None for r in rows):
        lines.append(f"{checked} comparisons, {failed} failed. ms: one forward + backward of "
                     f"[{_TIMED[0]}, {_TIMED[1]}]; vs torch: the torch implementation's time "
                     "over")
        lines.append("this one's, same device and dtype (> 1: faster)")
    else:
        lines.append(f"{checked} comparisons, {failed} failed (nothing timed)")
    import textwrap

    return "\n".join(lines + [textwrap.fill(n, 120, subsequent_indent="    ") for n in notes])


def _environment() -> dict[str, Any]:
    import importlib.metadata as md

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda, "platform": platform.platform(),
                           "threads": torch.get_num_threads()}
    for pkg in ("spikegrad", "triton", "cupy-cuda13x", "cupy-cuda12x"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    return env


def main(argv: list[str] | None = None) -> int:
    """``python -m spikegrad.check [--json PATH] [--interpret] ...``: print the table of every
    comparison; the exit status is 1 if any comparison fails, else 0."""
    parser = argparse.ArgumentParser(prog="python -m spikegrad.check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--interpret", action="store_true",
                        help="run the Triton kernels on the CPU in Triton's interpreter "
                             "(sets TRITON_INTERPRET=1; slow, not timed)")
    parser.add_argument("--device", action="append", choices=("cpu", "cuda"),
                        help="only this device (repeatable; default: cpu and cuda if present)")
    parser.add_argument("--implementation", action="append",
                        choices=("torch", "cpp", "triton", "cupy"),
                        help="only this implementation (repeatable)")
    parser.add_argument("--no-timing", action="store_true", help="skip the timings")
    parser.add_argument("--min-run-time", type=float, default=0.1, metavar="S",
                        help="seconds of timing per measurement (default 0.1)")
    args = parser.parse_args(argv)
    if args.device and "cuda" in args.device and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
    if args.interpret:
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            parser.error("--interpret: Triton was imported before TRITON_INTERPRET=1 could be "
                         "set; run python -m spikegrad.check --interpret in a fresh process")
        os.environ["TRITON_INTERPRET"] = "1"
    start = time.perf_counter()
    rows = run(devices=args.device, implementations=args.implementation,
               interpret=args.interpret, timing=not args.no_timing,
               min_run_time=args.min_run_time,
               say=lambda s: print(f"  checking {s}", end="\r", file=sys.stderr, flush=True))
    print(" " * 79, end="\r", file=sys.stderr)
    env = _environment()
    print(f"spikegrad.check: torch {env['torch']}, "
          + (f"{env['gpu']} (sm {env['capability']})" if "gpu" in env else "no CUDA device")
          + f", {env['threads']} CPU threads, {time.perf_counter() - start:.1f} s")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": [asdict(r) for r in rows]}, f, indent=1)
        print(f"wrote {args.json}")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
