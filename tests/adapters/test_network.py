"""The network builder: spec grammar, presets, both hosts, and cross-host equivalence.

* parser: every preset parses to its documented layers; each malformed spec names its token;
* shapes: every preset in both hosts maps ``[T, B, *in_shape]`` to ``[T, B, classes]``;
* ``csnn`` equals spikingjelly's own example network (``conv_fashion_mnist.CSNN``) exactly;
* cross-host: snntorch and spikingjelly builds with the same parameters and the same neuron
  math give equal outputs and gradients (train-mode BN and dropout, eval mode), and a naive
  neuron pairing does not;
* dropout masks shared over time, sum pooling ×1.1 by hand, state reset, pickling.
"""

from __future__ import annotations

import logging
import pickle
import re

import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch")
sj = pytest.importorskip("spikingjelly.activation_based")
from spikingjelly.activation_based import base, functional, layer, neuron, surrogate  # noqa: E402

from spikegrad.adapters.network import (  # noqa: E402
    HOSTS,
    PRESETS,
    BatchNorm,
    Conv,
    Dropout,
    Input,
    Linear,
    Pool,
    SpikingNetwork,
    SumPool2d,
    TimeSharedDropout,
    build_network,
    copy_parameters,
    parse_spec,
    resolve,
)

T, B = 2, 3
IN_SHAPE = {"na-mnist": (1, 28, 28), "csnn": (1, 28, 28), "na-cifar10": (3, 32, 32),
            "tutorial-mlp": (784,)}
POOLING = {"na-mnist": "sum1.1", "na-cifar10": "sum1.1", "csnn": "max", "tutorial-mlp": "max"}
HOST_NEURON = {"snntorch": lambda: snn.Leaky(beta=0.9), "spikingjelly": lambda: neuron.LIFNode(2.0)}


def build(spec, host, *, seed=0, **kw):
    kw.setdefault("neuron", HOST_NEURON[host])
    torch.manual_seed(seed)
    return build_network(spec, host=host, **kw)


# --- parser -----------------------------------------------------------------------------------
D = Dropout(0.2)
EXPECTED = {
    "na-mnist": [Conv(15, 5), Pool(2), Conv(40, 5), Pool(2), Linear(300), Linear(10)],
    "na-cifar10": [Conv(96, 3, 1), D, Conv(256, 3, 1), Pool(2), D, Conv(384, 3, 1), Pool(2), D,
                   Conv(384, 3, 1), D, Conv(256, 3, 1), D, Linear(1024), D, Linear(1024), D,
                   Linear(10)],
    "tutorial-mlp": [Input(784), Linear(1000), Linear(10)],
    "csnn": [Conv(128, 3, 1), BatchNorm(), Pool(2), Conv(128, 3, 1), BatchNorm(), Pool(2),
             Linear(2048), Linear(10)],
}


def test_presets_parse_to_documented_layers():
    assert set(PRESETS) == set(EXPECTED)
    for name, layers in EXPECTED.items():
        assert parse_spec(name) == layers
        assert parse_spec(PRESETS[name]) == layers
        assert "-".join(lay.token for lay in layers) == PRESETS[name]  # tokens round-trip


def test_parse_grammar_details():
    assert parse_spec(" 8C3p2-BN - D.5-P3-D0-12 ") == [
        Conv(8, 3, 2), BatchNorm(), Dropout(0.5), Pool(3), Dropout(0.0), Linear(12)]
    assert parse_spec("D0.1-4C1-10") == [Dropout(0.1), Conv(4, 1), Linear(10)]
    assert parse_spec("20-D0.3-5") == [Input(20), Dropout(0.3), Linear(5)]
    assert resolve("csnn") == PRESETS["csnn"] and resolve("10-2") == "10-2"
    with pytest.raises(TypeError, match="spec"):
        resolve(784)


