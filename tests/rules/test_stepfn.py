"""Step rules (``spikegrad.rules.stepfn``): kernels generated from a rule's torch step.

Without a GPU the generated Triton kernels run in Triton's interpreter on CPU tensors (this
module turns ``TRITON_INTERPRET=1`` on before Triton is first imported, as
``test_triton_kernels.py`` does; if Triton was imported earlier without it, the tests run again
in a fresh process). Expectations are independent of the generator: the step itself run in a
torch loop with autograd (float32, on the inputs rounded to the storage type), the hand-written
kernels where a rule has them, and the CUDA C rendering run through the host shim.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed: no kernels to generate", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"

from spikegrad.rules import bpsta, multistrength, stepfn, surrogate  # noqa: E402
from spikegrad.rules.stepfn import cuda_gen, triton_gen  # noqa: E402
from spikegrad.rules.stepfn import rules as R  # noqa: E402
from spikegrad.rules.triton_kernels import lib  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ELSEWHERE = DEVICE == "cpu" and not lib.INTERPRETED
OWN_PROCESS = ("test_in_a_fresh_process", "test_compiled_graphs_hold_one_kernel_per_direction")


@pytest.fixture(autouse=True)
def _interpreter_or_elsewhere(request: pytest.FixtureRequest) -> None:
    if request.node.originalname in OWN_PROCESS:
        if request.node.originalname == OWN_PROCESS[0] and not ELSEWHERE:
            pytest.skip("the kernels run in this process: no need for a fresh one")
        return
    if ELSEWHERE:
        pytest.skip("Triton was imported without the interpreter: see test_in_a_fresh_process")


@dataclasses.dataclass(frozen=True)
class AdaptiveLIF(stepfn.StepRule):
    """A user's rule, as the docs show it: LIF with a spike-driven adaptive threshold."""

    beta: float = 0.9
    rho: float = 0.95
    spike: surrogate.Surrogate = surrogate.ATan(2.0)
    states = ("v", "b")

    @staticmethod
    def step(x, state, cfg):
        v, b = state
        u = cfg.beta * v + x
        threshold = 1.0 + 1.8 * b
        s = cfg.spike(u - threshold)
        return s, (u - s * threshold, cfg.rho * b + (1 - cfg.rho) * s)


@dataclasses.dataclass(frozen=True)
class RefractoryQIF(stepfn.StepRule):
    """Another user's rule: quadratic drive, a refractory counter, where/clamp/powers, and
    hyperparameters of every kind (int, bool, str, a spikingjelly surrogate)."""

    a: float = 0.2
    v_c: float = 0.5
    refractory: int = 2
    soft: bool = True
    mode: str = "quadratic"
    spike: object = None
    states = ("v", "r")

    @staticmethod
    def step(x, state, cfg):
        from spikingjelly.activation_based import surrogate as sjs

        v, r = state
        active = (r <= 0).float()
        dv = cfg.a * (v - cfg.v_c) ** 2 if cfg.mode == "quadratic" else cfg.a * v
        v = torch.where(r > 0, v * 0.5, v + dv * 0.1 + x * active)
        v = torch.clamp(v, min=-2.0, max=5.0)
        s = (cfg.spike or sjs.PiecewiseQuadratic(alpha=1.0))(v - 1.0)
        v = v - s if cfg.soft else v * (1 - s)
        return s, (v, torch.clamp(r - 1.0, min=0.0) + s * cfg.refractory)


#: every configuration of every rule file in spikegrad/rules/stepfn/rules/ (a new rule file is
#: covered without editing this file), and the users' rules above
RULES = {**R.examples(), "adaptive lif": AdaptiveLIF(), "refractory qif": RefractoryQIF(),
         "refractory qif hard linear": RefractoryQIF(soft=False, mode="linear")}
#: gradients: |a - b| <= tol * (1 + |b|), per storage type (half types: the float32 result
#: rounded once)
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
SHAPES = [(1, (5,)), (6, (3, 7)), (4, (200,))]


