"""The network builder the benchmark drives: one layer spec, the same network in either host.

A spec is tokens joined by ``-`` (or a key of :data:`PRESETS`):

- ``{N}C{K}``: convolution, ``N`` channels, ``K×K`` kernel, stride 1, no padding, no bias;
  ``{N}C{K}p{P}`` pads by ``P``.
- ``P{K}``: ``K×K`` pooling, stride ``K``: max pooling, or NA's non-spiking sum pooling ×1.1
  (``pooling="sum1.1"``).
- ``BN``: batch norm, right after a convolution (conv → BN → neuron).
- ``D{p}``: dropout, ``0 <= p < 1``, one mask for all time steps.
- ``{N}``: linear layer of ``N`` outputs (bias only with ``linear_bias=True``). A conv spec
  flattens before its first linear layer; in an all-linear spec the first number is the
  flattened input size.

Every convolution and linear layer is followed by the neuron. A spec ends with a linear layer
(the classes), and no convolution, pooling or batch norm follows a linear layer.

The built :class:`SpikingNetwork` maps ``x_seq [T, B, *in_shape]`` to ``[T, B, classes]``, the
last neuron's first output at every step. snntorch host: ``torch.nn`` layers applied to all
``T`` steps at once (as ``[T*B, ...]``, so batch norm normalises over ``T×B`` as spikingjelly's
multi-step batch norm does) and each neuron run in snntorch's per-step loop from rest (every
call starts from rest). spikingjelly host: ``activation_based.layer`` modules and the nodes,
all in step mode ``"m"``; state (and dropout masks) carry over between calls until
``functional.reset_net(net)`` or ``net.reset()``.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import nn

from spikegrad._checks import check_choice, check_float_tensor

__all__ = ["PRESETS", "Input", "Conv", "Pool", "BatchNorm", "Dropout", "Linear", "LayerSpec",
           "parse_spec", "resolve", "build_network", "copy_parameters", "SpikingNetwork",
           "SumPool2d", "TimeSharedDropout", "run_neuron"]

Host = Literal["snntorch", "spikingjelly"]
HOSTS = ("snntorch", "spikingjelly")
POOLINGS = ("max", "sum1.1")

#: Named networks. NA's presets follow the authors' ``Networks/*.yaml`` at commit ``bf8b564``
#: (RULES.md §3); CIFAR-10 puts ``D0.2`` after every hidden layer (after its pooling where it
#: has one) and pads its 3×3 convolutions by 1, as the authors' config does. ``csnn`` is
#: spikingjelly's Fashion-MNIST example network (``conv_fashion_mnist.CSNN``, channels 128).
PRESETS: dict[str, str] = {
    "na-mnist": "15C5-P2-40C5-P2-300-10",
    "na-cifar10": "96C3p1-D0.2-256C3p1-P2-D0.2-384C3p1-P2-D0.2-384C3p1-D0.2-256C3p1-D0.2"
                  "-1024-D0.2-1024-D0.2-10",
    "tutorial-mlp": "784-1000-10",
    "csnn": "128C3p1-BN-P2-128C3p1-BN-P2-2048-10",
}


_MINIMUM = {"features": 1, "out_channels": 1, "kernel": 1, "padding": 0, "out_features": 1}


class _Layer:
    """Checks every integer field against its minimum; ``token`` writes the layer back."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            low, value = _MINIMUM.get(f.name), getattr(self, f.name)
            if low is not None and value < low:
                raise ValueError(f"{f.name} must be >= {low}, got {value}")

    @property
    def token(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Input(_Layer):
    """The flattened input size, the first number of an all-linear spec."""

    features: int
    token = property(lambda self: str(self.features))


@dataclass(frozen=True)
class Conv(_Layer):
    """``{N}C{K}`` / ``{N}C{K}p{P}``: a bias-free convolution, stride 1."""

    out_channels: int
    kernel: int
    padding: int = 0
    token = property(lambda self: f"{self.out_channels}C{self.kernel}"
                     + (f"p{self.padding}" if self.padding else ""))


@dataclass(frozen=True)
class Pool(_Layer):
    """``P{K}``: ``K×K`` pooling with stride ``K``."""

    kernel: int
    token = property(lambda self: f"P{self.kernel}")


@dataclass(frozen=True)
class BatchNorm(_Layer):
    """``BN``: batch norm of the preceding convolution's output (before its neuron)."""

    token = property(lambda self: "BN")


@dataclass(frozen=True)
class Dropout(_Layer):
    """``D{p}``: dropout with one mask shared by all time steps, ``0 <= p < 1``."""

    p: float
    token = property(lambda self: f"D{self.p:g}")

    def __post_init__(self) -> None:
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {self.p}")


@dataclass(frozen=True)
class Linear(_Layer):
    """``{N}``: a linear layer of ``N`` outputs."""

    out_features: int
    token = property(lambda self: str(self.out_features))


LayerSpec = Union[Input, Conv, Pool, BatchNorm, Dropout, Linear]

_CONV = re.compile(r"(\d+)C(\d+)(?:p(\d+))?")
_POOL = re.compile(r"P(\d+)")
_DROP = re.compile(r"D(\d+(?:\.\d*)?|\.\d+)")
_NUM = re.compile(r"\d+")
_GRAMMAR = "{N}C{K}, {N}C{K}p{P}, P{K}, BN, D{p}, {N}"


def resolve(spec_or_preset: str) -> str:
    """Return the spec string of a preset name, or the argument itself if it is no preset."""
    if not isinstance(spec_or_preset, str):
        raise TypeError(f"spec must be a str, got {type(spec_or_preset).__name__}")
    return PRESETS.get(spec_or_preset.strip(), spec_or_preset)


def _token(tok: str) -> LayerSpec:
    if (m := _CONV.fullmatch(tok)) is not None:
        return Conv(int(m[1]), int(m[2]), int(m[3] or 0))
    if (m := _POOL.fullmatch(tok)) is not None:
        return Pool(int(m[1]))
    if tok == "BN":
        return BatchNorm()
    if (m := _DROP.fullmatch(tok)) is not None:
        return Dropout(float(m[1]))
    if _NUM.fullmatch(tok):
        return Linear(int(tok))
    raise ValueError(f"unknown token; tokens are {_GRAMMAR}, presets {sorted(PRESETS)}")


def _bad(spec: str, token: str, why: str) -> ValueError:
    return ValueError(f"spec {spec!r}, token {token!r}: {why}")


def parse_spec(spec: str) -> list[LayerSpec]:
    """Parse a spec (or a preset name) into its layers.

    Returns:
        The layers in order; an all-linear spec starts with :class:`Input`.

    Raises:
        ValueError: naming the offending token: unknown, out of range, ``BN`` not right after a
            convolution, a convolution/pooling/batch norm after a linear layer, no conv or
            linear layer, an all-linear spec with fewer than 2 numbers, or a spec not ending
            with a linear layer.
    """
    text = resolve(spec)
    tokens = [t.strip() for t in text.strip().split("-")]
    if tokens == [""]:
        raise ValueError(f"spec has no layers: {spec!r}")
    layers: list[LayerSpec] = []
    for tok in tokens:
        try:
            layers.append(_token(tok))
        except ValueError as err:
            raise _bad(text, tok, str(err)) from None
    if not any(isinstance(lay, Conv) for lay in layers):  # all-linear: first number = input
        if not isinstance(layers[0], Linear):
            raise _bad(text, tokens[0], "a spec without convolutions starts with its input size")
        layers[0] = Input(layers[0].out_features)
        if not any(isinstance(lay, Linear) for lay in layers):
            raise _bad(text, tokens[0], "an all-linear spec needs at least 2 numbers (the "
                       "input size, then the layers)")
    seen_linear = False
    for i, (tok, lay) in enumerate(zip(tokens, layers, strict=True)):
        if isinstance(lay, BatchNorm) and (i == 0 or not isinstance(layers[i - 1], Conv)):
            raise _bad(text, tok, "BN must follow a convolution")
        if isinstance(lay, (Conv, Pool, BatchNorm)) and seen_linear:
            raise _bad(text, tok, f"no {type(lay).__name__} after a linear layer")
        seen_linear = seen_linear or isinstance(lay, (Input, Linear))
    if not isinstance(layers[-1], Linear):
        raise _bad(text, tokens[-1], "a spec ends with a linear layer (the classes)")
    return layers


class SumPool2d(nn.Module):
    """Non-spiking ``K×K`` sum pooling times ``scale`` (NA's pooling: ``scale = 1.1``).

    ``y = scale · Σ_{window} x``, stride ``K``, no padding (a remainder row/column is dropped,
    as in ``nn.MaxPool2d``). Stateless; the same module serves both hosts.

    Shape:
        ``[*, C, H, W]`` → ``[*, C, H // K, W // K]`` (any leading dims, e.g. ``[T, B]``).
    """

    def __init__(self, kernel_size: int, scale: float = 1.1) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        y = F.avg_pool2d(x.reshape(-1, *x.shape[-3:]), self.kernel_size, divisor_override=1)
        return (y * self.scale).reshape(*lead, *y.shape[1:])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, scale={self.scale}"


class TimeSharedDropout(nn.Module):
    """Dropout with one Bernoulli mask per call shared by all ``T`` steps (training only).

    Kept entries are scaled by ``1/(1-p)`` as in ``nn.Dropout``; the mask is drawn exactly as
    spikingjelly's ``layer.Dropout`` draws it, so the same seed gives the same mask.

    Shape:
        ``[T, B, *]`` → ``[T, B, *]``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        Dropout(p)  # validates
        self.p = float(p)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x_seq
        return x_seq * F.dropout(torch.ones_like(x_seq[0]), self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


_SYNAPSES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


class SpikingNetwork(nn.Sequential):
    """A network built by :func:`build_network` (an ``nn.Sequential`` of its layers).

    Attributes:
        spec: the resolved spec string. host: ``"snntorch"`` or ``"spikingjelly"``.
        in_shape: the per-sample input shape.

    Shape:
        ``x_seq [T, B, *in_shape]`` → ``[T, B, classes]``.
    """

    def __init__(self, modules: list[nn.Module], neurons: tuple[int, ...], *, spec: str,
                 host: str, in_shape: tuple[int, ...]) -> None:
        super().__init__(*modules)
        self.spec = spec
        self.host = host
        self.in_shape = in_shape
        self._neurons = neurons
        self._observer: Callable[[int, nn.Module, torch.Tensor], None] | None = None

    def neurons(self) -> list[nn.Module]:
        """The spiking neurons, one per convolution and linear layer, in order."""
        return [self[i] for i in self._neurons]

    def synapses(self) -> list[nn.Module]:
        """The convolution, batch norm and linear layers, in order."""
        return [m for i, m in enumerate(self) if i not in self._neurons
                and isinstance(m, _SYNAPSES)]

    @contextlib.contextmanager
    def observing(self, observer: Callable[[int, nn.Module, torch.Tensor], None]
                  ) -> Iterator[None]:
        """Within the block, every forward calls ``observer(k, neuron, out)`` after the
        ``k``-th neuron layer, ``out`` its first output ``[T, B, *]`` (spikes, trace or
        strengths), detached. For records (spike counts); it changes nothing in the network.
        """
        if not callable(observer):
            raise TypeError(f"observer must be callable, got {type(observer).__name__}")
        previous, self._observer = self._observer, observer
        try:
            yield
        finally:
            self._observer = previous

    def reset(self) -> None:
        """Reset every neuron's state (snntorch: ``reset_mem()``; spikingjelly: the state of
        every submodule with a ``reset()``, dropout masks included)."""
        if self.host == "snntorch":
            for lif in self.neurons():
                lif.reset_mem()
            return
        for m in self.modules():
            if m is not self and callable(getattr(m, "reset", None)):
                m.reset()

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor("x_seq", x_seq, min_dim=2)
        if tuple(x_seq.shape[2:]) != self.in_shape:
            raise ValueError(f"x_seq must have shape [T, B, *{list(self.in_shape)}], got "
                             f"{list(x_seq.shape)}")
        T, B = x_seq.shape[:2]
        x = x_seq
        for i, m in enumerate(self):
            if self.host == "spikingjelly":
                x = m(x)
                x = x[0] if isinstance(x, tuple) else x
            elif i in self._neurons:
                x = run_neuron(m, x)
            elif isinstance(m, TimeSharedDropout):
                x = m(x)
            else:
                x = m(x.flatten(0, 1)).unflatten(0, (T, B))
            if self._observer is not None and i in self._neurons:
                self._observer(self._neurons.index(i), m, x.detach())
        return x

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, host={self.host!r}, in_shape={self.in_shape}"


def run_neuron(lif: nn.Module, cur: torch.Tensor) -> torch.Tensor:
    """Run one neuron over ``cur [T, B, *]`` from rest as its host does, returning its first
    output at every step ``[T, B, *]``: snntorch's per-step loop (``spk, mem = lif(cur[t],
    mem)``, or ``lif(cur[t])`` with ``init_hidden=True``); a spikingjelly node in step mode
    ``"m"`` in one call (its state is reset first)."""
    if hasattr(lif, "step_mode"):
        if lif.step_mode != "m":
            raise ValueError(f"a spikingjelly node must be in step_mode 'm' here, got "
                             f"{lif.step_mode!r} (functional.set_step_mode(node, 'm'))")
        lif.reset()
        y = lif(cur)
        return y[0] if isinstance(y, tuple) else y
    out = []
    if getattr(lif, "init_hidden", False):
        lif.reset_mem()
        for t in range(cur.shape[0]):
            y = lif(cur[t])
            out.append(y[0] if isinstance(y, tuple) else y)
    else:
        mem = lif.reset_mem()  # == init_leaky() (snntorch's older name)
        for t in range(cur.shape[0]):
            y = lif(cur[t], mem)
            out.append(y[0])
            mem = y[-1]
    return torch.stack(out)


def _sj_network_class() -> type[SpikingNetwork]:
    """``SpikingNetwork`` that is also a spikingjelly ``MemoryModule`` (built on first use, so
    that this module never imports spikingjelly by itself): ``functional.reset_net`` then calls
    its ``reset()`` without the host's "not a MemoryModule" warning (0.0.0.0.14 logs the whole
    network's repr on every call otherwise)."""
    cls = globals().get("SpikingJellyNetwork")
    if cls is None:
        from spikingjelly.activation_based import base

        cls = type("SpikingJellyNetwork", (SpikingNetwork, base.MemoryModule),
                   {"__module__": __name__, "__doc__": SpikingNetwork.__doc__})
        globals()["SpikingJellyNetwork"] = cls  # pickle finds it here (or via __getattr__)
    return cls