@pytest.mark.parametrize(("spec", "token"), [
    ("15X5-10", "15X5"),                 # unknown
    ("15C5-c-10", "c"),                  # unknown (case matters)
    ("na-mnistx", "na"),                 # not a preset, so tokens
    ("784--10", ""),                     # empty token
    ("15C0-10", "15C0"),                 # kernel < 1
    ("0C3-10", "0C3"),                   # no channels
    ("4C3-P0-10", "P0"),                 # pooling kernel < 1
    ("4C3-0", "0"),                      # linear of 0 outputs
    ("BN-15C5-10", "BN"),                # BN first
    ("15C5-P2-BN-10", "BN"),             # BN not right after a conv
    ("15C5-D0.1-BN-10", "BN"),
    ("15C5-BN-BN-10", "BN"),
    ("15C5-D1-10", "D1"),                # p outside [0, 1)
    ("15C5-D1.5-10", "D1.5"),
    ("784", "784"),                      # all-linear, fewer than 2 numbers
    ("784-D0.2", "784"),
    ("P2-D0.2", "P2"),                   # no layers at all
    ("D0.2-784-10", "D0.2"),             # all-linear must start with its input size
    ("784-P2-10", "P2"),                 # pooling after a linear layer
    ("15C5-300-15C5-10", "15C5"),        # conv after a linear layer
    ("15C5-P2", "P2"),                   # does not end with a linear layer
    ("15C5-10-D0.2", "D0.2"),
])
def test_parse_errors_name_the_token(spec, token):
    with pytest.raises(ValueError, match=re.escape(repr(token))):
        parse_spec(spec)


def test_empty_spec():
    with pytest.raises(ValueError, match="no layers"):
        parse_spec("")


# --- shapes and structure ---------------------------------------------------------------------
@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_build_and_map_shapes(name, host):
    net = build(name, host, in_shape=IN_SHAPE[name], pooling=POOLING[name])
    with torch.no_grad():
        y = net(torch.rand(T, B, *IN_SHAPE[name]) * 3)
    assert y.shape == (T, B, 10)
    assert ((y == 0) | (y == 1)).all()  # spikes of the output neuron
    layers = [lay for lay in parse_spec(name) if isinstance(lay, (Conv, Linear))]
    assert len(net.neurons()) == len(layers)
    assert all(getattr(m, "bias", None) is None for m in net.synapses()
               if isinstance(m, (nn.Conv2d, nn.Linear)))
    pool = SumPool2d if POOLING[name] == "sum1.1" else nn.MaxPool2d
    assert sum(isinstance(m, pool) for m in net) == sum(isinstance(lay, Pool)
                                                        for lay in parse_spec(name))
    if host == "spikingjelly":
        assert all(m.step_mode == "m" for m in net.modules() if hasattr(m, "step_mode"))
        assert isinstance(net, base.MemoryModule)
    else:  # plain torch.nn layers and snntorch neurons only
        assert all(type(m).__module__.startswith(("torch.nn", "snntorch", "spikegrad"))
                   for m in net)


def test_na_cifar10_layout():
    net = build("na-cifar10", "snntorch", in_shape=(3, 32, 32), pooling="sum1.1")
    lin = [m for m in net if isinstance(m, nn.Linear)]
    assert [m.in_features for m in lin] == [256 * 8 * 8, 1024, 1024]  # 16384, as the authors'
    assert sum(isinstance(m, TimeSharedDropout) and m.p == 0.2 for m in net) == 7
    assert isinstance(net[-1], snn.Leaky) and isinstance(net[-2], nn.Linear)  # no output dropout


def test_linear_bias_and_all_linear_image_input():
    net = build("784-20-10", "snntorch", in_shape=(1, 28, 28), linear_bias=True)
    assert all(m.bias is not None for m in net if isinstance(m, nn.Linear))
    assert isinstance(net[0], nn.Flatten)
    assert net(torch.rand(T, B, 1, 28, 28)).shape == (T, B, 10)