def _inputs(rule, T, shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(T, *shape, generator=g) * 1.5).to(dtype)
    s0 = tuple((torch.randn(*shape, generator=g) * 0.4).float() for _ in rule.states)
    if isinstance(rule, (R.HTDGLIF, R.MultiStrength)):  # their states are never negative here
        s0 = tuple(s.abs() for s in s0)
    return x.to(DEVICE), tuple(s.to(DEVICE) for s in s0)


def _run(rule, x, s0, implementation, g_out, g_final):
    """Outputs, final states and the gradients of (x, s0) for random upstream gradients."""
    x = x.detach().requires_grad_(True)
    s0 = tuple(s.detach().requires_grad_(True) for s in s0)
    out, final = stepfn.sequence(rule, x, s0, implementation=implementation)
    grads = torch.autograd.grad([out, *final], [x, *s0], [g_out, *g_final])
    return out.detach(), tuple(f.detach() for f in final), grads


def _close(a, b, tol, what):
    """Within ``tol`` relative to ``1 + |b|``; NaN where (and only where) the reference has NaN
    (snntorch's sigmoid surrogate overflows to inf / inf far from the threshold)."""
    a, b = a.float(), b.float()
    assert torch.equal(a.isnan(), b.isnan()), f"{what}: NaN in other places"
    a, b = a.nan_to_num(0.0), b.nan_to_num(0.0)
    err = ((a - b).abs() / (1 + b.abs())).max().item()
    assert err <= tol, f"{what}: {err:.3g} > {tol}"


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("T,shape", SHAPES, ids=[f"T{t}-{s}" for t, s in SHAPES])
@pytest.mark.parametrize("name", list(RULES))
def test_generated_kernels_equal_the_step(name, T, shape, dtype):
    """Spikes (strengths) identical to the step's own loop, states and gradients of the input
    and of the initial state within tolerance, for random upstream gradients on every output."""
    rule = RULES[name]
    x, s0 = _inputs(rule, T, shape, dtype)
    g = torch.Generator().manual_seed(1)
    g_out = torch.randn(x.shape, generator=g).to(dtype).to(DEVICE)
    g_final = tuple(torch.randn(shape, generator=g).to(DEVICE) for _ in rule.states)
    ref = _run(rule, x.float(), s0, "torch", g_out.float(), g_final)
    got = _run(rule, x, s0, "triton", g_out, g_final)
    assert got[0].dtype == dtype
    assert torch.equal(got[0], ref[0].to(dtype)), "outputs differ"
    for a, b in zip(got[1], ref[1], strict=True):
        _close(a, b, 1e-6, "final state")
    for i, (a, b) in enumerate(zip(got[2], ref[2], strict=True)):
        _close(a, b, TOL[dtype], f"gradient {i}")


@pytest.mark.parametrize("name", ["reset_term subtract atan k=.5", "htdglif paper",
                                  "adaptive lif"])
