"""snntorch adapter: the host idioms of ``snntorch.Leaky`` written once for every spikegrad neuron.

A spikegrad snntorch neuron subclasses :class:`SpikegradLeaky` and only says which host flags
it refuses and how one step maps onto its rule (``_step``). Everything else is here:

* the per-step call ``spk, mem = lif(cur, mem)``, ``init_hidden=True``, ``output=True``;
* lazy state and batch-size changes: an empty state, or the state at rest after a reset
  (``reset_mem()``/``init_leaky()``/``snntorch.utils.reset``), restarts at 0 in the input's
  shape; a ``mem`` that broadcasts to the input is broadcast; any other shape raises, naming
  both (the host would silently replace it by zeros);
* extra state beyond ``mem`` (a trace, an NA window) reset together with ``mem`` by
  ``reset_mem()``/``init_leaky()`` and by ``snntorch.utils.reset``;
* snntorch's class-level registry ``SpikingNeuron.instances`` holds every neuron ever built
  (so none is ever freed) and ``utils.reset`` zeroes only ``mem`` there. spikegrad neurons put a
  small weak handle into that registry instead of themselves: the host's reset still reaches
  them (with all their state), and a deleted neuron is freed.

Host limits that remain (documented in the README): ``utils.reset(net)`` only inspects ``net``'s
top-level children and then resets *every* ``Leaky`` of the process; :func:`reset_states`
resets exactly the neurons inside one network, nested containers included.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from spikegrad._checks import check_float_tensor, fit_state

try:
    import snntorch as snn
except ImportError as exc:  # pragma: no cover - exercised only without snntorch
    raise ImportError(
        "spikegrad's snntorch neurons need snntorch: pip install 'spikegrad[snntorch]'"
    ) from exc

SUPPORTED_SNNTORCH = ">=0.9,<1.1"


def _check_version() -> None:
    version = getattr(snn, "__version__", "0")
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:  # pragma: no cover - exotic version strings
        return
    if (major, minor) < (0, 9) or major >= 2:
        raise ImportError(
            f"snntorch {version} is not supported by spikegrad (supported: {SUPPORTED_SNNTORCH}); "
            "pip install 'snntorch>=0.9,<1.1'"
        )


_check_version()

__all__ = ["SpikegradLeaky", "reset_states", "SUPPORTED_SNNTORCH"]

_SHAPE_FIX = (
    "pass the mem this neuron returned for this batch, or start a new sequence (and batch size) "
    "with mem = lif.reset_mem() / snntorch.utils.reset(net)"
)


class _RegistryHandle(snn.Leaky):
    """Stands in for one spikegrad neuron in ``snn.SpikingNeuron.instances``, holding it weakly.

    The host's registry code reads ``handle.mem`` (to detach it or build zeros) and assigns
    ``handle.mem = zeros`` (to reset it); both are forwarded to the neuron. It deliberately never
    runs the host's ``__init__`` (which would register it and build buffers): it is a registry
    entry, not a neuron. It does run ``nn.Module.__init__``, so that it is a well-formed (empty)
    module: ``torch.compile`` treats every ``Leaky`` it meets in the registry as a module, and
    ``snntorch.utils.reset(net)`` inside a compiled function failed on a handle without
    ``_parameters`` (an internal dynamo error, for every network of the process, the host's own
    neurons included, once any spikegrad neuron had been built).
    """

    def __init__(self, owner: SpikegradLeaky) -> None:  # noqa: D107 - not the host's __init__
        nn.Module.__init__(self)
        object.__setattr__(self, "_owner", weakref.ref(owner))

    def alive(self) -> bool:
        return self._owner() is not None

    @property
    def mem(self) -> torch.Tensor:  # type: ignore[override]
        owner = self._owner()
        if owner is None:
            return torch.zeros(0)
        owner._host_touch()
        return owner.mem

    @mem.setter
    def mem(self, value: torch.Tensor) -> None:
        owner = self._owner()
        if owner is not None:
            owner.reset_mem()

    def __repr__(self) -> str:
        return f"<spikegrad registry handle of {self._owner()!r}>"


def _register_handle(neuron: SpikegradLeaky) -> None:
    """Replace ``neuron`` by a weak handle in the host registry; drop handles of freed neurons."""
    registry = snn.SpikingNeuron.instances
    registry[:] = [
        m for m in registry
        if m is not neuron and not (isinstance(m, _RegistryHandle) and not m.alive())
    ]
    registry.append(_RegistryHandle(neuron))


class SpikegradLeaky(snn.Leaky):
    """Base of spikegrad's snntorch neurons (host idioms; no equations).

    Subclasses call ``_setup()`` at the end of ``__init__`` and implement ``_step()``.
    Extra state tensors are declared with ``_add_state()``.
    """

    def _setup(self, refused: Mapping[str, tuple[Any, Any, str]], reset_delay: bool) -> None:
        """Validate host flags and register the neuron weakly with the host.

        Args:
            refused: ``flag -> (value, default, reason)``; a non-default value raises.
            reset_delay: must be ``True`` (spikegrad's ``mem`` is the pre-reset potential).
        """
        # Swap the host's strong registry entry for a weak handle before validating, so that a
        # refused construction leaves nothing alive in ``snn.SpikingNeuron.instances``.
        self._state_names: list[str] = []
        self._returned: dict[int, weakref.ref] = {}  # mems returned in this sequence (see forward)
        self._rest: torch.Tensor | None = self.mem  # the state at rest (see forward)
        _register_handle(self)
        if reset_delay is not True:
            raise ValueError(
                "reset_delay=False is not supported: spikegrad neurons return the pre-reset "
                "potential as mem and apply the reset at the next step (reset_delay=True); "
                "the reset gradient is chosen by the rule (e.g. ResetTermLeaky(reset_grad=...))"
            )
        for flag, (value, default, reason) in refused.items():
            if value is not default and value != default:
                raise ValueError(
                    f"{type(self).__name__} does not support {flag}={value!r}: {reason}"
                )
        self._sg_ready = True  # from here on, a new reset_mechanism goes to _set_reset

    # --- reset_mechanism after construction (the host's property) ------------------------------
    def _reset_cases(self, reset_mechanism: str) -> None:
        """The host's setter of ``reset_mechanism`` calls this first: after construction the
        rule follows the new value (or the assignment raises), never silently keeps the old."""
        super()._reset_cases(reset_mechanism)
        if getattr(self, "_sg_ready", False):
            self._set_reset(reset_mechanism)

    def _set_reset(self, reset_mechanism: str) -> None:
        """Hook: rebuild the rule for ``reset_mechanism`` or raise ``ValueError`` naming why."""
        if reset_mechanism != self.reset_mechanism:
            raise ValueError(f"{type(self).__name__} cannot change reset_mechanism to "
                             f"{reset_mechanism!r}: its rule's reset is fixed "
                             f"({self.reset_mechanism!r})")

    def _add_state(self, name: str) -> None:
        """Declare an extra per-neuron state tensor (lazy, reset with ``mem``)."""
        self.register_buffer(name, torch.zeros(0), persistent=False)
        self._state_names.append(name)

    # --- host idioms --------------------------------------------------------------------------
    def forward(self, input_: torch.Tensor, mem: torch.Tensor | None = None):  # type: ignore[override]
        """One time step.

        Args:
            input_: the input current of this step.
            mem: the previous step's ``mem`` (omit with ``init_hidden=True``).

        Returns:
            ``(out, mem)``, or ``out`` alone with ``init_hidden=True`` and ``output=False``.

        Shape:
            input_: ``[B, *]``; outputs: the same.
        """
        check_float_tensor("input_", input_)
        if mem is not None:
            if self.init_hidden:
                raise TypeError(
                    "`mem` should not be passed as an argument while `init_hidden=True`"
                )
            check_float_tensor("mem", mem)
            if self._state_names and mem is not self.mem and not torch.compiler.is_compiling():
                self._check_not_shared(mem)
            at_rest = mem is self._rest
            self.mem = mem
        else:
            at_rest = self.mem is self._rest
        if self.mem.shape != input_.shape:
            if self.mem.numel() == 0 or at_rest:  # lazy state; a batch-size change from rest
                self._zero_states(like=input_)
            else:
                self.mem = fit_state("mem" if mem is not None else "the hidden mem", self.mem,
                                     input_, _SHAPE_FIX)
        if self.mem.device != input_.device:
            raise ValueError(
                f"mem is on {self.mem.device} but input_ is on {input_.device}; move the neuron "
                "(or the mem you pass) to the input's device, or call reset_mem()"
            )
        for name in self._state_names:
            if getattr(self, name).shape != input_.shape:
                setattr(self, name, torch.zeros_like(input_))
        out, self.mem = self._step(input_, self.mem)
        # the host's output scale (a parameter with learn_graded_spikes_factor=True), applied
        # after the rule as the host does; always multiplied (x * 1.0 is exact): reading the
        # factor on the host would synchronise a CUDA device and break torch.compile's graph
        out = out * self.graded_spikes_factor
        self._rest = None
        # The guard of _check_not_shared is eager-only: id()/weakref bookkeeping cannot be
        # traced (torch.compile would break its graph at every step).
        if self._state_names and not self.init_hidden and not torch.compiler.is_compiling():
            if len(self._returned) > 4096:  # drop the guards of tensors that no longer exist
                self._returned = {k: r for k, r in self._returned.items() if r() is not None}
            self._returned[id(self.mem)] = weakref.ref(self.mem)
        if self.output or not self.init_hidden:
            return out, self.mem
        return out

    def _step(self, input_: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _check_not_shared(self, mem: torch.Tensor) -> None:
        """A neuron with its own state (trace, NA window) serves one sequence at a time."""
        ref = self._returned.get(id(mem))
        if ref is not None and ref() is mem:
            raise RuntimeError(
                f"this {type(self).__name__} was given a mem it returned earlier in the current "
                "sequence, not its latest one: one instance seems to serve two layers or two "
                "sequences at once. Its trace / NA window belongs to the instance, so build one "
                "neuron per layer (or start a new sequence with reset_mem())"
            )

    def _zero_states(self, like: torch.Tensor | None = None) -> None:
        ref = self.mem if like is None else like
        if like is None:  # an explicit reset; a lazy restart keeps the guard (see forward)
            self._returned.clear()
        self.mem = torch.zeros_like(ref)
        self._rest = self.mem  # a batch-size change from here restarts (see forward)
        for name in self._state_names:
            setattr(self, name, torch.zeros_like(ref if like is not None else getattr(self, name)))
        self._on_reset()

    def _on_reset(self) -> None:
        """Hook for subclasses with windows (e.g. NA); called whenever the state restarts."""

    def _host_touch(self) -> None:
        """The host's registry is about to detach ``mem``: detach the extra state too."""
        for name in self._state_names:
            setattr(self, name, getattr(self, name).detach())

    def reset_mem(self) -> torch.Tensor:
        """Zero ``mem`` and every extra state (works inside any container); returns ``mem``."""
        self._zero_states()
        return self.mem

    def init_leaky(self) -> torch.Tensor:
        """Same as :meth:`reset_mem` (snntorch's older name)."""
        return self.reset_mem()

    # --- persistence --------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_returned"] = {}  # weak references do not pickle; they only guard one sequence
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        _register_handle(self)  # a loaded or deep-copied neuron joins the host registry too

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        loaded = list(snn.SpikingNeuron.reset_dict)[int(self.reset_mechanism_val)]
        if loaded != self.reset_mechanism:  # a state saved with another reset: follow it
            self.reset_mechanism = loaded
        self._on_load()

    def _on_load(self) -> None:
        """Hook: rebuild any rule configuration derived from loaded buffers."""


def reset_states(net: nn.Module | Iterable[nn.Module]) -> None:
    """Reset every spiking neuron inside ``net`` (nested containers included), and only those.

    Unlike ``snntorch.utils.reset``, this reaches neurons in ``nn.Sequential`` or any other
    container, leaves the neurons of other networks alone, and resets every piece of
    spikegrad state. snntorch's own neurons inside ``net`` get their ``reset_mem()`` too.
    """
    modules = net.modules() if isinstance(net, nn.Module) else (
        m for root in net for m in root.modules()
    )
    for module in modules:
        if isinstance(module, snn.SpikingNeuron) and hasattr(module, "reset_mem"):
            module.reset_mem()