def example_csnn(channels=128):
    """``conv_fashion_mnist.CSNN(T, channels).conv_fc`` of spikingjelly's examples, layer for
    layer (importing the example module pulls in torchvision: seconds)."""
    net = nn.Sequential(
        layer.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),
        layer.BatchNorm2d(channels),
        neuron.IFNode(surrogate_function=surrogate.ATan()),
        layer.MaxPool2d(2, 2),
        layer.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
        layer.BatchNorm2d(channels),
        neuron.IFNode(surrogate_function=surrogate.ATan()),
        layer.MaxPool2d(2, 2),
        layer.Flatten(),
        layer.Linear(channels * 7 * 7, channels * 4 * 4, bias=False),
        neuron.IFNode(surrogate_function=surrogate.ATan()),
        layer.Linear(channels * 4 * 4, 10, bias=False),
        neuron.IFNode(surrogate_function=surrogate.ATan()),
    )
    functional.set_step_mode(net, step_mode="m")
    return net


def test_csnn_equals_spikingjelly_example():
    """Same seed, same layers in the same order: the example's output, to the bit."""
    torch.manual_seed(0)
    ref = example_csnn()
    net = build("csnn", "spikingjelly", in_shape=(1, 28, 28),
                neuron=lambda: neuron.IFNode(surrogate_function=surrogate.ATan()))
    assert [type(m) for m in ref] == [type(m) for m in net]
    assert [repr(m) for m in ref] == [repr(m) for m in net]
    for a, b in zip(ref.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():  # an untrained CSNN's output layer is silent: scale its linears up
        for m in (*ref.modules(), *net.modules()):
            if isinstance(m, nn.Linear):
                m.weight *= 8.0
        x_seq = torch.rand(1, B, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2
        x_seq = x_seq.expand(4, -1, -1, -1, -1)  # the example's input: the image T times
        y = net(x_seq)
        assert torch.equal(y, ref(x_seq))
    assert 0 < float(y.mean()) < 1  # some output spikes, so the comparison means something


# --- build and call errors --------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "exc", "match"), [
    ({"spec": "784-10", "in_shape": (100,)}, ValueError, "'784'"),
    ({"spec": "4C3-10", "in_shape": (784,)}, ValueError, "in_shape"),
    ({"spec": "4C3-10", "in_shape": (1, 0, 5)}, ValueError, "in_shape"),
    ({"spec": "8C5-10", "in_shape": (1, 4, 4)}, ValueError, "'8C5'"),
    ({"spec": "8C1-P3-10", "in_shape": (1, 2, 2)}, ValueError, "'P3'"),
    ({"spec": "784-10", "in_shape": (784,), "host": "keras"}, ValueError, "host"),
    ({"spec": "784-10", "in_shape": (784,), "pooling": "avg"}, ValueError, "pooling"),
    ({"spec": "784-10", "in_shape": (784,), "neuron": HOST_NEURON["spikingjelly"]}, TypeError,
     "snntorch"),
    ({"spec": "784-10", "in_shape": (784,), "host": "spikingjelly",
      "neuron": HOST_NEURON["snntorch"]}, TypeError, "spikingjelly"),
    ({"spec": "784-5-10", "in_shape": (784,), "neuron": "shared"}, ValueError, "same module"),
])
def test_build_errors(kw, exc, match):
    kw = {"host": "snntorch", **kw}
    if kw.get("neuron") == "shared":
        shared = snn.Leaky(0.5)
        kw["neuron"] = lambda: shared
    kw.setdefault("neuron", HOST_NEURON[kw["host"]] if kw["host"] in HOSTS else nn.Identity)
    with pytest.raises(exc, match=match):
        build_network(kw.pop("spec"), **kw)


@pytest.mark.parametrize("host", HOSTS)
def test_forward_checks_input(host):
    net = build("4C3-10", host, in_shape=(1, 5, 5))
    with pytest.raises(ValueError, match="x_seq"):
        net(torch.rand(T, B, 1, 5, 6))
    with pytest.raises(TypeError, match="x_seq"):
        net(torch.ones(T, B, 1, 5, 5, dtype=torch.long))