def test_chained_calls_equal_one_call(name):
    """Two calls of 3 steps, the second from the first's final state, equal one of 6 steps
    (outputs and every gradient): truncation points do not change the math."""
    rule = RULES[name]
    x, s0 = _inputs(rule, 6, (9,), torch.float32)
    x = x.requires_grad_(True)
    s0 = tuple(s.requires_grad_(True) for s in s0)
    one, fin1 = stepfn.sequence(rule, x, s0, implementation="triton")
    a, mid = stepfn.sequence(rule, x[:3], s0, implementation="triton")
    b, fin2 = stepfn.sequence(rule, x[3:], mid, implementation="triton")
    two = torch.cat([a, b])
    assert torch.equal(one, two)
    w = torch.randn_like(one)
    g1 = torch.autograd.grad((one * w).sum() + sum(f.sum() for f in fin1), [x, *s0])
    g2 = torch.autograd.grad((two * w).sum() + sum(f.sum() for f in fin2), [x, *s0])
    for p, q in zip(g1, g2, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def _host_surrogates():
    import snntorch as snn
    from spikingjelly.activation_based import surrogate as sjs

    out = {f"snntorch.{n}": getattr(snn.surrogate, n)() for n in (
        "atan", "fast_sigmoid", "sigmoid", "triangular", "straight_through_estimator",
        "spike_rate_escape", "heaviside", "SFS")}
    for n, cls in vars(sjs).items():
        if (inspect.isclass(cls) and issubclass(cls, sjs.SurrogateFunctionBase)
                and cls is not sjs.SurrogateFunctionBase
                and n not in ("MultiLevelSpikeCount", "PoissonPass")):
            out[f"spikingjelly.{n}"] = cls()
    return out


#: deterministic, elementwise surrogates of the hosts; the others (stochastic: snntorch's SSO
#: and LSO, spikingjelly's PoissonPass) are not elementwise functions of the potential
HOST_SURROGATES = sorted(_host_surrogates())


@pytest.mark.parametrize("name", HOST_SURROGATES)
def test_every_elementwise_surrogate_of_both_hosts(name):
    """Reset-term with each host surrogate: the generated kernels equal the step's loop (or,
    where the generator does not cover an operation, it says which, naming the operation)."""
    rule = R.ResetTerm(spike=_host_surrogates()[name])
    try:
        stepfn.trace(rule)
    except stepfn.UnsupportedOperation as e:
        assert "aten." in str(e) or "tensor constant" in str(e), str(e)
        pytest.fail(f"{name} is not covered: {e}")
    x, s0 = _inputs(rule, 5, (6, 11), torch.float32)
    g = torch.Generator().manual_seed(2)
    g_out = torch.randn(x.shape, generator=g).to(DEVICE)
    g_final = (torch.randn(s0[0].shape, generator=g).to(DEVICE),)
    ref = _run(rule, x, s0, "torch", g_out, g_final)
    got = _run(rule, x, s0, "triton", g_out, g_final)
    assert torch.equal(got[0], ref[0])
    for a, b in zip(got[2], ref[2], strict=True):
        # exp/sigmoid of the device library against torch's: a few ulp per step
        _close(a, b, 1e-4, "gradient")


def test_generated_kernels_equal_the_hand_written_ones():
    """Where a rule has hand-written Triton kernels, the generated ones give the same spikes,
    states and input gradients from rest (same math, written twice)."""
    from spikegrad.rules.bpsta import triton as ht_triton
    from spikegrad.rules.multistrength import triton as ms_triton
    from spikegrad.rules.reset_term import triton as rt_triton
    from spikegrad.rules.reset_term.spec import reset_term_spec

    torch.manual_seed(3)
    x = (torch.randn(7, 33) * 1.5).to(DEVICE)
    g = torch.randn_like(x)
    cases = [
        (R.ResetTerm(beta=0.75, spike=surrogate.ATan(2.0)),
         lambda c: rt_triton.sequence(
             c, torch.zeros_like(c[0]), None,
             reset_term_spec(0.75, 1.0, surrogate.ATan(2.0), "zero", 1.0, None))),
        (R.HTDGLIF(), lambda c: ht_triton.sequence(c, torch.zeros_like(c[0]),
                                                         bpsta.HTDGLIF())),
        (R.MultiStrength(multistrength.MultiStrength(max_strength=2)),
         lambda c: ms_triton.sequence(c, torch.zeros_like(c[0]),
                                                    multistrength.MultiStrength(max_strength=2))),
    ]
    for rule, hand in cases:
        c1 = x.clone().requires_grad_(True)
        out1, _ = stepfn.sequence(rule, c1, implementation="triton")
        (g1,) = torch.autograd.grad(out1, c1, g)
        c2 = x.clone().requires_grad_(True)
        out2 = hand(c2)[0]
        (g2,) = torch.autograd.grad(out2, c2, g)
        assert torch.equal(out1, out2), rule.name
        torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-6, msg=rule.name)


