"""The rules' torch operators (``torch.ops.spikegrad``): opcheck, gradients, device hygiene.

* ``torch.library.opcheck`` with all its default checks (schema, autograd registration, fake
  tensors, AOT dispatch) for every operator spikegrad.rules defines, float32 and float64, small
  random inputs; NA's torch and compiled CPU implementations both;
* the fused backward operators against plain autograd through the rules' step functions,
  with random upstream gradients on every output;
* the dispatcher: one place, reporting what runs (cpp for NA on CPU, torch elsewhere here);
* device hygiene without a GPU: every operator's fake implementation under
  ``FakeTensorMode`` with ``device="cuda"`` tensors, and every rule's forward and backward (and
  every operator body) on ``meta`` tensors, so that a tensor created on the wrong device
  anywhere in a rule fails here;
* ``torch._dynamo.explain`` of the whole-sequence rules: the operators add no graph break.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from spikegrad.rules import (
    bpsta,
    dispatch,
    multistrength,
    na,
    reset_term,
    surrogate,
    triton_kernels,
)
from spikegrad.rules.na import cpu as na_cpu

DTYPES = [torch.float32, torch.float64]
T, B, N = 5, 2, 3
CPP = na_cpu.status()
needs_cpp = pytest.mark.skipif(CPP != "available" and not os.environ.get("CI"),
                               reason=f"NA's compiled kernel: {CPP}")


def rand(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0, scale: float = 1.5,
         device: str = "cpu", grad: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(*shape, generator=gen, dtype=dtype) * scale).to(device)
    return x.requires_grad_(grad)


def na_hyper(tau_s: float | None = 2.0, reset: str = "zero") -> tuple:
    return (0.8, 1.0, tau_s, reset)


def samples(dtype: torch.dtype, device: str = "cpu", grad: bool = True
            ) -> dict[str, list[tuple]]:
    """Arguments of every operator (several configurations each), by operator name."""
    c = rand(T, B, N, dtype=dtype, seed=1, device=device, grad=grad)
    plain_cpu = rand(T, B, N, dtype=dtype, seed=5)
    a0_cpu = rand(B, N, dtype=dtype, seed=3, scale=0.5)
    v0 = rand(B, N, dtype=dtype, seed=2, scale=0.5, device=device, grad=grad)
    a0 = rand(B, N, dtype=dtype, seed=3, scale=0.5, device=device)
    u0 = rand(B, N, dtype=dtype, seed=4, device=device)
    plain = rand(T, B, N, dtype=dtype, seed=5, device=device)
    g = [rand(T, B, N, dtype=dtype, seed=10 + i, device=device) - 0.75 for i in range(3)]
    changed = rand(T, B, N, seed=6, device=device) > 1.0

    def window(tau_s, reset, a_init=None):  # a consistent (c, u, a) as the replay expects
        cfg = na.NA(beta=0.8, tau_s=tau_s, reset=reset, implementation="torch")
        _, u_w, a_w = na.reference_forward(plain_cpu, cfg, a_init=a_init)
        return plain, u_w.to(device), a_w.to(device)

    w1, w2, w3 = window(2.0, "zero"), window(4.0, "subtract", a0_cpu), window(None, "zero")
    u = rand(T, B, N, dtype=dtype, seed=7, scale=2.0, device=device)
    s = (u > 1.0).to(dtype)
    x = rand(T, B, N, dtype=dtype, seed=8, device=device, grad=grad) - 0.3
    out: dict[str, list[tuple]] = {
        "na_forward": [
            (c, None, None, *na_hyper(), "inverse_cube", 5.0, "accumulated"),
            (c, a0, u0, *na_hyper(None, "subtract"), "inverse", 2.0, "local"),
        ],
        "na_step": [(plain[0], u0, a0, *na_hyper()), (plain[0], u0, a0, *na_hyper(None))],
        "na_replay": [
            (*w1, g[0], None, None, T, *na_hyper(), "inverse_cube", 5.0),
            (*w2, g[0], a0, changed, 2, *na_hyper(4.0, "subtract"), "inverse", 3.0),
            (*(x[2:] for x in w3), g[0][2:], w3[2][1], changed[2:], 1, *na_hyper(None),
             "inverse_cube", 5.0),
        ],
        "reset_term_forward": [
            (c, v0, 0.8, 1.0, "Sigmoid", 0.3, False, "zero", 1.0),
            (c, v0, 0.75, 1.0, "ATan", 2.0, True, "subtract", 0.5),
        ],
        "reset_term_backward": [
            (g[0], g[1], s, u, 0.8, 1.0, "Sigmoid", 0.3, False, "zero", 1.0),
            (None, g[1], s, u, 0.8, 1.0, "ATan", 2.0, True, "subtract", 0.0),
            (g[0], None, s, u, 0.8, 1.0, "Sigmoid", 0.3, False, "zero", 2.5),
        ],
        "bpsta_forward": [(x, v0, "paper", 0.5, 0.9, 0.2, 1.0),
                          (x, v0, "braincog", 0.5, 0.0, 0.2, 0.7)],
        "bpsta_backward": [(g[0], g[1], g[2], plain - 0.3, u, "paper", 0.5, 0.9, 0.2, 1.0),
                           (g[0], g[1], g[2], plain - 0.3, u, "braincog", 0.5, 0.0, 0.2, 0.7),
                           (g[0], None, g[2], plain - 0.3, u, "paper", 0.5, 0.9, 0.2, 1.0),
                           (g[0][:1], g[1][:1], None, plain[:1] - 0.3, u[:1], "braincog",
                            0.5, 0.0, 0.2, 0.7)],
        "multistrength_forward": [(x, v0, 1.0, 1.0, 0, True), (x, v0, 0.5, 0.9, 2, False)],
        "multistrength_backward": [(g[0], g[1], g[2], u - 0.5, 1.0, 1.0, 0, True),
                                   (g[0], g[1], g[2], u - 0.5, 0.5, 0.9, 2, False),
                                   (g[0], g[1], None, u - 0.5, 1.0, 1.0, 0, True),
                                   (g[0][:1], None, g[2][:1], u[:1] - 0.5, 0.7, 1.0, 1, False)],
    }
    if CPP == "available":
        for name in ("na_forward", "na_step", "na_replay"):
            out[f"{name}_cpp"] = out[name]
    return out


#: every rule folder's operator module, found by the folder (so a new folder's operators are
#: registered here, and test_every_operator_has_samples_here asks for their samples)
OPS = {rule: importlib.import_module(f"spikegrad.rules.{rule}.ops")
       for rule in triton_kernels.rules_with_kernels()}


def our_ops() -> set[str]:
    """Every operator spikegrad.rules defines (the hand-written Triton kernels' ``triton_*`` and
    the step rules' generated ``gen_*``, registered when an earlier test file ran them, have
    their own opcheck tests: test_triton_kernels.py, test_stepfn.py)."""
    names = {n.split("::")[1] for n in torch._C._dispatch_get_all_op_names()
             if n.startswith("spikegrad::")}
    return {n for n in names if not n.startswith(("triton_", "gen_"))}


def test_every_operator_has_samples_here():
    names = set(samples(torch.float64))
    assert our_ops() == names, "an operator without opcheck samples (or a sample without op)"
    assert {"na_forward", "na_step", "na_replay", "reset_term_forward", "bpsta_forward",
            "multistrength_forward"} <= names
    if CPP == "available":
        assert {"na_forward_cpp", "na_step_cpp", "na_replay_cpp"} <= names


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(samples(torch.float64)))
def test_opcheck(name, dtype):
    op = getattr(torch.ops.spikegrad, name).default
    for args in samples(dtype)[name]:
        torch.library.opcheck(op, args)


@needs_cpp
def test_cpp_ops_are_cpu_dispatcher_kernels():
    """The compiled kernels are registered as the CPU kernels of their operators (TORCH_LIBRARY),
    not called through pybind: the dispatcher holds them."""
    for name in ("na_forward_cpp", "na_step_cpp", "na_replay_cpp"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"spikegrad::{name}", "CPU")
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.spikegrad.na_step_cpp(*(torch.zeros(3, dtype=torch.float16),) * 3,
                                        *na_hyper())


@needs_cpp
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cpp_and_torch_ops_agree(dtype):
    for name in ("na_forward", "na_step", "na_replay"):
        for args in samples(dtype, grad=False)[name]:
            ref = getattr(torch.ops.spikegrad, name)(*args)
            got = getattr(torch.ops.spikegrad, f"{name}_cpp")(*args)
            for r, x in zip(ref if isinstance(ref, tuple) else (ref,),
                            got if isinstance(got, tuple) else (got,), strict=True):
                torch.testing.assert_close(x, r, rtol=1e-5, atol=1e-5)


# --- the fused backward operators against autograd through the rules' steps --------------------
def _loop(step, x, v0, n_out):
    outs, v = [], v0
    for t in range(x.shape[0]):
        res = step(x[t], v)
        v = res[1]
        outs.append(res)
    return [torch.stack([o[i] for o in outs]) for i in range(n_out)]


@pytest.mark.parametrize("cfg", [bpsta.HTDGLIF(), bpsta.HTDGLIF(mode="paper", decay=0.7, alpha=0.5),
                                 bpsta.HTDGLIF(mode="braincog"),
                                 bpsta.HTDGLIF(mode="braincog", dt=0.6, alpha=0.3)], ids=repr)
def test_bpsta_op_gradients_equal_step_autograd(cfg):
    x = (rand(9, B, N, seed=3, scale=1.4) - 0.3).requires_grad_()
    v0 = rand(B, N, seed=4, scale=0.4).requires_grad_()
    g = [torch.randn(9, B, N, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
         for i in range(3)]

    def step(xt, v):
        o, h, v_new = bpsta.reference_step_v(xt, v, cfg)
        return o, v_new, h

    o_r, v_r, h_r = _loop(step, x, v0, 3)
    o, v, h = bpsta.ops.bpsta_sequence(x, v0, cfg.mode, cfg.threshold, cfg.decay, cfg.alpha, cfg.dt)
    assert torch.equal(o, o_r) and torch.equal(v, v_r) and torch.equal(h, h_r)
    assert 0.1 < float((o > 0).double().mean()) < 0.9
    loss = lambda a, b, c: (a * g[0]).sum() + (b * g[1]).sum() + (c * g[2]).sum()  # noqa: E731
    ref = torch.autograd.grad(loss(o_r, v_r, h_r), (x, v0))
    got = torch.autograd.grad(loss(o, v, h), (x, v0))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    o2, h2 = bpsta.forward(x, cfg, v0=v0)
    assert torch.equal(o2, o) and torch.equal(h2, h)


@pytest.mark.parametrize("cfg", [multistrength.MultiStrength(),
                                 multistrength.MultiStrength(threshold=0.5, beta=0.9,
                                                             max_strength=2),
                                 multistrength.MultiStrength(threshold=0.7, max_strength=1,
                                                             detach_reset=False)], ids=repr)
def test_multistrength_op_gradients_equal_step_autograd(cfg):
    z = (rand(9, B, N, seed=5, scale=2.0) - 0.4).requires_grad_()
    v0 = rand(B, N, seed=6, scale=0.4).requires_grad_()
    g = [torch.randn(9, B, N, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
         for i in range(2)]
    th_r, v_r = _loop(lambda zt, v: multistrength.reference_step(zt, v, cfg), z, v0, 2)
    th, v = multistrength.forward(z, cfg, v0=v0)
    assert torch.equal(th, th_r) and torch.equal(v, v_r)
    assert float(th.detach().sum()) > 0
    ref = torch.autograd.grad((th_r * g[0]).sum() + (v_r * g[1]).sum(), (z, v0))
    got = torch.autograd.grad((th * g[0]).sum() + (v * g[1]).sum(), (z, v0))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_reset_term_user_surrogate_runs_the_same_loops():
    """A spikegrad surrogate subclass (which no operator can take) gets the same result."""

    class Sigmoid2(surrogate.Sigmoid):
        pass

    c = rand(7, B, N, seed=8).requires_grad_()
    v0 = torch.zeros(B, N, dtype=torch.float64)
    outs = [reset_term.SequenceFunction.apply(c, v0, 0.8, 1.0, sg, "zero", 1.0)
            for sg in (surrogate.Sigmoid(0.3), Sigmoid2(0.3))]
    grads = [torch.autograd.grad((o[0] * 1.3 + o[1]).sum(), c)[0] for o in outs]
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


# --- the dispatcher ------------------------------------------------------------------------------
def test_dispatcher_on_this_machine():
    choice = dispatch.rule_choice("na", "auto", "cpu", torch.float32)
    assert choice.implementation == ("cpp" if CPP == "available" else "torch")
    half = dispatch.rule_choice("na", "auto", "cpu", torch.float16)
    assert half.implementation == "torch" and "float32/float64" in half.reason
    assert dispatch.rule_choice("reset_term", "auto", "cpu", torch.float32) == dispatch.Choice(
        "torch")
    if not torch.cuda.is_available():
        cuda = dispatch.rule_choice("na", "auto", "cuda", torch.float32)
        assert cuda.implementation == "torch" and "no CUDA device" in cuda.reason
        with pytest.raises(RuntimeError, match="implementation='triton'.*no CUDA device"):
            dispatch.rule_choice("na", "triton", "cuda", torch.float32)
    with pytest.raises(ValueError, match="implementation='triton'.*input is on cpu"):
        na.sequence(torch.rand(3, 2), na.NA(implementation="triton"))
    with pytest.raises(ValueError, match="implementation='cpp'.*CPU-only"):
        dispatch.rule_choice("na", "cpp", "meta", torch.float32)
    with pytest.raises(ValueError, match="unknown implementation"):
        dispatch.rule_choice("na", "cuda", "cpu", torch.float32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_spikingjelly_backend_triton_without_cuda_device_names_the_device():
    from spikegrad.neurons import HTDGLIFNode, NALIFNode

    for cls in (NALIFNode, HTDGLIFNode):
        with pytest.raises(RuntimeError, match=r"backend='triton' is unavailable: no CUDA device"):
            cls(step_mode="m", backend="triton")
        node = cls(step_mode="m", backend="auto")
        node(torch.rand(T, B, N))
        own = "cpp" if cls is NALIFNode and CPP == "available" else "torch"
        assert node.implementation == own
        assert "the input is on cpu: the Triton" in node.implementation_reason


@needs_cpp
def test_nodes_report_the_compiled_kernel_where_it_runs():
    from spikegrad.neurons import NALeaky, NALIFNode

    for mode in ("s", "m"):
        node = NALIFNode(step_mode=mode)
        node(torch.rand(T, B, N) if mode == "m" else torch.rand(B, N))
        assert node.implementation == "cpp" and node.implementation_reason is None
        node(torch.rand(T, B, N).double() if mode == "m" else torch.rand(B, N).double())
        assert node.implementation == "cpp"
    lif = NALeaky(beta=0.8)
    lif(torch.rand(B, N).half(), lif.init_leaky())
    assert lif.implementation == "torch" and "float32/float64" in lif.implementation_reason
    assert lif.dispatch_choice("cpu", torch.float64) == dispatch.Choice("cpp")


# --- device hygiene ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fake_implementations_on_cuda_fake_tensors(dtype):
    """Each operator's fake implementation on ``device="cuda"`` fake tensors (no GPU needed):
    outputs on the inputs' device, with the documented shapes and dtypes."""
    def fake(x):
        if not isinstance(x, torch.Tensor):
            return x
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="cuda")

    real = samples(dtype, grad=False)
    with FakeTensorMode():
        for name, cases in real.items():
            op = getattr(torch.ops.spikegrad, name)
            for args in cases:
                out = op(*(fake(a) for a in args))
                outs = out if isinstance(out, tuple) else (out,)
                like = args[3] if name.endswith("_backward") else args[0]  # [T, *]
                lead = args[6] if name.startswith("na_replay") else like.shape[0]
                for o in outs:
                    assert o.device.type == "cuda" and o.dtype == dtype, name
                assert outs[0].shape == (lead, *like.shape[1:]), name
                if name.endswith("_backward"):
                    assert outs[1].shape == like.shape[1:], name


