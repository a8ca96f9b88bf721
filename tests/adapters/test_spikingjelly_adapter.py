"""The spikingjelly adapter: version check, host traps, spikegrad surrogates inside the host.

Runs on spikingjelly 2.x and 0.0.0.0.14 (``PYTHONPATH=/tmp/sj014 pytest ...``).

* ``check_version``: unsupported versions raise ImportError naming the supported ones;
* 2.x's ``functional.reset_net`` caches the module list on its first call (a neuron added later
  is never reset): asserted on 2.x, and :func:`spikegrad.adapters.spikingjelly.reset_net`
  (also ``spikegrad.neurons.reset_net``) resets it on both lines;
* the hosts' bare ``assert`` on ``tau`` (an int raises an empty AssertionError) against
  spikegrad's checks;
* spikegrad's surrogates as ``surrogate_function=`` of the host's own ``LIFNode``: spikes and
  gradients equal the host's own surrogates (with ``inclusive=True``), ``spiking=False`` is the
  primitive, and the once-per-process RuntimeWarning when 2.x's reference loop calls one.

Host behaviour that spikegrad cannot change is asserted too, so that a change upstream shows.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

pytest.importorskip("spikingjelly")

import torch  # noqa: E402
from spikingjelly.activation_based import functional, layer, neuron  # noqa: E402
from spikingjelly.activation_based import surrogate as sj_surrogate  # noqa: E402
from torch import nn  # noqa: E402

import spikegrad.adapters.spikingjelly as adapter  # noqa: E402
from spikegrad import neurons  # noqa: E402
from spikegrad.neurons import (  # noqa: E402
    HTDGLIFNode,
    MultiStrengthIFNode,
    NALIFNode,
    ResetTermLIFNode,
)
from spikegrad.rules import surrogate  # noqa: E402

IS_SJ2 = adapter.IS_SJ2
F64 = torch.float64
T, B, N = 6, 3, 5
ROOT = Path(__file__).parents[2]
FALLBACK = "reference loop"  # in the text of spikegrad's RuntimeWarning


def currents(shape=(T, B, N), seed=0, mean=0.5, std=0.7, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=F64) * std + mean).to(dtype).requires_grad_(True)


def randn_like(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(x.shape, generator=g, dtype=F64).to(x.dtype)


def drive(node, x):
    functional.reset_net(node)
    if node.step_mode == "m":
        return node(x)
    return torch.stack([node(x[t]) for t in range(x.shape[0])])


# =================================================================================================
# 1. Version check
# =================================================================================================
@pytest.mark.parametrize("version", ["0.0.0.0.13", "1.0", "0.0.0.0.15", "3.0.0"])
def test_unsupported_versions_raise_import_error_naming_the_supported(version):
    with pytest.raises(ImportError) as info:
        adapter.check_version(version)
    msg = str(info.value)
    assert f"spikingjelly {version} is not supported" in msg
    assert "0.0.0.0.14" in msg and "2.0" in msg


@pytest.mark.parametrize("version", ["0.0.0.0.14", "2.0.0", "2.0.1"])
def test_supported_versions_pass(version):
    assert adapter.check_version(version) == version


def test_installed_version_passes_and_matches_the_line():
    installed = importlib.metadata.version("spikingjelly")
    assert adapter.check_version() == installed == adapter.SPIKINGJELLY_VERSION
    assert IS_SJ2 == installed.startswith("2.")


# =================================================================================================
# 2. 2.x's reset_net cache
# =================================================================================================
NODES = {
    "host-LIFNode": lambda: neuron.LIFNode(),
    "ResetTermLIFNode": ResetTermLIFNode,
    "NALIFNode": lambda: NALIFNode(tau_s=2.0),
    "HTDGLIFNode": HTDGLIFNode,
    "MultiStrengthIFNode": MultiStrengthIFNode,
}


def _grown_net(make_node):
    """A net reset once (2.x caches its module list then), then grown by one node, then run."""
    net = nn.Sequential(layer.Linear(N, N), ResetTermLIFNode())
    functional.reset_net(net)
    net.append(layer.Linear(N, N))
    net.append(make_node())
    with torch.no_grad():
        net(torch.rand(B, N) * 3)
    assert all(isinstance(m.v, torch.Tensor) for m in (net[1], net[3]))
    return net


@pytest.mark.skipif(not IS_SJ2, reason="0.0.0.0.14's reset_net walks net.modules() on every "
                    "call: no cache, no trap")
@pytest.mark.parametrize("make_node", list(NODES.values()), ids=list(NODES))
def test_host_trap_sj2_reset_net_misses_a_node_added_after_the_first_call(make_node):
    net = _grown_net(make_node)
    functional.reset_net(net)
    assert net[1].v == 0.0  # known at the first call: reset
    assert isinstance(net[3].v, torch.Tensor)  # added afterwards: NOT reset (the host's cache)
    assert hasattr(functional, "invalidate_reset_cache")


@pytest.mark.parametrize("make_node", list(NODES.values()), ids=list(NODES))
def test_spikegrad_reset_net_resets_a_node_added_later(make_node):
    net = _grown_net(make_node)
    adapter.reset_net(net)
    for node in (net[1], net[3]):
        assert not isinstance(node.v, torch.Tensor) and node.v == 0.0
    # and it keeps working: grow again, run, reset
    net.append(NALIFNode())
    with torch.no_grad():
        net(torch.rand(B, N) * 3)
    neurons.reset_net(net)
    assert all(not isinstance(m.v, torch.Tensor) for m in net if hasattr(m, "v"))


def test_reset_net_is_exported_from_neurons():
    assert neurons.reset_net is adapter.reset_net
    assert "reset_net" in dir(neurons)


def test_spikegrad_reset_net_resets_every_piece_of_state():
    net = nn.Sequential(layer.Linear(N, N), NALIFNode(tau_s=2.0), layer.Linear(N, N),
                        ResetTermLIFNode(tau_s=2.0))
    x = torch.rand(B, N, requires_grad=True) * 3
    net(x)
    assert isinstance(net[1].trace, torch.Tensor) and net[1]._window is not None
    adapter.reset_net(net)
    assert (net[1].v, net[1].u, net[1].trace, net[1]._window) == (0.0, 0.0, 0.0, None)
    assert (net[3].v, net[3].trace) == (0.0, 0.0)


# =================================================================================================
# 3. The hosts' bare asserts
# =================================================================================================
def test_host_trap_bare_assert_on_int_tau():
    with pytest.raises(AssertionError) as info:
        neuron.LIFNode(tau=2)
    assert str(info.value) == ""  # the host says nothing about what is wrong


def test_spikegrad_checks_tau_with_messages():
    node = ResetTermLIFNode(tau=2)  # an int is a number: accepted
    assert node.tau == 2.0 and isinstance(node.tau, float)
    assert NALIFNode(tau=5).tau == 5.0
    with pytest.raises(ValueError, match=r"tau must be > 1 .*got 1\.0"):
        ResetTermLIFNode(tau=1.0)
    with pytest.raises(TypeError, match="tau must be a number"):
        ResetTermLIFNode(tau="2")


def test_int_v_threshold_accepted():
    for cls in (ResetTermLIFNode, NALIFNode, HTDGLIFNode, MultiStrengthIFNode):
        node = cls(v_threshold=1)
        assert node.v_threshold == 1.0 and isinstance(node.v_threshold, float)


# =================================================================================================
# 4. spikegrad surrogates inside the host's own LIFNode
# =================================================================================================
PAIRS = [
    pytest.param(lambda **k: surrogate.Sigmoid(temperature=0.3, **k),
                 lambda **k: sj_surrogate.Sigmoid(alpha=1 / 0.3, **k), id="Sigmoid-T0.3"),
    pytest.param(lambda **k: surrogate.Sigmoid(temperature=0.25, **k),
                 lambda **k: sj_surrogate.Sigmoid(alpha=4.0, **k), id="Sigmoid-host-default"),
    pytest.param(lambda **k: surrogate.ATan(alpha=2.0, **k),
                 lambda **k: sj_surrogate.ATan(alpha=2.0, **k), id="ATan"),
]


def _host(sg, mode, **kw):
    return neuron.LIFNode(tau=2.0, surrogate_function=sg, step_mode=mode, **kw)


@pytest.mark.filterwarnings("ignore:spikingjelly 2.x fuses only its own surrogates")
@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_spikegrad_surrogate_in_host_lif_equals_host_surrogate(ours, theirs, mode):
    x = currents(dtype=torch.float32, seed=1)
    out_ours = drive(_host(ours(inclusive=True), mode), x)
    out_host = drive(_host(theirs(), mode), x)
    assert 0.05 < out_host.mean().item() < 0.9
    assert torch.equal(out_ours, out_host)
    g = randn_like(out_host, 2)
    (g_ours,) = torch.autograd.grad((out_ours * g).sum(), x)
    (g_host,) = torch.autograd.grad((out_host * g).sum(), x)
    assert g_host.abs().sum() > 0
    torch.testing.assert_close(g_ours, g_host, rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:spikingjelly 2.x fuses only its own surrogates")
def test_inclusive_decides_the_spike_at_threshold_in_the_host():
    """The host's convention is ``>=``; spikegrad's surrogates default to snntorch's ``>``:
    only ``inclusive=True`` reproduces the host at ``u == θ`` exactly."""
    x = torch.tensor([2.0, 1.0])  # tau=2, decay_input: u = x / 2 = [1.0 (== θ), 0.5]
    host = _host(sj_surrogate.Sigmoid(), "s")(x)
    assert host.tolist() == [1.0, 0.0]
    assert _host(surrogate.Sigmoid(inclusive=True), "s")(x).tolist() == [1.0, 0.0]
    assert _host(surrogate.Sigmoid(), "s")(x).tolist() == [0.0, 0.0]  # the default differs


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_spiking_false_gives_the_primitive(ours, theirs):
    x = torch.linspace(-2, 2, 41, dtype=F64, requires_grad=True)
    p_ours, p_host = ours(spiking=False)(x), theirs(spiking=False)(x)
    torch.testing.assert_close(p_ours, p_host, rtol=1e-12, atol=1e-12)
    assert 0 < p_ours.min() and p_ours.max() < 1  # smooth, not spikes
    g = randn_like(x, 3)
    (d_ours,) = torch.autograd.grad((p_ours * g).sum(), x)
    (d_host,) = torch.autograd.grad((p_host * g).sum(), x)
    torch.testing.assert_close(d_ours, d_host, rtol=1e-10, atol=1e-12)
    # and the spiking version's backward is the primitive's derivative
    s = ours()(x)
    (d_spk,) = torch.autograd.grad((s * g).sum(), x)
    torch.testing.assert_close(d_spk, d_ours, rtol=1e-10, atol=1e-12)


def _count_fallback_warnings(fn) -> int:
    surrogate._warn_host_fallback.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return sum(1 for w in caught
               if issubclass(w.category, RuntimeWarning) and FALLBACK in str(w.message))


@pytest.mark.parametrize("mode", ["s", "m"])
def test_fallback_warning_in_process(mode):
    def use():
        for _ in range(3):
            x = torch.rand(T, B, N, requires_grad=True) * 2
            drive(_host(surrogate.Sigmoid(inclusive=True), mode), x).sum().backward()

    assert _count_fallback_warnings(use) == (1 if IS_SJ2 else 0)


def test_spikegrad_nodes_never_warn():
    def use():
        for cls in (ResetTermLIFNode, NALIFNode, HTDGLIFNode, MultiStrengthIFNode):
            for mode in ("s", "m"):
                x = torch.rand(T, B, N, requires_grad=True) * 2
                drive(cls(step_mode=mode), x).sum().backward()
        surrogate.Sigmoid()(torch.zeros(3))  # called directly: not the host's loop

    assert _count_fallback_warnings(use) == 0


def test_fallback_warning_once_per_process():
    """A fresh interpreter: several host neurons, both modes, forward and backward: exactly one
    RuntimeWarning on 2.x (it names the reference loop), none on 0.0.0.0.14."""
    script = textwrap.dedent(f"""
        import warnings, torch
        warnings.simplefilter("always")
        from spikingjelly.activation_based import functional, neuron
        from spikegrad.rules import surrogate
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for mode in ("s", "m", "s", "m"):
                for sg in (surrogate.Sigmoid(inclusive=True), surrogate.ATan(inclusive=True)):
                    n = neuron.LIFNode(surrogate_function=sg, step_mode=mode)
                    x = torch.rand(4, 2, 3, requires_grad=True) * 2
                    y = n(x) if mode == "m" else torch.stack([n(x[t]) for t in range(4)])
                    y.sum().backward()
        hits = [w for w in caught if issubclass(w.category, RuntimeWarning)
                and {FALLBACK!r} in str(w.message)]
        print("COUNT", len(hits))
        for w in hits:
            print("MSG", str(w.message))
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert f"COUNT {1 if IS_SJ2 else 0}" in lines, res.stdout
    if IS_SJ2:
        msg = next(line for line in lines if line.startswith("MSG"))
        assert "spikingjelly 2.x" in msg and "same values" in msg