def test_an_operation_the_generator_does_not_cover_is_named_at_construction():
    @dataclasses.dataclass(frozen=True)
    class Erfy(stepfn.StepRule):
        states = ("v",)

        @staticmethod
        def step(x, state, cfg):
            u = 0.9 * state[0] + torch.special.erf(x)
            s = surrogate.ATan()(u - 1.0)
            return s, (u * (1 - s),)

    rule = Erfy()
    x = torch.rand(3, 4)
    from spikegrad import neurons

    for make in (neurons.Leaky, neurons.Node):  # an explicit request fails at construction
        with pytest.raises(stepfn.UnsupportedOperation, match=r"aten\.erf"):
            make(rule, implementation="triton")
    with pytest.raises(stepfn.UnsupportedOperation, match=r"Erfy.step uses aten\.erf"):
        stepfn.trace(rule)
    with pytest.raises(RuntimeError, match=r"implementation='triton' cannot run.*aten\.erf"):
        stepfn.sequence(rule, x, implementation="triton")
    which, why = stepfn.choice(rule, x)
    assert which == "torch" and "aten.erf" in why
    out, (v,) = stepfn.sequence(rule, x)  # auto: the torch loop, same math
    ref, (v_ref,) = stepfn.reference_sequence(rule, x)
    assert torch.equal(out, ref) and torch.equal(v, v_ref)


def test_a_step_that_is_not_elementwise_or_breaks_the_contract_raises():
    @dataclasses.dataclass(frozen=True)
    class Pooled(stepfn.StepRule):
        states = ("v",)

        @staticmethod
        def step(x, state, cfg):
            return x.sum(), (state[0],)

    with pytest.raises(ValueError, match="elementwise"):
        stepfn.trace(Pooled())

    with pytest.raises(TypeError, match="frozen"):  # Python itself refuses a mutable rule
        @dataclasses.dataclass
        class NotFrozen(stepfn.StepRule):
            @staticmethod
            def step(x, state, cfg):
                return x, state

    class NoStep(stepfn.StepRule):
        pass

    with pytest.raises(TypeError, match="defines no step"):
        stepfn.check_rule(NoStep())
    with pytest.raises(TypeError, match="StepRule"):
        stepfn.check_rule(object())
    with pytest.raises(ValueError, match="implementation must be one of"):
        stepfn.sequence(AdaptiveLIF(), torch.rand(2, 3), implementation="cuda")
    with pytest.raises(ValueError, match="2 states"):
        stepfn.sequence(AdaptiveLIF(), torch.rand(2, 3), (torch.zeros(3),))
    with pytest.raises(TypeError, match="floating-point"):
        stepfn.sequence(AdaptiveLIF(), torch.ones(2, 3, dtype=torch.int64))


def test_the_forward_operator_passes_opcheck():
    """Schema and autograd registration (opcheck); its fake implementation is checked on
    ``cuda`` fake tensors in :func:`test_compiled_graphs_hold_one_kernel_per_direction` (the
    interpreter runs kernels on fake tensors, so opcheck's fake-tensor test needs a GPU here)."""
    rule = RULES["adaptive lif"]
    ops = triton_gen.operators(rule, recip=DEVICE == "cuda")
    x = torch.randn(4, 6, device=DEVICE, requires_grad=True)
    state = [torch.zeros(6, device=DEVICE, requires_grad=True) for _ in rule.states]
    tests = None if DEVICE == "cuda" else ("test_schema", "test_autograd_registration")
    torch.library.opcheck(ops.fwd, (x, state, True), test_utils=tests or
                          ("test_schema", "test_autograd_registration", "test_faketensor",
                           "test_aot_dispatch_dynamic"))