RULES = {
    "na-trace": lambda x, v: na.sequence(x, na.NA(tau_s=2.0, implementation="torch")),
    "na-init": lambda x, v: na.sequence(x, na.NA(reset="subtract"), None, v, v * 0.5),
    "na-u-init": lambda x, v: na.sequence(x, na.NA(tau_s=2.0), None, v),
    "reset-term": lambda x, v: reset_term.SequenceFunction.apply(
        x, v, 0.8, 1.0, surrogate.Sigmoid(), "zero", 1.0)[:2],
    "reset-term-atan": lambda x, v: reset_term.SequenceFunction.apply(
        x, v, 0.8, 1.0, surrogate.ATan(inclusive=True), "subtract", 0.5)[:2],
    "reset-term-trace": lambda x, v: (reset_term.trace(x, 2.0, a0=v),),
    "bpsta-paper": lambda x, v: bpsta.forward(x, bpsta.HTDGLIF(), v0=v),
    "bpsta-braincog": lambda x, v: bpsta.forward(x, bpsta.HTDGLIF(mode="braincog"), v0=v),
    "multistrength": lambda x, v: multistrength.forward(x, multistrength.MultiStrength(), v0=v),
    "multistrength-cap": lambda x, v: multistrength.forward(
        x, multistrength.MultiStrength(max_strength=2, detach_reset=False), v0=v),
}


