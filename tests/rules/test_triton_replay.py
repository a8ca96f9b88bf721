"""NA's Triton replay kernel (``spikegrad::triton_na_replay``) against the torch reference.

Without a GPU the kernel runs in Triton's interpreter on CPU tensors: as in
``test_triton_kernels.py``, this module sets ``TRITON_INTERPRET=1`` before Triton is first
imported; if Triton was imported earlier in the process without it, the tests run in a fresh
process (:func:`test_in_a_fresh_process`). With a GPU they run on CUDA tensors.

The reference is :func:`spikegrad.rules.na.reference_deltas` (the body of
``spikegrad::na_replay``), for float16/bfloat16 on the rounded inputs in float32. Covered:
with and without ``changed`` (random masks), with and without ``a_init``, ``tau_s`` None/2,
zero/subtract reset, both distances, ``K = 1`` and ``K = L``, ``L = 1``, odd neuron counts
(one partial block, more than one block), ``u`` exactly at the threshold; the dispatcher's
choice for the replay; and the per-step NALeaky loop whose backward replay runs the kernel
(forced by :func:`spikegrad.rules.dispatch.force_replay`) against the whole-window reference.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed: the Triton kernels cannot run", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"  # left set: see test_triton_kernels.py

from spikegrad.rules import dispatch, na  # noqa: E402
from spikegrad.rules.na import triton_replay as replay  # noqa: E402
from spikegrad.rules.triton_kernels import lib  # noqa: E402

#: u == ϑ exactly divides by +0 on purpose (w = +clamp); the interpreter's numpy says so
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
#: Triton was imported earlier in this process without the interpreter (CPU only)
ELSEWHERE = DEVICE == "cpu" and not lib.INTERPRETED


@pytest.fixture(autouse=True)
def _interpreter_or_elsewhere(request: pytest.FixtureRequest) -> None:
    if request.node.originalname == "test_kernel_compiles_to_ptx":
        return
    if request.node.originalname == "test_in_a_fresh_process":
        if not ELSEWHERE:
            pytest.skip("the kernel runs in this process: no need for a fresh one")
        return
    if ELSEWHERE:
        pytest.skip("Triton was imported in this process without TRITON_INTERPRET=1: these "
                    "tests ran in a fresh process instead (test_in_a_fresh_process)")


F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
TOL = {F32: dict(rtol=1e-6, atol=1e-6), F16: dict(rtol=2e-3, atol=2e-3),
       BF16: dict(rtol=1.6e-2, atol=1.6e-2)}
CFGS = [na.NA(beta=0.8, tau_s=ts, reset=r, distance=d, implementation="torch")
        for ts, r, d in [(None, "zero", "inverse_cube"), (2.0, "zero", "inverse"),
                         (2.0, "subtract", "inverse_cube"), (None, "subtract", "inverse")]]
CFG_IDS = ["spikes-zero-cube", "trace-zero-inv", "trace-sub-cube", "spikes-sub-inv"]


def inputs(L: int, shape: tuple[int, ...], cfg: na.NA, seed: int, *, changed: bool,
           a_init: bool, dtype: torch.dtype = F32):
    """A recorded window (``c, u, a`` of the forward pass from a random state), errors, an
    optional random ``changed`` mask (where ``u`` is then replaced, as set from outside) and
    ``a_init``; some ``u`` exactly at the threshold. Rounded to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn((L, *shape), generator=gen) * 0.9 + 0.35
    u0 = torch.rand(shape, generator=gen) * 1.4
    a0 = torch.rand(shape, generator=gen) if a_init else None
    _, u, a = na.reference_forward(c, cfg, a_init=a0, u_init=u0)
    mask = None
    if changed:
        mask = torch.rand((L, *shape), generator=gen) < 0.3
        u = torch.where(mask, torch.rand((L, *shape), generator=gen) * 2.0, u)
    at = torch.rand((L, *shape), generator=gen) < 0.05
    u = torch.where(at, torch.full_like(u, cfg.threshold), u)  # exactly at ϑ
    e = torch.randn((L, *shape), generator=gen)
    rnd = [x.to(dtype) for x in (c, u, a, e)] + [None if a0 is None else a0.to(dtype)]
    return (*rnd, mask)


def check(L, shape, cfg, K, *, changed, a_init, dtype=F32, seed=0):
    c, u, a, e, a0, mask = (x if x is None else x.to(DEVICE) for x in
                            inputs(L, shape, cfg, seed, changed=changed, a_init=a_init,
                                   dtype=dtype))
    got = replay.na_replay(c, u, a, e, a0, mask, K, cfg.beta, cfg.threshold, cfg.tau_s,
                           cfg.reset, cfg.distance, cfg.clamp)
    f = [x if x is None else x.float() for x in (c, u, a, e, a0)]
    ref = na.reference_deltas(*f[:4], cfg, a_init=f[4], neighbors=K, changed=mask)
    assert got.dtype == dtype and got.shape == (K, *shape)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref.to(dtype), **TOL[dtype])
    return got, ref, u