def _host_run(rule, x, s0, g_out, g_final):
    from spikegrad.rules.cupy_kernels import host

    spec = cuda_gen.kernel_spec(rule)
    T, N = x.shape
    k = len(rule.states)
    out, fin = torch.empty_like(x), [torch.empty(N) for _ in range(k)]
    sav = [torch.empty(T, N) for _ in range(k)]
    host.launch(spec, "forward", "f32", T, N, {
        "x": x, "out": out, "save": 1, **{f"s0_{j}": s0[j] for j in range(k)},
        **{f"sT_{j}": fin[j] for j in range(k)}, **{f"sav_{j}": sav[j] for j in range(k)}})
    g_x, g_init = torch.empty_like(x), [torch.empty(N) for _ in range(k)]
    host.launch(spec, "backward", "f32", T, N, {
        "x": x, "g_out": g_out, "g_x": g_x, **{f"sav_{j}": sav[j] for j in range(k)},
        **{f"g_sT_{j}": g_final[j] for j in range(k)},
        **{f"g_s0_{j}": g_init[j] for j in range(k)}})
    return out, fin, [g_x, *g_init]


@pytest.mark.parametrize("name", list(RULES))
def test_the_cuda_source_of_the_same_step_equals_it(name):
    """The CUDA C rendering (for CuPy), compiled as C++ by the host shim and run on the CPU,
    equals the step's loop: outputs exactly, states and gradients within float32 rounding."""
    from spikegrad.rules.cupy_kernels import host

    if host.compiler() is None:
        pytest.skip("no C++ compiler for the host shim")
    rule = RULES[name]
    x, s0 = _inputs(rule, 6, (37,), torch.float32)
    x, s0 = x.cpu(), tuple(s.cpu() for s in s0)
    g_out = torch.randn_like(x)
    g_final = [torch.randn(37) for _ in rule.states]
    ref = _run(rule, x, s0, "torch", g_out, g_final)
    out, fin, grads = _host_run(rule, x, list(s0), g_out, g_final)
    assert torch.equal(out, ref[0])
    for a, b in zip([*fin, *grads], [*ref[1], *ref[2]], strict=True):
        _close(a, b, 1e-6, name)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine")
def test_the_cuda_source_compiles_with_nvcc(tmp_path):
    for name, rule in RULES.items():
        src = tmp_path / f"{name.replace(' ', '_').replace('=', '').replace('.', '')}.cu"
        src.write_text(cuda_gen.kernel_spec(rule).source)
        res = subprocess.run(["nvcc", "-arch=sm_80", "--fmad=false", "-c", str(src), "-o",
                              str(src.with_suffix(".o"))], capture_output=True, text=True)
        assert res.returncode == 0, f"{name}:\n{res.stderr[-3000:]}"


