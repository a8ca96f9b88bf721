"""``torch.compile(model, fullgraph=True)``: no graph break, and compiled equals eager.

For every case: ``torch._dynamo.explain`` counts no graph break, ``torch.compile(...,
fullgraph=True)`` compiles, and the compiled outputs and the gradients of the input and of the
weights (random upstream gradients) equal eager ones. Cases:

* the seed-002 tutorial network (per-step loop) with each spikegrad snntorch neuron and with
  ``snn.Leaky`` given each spikegrad surrogate (T = 25 for each neuron, T = 4 for further
  options);
* spikingjelly networks of each spikegrad node (and of the host's ``LIFNode`` given a spikegrad
  surrogate) in step modes ``"s"`` and ``"m"``;
* the TTFS losses and ``first_spike_time``; ``NALeaky.sequence``.

Most cases compile with the ``aot_eager`` backend (dynamo's capture plus AOT autograd, without
code generation: compiling the T = 25 loop with inductor takes minutes on a small CPU); each
neuron family also has a short ``inductor`` case. Everything runs in float64, so that a spike
never flips on a rounding difference of generated code.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch")
pytest.importorskip("spikingjelly.activation_based.functional")
sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")

from spikegrad.adapters import na_window  # noqa: E402
from spikegrad.adapters.snntorch import SpikegradLeaky  # noqa: E402
from spikegrad.adapters.spikingjelly import reset_net  # noqa: E402
from spikegrad.neurons import (  # noqa: E402
    HTDGLIFLeaky,
    HTDGLIFNode,
    MultiStrengthIFNode,
    MultiStrengthLeaky,
    NALeaky,
    NALIFNode,
    ResetTermLeaky,
    ResetTermLIFNode,
)
from spikegrad.rules import surrogate, ttfs  # noqa: E402
from tests.compile_helpers import forward_backward  # noqa: E402
from tests.neurons.tutorial_net import TutorialNet  # noqa: E402

DTYPE = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-12}
N_IN, HIDDEN, N_OUT, B = 12, 16, 5, 4


@pytest.fixture(scope="module", autouse=True)
def _cold_inductor_cache(fresh_inductor_cache):
    """This module compiles against a new, empty Inductor cache (tests/conftest.py)."""
    return fresh_inductor_cache


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_inductor_writes_to_the_fresh_cache(fresh_inductor_cache):
    """The fixture takes effect: an Inductor compile of a graph no other test compiles writes
    its FX graph into the module's fresh directory (Inductor reads TORCHINDUCTOR_CACHE_DIR at
    each use), and the compiled function equals eager."""
    import os

    from torch._inductor.runtime.cache_dir_utils import cache_dir

    if fresh_inductor_cache is None:
        pytest.skip("SPIKEGRAD_TEST_INDUCTOR_CACHE=keep: the usual cache is used")
    assert cache_dir() == fresh_inductor_cache
    before = set(os.listdir(fresh_inductor_cache))

    def f(x):
        return torch.sin(x) * 3.25 + x.cumsum(0)

    x = torch.randn(7, 3, dtype=DTYPE)
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="inductor")(x), f(x),
                               **TOL)
    written = set(os.listdir(fresh_inductor_cache)) - before
    assert "fxgraph" in written or "fxgraph" in before, sorted(written)
    assert any(os.scandir(os.path.join(fresh_inductor_cache, "fxgraph")))




def check_compiles(model, args, wrt, *, backend="aot_eager", reset=None):
    """No graph break; compiled outputs and gradients of ``wrt`` equal eager. ``reset`` (if
    given) runs before every call, outside the compiled region. Returns the eager outputs (for
    the caller's checks that the case is not trivial)."""
    if reset is not None:
        reset()
    explained = torch._dynamo.explain(model)(*args)
    reasons = [str(r.reason).splitlines()[0] for r in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    eager, g_eager, upstream = forward_backward(model, args, wrt, reset=reset)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    out, g_out, _ = forward_backward(compiled, args, wrt, upstream, reset)
    # a second call runs the cached graph (from a reset state again)
    out2, g_out2, _ = forward_backward(compiled, args, wrt, upstream, reset)
    for got in (out, out2):
        assert len(got) == len(eager)
        for a, b in zip(got, eager, strict=True):
            torch.testing.assert_close(a, b, **TOL)
    for got in (g_out, g_out2):
        for a, b in zip(got, g_eager, strict=True):
            torch.testing.assert_close(a, b, **TOL)
    assert any(g.abs().sum() > 0 for g in g_eager), "no gradient reached the inputs/weights"
    return eager


def _input(shape, scale, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=DTYPE) * scale).requires_grad_(True)


# --- snntorch: the seed-002 tutorial network, per-step loop --------------------------------------
SNNTORCH = {  # T = 25: each spikegrad neuron, and the host's Leaky with a spikegrad surrogate
    "ResetTermLeaky": lambda: ResetTermLeaky(beta=0.9),
    "HTDGLIFLeaky-paper": lambda: HTDGLIFLeaky(),
    "MultiStrengthLeaky": lambda: MultiStrengthLeaky(beta=0.9, max_strength=3),
    "Leaky-ATan": lambda: snn.Leaky(beta=0.9, spike_grad=surrogate.ATan()),
}
VARIANTS = {  # the other options and surrogates, on a shorter loop
    "ResetTermLeaky-trace": lambda: ResetTermLeaky(beta=0.9, tau_s=2.0),
    "ResetTermLeaky-detach-subtract-graded": lambda: ResetTermLeaky(
        beta=0.8, reset_grad="detach", reset_mechanism="subtract", graded_spikes_factor=0.5,
        learn_graded_spikes_factor=True),
    "ResetTermLeaky-ATan-scale": lambda: ResetTermLeaky(
        beta=0.9, spike_grad=surrogate.ATan(alpha=3.0), reset_grad_scale=0.3),
    "HTDGLIFLeaky-braincog": lambda: HTDGLIFLeaky(mode="braincog", dt=0.5),
    "Leaky-Sigmoid": lambda: snn.Leaky(beta=0.9, spike_grad=surrogate.Sigmoid(temperature=0.3)),
}
# one inductor case per family (short: inductor compiles every step of the unrolled loop)
INDUCTOR = ("ResetTermLeaky-trace", "HTDGLIFLeaky-paper", "MultiStrengthLeaky", "Leaky-ATan")
def _cases(names):
    return list(names)


def _check_tutorial(name, steps, backend):
    torch.manual_seed(0)
    net = TutorialNet({**SNNTORCH, **VARIANTS}[name], num_inputs=N_IN, num_hidden=HIDDEN,
                      num_outputs=N_OUT, num_steps=steps).to(DTYPE).train()
    with torch.no_grad():
        net.fc2.weight.mul_(4.0)  # so that the output layer fires too
    x = _input((B, N_IN), 2.0)
    wrt = [x, net.fc1.weight, net.fc2.weight]
    graded = [p for n, p in net.named_parameters() if "graded" in n]
    assert len(graded) == (2 if "graded" in name else 0)
    spk, _ = check_compiles(net, (x,), wrt + graded, backend=backend)
    assert spk.abs().sum() > 0, "the network never fired: the comparison would be trivial"


@pytest.mark.parametrize("name", list(SNNTORCH))
def test_tutorial_network_T25(name):
    _check_tutorial(name, 25, "aot_eager")


@pytest.mark.parametrize("name", _cases(VARIANTS))
def test_tutorial_network_variants(name):
    """The graded_spikes_factor is applied on the traced path (a buffer factor used to be read
    with ``float()`` every step); a learnable one gets eager's gradient."""
    _check_tutorial(name, 4, "aot_eager")


@pytest.mark.parametrize("name", _cases(INDUCTOR))
def test_tutorial_network_inductor(name):
    _check_tutorial(name, 2, "inductor")


# --- spikingjelly: networks of each node, step modes "s" and "m" ---------------------------------
SPIKINGJELLY = {
    "ResetTermLIFNode": lambda m: ResetTermLIFNode(tau=2.0, step_mode=m),
    "ResetTermLIFNode-trace-ATan-soft": lambda m: ResetTermLIFNode(
        tau=3.0, v_reset=None, surrogate_function=surrogate.ATan(), tau_s=2.0, step_mode=m),
    "HTDGLIFNode-paper": lambda m: HTDGLIFNode(step_mode=m),
    "HTDGLIFNode-braincog": lambda m: HTDGLIFNode(mode="braincog", step_mode=m),
    "MultiStrengthIFNode": lambda m: MultiStrengthIFNode(max_strength=2, step_mode=m),
    "LIFNode-spikegrad-Sigmoid": lambda m: sj_neuron.LIFNode(
        decay_input=False, surrogate_function=surrogate.Sigmoid(inclusive=True), step_mode=m),
    "NALIFNode": lambda m: NALIFNode(tau_s=2.0, step_mode=m),
}
SJ_INDUCTOR = ("ResetTermLIFNode", "HTDGLIFNode-paper", "MultiStrengthIFNode",
               "LIFNode-spikegrad-Sigmoid")
SJ_CASES = [(n, m) for n in SPIKINGJELLY for m in ("s", "m")
            if (n, m) != ("NALIFNode", "s")]  # NALIFNode "s": the NA window (another issue)


class SJNet(nn.Module):
    """Linear -> node -> Linear -> node (reset by the caller, as in spikingjelly's examples:
    ``functional.reset_net`` inside a compiled region would trace 2.x's weak cache of the
    net's modules)."""

    def __init__(self, make, mode, reset_inside=False):
        super().__init__()
        self.mode, self.reset_inside = mode, reset_inside
        self.fc1, self.sn1 = nn.Linear(N_IN, HIDDEN), make(mode)
        self.fc2, self.sn2 = nn.Linear(HIDDEN, N_OUT), make(mode)
        with torch.no_grad():
            self.fc2.weight.mul_(4.0)  # so that the output layer fires too

    def layers(self, x):
        h = self.sn1(self.fc1(x))
        return self.sn2(self.fc2(h)), h

    def forward(self, x_seq):
        if self.reset_inside:  # each node's own reset, traced with the step
            self.sn1.reset()
            self.sn2.reset()
        if self.mode == "m":
            return self.layers(x_seq)
        outs = [self.layers(x) for x in x_seq.unbind(0)]
        return torch.stack([o for o, _ in outs]), torch.stack([h for _, h in outs])


def _check_sj(name, mode, backend, steps=4, reset_inside=False):
    torch.manual_seed(0)
    net = SJNet(SPIKINGJELLY[name], mode, reset_inside).to(DTYPE).train()
    x = _input((steps, B, N_IN), 2.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "spikingjelly 2.x fuses only", RuntimeWarning)
        out, hidden = check_compiles(net, (x,), [x, net.fc1.weight, net.fc2.weight],
                                     backend=backend,
                                     reset=None if reset_inside else lambda: reset_net(net))
    assert hidden.abs().sum() > 0 and out.abs().sum() > 0, "silent: a trivial comparison"


@pytest.mark.parametrize(("name", "mode"), SJ_CASES)
def test_spikingjelly_network(name, mode):
    _check_sj(name, mode, "aot_eager")


@pytest.mark.parametrize("name", ["HTDGLIFNode-paper", "ResetTermLIFNode-trace-ATan-soft"])
@pytest.mark.parametrize("mode", ["s", "m"])
def test_spikingjelly_reset_inside_the_compiled_region(name, mode):
    """``node.reset()`` inside the compiled forward, after an eager training step (HTDGLIF's
    silence watch used to read its sum on the host there)."""
    _check_sj(name, mode, "aot_eager", reset_inside=True)


@pytest.mark.parametrize("name", SJ_INDUCTOR)
@pytest.mark.parametrize("mode", ["s", "m"])
def test_spikingjelly_network_inductor(name, mode):
    _check_sj(name, mode, "inductor", steps=3)


# --- TTFS losses ---------------------------------------------------------------------------------
class _Loss(nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def forward(self, spk_rec, targets):
        return self.loss(spk_rec, targets)


TTFS = {
    "first_spike_time": (ttfs.first_spike_time, None),
    "ce-negate": (ttfs.ce_temporal_loss(), "labels"),
    "ce-reciprocal-weight": (
        ttfs.ce_temporal_loss(inverse="reciprocal", weight=torch.linspace(0.5, 1.5, N_OUT,
                                                                          dtype=DTYPE)),
        "labels"),
    "mse-labels": (ttfs.mse_temporal_loss(on_target=1, off_target=-2), "labels"),
    "mse-tolerance-sum": (ttfs.mse_temporal_loss(tolerance=1, reduction="sum"), "labels"),
    "mse-multi-spike": (ttfs.mse_temporal_loss(multi_spike=True, on_target=(0, 2),
                                               off_target=(-2, -1)), "labels"),
    "mse-times": (ttfs.mse_temporal_loss(target_is_time=True), "times"),
}
TTFS_INDUCTOR = ("first_spike_time", "ce-negate", "mse-times")


def _ttfs_args(kind, steps=6):
    gen = torch.Generator().manual_seed(3)
    spk = (torch.rand(steps, B, N_OUT, generator=gen) > 0.7).to(DTYPE).requires_grad_(True)
    if kind is None:
        return (spk,)
    if kind == "labels":
        return spk, torch.randint(0, N_OUT, (B,), generator=gen)
    return spk, (torch.rand(B, N_OUT, generator=gen, dtype=DTYPE) * steps).floor() - 1


@pytest.mark.parametrize(("name", "backend"), [(n, "aot_eager") for n in TTFS]
                         + [(n, "inductor") for n in TTFS_INDUCTOR])
def test_ttfs(name, backend):
    fn, kind = TTFS[name]
    args = _ttfs_args(kind)
    check_compiles(fn if kind is None else _Loss(fn), args, [args[0]], backend=backend)


def test_ttfs_label_check_runs_on_the_device_when_compiled():
    """Under compile the class-index check is a device assert (no ``.item()``): it still
    refuses an out-of-range label."""
    loss = torch.compile(_Loss(ttfs.ce_temporal_loss()), fullgraph=True, backend="aot_eager")
    spk, _ = _ttfs_args("labels")
    with pytest.raises(RuntimeError, match="class indices"):
        loss(spk, torch.tensor([0, 1, 2, N_OUT]))


def test_ttfs_time_check_runs_on_the_device_when_compiled():
    loss = torch.compile(_Loss(ttfs.mse_temporal_loss(target_is_time=True)), fullgraph=True,
                         backend="aot_eager")
    spk, times = _ttfs_args("times")
    loss(spk, times)
    with pytest.raises(RuntimeError, match=r"must lie in \[0, T\)"):
        loss(spk, times + 100)


# --- NALeaky.sequence ----------------------------------------------------------------------------
class _NASequence(nn.Module):
    def __init__(self, tau_s):
        super().__init__()
        self.fc = nn.Linear(N_IN, HIDDEN)
        self.lif = NALeaky(beta=0.8, tau_s=tau_s)

    def forward(self, x_seq):
        return self.lif.sequence(self.fc(x_seq))


@pytest.mark.parametrize("tau_s", [None, 2.0])
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_naleaky_sequence(tau_s, backend):
    torch.manual_seed(0)
    net = _NASequence(tau_s).to(DTYPE)
    x = _input((5, B, N_IN), 2.0)
    out, _ = check_compiles(net, (x,), [x, net.fc.weight], backend=backend)
    assert out.abs().sum() > 0


# --- NA's per-step loop: one eager call per step, counted, equal to eager -------------------------
def _na_per_step(host):
    if host == "snntorch":
        return TutorialNet(lambda: NALeaky(beta=0.8, tau_s=2.0), num_inputs=N_IN,
                           num_hidden=HIDDEN, num_outputs=N_OUT, num_steps=6)
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(N_IN, HIDDEN), nn.Linear(HIDDEN, N_OUT)
            self.lif1, self.lif2 = NALIFNode(tau_s=2.0), NALIFNode(tau_s=2.0)

        def forward(self, x):
            return torch.stack([self.lif2(self.fc2(self.lif1(self.fc1(x)))) for _ in range(6)])

    return Net()


@pytest.mark.parametrize("host", ["snntorch", "spikingjelly"])
def test_na_per_step_loop_breaks_once_per_call_and_equals_eager(host):
    """NALeaky's per-step loop and NALIFNode('s'): each NA call runs eagerly (graph breaks for
    the documented reason only), outputs and gradients equal eager, and a second call of the
    same shapes compiles nothing new (no recompiles)."""
    torch.manual_seed(0)
    net = _na_per_step(host).to(DTYPE).train()
    with torch.no_grad():
        net.fc2.weight.mul_(4.0)
    x = _input((B, N_IN), 2.0)
    wrt = [x, net.fc1.weight, net.fc2.weight]
    reset = None  # the tutorial network starts from init_leaky() in its forward
    if host == "spikingjelly":
        def reset():
            reset_net(net)

    eager, g_eager, upstream = forward_backward(net, (x,), wrt, reset=reset)
    for fn in (SpikegradLeaky.forward, NALIFNode._stateful_step):
        na_window.eager(fn)  # made by the first compiled call of a process (a break of its own)
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(net, backend="aot_eager")
    out, g_out, _ = forward_backward(compiled, (x,), wrt, upstream, reset)
    breaks = counters["graph_break"]
    # at most one per NA call (a break inside the loop makes dynamo run the loop's own frame
    # eagerly and compile the layers it calls), and no other reason
    assert 1 <= sum(breaks.values()) <= 2 * 6, breaks
    assert all(na_window.COMPILE_NOTE in reason for reason in breaks), breaks
    frames = counters["frames"]["ok"]
    out2, g_out2, _ = forward_backward(compiled, (x,), wrt, upstream, reset)
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames, "recompiled on a second call"
    for got, g_got in ((out, g_out), (out2, g_out2)):
        for a, b in zip(got, eager, strict=True):
            torch.testing.assert_close(a, b, **TOL)
        for a, b in zip(g_got, g_eager, strict=True):
            torch.testing.assert_close(a, b, **TOL)
    assert all(g.abs().sum() > 0 for g in g_eager)