# --- the kernel against the reference ----------------------------------------------------------
@pytest.mark.parametrize("cfg", CFGS, ids=CFG_IDS)
@pytest.mark.parametrize("changed", [False, True], ids=["free", "changed"])
@pytest.mark.parametrize("a_init", [False, True], ids=["rest", "a_init"])
def test_replay_matches_reference_f32(cfg, changed, a_init):
    for L, shape in ((7, (2, 65)), (1, (67,)), (5, (3,))):  # M = 130 > one block; L = 1
        for K in sorted({1, L}):
            check(L, shape, cfg, K, changed=changed, a_init=a_init, seed=L + K)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["f16", "bf16"])
@pytest.mark.parametrize("cfg", CFGS[1:3], ids=CFG_IDS[1:3])
def test_replay_matches_reference_half(cfg, dtype):
    for changed, K in ((False, 6), (True, 6), (True, 1)):
        check(6, (2, 67), cfg, K, changed=changed, a_init=True, dtype=dtype, seed=K)


def test_threshold_exactly_gives_plus_clamp():
    """``u[k] == ϑ``: ``w = +clamp`` (finite), for both distances."""
    for cfg in CFGS:
        got, ref, u = check(6, (67,), cfg, 6, changed=False, a_init=False, seed=3)
        at = u == cfg.threshold
        assert at.any()
        ones = replay.na_replay(*(torch.zeros_like(u) for _ in range(3)), torch.ones_like(u),
                                None, None, 6, cfg.beta, cfg.threshold, cfg.tau_s, cfg.reset,
                                cfg.distance, cfg.clamp)
        # zero inputs: the flipped spike at k adds one to the trace at k, so ΔL[k] > 0
        assert torch.isfinite(ones).all() and (ones > 0).all()
        at_th = replay.na_replay(*(torch.full_like(u[:1], v) for v in (0.0, cfg.threshold)),
                                 torch.zeros_like(u[:1]), torch.ones_like(u[:1]), None, None,
                                 1, cfg.beta, cfg.threshold, cfg.tau_s, cfg.reset,
                                 cfg.distance, cfg.clamp)
        # u == ϑ: no spike; the flip adds one (a = gain), ΔL = gain - 0, w = +clamp
        assert torch.equal(at_th, torch.full_like(at_th, cfg.trace_gain * cfg.clamp))


def test_changed_everywhere_is_the_first_step_alone():
    """``changed`` set at every later step: every replay merges at once, only the trace gap
    carries on (none without a trace)."""
    cfg = CFGS[0]
    c, u, _, e, _, _ = inputs(5, (67,), cfg, 9, changed=False, a_init=False)
    a = (u > cfg.threshold).float()  # the recorded spikes: later steps add nothing
    mask = torch.ones_like(u, dtype=torch.bool)
    got = replay.na_replay(c, u, a, e, None, mask, 5, cfg.beta, cfg.threshold, None, cfg.reset,
                           cfg.distance, cfg.clamp)
    s = (u > cfg.threshold).float()
    torch.testing.assert_close(got, e * (1 - 2 * s) * na.distance_weight(u, cfg), **TOL[F32])


def test_rejects_bad_arguments():
    c = torch.zeros(3, 4)
    args = (0.8, 1.0, None, "zero", "inverse_cube", 5.0)
    with pytest.raises(ValueError, match="neighbors"):
        replay.na_replay(c, c, c, c, None, None, 4, *args)
    with pytest.raises(ValueError, match="shape"):
        replay.na_replay(c, c[:2], c, c, None, None, 1, *args)
    with pytest.raises(ValueError, match="bool"):
        replay.na_replay(c, c, c, c, None, c, 1, *args)
    assert replay.na_replay(c, c, c, c, None, None, 0, *args).shape == (0, 4)


