"""The hand-written Triton kernels (each rule folder's ``triton.py``) against the torch references.

Without a GPU the kernels run in Triton's interpreter on CPU tensors: this module sets
``TRITON_INTERPRET=1`` before Triton is first imported (and leaves it set: a CPU-only process
cannot compile Triton kernels anyway), and :func:`test_kernels_really_run_in_the_interpreter`
checks that every call launches the interpreted kernels. If Triton was imported earlier in the
process, the tests run in a fresh process (:func:`test_in_a_fresh_process`). With a GPU they
run on CUDA tensors (compiled kernels; not seen yet).

Every rule, forward and backward, float32/float16/bfloat16 (the reference for half types is
the float32 computation on the rounded inputs, rounded), odd shapes, ``T = 1``, more neurons
than one program's block, random upstream gradients on every output and random initial
states: outputs identical, gradients within per-dtype tolerances; chained calls equal one call.
A subprocess (no interpreter, no GPU) compiles every kernel to PTX for sm_90 and traces the
operators with ``torch.compile`` to check that the kernels are in the forward and backward
graphs.
"""

from __future__ import annotations

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

#: CUDA where there is a GPU (compiled kernels); else the CPU through Triton's interpreter, which
#: must be on when Triton itself is first imported (its standard library is decorated then)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_FRESH = "triton" not in sys.modules
if DEVICE == "cpu" and _FRESH:
    # Left set for the rest of the process: Triton imports parts of itself lazily and asserts
    # the same mode then; without a GPU it cannot compile a kernel anyway.
    os.environ["TRITON_INTERPRET"] = "1"

import spikegrad.rules.triton_kernels as triton_kernels  # noqa: E402
from spikegrad.rules import bpsta, multistrength, na, reset_term, surrogate  # noqa: E402
from spikegrad.rules.bpsta import triton as ht_triton  # noqa: E402
from spikegrad.rules.multistrength import triton as ms_triton  # noqa: E402
from spikegrad.rules.na import triton as na_triton  # noqa: E402
from spikegrad.rules.reset_term import triton as rt_triton  # noqa: E402
from spikegrad.rules.reset_term.spec import reset_term_spec  # noqa: E402
from spikegrad.rules.triton_kernels import lib  # noqa: E402

#: Triton was imported earlier in this process without the interpreter (CPU only): the tests
#: run in a fresh process instead (test_in_a_fresh_process)
ELSEWHERE = DEVICE == "cpu" and not lib.INTERPRETED
#: tests that start their own process (they run in every case)
OWN_PROCESS = ("test_in_a_fresh_process", "test_import_without_triton",
               "test_kernels_compile_to_ptx_and_trace_into_compile_graphs")


@pytest.fixture(autouse=True)
def _interpreter_or_elsewhere(request: pytest.FixtureRequest) -> None:
    if request.node.originalname in OWN_PROCESS:
        if request.node.originalname == OWN_PROCESS[0] and not ELSEWHERE:
            pytest.skip("the kernels run in this process: no need for a fresh one")
        return
    if ELSEWHERE:
        pytest.skip("Triton was imported in this process without TRITON_INTERPRET=1: these "
                    "tests ran in a fresh process instead (test_in_a_fresh_process)")

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
DTYPES = [pytest.param(F32, id="f32"), pytest.param(F16, id="f16"), pytest.param(BF16, id="bf16")]
TOL = {F32: dict(rtol=1e-5, atol=1e-5), F16: dict(rtol=2e-3, atol=2e-3),
       BF16: dict(rtol=1.6e-2, atol=1.6e-2)}
SHAPES = [(1, 3, 4), (6, 3, 5), (4, 2, 67)]  # T = 1; odd sizes; N = 134 > one block of 128