@pytest.mark.parametrize("device", ["meta", "cuda-fake"])
@pytest.mark.parametrize("rule", list(RULES))
def test_rule_forward_and_backward_stay_on_the_input_device(rule, device):
    """Forward and backward of each rule on meta tensors: a tensor made on the CPU anywhere in
    a rule's wrappers or autograd formulas fails here. On CUDA fake tensors (the dispatcher's
    CUDA branch, no GPU) the forward only: the autograd engine needs a real CUDA context."""
    def run(dev, backward):
        x = torch.empty(T, B, N, device=dev, requires_grad=True)
        v = torch.empty(B, N, device=dev, requires_grad=True)
        outs = [o for o in RULES[rule](x, v) if o.requires_grad]
        if not backward:
            return outs, []
        grads = torch.autograd.grad(sum(o.sum() for o in outs), (x, v), allow_unused=True)
        return outs, [g for g in grads if g is not None]

    if device == "meta":
        outs, grads = run("meta", backward=True)
        assert grads
    else:
        with FakeTensorMode():
            outs, grads = run("cuda", backward=False)
    assert outs
    assert all(t.device.type == device.split("-")[0] for t in outs + grads)


@pytest.mark.parametrize("device", ["meta", "cuda-fake"])
def test_na_step_and_window_replay_stay_on_the_input_device(device):
    """NA's per-step path (the step, the per-step replay of the window) is not differentiable
    itself (the window defines its gradient): forward values on meta and CUDA fake tensors."""
    cfg = na.NA(tau_s=2.0)

    def run(dev):
        x = torch.empty(T, B, N, device=dev, requires_grad=True)
        s, u, a = na.step(x[0], x[1], x[2], cfg)
        assert not (u.requires_grad or a.requires_grad)  # no autograd through the step itself
        d = na.deltas(x, x, x, x, x, cfg, a_init=x[0], neighbors=1, changed=x > 0)
        return [s, u, a, d]

    if device == "meta":
        outs = run("meta")
    else:
        with FakeTensorMode():
            outs = run("cuda")
    assert all(o.device.type == device.split("-")[0] for o in outs)
    assert outs[3].shape == (1, B, N)