# --- identical parameters, cross-host equivalence ---------------------------------------------
SPEC, SHAPE = "6C3p1-BN-P2-D0.25-8C3-BN-12-D0.2-5", (2, 8, 8)


def twin(host):
    """The same neuron math in both hosts: hard reset to 0, ``u = 0.5 v + x``, detached reset,
    ATan(2) surrogate (``u > 1`` vs ``u >= 1`` never differ on random inputs)."""
    if host == "snntorch":
        return snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero",
                         spike_grad=snn.surrogate.atan(alpha=2.0))
    return neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0,
                          detach_reset=True, surrogate_function=surrogate.ATan(alpha=2.0))


def gain(net, g=4.0):
    """Scale conv and linear weights so that every layer of a small random net spikes."""
    with torch.no_grad():
        for m in net.synapses():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight *= g
    return net


def states(net):
    return [t for m in net.synapses() for t in m.state_dict().values()]


def test_same_seed_same_parameters_and_copy():
    a = build(SPEC, "snntorch", in_shape=SHAPE, seed=3)
    b = build(SPEC, "spikingjelly", in_shape=SHAPE, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(states(a), states(b), strict=True))
    c = build(SPEC, "spikingjelly", in_shape=SHAPE, seed=4)
    assert not torch.equal(states(a)[0], states(c)[0])
    copy_parameters(a, c)
    assert all(torch.equal(p, q) for p, q in zip(states(a), states(c), strict=True))
    with pytest.raises(ValueError, match="spec"):
        copy_parameters(a, build("6C3p1-BN-P2-12-5", "snntorch", in_shape=SHAPE))


def run_pair(pooling, make=twin, steps=6):
    a = build(SPEC, "snntorch", in_shape=SHAPE, pooling=pooling, neuron=lambda: make("snntorch"))
    b = build(SPEC, "spikingjelly", in_shape=SHAPE, pooling=pooling, seed=9,
              neuron=lambda: make("spikingjelly"))
    copy_parameters(gain(a), b)
    x = torch.rand(steps, 4, *SHAPE, generator=torch.Generator().manual_seed(2)) * 2
    g = torch.randn(steps, 4, 5, generator=torch.Generator().manual_seed(3))
    out = []
    for net in (a, b):
        torch.manual_seed(11)  # the same dropout masks (drawn the same way in both hosts)
        y = net(x)
        (y * g).sum().backward()
        out.append((y, [p.grad for p in net.parameters()]))
    return a, b, x, out