RT = [  # (mechanism, surrogate, reset_grad_scale, tau_s)
    ("zero", surrogate.Sigmoid(0.3), 1.0, None),
    ("zero", surrogate.Sigmoid(0.3, inclusive=True), 0.0, 2.0),
    ("subtract", surrogate.Sigmoid(0.3, inclusive=True), 1.0, 2.0),
    ("subtract", surrogate.ATan(2.0), 0.3, None),
    ("zero", surrogate.ATan(2.0, inclusive=True), 0.3, 3.0),
]
NA_CFGS = [na.NA(beta=0.8, implementation="torch", tau_s=ts, reset=r, distance=d, error=e)
           for ts, r, d, e in [(None, "zero", "inverse_cube", "accumulated"),
                               (2.0, "zero", "inverse_cube", "accumulated"),
                               (2.0, "subtract", "inverse", "accumulated"),
                               (4.0, "zero", "inverse", "local"),
                               (None, "subtract", "inverse", "local")]]
HT_CFGS = [bpsta.HTDGLIF(), bpsta.HTDGLIF(decay=0.7, alpha=0.5),
           bpsta.HTDGLIF(mode="braincog"), bpsta.HTDGLIF(mode="braincog", dt=0.5, alpha=0.3)]
MS_CFGS = [multistrength.MultiStrength(), multistrength.MultiStrength(max_strength=2),
           multistrength.MultiStrength(threshold=0.3, detach_reset=False),
           multistrength.MultiStrength(threshold=0.7, beta=0.9, max_strength=3,
                                       detach_reset=False)]


# --- references and the comparison -------------------------------------------------------------
def rt_spec(cfg):
    mechanism, sur, k, tau_s = cfg
    return reset_term_spec(0.75, 1.0, sur, mechanism, k, tau_s)


def rt_reference(cfg):
    mechanism, sur, k, tau_s = cfg

    def reference(c, v0, a0):
        s, v, _ = reset_term.SequenceFunction.apply(c, v0, 0.75, 1.0, sur, mechanism, k)
        return (s if tau_s is None else reset_term.trace(s, tau_s, a0=a0)), v
    return reference


def loop(step, cfg):
    def reference(x, v0):
        outs, vs, v = [], [], v0
        for t in range(x.shape[0]):
            o, v = step(x[t], v, cfg)
            outs.append(o)
            vs.append(v)
        return torch.stack(outs), torch.stack(vs)
    return reference


def _ht_step(x, v, cfg):
    o, _, v = bpsta.reference_step_v(x, v, cfg)
    return o, v


def inputs(shape, seed, mean=0.45, std=0.7):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * std + mean
    s0 = torch.randn(shape[1:], generator=gen) * 0.3 + 0.2
    a0 = torch.rand(shape[1:], generator=gen)
    return x, s0, a0


def compare(kernel, reference, args, dtype, seed, out_dtypes=None):
    """Kernel (storage ``dtype``) vs the float32 reference on the same rounded inputs: outputs
    identical (rounded to ``dtype``), gradients of random upstream gradients on every output
    close. ``out_dtypes``: an output's dtype where it is not ``dtype`` (NA's ``u``)."""
    gen = torch.Generator().manual_seed(seed)
    xk = [x.detach().to(DEVICE, dtype).requires_grad_(x.requires_grad) for x in args]
    xr = [x.detach().float().requires_grad_(x.requires_grad) for x in xk]
    outs_k, outs_r = kernel(*xk), reference(*xr)
    wants = out_dtypes or [dtype] * len(outs_r)
    for ok, orf, want in zip(outs_k, outs_r, wants, strict=True):
        assert ok.dtype == want and ok.shape == orf.shape
        assert torch.equal(ok, orf.to(want)), (ok.float() - orf).abs().max()
    ups = [torch.randn(o.shape, generator=gen).to(DEVICE, o.dtype) for o in outs_k]
    diff = [i for i, x in enumerate(xk) if x.requires_grad]
    gk = torch.autograd.grad(sum((o * g).sum() for o, g in zip(outs_k, ups, strict=True)),
                             [xk[i] for i in diff])
    gr = torch.autograd.grad(sum((o * g.float()).sum() for o, g in zip(outs_r, ups, strict=True)),
                             [xr[i] for i in diff])
    for a, b in zip(gk, gr, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b.to(dtype), **TOL[dtype])