@pytest.mark.parametrize("dtype", [torch.float32], ids=str)
def test_operator_bodies_on_meta_tensors(dtype):
    """The torch bodies of the operators (which the dispatcher would replace by the fakes on
    meta tensors) run on meta tensors and make nothing on another device."""
    bodies = {name: body for module in OPS.values() for name, body in module.BODIES.items()}
    for name, cases in samples(dtype, device="meta", grad=False).items():
        if name.endswith("_cpp"):
            continue
        for args in cases:
            out = bodies[name](*args)
            for o in out if isinstance(out, tuple) else (out,):
                assert o.device.type == "meta", name


# --- no graph breaks -----------------------------------------------------------------------------
def test_operators_add_no_graph_break():
    x = torch.rand(T, B, N, requires_grad=True)
    v = torch.zeros(B, N)
    cfg = na.NA(tau_s=2.0)
    for rule in ("na-trace", "reset-term", "bpsta-paper", "multistrength"):
        fn = RULES[rule]
        if rule == "na-trace":
            def fn(x, v):
                return na.sequence(x, cfg)
        explained = torch._dynamo.explain(fn)(x, v)
        assert explained.graph_break_count == 0, (rule, explained.break_reasons)
        assert explained.graph_count == 1


# --- the per-step functions the neurons call are the operators -----------------------------------
STEP_CASES = [
    ("bpsta", bpsta.HTDGLIF()), ("bpsta", bpsta.HTDGLIF(decay=0.7, alpha=0.5)),
    ("bpsta", bpsta.HTDGLIF(mode="braincog", dt=0.6, alpha=0.3)),
    ("multistrength", multistrength.MultiStrength()),
    ("multistrength", multistrength.MultiStrength(threshold=0.5, beta=0.9, max_strength=2)),
    ("multistrength", multistrength.MultiStrength(threshold=0.7, max_strength=1,
                                                  detach_reset=False)),
]