@pytest.mark.parametrize("pooling", ["max", "sum1.1"])
def test_cross_host_equal_train_mode(pooling):
    a, b, _, ((ya, ga), (yb, gb)) = run_pair(pooling)
    assert 0 < float(ya.detach().mean()) < 1  # the output layer spikes, but not always
    assert torch.equal(ya, yb)
    for p, q in zip(ga, gb, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert any(float(p.abs().sum()) > 0 for p in ga)
    for m, n in zip(a.synapses(), b.synapses(), strict=True):  # BN statistics over T×B in both
        for p, q in zip(m.state_dict().values(), n.state_dict().values(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("pooling", ["max", "sum1.1"])
def test_cross_host_equal_eval_mode(pooling):
    a, b, x, _ = run_pair(pooling)  # one train step updates BN running statistics
    a.eval()
    b.eval()
    functional.reset_net(b)
    ya, yb = a(x), b(x)
    assert 0 < float(ya.detach().mean()) < 1
    assert torch.equal(ya, yb)


def test_naive_neuron_pairing_differs():
    """snntorch's default Leaky (subtract reset) is not spikingjelly's LIFNode (hard reset)."""
    def naive(host):
        return snn.Leaky(beta=0.5) if host == "snntorch" else neuron.LIFNode(tau=2.0,
                                                                             decay_input=False)
    _, _, _, ((ya, _), (yb, _)) = run_pair("max", make=naive, steps=12)
    assert not torch.equal(ya, yb)


# --- dropout, sum pooling, reset, pickling -----------------------------------------------------
@pytest.mark.parametrize("host", HOSTS)
def test_dropout_mask_shared_over_time(host):
    net = build("50-D0.5-7", host, in_shape=(50,))
    (drop,) = [m for m in net if isinstance(m, (TimeSharedDropout, layer.Dropout))]
    x = torch.ones(5, 4, 50)
    y = drop(x)
    assert (y == y[0]).all()  # zeros at the same positions at every step
    assert set(y.unique().tolist()) == {0.0, 2.0}  # kept entries scaled by 1/(1-p)
    assert 0.3 < float((y[0] == 0).float().mean()) < 0.7
    functional.reset_net(drop) if host == "spikingjelly" else None
    assert not torch.equal(drop(x), y)  # a new mask per call (per reset in spikingjelly)
    net.eval()
    assert torch.equal(drop(x), x)


def test_sum_pooling_by_hand():
    x = torch.arange(2 * 25, dtype=torch.float64).reshape(1, 2, 1, 5, 5)  # [T, B, C, H, W]
    y = SumPool2d(2)(x)
    b0 = [[0 + 1 + 5 + 6, 2 + 3 + 7 + 8], [10 + 11 + 15 + 16, 12 + 13 + 17 + 18]]
    expected = 1.1 * torch.tensor([b0, [[v + 100 for v in row] for row in b0]],
                                  dtype=torch.float64)
    torch.testing.assert_close(y, expected.reshape(1, 2, 1, 2, 2), rtol=1e-15, atol=0)
    assert SumPool2d(3, scale=1.0)(torch.ones(4, 3, 3)).tolist() == [[[9.0]]] * 4


@pytest.mark.parametrize("host", HOSTS)
def test_reset_gives_identical_outputs(host, caplog):
    net = gain(build("6C3-BN-P2-12-5", host, in_shape=(2, 8, 8), neuron=lambda: twin(host)))
    net.eval()
    x = torch.rand(4, 3, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 2
    y1 = net(x)
    assert 0 < float(y1.detach().mean()) < 1
    if host == "spikingjelly":  # the state carries over until a reset
        assert not torch.equal(net(x), y1)
        with caplog.at_level(logging.WARNING):
            functional.reset_net(net)  # no recursion, no "not a MemoryModule" warning
        assert not caplog.records
        assert torch.equal(net(x), y1)
    net.reset()
    assert torch.equal(net(x), y1)
    net.reset()
    assert torch.equal(net(x), y1)


def test_spikingjelly_network_pickles():
    net = build("6C3-BN-P2-D0.2-12-5", "spikingjelly", in_shape=(2, 8, 8)).eval()
    x = torch.rand(3, 2, 2, 8, 8)
    y = net(x)
    twin_net = pickle.loads(pickle.dumps(net))
    assert isinstance(twin_net, SpikingNetwork) and type(twin_net) is type(net)
    twin_net.reset()
    assert torch.equal(twin_net(x), y)


def test_neuron_instance_instead_of_factory_and_int_in_shape():
    from spikegrad import neurons

    with pytest.raises(TypeError, match="factory"):
        build_network("tutorial-mlp", host="snntorch",
                              neuron=neurons.NALeaky(beta=0.8), in_shape=(784,))
    net = build_network("tutorial-mlp", host="snntorch",
                                neuron=lambda: neurons.NALeaky(beta=0.8), in_shape=784)
    assert net.in_shape == (784,)
    with pytest.raises(ValueError, match="in_shape"):
        build_network("tutorial-mlp", host="snntorch",
                              neuron=lambda: neurons.NALeaky(beta=0.8), in_shape="784")