# --- the kernels that run -----------------------------------------------------------------------
@pytest.mark.skipif(DEVICE == "cuda", reason="a GPU is here: the kernels are compiled")
def test_kernels_really_run_in_the_interpreter(monkeypatch):
    """Every entry point launches its interpreted forward and backward kernels (not torch)."""
    from triton.runtime.interpreter import InterpretedFunction

    kernels = [getattr(module, f"{rule}_{d}") for rule, module in [
        ("reset_term", rt_triton), ("bpsta", ht_triton), ("multistrength", ms_triton),
        ("na", na_triton)] for d in ("fwd", "bwd")]
    assert lib.INTERPRETED, ("the kernels were imported before this module set "
                             "TRITON_INTERPRET=1; run this test file on its own")
    assert all(isinstance(k, InterpretedFunction) for k in kernels)
    assert triton_kernels.available("cpu", F32) is None
    launched = []
    run = InterpretedFunction.run

    def spy(self, *args, **kwargs):
        launched.append(self.fn.__name__)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", spy)
    x = torch.rand(3, 2, requires_grad=True)
    for fn, name in [(lambda: rt_triton.sequence(x, None, None, rt_spec(RT[1])), "reset_term"),
                     (lambda: na_triton.sequence(x, NA_CFGS[1]), "na"),
                     (lambda: ht_triton.sequence(x, None, HT_CFGS[0]), "bpsta"),
                     (lambda: ms_triton.sequence(x, None, MS_CFGS[0]), "multistrength")]:
        launched.clear()
        out = fn()
        torch.autograd.grad(out[0].sum(), x)
        assert launched == [f"{name}_fwd", f"{name}_bwd"]
    assert torch.ops.spikegrad.triton_na_bwd.default is not None


# --- each rule against its reference ------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", RT, ids=lambda c: f"{c[0]}-{type(c[1]).__name__}"
                         f"-incl{int(c[1].inclusive)}-k{c[2]}-{c[3]}")
def test_reset_term_matches_reference(cfg, dtype):
    spec = rt_spec(cfg)
    for i, shape in enumerate(SHAPES):
        c, v0, a0 = inputs(shape, seed=i)
        compare(lambda c_, v_, a_: rt_triton.sequence(c_, v_, a_, spec), rt_reference(cfg),
                [c.requires_grad_(), v0.requires_grad_(), a0.requires_grad_(cfg[3] is not None)],
                dtype, i)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # 1 / (θ - u) at u == θ
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", NA_CFGS,
                         ids=lambda c: f"{c.tau_s}-{c.reset}-{c.distance}-{c.error}")
def test_na_matches_reference(cfg, dtype):
    for i, shape in enumerate(SHAPES + [(9, 3)]):
        c, _, a0 = inputs(shape, seed=10 + i, mean=0.5, std=0.6)
        u0 = torch.rand(shape[1:], generator=torch.Generator().manual_seed(i)) * 1.4
        if shape == (9, 3):
            c[0, 0], u0[0] = 1.0, 0.0  # u == θ exactly: no spike (strict), weight +clamp
        compare(lambda c_, u_, a_: na_triton.sequence(c_, cfg, None, u_, a_),
                lambda c_, u_, a_: na.NAFunction.apply(c_, cfg, None, u_, a_),
                [c.requires_grad_(), u0, a0], dtype, i, out_dtypes=(dtype, F32))


def test_na_rescale_is_applied_outside_the_operator():
    cfg = NA_CFGS[1]
    c, _, _ = inputs((7, 4, 5), seed=3, mean=0.5, std=0.6)
    r_k, r_r = na.Rescale(), na.Rescale()
    compare(lambda x: na_triton.sequence(x, cfg, r_k), lambda x: na.NAFunction.apply(x, cfg, r_r),
            [c.requires_grad_()], F32, 3, out_dtypes=(F32, F32))
    assert r_k.ref is not None and r_k.ref == r_r.ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", HT_CFGS, ids=lambda c: f"{c.mode}-{c.decay}-{c.alpha}-{c.dt}")