def test_compiled_graphs_hold_one_kernel_per_direction():
    """In a fresh process without the interpreter (no GPU needed to trace): torch.compile with
    fullgraph=True (no graph break) puts one generated Triton kernel in the forward graph and
    one in the backward graph."""
    code = textwrap.dedent(f"""
        import dataclasses, sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        import torch._functorch.config as fc
        from torch._dynamo.backends.common import aot_autograd
        from spikegrad.rules import stepfn, surrogate
        from spikegrad.rules.stepfn import rules as R, triton_gen
        fc.force_non_lazy_backward_lowering = True
        kept = []
        def keep(gm, example_inputs):
            kept.append(gm.code)
            return gm
        backend = aot_autograd(fw_compiler=keep, bw_compiler=keep)
        for rule in (R.ResetTerm(spike=surrogate.ATan(2.0)), R.HTDGLIF()):
            ops = triton_gen.operators(rule, recip=True)
            def fn(x, v):
                return ops.fwd(x, [v], True)[:2]
            torch._dynamo.reset()
            kept.clear()
            x, v = torch.rand(4, 3, requires_grad=True), torch.zeros(3)
            try:
                out = torch.compile(fn, backend=backend, fullgraph=True)(x, v)
                (out[0].sum() + out[1].sum()).backward()
            except RuntimeError as exc:  # no GPU: the traced graph cannot run
                if "driver" not in str(exc) and "CUDA" not in str(exc) and "GPU" not in str(exc):
                    raise
            assert len(kept) == 2, (rule.name, len(kept))
            for c in kept:
                assert c.count("triton_kernel_wrapper_functional(") == 1, c
        from torch._subclasses.fake_tensor import FakeTensorMode
        ops = triton_gen.operators(R.MultiStrength(), recip=True)
        with FakeTensorMode():  # the fake implementation: shapes, dtypes, devices
            x = torch.empty(5, 7, device="cuda", dtype=torch.bfloat16)
            res = ops.fwd(x, [torch.empty(7, device="cuda")], True)
            assert [(tuple(r.shape), r.dtype, r.device.type) for r in res] == [
                ((5, 7), torch.bfloat16, "cuda"), ((7,), torch.float32, "cuda"),
                ((5, 7), torch.float32, "cuda")], res
            g = ops.bwd(x, [res[2]], torch.empty_like(x), [torch.empty(7, device="cuda")])
            assert [(tuple(r.shape), r.dtype, r.device.type) for r in g] == [
                ((5, 7), torch.bfloat16, "cuda"), ((7,), torch.float32, "cuda")], g
        print("graphs ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=600)
    assert "graphs ok" in res.stdout, res.stdout[-3000:] + res.stderr[-5000:]


def test_in_a_fresh_process():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          __file__], capture_output=True, text=True, env=env, timeout=1800)
    assert " passed" in res.stdout and "failed" not in res.stdout, res.stdout[-3000:]


# --- the rule as a neuron of either host (spikegrad.neurons.Leaky / Node) -------------------
def _snn_loop(lif, x):
    mem, outs = lif.init_leaky(), []
    for t in range(x.shape[0]):
        spk, mem = lif(x[t], mem)
        outs.append(spk)
    return torch.stack(outs), mem


@pytest.mark.parametrize("name", list(RULES))
def test_a_rule_is_a_neuron_of_both_hosts(name):
    """``neurons.Leaky(rule)`` in snntorch's per-step loop, its ``sequence`` (generated
    kernels), ``neurons.Node(rule)`` in both step modes: the step's own loop in outputs, final
    states and input gradients; extra states live on the neuron under the rule's names."""
    from spikingjelly.activation_based import functional

    from spikegrad import neurons

    rule = RULES[name]
    x, _ = _inputs(rule, 6, (4, 5), torch.float32)
    w = torch.randn_like(x)
    ref_x = x.clone().requires_grad_(True)
    ref, ref_final = stepfn.reference_sequence(rule, ref_x)
    (ref_g,) = torch.autograd.grad((ref * w).sum(), ref_x)

    def check(out, xin, what):
        assert torch.equal(out, ref), what
        (g,) = torch.autograd.grad((out * w).sum(), xin)
        torch.testing.assert_close(g, ref_g, rtol=1e-5, atol=1e-6, msg=what)

    lif = neurons.Leaky(rule).to(DEVICE)
    xin = x.clone().requires_grad_(True)
    out, mem = _snn_loop(lif, xin)
    check(out, xin, "snntorch loop")
    assert torch.equal(mem, ref_final[0])
    for state, value in zip(rule.states[1:], ref_final[1:], strict=True):
        assert torch.equal(getattr(lif, state), value)
    xin = x.clone().requires_grad_(True)
    check(neurons.Leaky(rule, implementation="triton").sequence(xin)[0], xin, "sequence")
    for mode, impl in (("s", "auto"), ("m", "triton"), ("m", "torch")):
        node = neurons.Node(rule, step_mode=mode, implementation=impl).to(DEVICE)
        xin = x.clone().requires_grad_(True)
        out = node(xin) if mode == "m" else torch.stack([node(xin[t]) for t in range(6)])
        check(out, xin, f"spikingjelly {mode} {impl}")
        assert torch.equal(node.v, ref_final[0])
        functional.reset_net(node)
        assert all(getattr(node, s) == 0.0 for s in rule.states[1:]) and node.v == 0.0