def __getattr__(name: str) -> Any:
    if name == "SpikingJellyNetwork":
        return _sj_network_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _layer(host: str, name: str, *args: Any, **kwargs: Any) -> nn.Module:
    """``torch.nn.<name>`` (snntorch host) or spikingjelly's ``layer.<name>`` in mode ``"m"``."""
    if host == "snntorch":
        return getattr(nn, name)(*args, **kwargs)
    from spikingjelly.activation_based import layer

    return getattr(layer, name)(*args, step_mode="m", **kwargs)


def _check_neuron(m: Any, host: str, seen: list[nn.Module]) -> nn.Module:
    if any(m is s for s in seen):
        raise ValueError("neuron() returned the same module twice; it must build a new neuron "
                         "per call (a lambda or functools.partial of the class)")
    ok = callable(getattr(m, "reset_mem", None)) if host == "snntorch" else hasattr(m, "step_mode")
    if not isinstance(m, nn.Module) or not ok:
        kind = "Leaky-style neuron (with reset_mem())" if host == "snntorch" else "node"
        raise TypeError(f"neuron() built {type(m).__name__}, not a {host} {kind}, for "
                        f"host={host!r}")
    return m


def build_network(
    spec: str,
    *,
    host: Host,
    neuron: Callable[[], nn.Module],
    in_shape: tuple[int, ...],
    pooling: Literal["max", "sum1.1"] = "max",
    linear_bias: bool = False,
) -> SpikingNetwork:
    """Build the network of ``spec`` in ``host``, every conv/linear layer followed by a neuron.

    All convolution, batch-norm and linear layers are created first, in spec order, with
    PyTorch's default initialisation, then the neurons: the same seed gives both hosts the same
    parameters whatever ``neuron()`` draws (:func:`copy_parameters` copies them otherwise).

    Args:
        spec: a spec string or a preset name (:data:`PRESETS`).
        host: ``"snntorch"`` or ``"spikingjelly"``.
        neuron: called once per conv/linear layer; returns a new neuron of ``host`` (snntorch:
            a ``Leaky``-style neuron, ``spk, mem = lif(cur, mem)``; spikingjelly: a node).
        in_shape: per-sample input shape, ``(C, H, W)`` for a conv spec; for an all-linear spec
            any shape whose size is the spec's first number (e.g. ``(784,)``).
        pooling: ``"max"`` or ``"sum1.1"`` (NA's non-spiking sum pooling ×1.1).
        linear_bias: give linear layers a bias (convolutions never have one).

    Returns:
        A :class:`SpikingNetwork`; ``net(x_seq)`` maps ``[T, B, *in_shape]`` to
        ``[T, B, classes]``.

    Raises:
        ValueError: bad spec (:func:`parse_spec`), host, pooling or ``in_shape``, or a layer
            that does not fit the shape reaching it (the error names the token).
        TypeError: ``neuron()`` does not build a neuron of ``host``.
    """
    check_choice("host", host, HOSTS)
    check_choice("pooling", pooling, POOLINGS)
    if isinstance(neuron, nn.Module) or not callable(neuron):
        raise TypeError(
            f"neuron must be a factory that builds one neuron per call (e.g. the class, or "
            f"lambda: NALeaky(beta=0.8)), got {type(neuron).__name__} "
            f"{'instance' if isinstance(neuron, nn.Module) else 'object'}"
        )
    text = resolve(spec)
    layers = parse_spec(text)
    try:
        shape = tuple(operator.index(s) for s in (
            (in_shape,) if isinstance(in_shape, numbers.Integral) else in_shape))
    except TypeError:
        shape = ()
    if not shape or not all(s >= 1 for s in shape):
        raise ValueError(f"in_shape must be a positive int or a tuple of positive ints, "
                         f"got {in_shape!r}")
    sample_shape = shape
    if isinstance(layers[0], Input):
        if math.prod(shape) != layers[0].features:
            raise _bad(text, layers[0].token, f"the input size must equal the size of "
                       f"in_shape {shape}, {math.prod(shape)}")
    elif len(shape) != 3:
        raise ValueError(f"in_shape must be (C, H, W) for a conv spec, got {shape}")

    modules: list[nn.Module | None] = []  # None: a neuron goes here
    pending_neuron = False
    for lay in layers:
        if pending_neuron and not isinstance(lay, BatchNorm):
            modules.append(None)
        pending_neuron = False
        if isinstance(lay, Conv):
            c, h, w = shape
            h2, w2 = (d + 2 * lay.padding - lay.kernel + 1 for d in (h, w))
            if h2 < 1 or w2 < 1:
                raise _bad(text, lay.token, f"kernel {lay.kernel} does not fit the input {shape}")
            modules.append(_layer(host, "Conv2d", c, lay.out_channels, lay.kernel,
                                  padding=lay.padding, bias=False))
            shape, pending_neuron = (lay.out_channels, h2, w2), True
        elif isinstance(lay, BatchNorm):
            modules.append(_layer(host, "BatchNorm2d", shape[0]))
            pending_neuron = True
        elif isinstance(lay, Pool):
            c, h, w = shape
            if h < lay.kernel or w < lay.kernel:
                raise _bad(text, lay.token, f"pooling {lay.kernel} does not fit the input {shape}")
            modules.append(_layer(host, "MaxPool2d", lay.kernel) if pooling == "max"
                           else SumPool2d(lay.kernel, 1.1))
            shape = (c, h // lay.kernel, w // lay.kernel)
        elif isinstance(lay, Dropout):
            modules.append(TimeSharedDropout(lay.p) if host == "snntorch"
                           else _layer(host, "Dropout", lay.p))
        elif isinstance(lay, Linear):
            if len(shape) > 1:
                modules.append(_layer(host, "Flatten"))
                shape = (math.prod(shape),)
            modules.append(_layer(host, "Linear", shape[0], lay.out_features, bias=linear_bias))
            shape, pending_neuron = (lay.out_features,), True
    modules.append(None)  # the spec ends with a linear layer

    # neurons only after every synapse, so that they cannot shift the synapses' random init
    positions = tuple(i for i, m in enumerate(modules) if m is None)
    built: list[nn.Module] = []
    for i in positions:
        modules[i] = _check_neuron(neuron(), host, built)
        built.append(modules[i])
    cls = SpikingNetwork if host == "snntorch" else _sj_network_class()
    net = cls(modules, positions, spec=text, host=host, in_shape=sample_shape)
    if host == "spikingjelly":
        from spikingjelly.activation_based import functional

        functional.set_step_mode(net, "m")
    return net


@torch.no_grad()
def copy_parameters(src: SpikingNetwork, dst: SpikingNetwork) -> None:
    """Copy the parameters and buffers of ``src``'s conv, batch-norm and linear layers into
    ``dst``'s (same spec, either host); neurons keep their own.

    Raises:
        ValueError: the two networks were built from different specs or layer shapes.
    """
    a, b = src.synapses(), dst.synapses()
    if src.spec != dst.spec or len(a) != len(b):
        raise ValueError(f"src and dst have different specs: {src.spec!r} vs {dst.spec!r}")
    for m, n in zip(a, b, strict=True):
        n.load_state_dict(m.state_dict())