def test_bpsta_matches_reference(cfg, dtype):
    for i, shape in enumerate(SHAPES):
        x, v0, _ = inputs(shape, seed=20 + i, mean=0.3, std=0.6)
        compare(lambda x_, v_: ht_triton.sequence(x_, v_, cfg), loop(_ht_step, cfg),
                [x.requires_grad_(), v0.requires_grad_()], dtype, i)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", MS_CFGS, ids=lambda c: f"tau{c.threshold}-b{c.beta}"
                         f"-D{c.max_strength}-detach{int(c.detach_reset)}")
def test_multistrength_matches_reference(cfg, dtype):
    for i, shape in enumerate(SHAPES):
        z, v0, _ = inputs(shape, seed=30 + i, mean=0.6, std=1.2)
        compare(lambda z_, v_: ms_triton.sequence(z_, v_, cfg),
                loop(multistrength.reference_step, cfg), [z.requires_grad_(), v0.requires_grad_()],
                dtype, i)


# --- chained calls ------------------------------------------------------------------------------
def _halves(one, two, args, n_grad):
    """``one(*args)`` vs ``two(*args)`` (the same sequence in two calls): outputs identical,
    gradients (random upstream, every output) equal to float32 rounding."""
    args = [a.detach().to(DEVICE).requires_grad_(a.requires_grad) for a in args]
    outs_1, outs_2 = one(*args), two(*args)
    for a, b in zip(outs_1, outs_2, strict=True):
        assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(7)
    ups = [torch.randn(o.shape, generator=gen).to(DEVICE) for o in outs_1]
    g1, g2 = (torch.autograd.grad(sum((o * g).sum() for o, g in zip(outs, ups, strict=True)),
                                  args[:n_grad]) for outs in (outs_1, outs_2))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, **TOL[F32])


@pytest.mark.parametrize("cfg", [RT[2], RT[3]], ids=["trace", "spikes"])
def test_reset_term_two_halves_equal_one_call(cfg):
    spec, k = rt_spec(cfg), 3
    c, v0, a0 = inputs((7, 3, 5), seed=40)

    def two(c_, v_, a_):
        o1, v1 = rt_triton.sequence(c_[:k], v_, a_, spec)
        o2, v2 = rt_triton.sequence(c_[k:], v1[-1], o1[-1] if cfg[3] else None, spec)
        return torch.cat([o1, o2]), torch.cat([v1, v2])

    _halves(lambda c_, v_, a_: rt_triton.sequence(c_, v_, a_, spec), two,
            [c.requires_grad_(), v0.requires_grad_(), a0.requires_grad_()], 3 if cfg[3] else 2)


def test_bpsta_and_multistrength_two_halves_equal_one_call():
    for cfg, fn in [(HT_CFGS[1], ht_triton.sequence), (HT_CFGS[3], ht_triton.sequence),
                    (MS_CFGS[3], ms_triton.sequence)]:
        x, v0, _ = inputs((7, 3, 5), seed=41, mean=0.5, std=1.0)

        def two(x_, v_, cfg=cfg, fn=fn):
            o1, v1 = fn(x_[:4], v_, cfg)
            o2, v2 = fn(x_[4:], v1[-1], cfg)
            return torch.cat([o1, o2]), torch.cat([v1, v2])

        _halves(lambda x_, v_, cfg=cfg, fn=fn: fn(x_, v_, cfg), two,
                [x.requires_grad_(), v0.requires_grad_()], 2)