def test_step_neurons_compile_without_graph_breaks_and_save():
    """torch.compile(fullgraph=True) of snntorch's per-step loop and of a spikingjelly
    multi-step network with the rule's neurons; whole models round-trip through torch.save."""
    import io

    from spikingjelly.activation_based import functional, layer

    from spikegrad import neurons

    rule = RULES["adaptive lif"]
    x = torch.rand(5, 3, 8)
    fc, lif = torch.nn.Linear(8, 6), neurons.Leaky(rule)

    def loop(x):
        mem, outs = lif.init_leaky(), []
        for t in range(x.shape[0]):
            spk, mem = lif(fc(x[t]), mem)
            outs.append(spk)
        return torch.stack(outs)

    eager = loop(x)
    torch._dynamo.reset()
    assert torch.equal(torch.compile(loop, fullgraph=True, backend="aot_eager")(x), eager)
    net = torch.nn.Sequential(layer.Linear(8, 6), neurons.Node(rule, implementation="torch"))
    functional.set_step_mode(net, "m")
    eager = net(x)
    functional.reset_net(net)
    torch._dynamo.reset()
    assert torch.equal(torch.compile(net, fullgraph=True, backend="aot_eager")(x), eager)
    for model in (torch.nn.Sequential(fc, lif), net):
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        assert torch.load(buf, weights_only=False)[1].rule == rule


def test_step_neurons_refuse_what_they_cannot_honour():
    from spikegrad import neurons

    with pytest.raises(TypeError, match="StepRule"):
        neurons.Leaky(surrogate.ATan())
    with pytest.raises(ValueError, match="implementation must be one of"):
        neurons.Node(RULES["adaptive lif"], implementation="gpu")
    lif = neurons.Leaky(RULES["adaptive lif"])
    with pytest.raises(ValueError, match="has no reset_mechanism"):
        lif.reset_mechanism = "subtract"


_TRAFFIC_SCRIPT = textwrap.dedent(r"""
    import json, os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import torch
    from triton.runtime import interpreter as I

    seen = {"load": [], "store": []}

    def _record(kind, ptrs, mask):
        size = ptrs.get_element_ty().primitive_bitwidth // 8
        addr = np.asarray(ptrs.data).reshape(-1)[np.asarray(mask.data, bool).reshape(-1)]
        seen[kind].append((addr.astype(np.uint64), size))

    B = I.InterpreterBuilder
    _load, _store = B.create_masked_load, B.create_masked_store
    B.create_masked_load = lambda self, p, m, *a, **k: (_record("load", p, m),
                                                        _load(self, p, m, *a, **k))[1]
    B.create_masked_store = lambda self, p, v, m, *a, **k: (_record("store", p, m),
                                                            _store(self, p, v, m, *a, **k))[1]
    from spikegrad.rules.stepfn import rules as R, triton_gen
    out = []
    for name, rule in (("reset_term", R.ResetTerm()), ("multistrength", R.MultiStrength())):
        for dtype, T, N in ((torch.float32, 4, 200), (torch.float16, 3, 7)):
            ops = triton_gen.operators(rule, recip=False)
            x = torch.randn(T, N).to(dtype)
            state = [torch.zeros(N) for _ in rule.states]
            counts = {}
            for direction in ("forward", "backward"):
                seen["load"].clear(); seen["store"].clear()
                if direction == "forward":
                    res = ops.fwd(x, state, True)
                else:
                    ops.bwd(x, res[1 + len(state):], torch.randn(T, N).to(dtype),
                            [torch.randn(N) for _ in state])
                counts[direction] = {
                    kind + "s": int(sum(a.size * s for a, s in seen[kind]))
                    for kind in ("load", "store")}
                counts[direction]["unique"] = int(sum(
                    np.unique(a).size * s for kind in ("load", "store") for a, s in seen[kind]))
            out.append({"rule": name, "dtype": str(dtype), "T": T, "N": N, "counts": counts})
    print(json.dumps(out))
""")