@pytest.mark.parametrize(("rule", "cfg"), STEP_CASES, ids=repr)
def test_operator_step_equals_the_written_out_reference(rule, cfg, monkeypatch):
    """``operator_step`` (the operator on a one-step sequence, what ``step`` runs while
    torch.compile traces) == ``reference_step`` (``step`` eager: plain torch and
    the rule's autograd functions) in a chained loop: values exactly, every gradient (input,
    initial state) with random upstream gradients on both outputs of every step."""
    mod = bpsta if rule == "bpsta" else multistrength
    x = (rand(7, B, N, seed=11, scale=2.0) - 0.4).requires_grad_()
    s0 = rand(B, N, seed=12, scale=0.6).requires_grad_()
    gen = torch.Generator().manual_seed(13)
    g = [torch.randn(7, B, N, dtype=torch.float64, generator=gen) for _ in range(2)]

    def run(step):
        outs, s = [], s0
        for t in range(7):
            o, s = step(x[t], s, cfg)
            outs.append((o, s))
        o, s = (torch.stack(y) for y in zip(*outs, strict=True))
        loss = (o * g[0]).sum() + (s * g[1]).sum()
        return (o, s, *torch.autograd.grad(loss, (x, s0)))

    calls = []
    sequence = getattr(mod.ops, f"{rule}_sequence")
    monkeypatch.setattr(mod.ops, f"{rule}_sequence",
                        lambda *a: calls.append(a[0].shape) or sequence(*a))
    got = run(mod.operator_step)
    assert calls == [torch.Size([1, B, N])] * 7, "one operator call per step"
    ref = run(mod.reference_step)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    assert 0 < float((ref[0] > 0).double().mean()) < 1
    for a, b in zip(got[2:], ref[2:], strict=True):
        assert float(b.abs().max()) > 0
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("rule", "cfg"), STEP_CASES[::3], ids=repr)
def test_step_broadcasts_and_promotes_the_state(rule, cfg):
    """A state of another (broadcastable) shape or dtype: the same as the reference, and its
    gradient sums back to its own shape."""
    mod = bpsta if rule == "bpsta" else multistrength
    x = (rand(B, N, seed=14, scale=2.0, dtype=torch.float32) - 0.4).requires_grad_()
    s = rand(N, seed=15, scale=0.6).requires_grad_()  # float64, one row for the whole batch
    got = mod.operator_step(x, s, cfg)
    ref = mod.reference_step(x, s, cfg)
    for a, b in zip(got, ref, strict=True):
        assert a.dtype == b.dtype == torch.float64 and a.shape == b.shape == (B, N)
        assert torch.equal(a, b)
    g_got = torch.autograd.grad(sum(y.sum() for y in got), (x, s))
    g_ref = torch.autograd.grad(sum(y.sum() for y in ref), (x, s))
    for a, b in zip(g_got, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert g_got[1].shape == (N,)


@pytest.mark.parametrize(("fn", "cfg"), [
    ("bpsta.step", bpsta.HTDGLIF()), ("bpsta.step_v", bpsta.HTDGLIF(decay=0.7, alpha=0.5)),
    ("bpsta.step_v", bpsta.HTDGLIF(mode="braincog", dt=0.6, alpha=0.3)),
    ("multistrength.step", multistrength.MultiStrength(threshold=0.5, beta=0.9, max_strength=2)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_compiled_steps_trace_the_operator_and_equal_eager(fn, cfg):
    """While torch.compile traces, the per-step functions are the operator (seen in the graph:
    opaque to Inductor) and give eager's values and gradients over a chained loop."""
    mod_name, name = fn.split(".")
    step = getattr(bpsta if mod_name == "bpsta" else multistrength, name)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    x = (rand(6, B, N, seed=21, scale=2.0) - 0.4).requires_grad_()
    s0 = rand(B, N, seed=22, scale=0.6).requires_grad_()
    g = torch.randn(6, B, N, dtype=torch.float64, generator=torch.Generator().manual_seed(23))

    def loop(x, s0):
        outs, s = [], s0
        for t in range(x.shape[0]):
            res = step(x[t], s, cfg)
            s = res[-1]
            outs.append(res[0] + 0.5 * res[1])
        return torch.stack(outs)

    torch._dynamo.reset()
    compiled = torch.compile(loop, backend=backend, fullgraph=True)
    got = compiled(x, s0)
    ref = loop(x, s0)
    assert torch.equal(got, ref)
    targets = {str(n.target) for gm in graphs for n in gm.graph.nodes}
    op = "spikegrad.bpsta_forward" if mod_name == "bpsta" else "spikegrad.multistrength_forward"
    assert any(op in t for t in targets), targets
    for a, b in zip(torch.autograd.grad((got * g).sum(), (x, s0)),
                    torch.autograd.grad((ref * g).sum(), (x, s0)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