@pytest.mark.parametrize("cfg", [NA_CFGS[1], NA_CFGS[4]], ids=["trace", "spikes"])
def test_na_two_windows_continue_the_state(cfg):
    """NA's second window from ``(u[-1], a[-1])``: the forward equals one window; the
    gradient is each window's own NA backward (the replay does not cross windows), so the
    chained kernels are compared with the chained reference."""
    c, _, _ = inputs((8, 3, 5), seed=42, mean=0.5, std=0.6)

    def chain(fn):
        def two(c_):
            o1, u1 = fn(c_[:3], None, None)
            o2, u2 = fn(c_[3:], u1[-1].detach(), o1[-1].detach() if cfg.tau_s else None)
            return torch.cat([o1, o2]), torch.cat([u1, u2])
        return two

    kern = chain(lambda c_, u_, a_: na_triton.sequence(c_, cfg, None, u_, a_))
    ref = chain(lambda c_, u_, a_: na.NAFunction.apply(c_, cfg, None, u_, a_))
    whole = na_triton.sequence(c.to(DEVICE), cfg)
    for a, b in zip(kern(c.to(DEVICE)), whole, strict=True):
        assert torch.equal(a, b)
    compare(kern, ref, [c.requires_grad_()], F32, 42, out_dtypes=(F32, F32))


# --- boundaries ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inclusive", [True, False])
def test_spike_at_exactly_the_threshold(inclusive, dtype):
    """u == θ: spikes with inclusive=True (x >= 0), not without (x > 0); NA is strict."""
    cfg = ("zero", surrogate.Sigmoid(0.3, inclusive=inclusive), 1.0, None)
    c = torch.tensor([[1.0, 0.625], [0.0, 0.0], [0.0, 0.0]])  # u = 1 and 0.75 * 0.5 + 0.625 = 1
    v0 = torch.tensor([0.0, 0.5])
    out, _ = rt_triton.sequence(c.to(DEVICE, dtype), v0.to(DEVICE, dtype), None, rt_spec(cfg))
    assert out.tolist() == [[float(inclusive)] * 2, [0.0, 0.0], [0.0, 0.0]]
    compare(lambda c_, v_: rt_triton.sequence(c_, v_, None, rt_spec(cfg)),
            lambda c_, v_: rt_reference(cfg)(c_, v_, None),
            [c.requires_grad_(), v0.requires_grad_()], dtype, 5)
    na_out, _ = na_triton.sequence(c.detach().to(DEVICE, dtype), NA_CFGS[0])
    assert na_out.sum().item() == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_multistrength_window_ends_at_exactly_tau_times_d_plus_one(dtype):
    """h == τ(D + 1) (D = 2, τ = 0.5: 1.5) is outside the gradient window; just below is in."""
    cfg = multistrength.MultiStrength(threshold=0.5, max_strength=2)
    z = torch.tensor([[1.5, 1.4921875, 1.0, -0.5]])  # 1.4921875: below 1.5 in every dtype
    theta, _ = ms_triton.sequence(z.to(DEVICE, dtype), None, cfg)
    assert theta.tolist() == [[2.0, 2.0, 2.0, 0.0]]
    zk = z.to(DEVICE, dtype).requires_grad_()
    (g,) = torch.autograd.grad(ms_triton.sequence(zk, None, cfg)[0].sum(), zk)
    assert g.tolist() == [[0.0, 2.0, 2.0, 0.0]]  # dθ/dh = 1/τ inside [0, τ(D+1)) only


def test_bfloat16_outputs_round_to_nearest_even():
    """Stored bfloat16 values are float32 results rounded to nearest even, as torch rounds
    (Triton's interpreter would truncate): ties to even, above a tie up, large values."""
    cfg = multistrength.MultiStrength(threshold=1000.0)  # θ = 0, so v = v0 + z
    v0 = torch.tensor([1.0, 1.0, 1.0, 256.0], dtype=BF16, device=DEVICE)
    z = torch.tensor([[2.0**-8, 3 * 2.0**-8, 1.5 * 2.0**-8, 1.5]], dtype=BF16, device=DEVICE)
    _, v = ms_triton.sequence(z, v0, cfg)
    want = (v0.float() + z.float()).to(BF16)
    assert torch.equal(v, want) and v.float().tolist() == [[1.0, 1.015625, 1.0078125, 258.0]]


