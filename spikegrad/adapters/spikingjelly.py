"""spikingjelly adapter: one ``BaseNode`` subclass pattern for both spikingjelly lines.

spikingjelly 0.0.0.0.14 and 2.x share ``activation_based.neuron.BaseNode`` by name only: the
old line drives a neuron through ``neuronal_charge``/``neuronal_fire``/``neuronal_reset`` and
has ``backend``; 2.x drives it through ``single_step_functional_forward`` and has no backend.
A spikegrad node implements one pure step ``_step(x, v, *extra) -> (out, v, *extra)`` (the
rule, called through :mod:`spikegrad.rules`), optionally a whole-sequence ``_multi``, and this
module turns that into the host's ``step_mode="s"``/``"m"`` calls, lazy state, ``reset()``,
``store_v_seq`` and ``backend``, identically on both lines.

Host traps handled here (each has a test):

* 0.0.0.0.14's ``LIFNode``/``IFNode`` run jit kernels in eval mode that skip subclass overrides:
  spikegrad nodes subclass ``BaseNode`` and own both forward paths.
* Both lines check ``tau``/``v_threshold`` with bare ``assert``\\ s: spikegrad checks them first,
  with messages.
* 2.x's ``functional.reset_net`` caches the module list of a network on its first call, so a
  neuron added later is never reset: :func:`reset_net` invalidates that cache first.
* Spikes at ``u >= θ`` (spikingjelly) vs ``u > θ`` (snntorch): every node states its convention;
  the host's is used unless the rule fixes it (NA: strict, as the authors').

Backends (both lines): ``"torch"`` (the node's own path: the rules' torch operators, and NA's
compiled CPU kernel where it runs), ``"cupy"`` (the fused kernels of
:mod:`spikegrad.rules.cupy_kernels`, multi-step mode only, as 0.0.0.0.14's own nodes),
``"triton"`` (the fused kernels of :mod:`spikegrad.rules.triton_kernels`, multi-step mode, CUDA
tensors) and ``"auto"`` (a spikegrad option: Triton, then CuPy, where they can run, else the
node's own path). Which one a call uses is decided by :func:`spikegrad.rules.dispatch.select`
and can be read back from ``node.implementation`` (``"torch"``, ``"cpp"``, ``"triton"`` or
``"cupy"``) / ``node.implementation_reason``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from spikegrad._checks import check_choice, check_float_tensor, check_number, fit_state
from spikegrad.rules import dispatch

try:
    from spikingjelly.activation_based import functional, neuron
except ImportError as exc:  # pragma: no cover - exercised only without spikingjelly
    raise ImportError(
        "spikegrad's spikingjelly neurons need spikingjelly: pip install 'spikegrad[spikingjelly]'"
    ) from exc

SUPPORTED_SPIKINGJELLY = ("0.0.0.0.14", "2.0.x")
IS_SJ2 = hasattr(neuron.BaseNode, "single_step_functional_forward")
BACKENDS = dispatch.BACKENDS  # ("torch", "cupy", "triton", "auto"); the last two: spikegrad's


_SHAPE_FIX = ("call functional.reset_net(net) before a batch of another size (from rest any "
              "batch size works)")


def installed_version() -> str:
    """The installed spikingjelly version (from its metadata; by feature where that is missing)."""
    try:
        return importlib.metadata.version("spikingjelly")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkouts
        return "2.0.0" if IS_SJ2 else "0.0.0.0.14"


def check_version(version: str | None = None) -> str:
    """Raise ImportError unless ``version`` (default: the installed one) is supported."""
    version = installed_version() if version is None else version
    ok = version == "0.0.0.0.14" or version.startswith("2.0.")
    if not ok:
        raise ImportError(
            f"spikingjelly {version} is not supported by spikegrad; supported: "
            f"{', '.join(SUPPORTED_SPIKINGJELLY)} (pip install 'spikingjelly==2.0.0' or "
            "'spikingjelly==0.0.0.0.14')"
        )
    return version


SPIKINGJELLY_VERSION = check_version()

__all__ = ["SpikegradNode", "reset_net", "check_version", "host_order", "refuse",
           "SPIKINGJELLY_VERSION", "IS_SJ2"]


def host_order(init: Callable[..., None]) -> Callable[..., None]:
    """A node's ``__init__`` with the installed host's positional order.

    Nodes write ``__init__`` in spikingjelly 2.x's order: the host's ``LIFNode``/``IFNode``
    parameters positionally, ending ``..., step_mode, store_v_seq``, then spikegrad's own options
    keyword-only, ``backend`` first (2.x has no ``backend``). 0.0.0.0.14 has ``backend``
    positionally between ``step_mode`` and ``store_v_seq``; there the same ``__init__`` gets that
    signature, so a positional call written for either line binds as the host's does.
    """
    if IS_SJ2:
        return init
    params = list(inspect.signature(init).parameters.values())
    backend = next(p for p in params if p.name == "backend")
    at = [p.name for p in params].index("store_v_seq")
    params.remove(backend)
    params.insert(at, backend.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD))
    signature = inspect.Signature(params)

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs).arguments
        del bound["self"]
        init(self, **bound)

    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    return wrapper


def refuse(node: str, name: str, value: Any, default: Any, reason: str) -> None:
    """Raise ``ValueError`` if the host argument ``name`` is not at the only value the rule can
    honour (the node keeps the host's parameter so that positional calls bind as the host's)."""
    if value is not default and value != default:
        raise ValueError(f"{node} does not support {name}={value!r} (only {default!r}): {reason}")


def check_tau(tau: Any, name: str = "tau") -> float:
    """``tau`` as a float > 1 (the hosts assert this without a message)."""
    value = check_number(name, tau)
    if value <= 1.0:
        raise ValueError(f"{name} must be > 1 (the leak is 1 - 1/{name}), got {value}")
    return value


class SpikegradNode(neuron.BaseNode):
    """Base of spikegrad's spikingjelly nodes (host idioms for both lines; no equations).

    Subclasses call ``_init_node()`` from ``__init__``, list their extra state names in
    ``_extra_states`` and implement ``_step``; ``_multi`` may be overridden with a fused
    whole-sequence path that returns the same values and gradients, ``_cupy_kernel`` /
    ``_multi_cupy`` and ``_triton_kernel`` / ``_multi_triton`` the fused kernels' spec and call
    (same returns as ``_multi``), and ``_reference_choice`` what the own path runs.
    """

    _extra_states: tuple[str, ...] = ()

    def _init_node(
        self, *, v_threshold: Any, v_reset: Any, surrogate_function: Any, detach_reset: bool,
        step_mode: str, backend: str, store_v_seq: bool,
    ) -> None:
        v_threshold = check_number("v_threshold", v_threshold)
        if v_reset is not None:
            v_reset = check_number("v_reset", v_reset)
        check_choice("step_mode", step_mode, ("s", "m"))
        dispatch.check_backend(backend, step_mode=step_mode)  # before the host's checks
        if not isinstance(detach_reset, bool) or not isinstance(store_v_seq, bool):
            raise TypeError("detach_reset and store_v_seq must be bools")
        kw = dict(v_threshold=v_threshold, v_reset=v_reset, surrogate_function=surrogate_function,
                  detach_reset=detach_reset, step_mode=step_mode, store_v_seq=store_v_seq)
        if IS_SJ2:
            super().__init__(**kw)
        else:  # 0.0.0.0.14's BaseNode sets self.backend (the property below)
            super().__init__(backend=backend, **kw)
        self._sg_backend = backend
        self._sg_input: tuple[torch.device, torch.dtype] | None = None
        for name in self._extra_states:
            self.register_memory(name, 0.0)

    def _finish_init(self) -> None:
        """Called at the end of a subclass ``__init__``: checks the backend against the rule."""
        self._sg_ready = True
        self.backend = self._sg_backend

    # --- backend (0.0.0.0.14 has it on every node; on 2.x it is spikegrad's own option) ----
    @property
    def supported_backends(self) -> tuple[str, ...]:
        """``"torch"``, then ``"cupy"`` and ``"triton"`` in multi-step mode where the
        configuration has those fused kernels (so the host's ``set_backend`` warns and skips a
        node without them)."""
        if self.step_mode != "m":
            return ("torch",)
        fused = tuple(name for name in ("cupy", "triton")
                      if not isinstance(self._kernel(name), str))
        return ("torch", *fused)

    @property
    def backend(self) -> str:
        """``"torch"``, ``"cupy"``, ``"triton"`` or ``"auto"`` (checked when set; see the module
        docstring)."""
        return self._sg_backend

    @backend.setter
    def backend(self, value: str) -> None:
        ready = getattr(self, "_sg_ready", False)
        # a kernel spec is built only for the backend that needs it (none for torch)
        kernel = self._kernel("cupy") if ready and value == "cupy" else None
        triton = self._kernel("triton") if ready and value == "triton" else None
        dispatch.check_backend(value, step_mode=self.step_mode, kernel=kernel,
                               triton_kernel=triton)
        self._sg_backend = value

    def _choice(self, x: torch.Tensor | None = None, strict: bool = False) -> dispatch.Choice:
        # the last input is read only without x: under torch.compile every read is a guard, and
        # a guard on it (None before the first call) recompiled the second multi-step call
        if x is not None:
            device, dtype = x.device, x.dtype
        else:
            device, dtype = getattr(self, "_sg_input", None) or (None, None)
        return self.dispatch_choice(device, dtype, strict=strict)

    def dispatch_choice(self, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None, *, strict: bool = False
                        ) -> dispatch.Choice:
        """What :mod:`spikegrad.rules.dispatch` picks for an input on ``device`` of ``dtype``
        in the current step mode (``None``: a CUDA tensor of a kernel dtype is assumed for the
        fused kernels). ``strict``: raise where an explicit backend cannot run it."""
        device = None if device is None else torch.device(device)
        backend = self.backend
        kernel = self._kernel("cupy") if backend in ("cupy", "auto") else None
        triton = self._kernel("triton") if backend in ("triton", "auto") else None
        return dispatch.select(backend, step_mode=self.step_mode, kernel=kernel,
                               triton_kernel=triton, device=device, dtype=dtype,
                               bypass=self._bypass(), strict=strict,
                               reference=self._reference_choice)

    def _kernel(self, name: str = "cupy") -> Any:
        """:meth:`_cupy_kernel` (or :meth:`_triton_kernel`), with a configuration the kernels
        refuse (a constant that is no finite float32, a surrogate without a CUDA expression)
        as its reason string."""
        label = {"cupy": "CuPy", "triton": "Triton"}[name]
        try:
            return self._cupy_kernel() if name == "cupy" else self._triton_kernel()
        except (NotImplementedError, ValueError) as exc:
            return f"no {label} kernel for this configuration: {exc}"

    def _reference_choice(self, device: torch.device | None, dtype: torch.dtype | None
                          ) -> dispatch.Choice:
        """What the node's own path (backend ``"torch"``) runs: the rules' torch operators."""
        return dispatch.Choice("torch")

    @property
    def implementation(self) -> str:
        """``"torch"``, ``"cpp"``, ``"triton"`` or ``"cupy"``: what the last call ran (before
        the first call: what a multi-step call would run on a CUDA tensor of a kernel dtype)."""
        return self._choice().implementation

    @property
    def implementation_reason(self) -> str | None:
        """Why :attr:`implementation` is not the requested backend (``None`` if it is)."""
        return self._choice().reason

    def _cupy_kernel(self) -> Any:
        """The fused kernels' spec for the current configuration, or why there is none."""
        return f"{type(self).__name__} has no fused CuPy kernel"

    def _triton_kernel(self) -> Any:
        """The Triton kernels' argument (a spec or the rule) for this configuration, or why
        there is none."""
        return f"{type(self).__name__} has no fused Triton kernel"

    def _bypass(self) -> str | None:
        """A reason when the current configuration runs no rule at all (torch for any backend)."""
        return None

    def _multi_cupy(self, x_seq: torch.Tensor, v: torch.Tensor, *extra: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...]]:
        raise NotImplementedError  # pragma: no cover - only called when _cupy_kernel is a spec

    def _multi_triton(self, x_seq: torch.Tensor, v: torch.Tensor, *extra: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...]]:
        raise NotImplementedError  # pragma: no cover - only called when _triton_kernel is one

    # --- spikingjelly's LIF parameters as a rule's ---------------------------------------------
    def _set_lif(self, tau: float, decay_input: bool) -> None:
        """``tau`` -> leak ``1 - 1/tau``; ``decay_input`` -> the input is scaled by ``1/tau``."""
        self.tau, self.decay_input = tau, bool(decay_input)
        self.leak = 1.0 - 1.0 / tau

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.tau if self.decay_input else x

    # --- the rule, provided by subclasses -----------------------------------------------------
    def _step(self, x: torch.Tensor, v: torch.Tensor, *extra: torch.Tensor
              ) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _multi(self, x_seq: torch.Tensor, v: torch.Tensor, *extra: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """``(out_seq, v_seq, final_states)``; default: loop ``_step``."""
        outs, vs, states = [], [], (v, *extra)
        for t in range(x_seq.shape[0]):
            out, *states = self._step(x_seq[t], *states)
            outs.append(out)
            if self.store_v_seq:
                vs.append(states[0])
        return torch.stack(outs), (torch.stack(vs) if vs else None), tuple(states)

    def _on_reset(self) -> None:
        """Hook for nodes with windows (NA)."""

    # --- host idioms --------------------------------------------------------------------------
    def _states(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(v, *extra)`` as tensors shaped like ``x``.

        Fresh after a reset (the states are the host's floats then), so a batch-size change
        from rest works; a state tensor that broadcasts to ``x`` is broadcast (as the host's
        arithmetic would); any other shape raises, naming both shapes (the host fails there
        with a bare size-mismatch error; spikegrad used to restart silently).
        """
        v = self.v
        if not isinstance(v, torch.Tensor) or v.numel() == 0:
            v_init = 0.0 if self.v_reset is None else self.v_reset
            self.v = torch.full_like(x, v_init)
            for name in self._extra_states:  # full_like, as the host: its op counters know it
                setattr(self, name, torch.full_like(x, 0.0))
            self._on_reset()
        elif v.device != x.device:
            raise ValueError(f"the node's state is on {v.device} but the input on {x.device}; "
                             "call functional.reset_net(net) after moving data to a new device")
        else:
            self.v = fit_state("the node's state v", v, x, _SHAPE_FIX)
            for name in self._extra_states:
                value = getattr(self, name)
                value = (torch.full_like(x, 0.0) if not isinstance(value, torch.Tensor)
                         else fit_state(f"the node's state {name}", value, x, _SHAPE_FIX))
                setattr(self, name, value)
        return (self.v, *(getattr(self, n) for n in self._extra_states))

    def _store(self, states: Iterable[torch.Tensor]) -> None:
        states = tuple(states)
        self.v = states[0]
        for name, value in zip(self._extra_states, states[1:], strict=True):
            setattr(self, name, value)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        check_float_tensor("x", x)
        self._sg_input = (x.device, x.dtype)
        out, *states = self._step(x, *self._states(x))
        self._store(states)
        if self.store_v_seq and IS_SJ2:  # 2.x also records v_seq in single-step mode
            v, old = self.v.unsqueeze(0), self.v_seq
            restart = (old is None or old.shape[1:] != v.shape[1:] or old.device != v.device
                       or old.dtype != v.dtype)  # a new batch/device/dtype: as 2.x's host
            self.v_seq = v if restart else torch.cat((old, v))
        return out

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        check_float_tensor("x_seq", x_seq, min_dim=2)
        choice = self._choice(x_seq, strict=True)
        self._sg_input = (x_seq.device, x_seq.dtype)
        run = {"cupy": self._multi_cupy, "triton": self._multi_triton}.get(
            choice.implementation, self._multi)
        out_seq, v_seq, states = run(x_seq, *self._states(x_seq[0]))
        self._store(states)
        if self.store_v_seq:
            self.v_seq = v_seq
        return out_seq

    if IS_SJ2:
        def single_step_functional_forward(self, inputs, states, **kwargs):  # noqa: ANN001
            """2.x's functional protocol (used by its graph tools): the same pure step."""
            x = inputs[0]
            v, *extra = (fit_state("state", s, x, _SHAPE_FIX) if isinstance(s, torch.Tensor)
                         and s.numel() else torch.full_like(x, 0.0) for s in states)
            out, *new = self._step(x, v, *extra)
            return (out,), tuple(new)

    def reset(self) -> None:
        super().reset()
        self._on_reset()

    def detach(self) -> None:
        """Cut every state from the graph of earlier steps (``functional.detach_net``:
        truncated BPTT), in both step modes.

        The host detaches its memories in place; after a multi-step call spikegrad's states are
        views of the sequence outputs (``v_seq[-1]``), which torch cannot detach in place, so
        each state is replaced by its detached tensor instead (same values, no graph).
        """
        for key, value in self._memories.items():
            if isinstance(value, torch.Tensor):
                self._memories[key] = value.detach()
        self._on_detach()

    def _on_detach(self) -> None:
        """Hook for nodes that derive state from their memories (NA)."""

    if IS_SJ2:
        def extra_repr(self) -> str:
            return f"{super().extra_repr()}, backend={self.backend}"


def reset_net(net: nn.Module) -> None:
    """``functional.reset_net`` that is always complete.

    spikingjelly 2.x caches the list of resettable modules on the first ``reset_net(net)``; a
    module added to ``net`` afterwards is never reset. This drops that cache first (2.x), then
    resets every module of ``net`` (both lines).

    While ``torch.compile`` traces, the modules of ``net`` are reset directly (every one with a
    ``reset()``, as the host does) without touching the host's cache: that cache is one
    module-level ``WeakKeyDictionary`` for every network of the process, so tracing it guarded
    the compiled function on the position of ``net`` among all cached networks (another
    network freed between two calls made it recompile).
    """
    if torch.compiler.is_compiling():
        for module in net.modules():
            if callable(getattr(module, "reset", None)):
                module.reset()
        return
    invalidate = getattr(functional, "invalidate_reset_cache", None)
    if invalidate is not None:
        invalidate(net)
    functional.reset_net(net)