# --- the dispatcher -----------------------------------------------------------------------------
def test_dispatcher_replay_choice():
    """CPU: the reference unless forced; forced Triton runs the kernel under the interpreter;
    a CUDA device picks Triton for the kernel dtypes."""
    assert dispatch.replay_choice("cpu", F32) == dispatch.Choice("torch")
    with dispatch.force_replay("triton"):
        assert dispatch.replay_choice("cpu", F32).implementation == "triton"
        with pytest.raises(ValueError, match="float64"):
            dispatch.replay_choice("cpu", torch.float64)
        with dispatch.force_replay("torch"):
            assert dispatch.replay_choice("cpu", F32).implementation == "torch"
        assert dispatch.replay_choice("cpu", F32).implementation == "triton"
    assert dispatch.replay_choice("cpu", F32).implementation == "torch"
    with pytest.raises(ValueError):
        with dispatch.force_replay("cupy"):
            pass
    cuda = dispatch.replay_choice("cuda", F32)
    if torch.cuda.is_available():
        assert cuda == dispatch.Choice("triton")
        assert dispatch.replay_choice("cuda", torch.float64).implementation == "torch"
    else:
        assert cuda.implementation == "torch" and "no CUDA device" in cuda.reason


def _spy(monkeypatch) -> list[str]:
    """The names of the Triton kernels launched (interpreter) or of the replay op calls."""
    launched: list[str] = []
    real = replay.na_replay_op

    def spy(*args, **kwargs):
        launched.append("triton_na_replay")
        return real(*args, **kwargs)

    monkeypatch.setattr(replay, "na_replay_op", spy)
    return launched


def test_replay_operator_routes_when_forced(monkeypatch):
    """``spikegrad::na_replay`` itself runs the kernel under ``force_replay("triton")``."""
    launched = _spy(monkeypatch)
    monkeypatch.setattr(dispatch, "cpp_problem",  # "auto" runs the torch operator then
                        lambda *_: (RuntimeError, "disabled in this test"))
    cfg = dataclasses.replace(CFGS[2], implementation="auto")
    c, u, a, e, a0, mask = (x if x is None else x.to(DEVICE)
                            for x in inputs(6, (2, 67), cfg, 4, changed=True, a_init=True))
    with dispatch.force_replay("torch"):
        ref = na.deltas(c, u, (u > 1).float(), a, e, cfg, a_init=a0, changed=mask)
    assert launched == []
    with dispatch.force_replay("triton"):
        got = na.deltas(c, u, (u > 1).float(), a, e, cfg, a_init=a0, changed=mask)
    assert launched == ["triton_na_replay"]
    torch.testing.assert_close(got, ref, **TOL[F32])


# --- the per-step NALeaky loop ------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(tau_s=None), dict(tau_s=2.0, reset_mechanism="subtract"),
                                dict(tau_s=2.0, distance="inverse")],
                         ids=["spikes", "trace-subtract", "trace-inverse"])
def test_per_step_loop_with_triton_replay_equals_window(monkeypatch, kw):
    """The per-step loop's backward (each step replays its neighbor over the window's suffix
    through ``spikegrad::na_replay``) with the Triton replay equals the whole-window reference;
    a loop whose ``mem`` is changed between steps (``changed``) equals the same loop with the
    torch replay."""
    pytest.importorskip("snntorch")
    from spikegrad.neurons.snntorch_na import NALeaky

    launched = _spy(monkeypatch)
    # the torch operator spikegrad::na_replay (not the compiled CPU kernel, its own op): "auto"
    # with the compiled kernel unavailable ("torch" would run the reference without the op)
    monkeypatch.setattr(dispatch, "cpp_problem",
                        lambda *_: (RuntimeError, "disabled in this test"))
    T, shape = 6, (2, 67)
    x = (torch.randn((T, *shape), generator=torch.Generator().manual_seed(11)) * 0.9 + 0.4
         ).to(DEVICE).requires_grad_()
    g_out = torch.randn((T, *shape), generator=torch.Generator().manual_seed(12)).to(DEVICE)
    keep = (torch.rand(shape, generator=torch.Generator().manual_seed(13)) < 0.8).to(DEVICE)

    def loop(edit: bool):
        lif = NALeaky(0.8, **kw).to(DEVICE)
        mem = lif.init_leaky()
        outs = []
        for t in range(T):
            out, mem = lif(x[t], mem)
            if edit and t == 2:
                mem = mem * keep  # changed from outside: the replay merges there
            outs.append(out)
        (g,) = torch.autograd.grad((torch.stack(outs) * g_out).sum(), x)
        return g

    with dispatch.force_replay("triton"):
        got, got_edit = loop(False), loop(True)
    assert launched == ["triton_na_replay"] * (2 * T)
    cfg = dataclasses.replace(NALeaky(0.8, **kw).rule, implementation="torch")
    with dispatch.force_replay("torch"):
        out, _ = na.sequence(x, cfg, triton=False)
        (ref,) = torch.autograd.grad((out * g_out).sum(), x)
        ref_edit = loop(True)
    assert len(launched) == 2 * T
    torch.testing.assert_close(got, ref, **TOL[F32])
    torch.testing.assert_close(got_edit, ref_edit, **TOL[F32])
    assert not torch.equal(got_edit, got)