def test_generated_kernels_move_the_bytes_the_model_counts():
    """The interpreter's recorded loads and stores of the generated kernels equal
    :func:`triton_gen.traffic`, and per neuron-step (forward + backward) they move as many
    bytes as the hand-written reset-term and multi-strength kernels (the model of
    :mod:`spikegrad.rules.traffic`) and fewer than BPSA/BPTA's: the generated forward stores no
    state sequence, its backward reads the input again instead."""
    from spikegrad.rules import traffic as hand

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-c", _TRAFFIC_SCRIPT, str(ROOT)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    rules = {"reset_term": R.ResetTerm(), "multistrength": R.MultiStrength()}
    import json

    for row in json.loads(res.stdout.strip().splitlines()[-1]):
        dtype = getattr(torch, row["dtype"].removeprefix("torch."))
        for direction, got in row["counts"].items():
            model = triton_gen.traffic(rules[row["rule"]], direction, row["T"], row["N"], dtype)
            assert (got["loads"], got["stores"], got["unique"]) == (
                model.loads, model.stores, model.unique), (row, direction)
    T, N = 1000, 1000
    for dtype in (torch.float32, torch.float16):
        gen = sum(triton_gen.traffic(R.ResetTerm(), d, T, N, dtype).unique
                  for d in ("forward", "backward")) / (T * N)
        for name, relation in (("reset-term", "eq"), ("multi-strength", "eq"),
                               ("bpsa-bpta", "lt")):
            total = hand.bytes_per_neuron_step(name, T, N, dtype)["total"]
            assert (abs(gen - total) < 0.05) if relation == "eq" else gen < total, \
                (name, dtype, gen, total)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["reset_term subtract atan k=.5", "htdglif braincog",
                                  "adaptive lif", "refractory qif"])
def test_the_generated_cuda_c_as_a_differentiable_sequence(name, dtype):
    """:func:`cuda_gen.sequence` (what CuPy runs on CUDA; the host shim here) equals the step's
    loop: outputs exactly, final states and the gradients of the input and of the initial state
    within tolerance, through its autograd.Function."""
    from spikegrad.rules.cupy_kernels import host

    if host.compiler() is None:
        pytest.skip("no C++ compiler for the host shim")
    if dtype == torch.float16 and host.float16_problem() is not None:
        pytest.skip(host.float16_problem())
    rule = RULES[name]
    x, s0 = _inputs(rule, 5, (3, 9), dtype)
    x, s0 = x.cpu(), tuple(s.cpu() for s in s0)
    g = torch.Generator().manual_seed(4)
    g_out = torch.randn(x.shape, generator=g).to(dtype)
    g_final = tuple(torch.randn(s0[0].shape, generator=g) for _ in rule.states)
    ref = _run(rule, x.float(), s0, "torch", g_out.float(), g_final)
    xin = x.clone().requires_grad_(True)
    sin = tuple(s.clone().requires_grad_(True) for s in s0)
    out, final = cuda_gen.sequence(rule, xin, sin)
    grads = torch.autograd.grad([out, *final], [xin, *sin], [g_out, *g_final])
    assert out.dtype == dtype and torch.equal(out, ref[0].to(dtype))
    for a, b in zip(final, ref[1], strict=True):
        _close(a, b, 1e-6, "final state")
    for a, b in zip(grads, ref[2], strict=True):
        _close(a, b, TOL[dtype], "gradient")
    with pytest.raises(TypeError, match="float32 or float16"):
        cuda_gen.sequence(rule, x.to(torch.bfloat16), s0)


def test_implementation_cupy_without_a_gpu_says_why():
    """``implementation="cupy"`` on CPU tensors (no GPU here, or a CPU input) raises naming the
    device; a rule the generator does not cover names its operation."""
    rule = RULES["adaptive lif"]
    with pytest.raises(RuntimeError, match=r"implementation='cupy' cannot run: .*CUDA tensors"):
        stepfn.sequence(rule, torch.rand(3, 4), implementation="cupy")
    from spikegrad import neurons

    node = neurons.Node(rule, step_mode="m", implementation="cupy")
    with pytest.raises(RuntimeError, match="implementation='cupy' cannot run"):
        node(torch.rand(3, 2, 4))