# --- checks, availability, broadcasting ---------------------------------------------------------
def test_available_and_errors_name_the_reason():
    assert "float64" in triton_kernels.available("cpu", torch.float64)
    if not torch.cuda.is_available():
        assert "CUDA" in triton_kernels.available("cuda")
    assert "not meta" in triton_kernels.available("meta")
    with pytest.raises(TypeError, match="float64"):
        ht_triton.sequence(torch.zeros(2, 3, dtype=torch.float64), None, HT_CFGS[0])
    with pytest.raises(ValueError, match=r"v0 has shape \(4,\), which does not broadcast"):
        ms_triton.sequence(torch.zeros(2, 3, device=DEVICE), torch.zeros(4, device=DEVICE),
                                  MS_CFGS[0])
    with pytest.raises(ValueError, match="Sigmoid and ATan"):
        reset_term_spec(0.5, 1.0, surrogate.Sigmoid(spiking=False), "zero", 1, None)


def test_states_broadcast_and_inputs_need_not_be_contiguous():
    """States ``[5]`` / ``[1, 5]`` for ``[T, 4, 5]`` broadcast (gradients summed back); a
    transposed input runs as its contiguous copy."""
    spec = rt_spec(RT[1])
    c, v0, a0 = inputs((3, 4, 5), seed=4)
    compare(lambda c_, v_, a_: rt_triton.sequence(c_, v_, a_, spec), rt_reference(RT[1]),
            [c.requires_grad_(), v0[0].requires_grad_(), a0[:1].requires_grad_()], F32, 4)
    x, v0, _ = inputs((3, 5, 4), seed=5)
    x = x.to(DEVICE).transpose(1, 2)
    assert not x.is_contiguous()
    compare(lambda x_, v_: ht_triton.sequence(x_, v_, HT_CFGS[2]), loop(_ht_step, HT_CFGS[2]),
            [x.requires_grad_(), v0.transpose(0, 1).requires_grad_()], F32, 5)


_NO_TRITON = """
import sys
sys.modules["triton"] = None  # import triton fails, find_spec says it is absent
import spikegrad
import spikegrad.rules.triton_kernels as tk
from spikegrad import neurons
from spikegrad.rules import bpsta, multistrength, na, reset_term  # the rules need no Triton
assert "triton is not installed" in tk.available("cuda"), tk.available("cuda")
assert tk.rules_with_kernels() == ("bpsta", "multistrength", "na", "reset_term")
try:
    tk.modules()
except ImportError as exc:
    assert "triton is not installed" in str(exc)
else:
    raise AssertionError("no ImportError")
print("no-triton ok")
"""

def _run(*args: str, interpret: bool = False) -> str:
    """``python *args`` in a fresh process (the repository on ``PYTHONPATH``): its output."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    env["TORCH_LOGS"] = "-all"
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                         env=env, cwd=root, timeout=600, check=False)
    assert res.returncode == 0, textwrap.shorten(res.stdout + res.stderr[-3000:], 4000)
    return res.stdout


def test_import_without_triton():
    """In a fresh process without Triton: ``import spikegrad`` works, ``available`` and the
    entry points say why the kernels cannot run."""
    assert "no-triton ok" in _run("-c", _NO_TRITON)


def test_kernels_compile_to_ptx_and_trace_into_compile_graphs():
    """In a fresh process without the interpreter (and without a GPU): every kernel compiles
    to PTX for sm_90 (bfloat16 and float16 storage, several flag sets) with no FMA and no
    approximate division, and ``torch.compile`` traces each rule's operators into forward and
    backward graphs that hold the Triton kernels (what Inductor compiles on a GPU); see
    :mod:`spikegrad.rules.triton_kernels.check`."""
    out = _run("-m", "spikegrad.rules.triton_kernels.check")
    assert "ptx ok 16" in out and "graphs ok 4" in out, out


def test_in_a_fresh_process():
    """Triton was imported in this process before this module could turn the interpreter on:
    the kernel tests of this file run in a fresh process with ``TRITON_INTERPRET=1``."""
    out = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, interpret=True)
    assert " passed" in out and "failed" not in out, out[-3000:]