def test_explicit_torch_implementation_never_runs_the_triton_replay(monkeypatch):
    """``NA(implementation="torch")`` means the torch reference on every device: neither the
    per-step window's backward nor a whole window's runs the Triton replay, even where
    ``spikegrad::na_replay`` would (simulated by ``force_replay("triton")``); the gradients
    are the reference's."""
    pytest.importorskip("snntorch")
    from spikegrad.neurons.snntorch_na import NALeaky

    launched = _spy(monkeypatch)
    T, shape = 5, (2, 67)
    x = (torch.randn((T, *shape), generator=torch.Generator().manual_seed(21)) * 0.9 + 0.4
         ).to(DEVICE).requires_grad_()
    g_out = torch.randn((T, *shape), generator=torch.Generator().manual_seed(22)).to(DEVICE)
    cfg = dataclasses.replace(NALeaky(0.8, tau_s=2.0).rule, implementation="torch")

    def per_step():
        lif = NALeaky(0.8, tau_s=2.0).to(DEVICE)
        lif.rule = cfg
        mem, outs = lif.init_leaky(), []
        for t in range(T):
            out, mem = lif(x[t], mem)
            outs.append(out)
        return torch.autograd.grad((torch.stack(outs) * g_out).sum(), x)[0]

    def window():
        out, _ = na.sequence(x, cfg)
        return torch.autograd.grad((out * g_out).sum(), x)[0]

    with dispatch.force_replay("triton"):
        got_step, got_window = per_step(), window()
        c, u, a, e, a0, _ = (y if y is None else y.to(DEVICE)
                             for y in inputs(6, (2, 67), CFGS[2], 4, changed=False,
                                             a_init=True))
        torch.ops.spikegrad.na_replay(c, u, a, e, a0, None, 6, *na._hyper(CFGS[2]),
                                      CFGS[2].distance, CFGS[2].clamp)
    assert launched == ["triton_na_replay"], "only the direct operator call runs the kernel"
    s, u_ref, a_ref = na.reference_forward(x.detach(), cfg)
    e_ref = na.errors(g_out, cfg)
    ref = na.reference_deltas(x.detach(), u_ref, a_ref, e_ref, cfg)
    torch.testing.assert_close(got_window, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_step, ref, rtol=1e-5, atol=1e-6)
    assert float(ref.abs().max()) > 0


# --- fresh processes ----------------------------------------------------------------------------
def _run(*args: str, interpret: bool) -> str:
    """``python *args`` in a fresh process (the repository on ``PYTHONPATH``): its output."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                         cwd=root, timeout=600, check=False)
    out = res.stdout + res.stderr[-3000:]
    assert res.returncode == 0, textwrap.shorten(out, 4000)
    return out


_PTX = """
import triton
from triton.backends.compiler import GPUTarget
from spikegrad.rules.na import triton_replay as replay
k, n = replay.na_replay_kernel, 0
for store, flags in (("*bf16", {}), ("*fp16", {"TRACE": False, "CUBE": False,
                     "HAS_CHANGED": False, "HAS_A0": False}), ("*fp32", {"SUBTRACT": False})):
    consts = {k.arg_names[i]: flags.get(k.arg_names[i], True) for i in k.constexprs}
    consts["BLOCK"] = 128
    sig = {a: "constexpr" if a in consts else "*u8" if a == "ch_ptr" else store
           if a.endswith("_ptr") else "i32" if a in ("L", "M", "K") else "fp32"
           for a in k.arg_names}
    src = triton.compiler.ASTSource(fn=k, signature=sig, constexprs=consts)
    text = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"enable_fp_fusion": False, "num_warps": 4}).asm["ptx"]
    assert ".entry" in text
    for bad in ("fma.", "div.full", "div.approx"):
        assert bad not in text, (store, flags, bad)
    n += 1
print("replay ptx ok", n)
"""


def test_kernel_compiles_to_ptx():
    """In a fresh process without the interpreter (and without a GPU): the replay kernel
    compiles to PTX for sm_90 (bfloat16, float16, float32 storage; several flag sets) with no
    FMA and no approximate division."""
    assert "replay ptx ok 3" in _run("-c", _PTX, interpret=False)


def test_in_a_fresh_process():
    """Triton was imported in this process before this module could turn the interpreter on:
    the tests of this file run in a fresh process with ``TRITON_INTERPRET=1``."""
    out = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, interpret=True)
    assert " passed" in out and "failed" not in out, out[-3000:]
