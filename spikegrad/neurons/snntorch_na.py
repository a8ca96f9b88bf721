"""``NALeaky``: Neighborhood Aggregation as a drop-in ``snntorch.Leaky``.

No equations here: the rule is :mod:`spikegrad.rules.na`, the per-step window that gives the
whole-window NA gradient in snntorch's usual loop is :mod:`spikegrad.adapters.na_window`, and
the host idioms are :mod:`spikegrad.adapters.snntorch`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch

from spikegrad._checks import check_choice, check_float_tensor
from spikegrad.adapters.na_window import Window, eager, na_step
from spikegrad.adapters.snntorch import SpikegradLeaky
from spikegrad.neurons.snntorch import _UNSUPPORTED, _UNUSED_SPIKE_GRAD, _exact, _host_flags
from spikegrad.rules import dispatch, na

__all__ = ["NALeaky"]

_NA_GRADIENT = "NA defines the gradient itself (no surrogate)"
#: the one-time note when ``reset_mechanism`` is left at NA's default (measured:
#: benchmarks/results/swap_learning_epoch.md)
DEFAULT_RESET_NOTE = (
    "NALeaky resets to zero by default (reset_mechanism='zero', the NA authors' setting), while "
    "snn.Leaky subtracts the threshold: swapped into the seed-002 snntorch tutorial MLP, NA "
    "learned 57.3 % in one Fashion-MNIST epoch with 'zero' and 76.0 % with 'subtract' (3 seeds; "
    "snn.Leaky with a zero reset learns about as little). Pass reset_mechanism='subtract' for "
    "the host's reset, or reset_mechanism='zero' to keep the authors' (either silences this)")
_NOTED: list[bool] = []


def _note_default_reset(init: Callable[..., None]) -> Callable[..., None]:
    """Warn once per process when ``reset_mechanism`` is not given (its default differs from the
    host's); construction only, the signature stays ``init``'s."""
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        if not _NOTED and "reset_mechanism" not in sig.bind(self, *args, **kwargs).arguments:
            _NOTED.append(True)
            warnings.warn(DEFAULT_RESET_NOTE, UserWarning, stacklevel=2)
        init(self, *args, **kwargs)
    return wrapper


class NALeaky(SpikegradLeaky):
    """LIF trained with Neighborhood Aggregation (Yang, Zhang & Li, ICML 2021).

    Spikes when ``mem > threshold`` (strict, as the authors' code); ``mem`` is the pre-reset
    potential ``u[t]``. The first output is the spike train, or the PSP trace ``a`` when
    ``tau_s`` is set (the authors' networks use ``tau_s=2``).

    In the usual per-step loop, the gradient reaching each step's input current is the NA
    estimator of the whole *window*: a window starts at ``init_leaky()``/``reset_mem()``/
    ``snntorch.utils.reset``/``detach_hidden()`` (or when the ``mem`` passed in is not attached
    to autograd, e.g. detached for truncated BPTT) and ends with the backward pass. The window
    follows values, not tensor identity: ``mem.clone()``, ``mem * 1.0``, ``.to`` the same dtype
    or ``.contiguous()`` between steps leave every gradient unchanged; where the values passed
    in differ from the ``mem`` returned (a mask, noise), the replay takes the state passed in
    there, per neuron (see :mod:`spikegrad.adapters.na_window`). Under ``torch.no_grad()``
    nothing is recorded. A gradient arriving at ``mem`` (= ``u[t]``) is added to ``δ[t]``
    unchanged; none is propagated through time.

    Args:
        beta: membrane decay ``λm = 1 - 1/τm`` (the authors' ``τm = 5``: 0.8).
        threshold: ``ϑ > 0``.
        reset_mechanism: ``"zero"`` (default, the paper's) or ``"subtract"`` (the host's
            default); the neighbors' replay follows the same reset. Left unset, a one-time
            ``UserWarning`` says so (``DEFAULT_RESET_NOTE`` of this module: the zero reset
            learns far less in snntorch's tutorial MLP).
        tau_s: PSP time constant (``>= 1``) of the trace output; ``None``: spikes.
        distance: ``"inverse_cube"`` (default, the code behind 91.76 % on CIFAR-10) or
            ``"inverse"`` (the paper), both clamped to ``±clamp``.
        clamp: bound on the distance weight.
        error: ``"accumulated"`` (default) or ``"local"``.
        rescale: a :class:`spikegrad.rules.na.Rescale` shared by the NA layers of one network
            (the authors' per-layer rescale), or ``None``. It needs the whole window at once:
            use :meth:`sequence` (the per-step call raises when it would record).

    The other arguments are ``snntorch.Leaky``'s (``graded_spikes_factor`` /
    ``learn_graded_spikes_factor``: a (learnable) scale of the output, after NA; NA's
    gradient reaches the spikes or trace scaled by it); ``spike_grad``,
    ``surrogate_disable``, ``learn_beta``, ``learn_threshold``, ``inhibition``,
    ``state_quant`` and ``reset_delay=False`` raise at non-default values.
    """

    @_note_default_reset
    def __init__(
        self,
        beta: float,
        threshold: float = 1.0,
        spike_grad: Any = None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        inhibition: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: str = "zero",
        state_quant: Any = False,
        output: bool = False,
        graded_spikes_factor: float = 1.0,
        learn_graded_spikes_factor: bool = False,
        reset_delay: bool = True,
        *,
        tau_s: float | None = None,
        distance: str = "inverse_cube",
        clamp: float = 5.0,
        error: str = "accumulated",
        rescale: na.Rescale | None = None,
    ) -> None:
        check_choice("reset_mechanism", reset_mechanism, ("zero", "subtract"))
        rule = na.NA(beta=beta, threshold=threshold, tau_s=tau_s, distance=distance,
                     clamp=clamp, error=error, reset=reset_mechanism)
        if rescale is not None and not isinstance(rescale, na.Rescale):
            raise TypeError(
                f"rescale must be a spikegrad.rules.na.Rescale shared by the network's NA "
                f"layers, or None; got {type(rescale).__name__}"
            )
        super().__init__(
            _exact(rule.beta), _exact(rule.threshold), _UNUSED_SPIKE_GRAD, False, init_hidden,
            False, False, False, rule.reset, False, output, graded_spikes_factor,
            learn_graded_spikes_factor, True,
        )
        self.rule = rule
        self.rescale = rescale
        flags = _host_flags(surrogate_disable, inhibition, state_quant)
        flags.update(
            spike_grad=(spike_grad, None, _NA_GRADIENT),
            learn_beta=(learn_beta, False, _UNSUPPORTED),
            learn_threshold=(learn_threshold, False, _UNSUPPORTED),
        )
        self._setup(flags, reset_delay)
        self._add_state("trace")
        self._window: Window | None = None
        self._last_input: tuple[torch.device | str, torch.dtype] = ("cpu", torch.float32)

    def forward(self, input_: torch.Tensor, mem: torch.Tensor | None = None):  # type: ignore[override]
        """One time step (as ``snntorch.Leaky``); see the class docstring for the window.

        While ``torch.compile`` traces, the step runs eagerly (one graph break per step, see
        :data:`spikegrad.adapters.na_window.COMPILE_NOTE`); its values and gradients are eager's.
        """
        if torch.compiler.is_compiling():
            return eager(SpikegradLeaky.forward)(self, input_, mem)
        return super().forward(input_, mem)

    def _step(self, input_: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._last_input = (input_.device, input_.dtype)
        window = None
        if torch.is_grad_enabled() and input_.requires_grad:
            if self.rescale is not None:
                raise ValueError(
                    "rescale needs the whole window at once: call lif.sequence(cur_seq) "
                    "instead of the per-step loop, or construct NALeaky with rescale=None"
                )
            if self._window is None or not mem.requires_grad:  # detached: truncated BPTT
                self._window = Window(self.rule, self.trace)
            window = self._window
        out, u, self.trace = na_step(input_, mem, self.trace, self.rule, window)
        return out, u

    def dispatch_choice(self, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> dispatch.Choice:
        """What :mod:`spikegrad.rules.dispatch` picks for the per-step loop on ``device`` /
        ``dtype`` (NA's compiled CPU kernel or torch; :meth:`sequence` may also take the
        Triton kernels on CUDA tensors). Never raises: an unavailable explicit request is
        reported as ``"unavailable"`` with the reason."""
        try:
            return na.choice(self.rule, device, dtype, sequence=False)
        except (RuntimeError, ValueError, ImportError) as exc:
            return dispatch.Choice("unavailable", str(exc))

    @property
    def implementation(self) -> str:
        """What the per-step loop runs on the last input (CPU float32 before the first call):
        ``"cpp"`` or ``"torch"``."""
        return self.dispatch_choice(*self._last_input).implementation

    @property
    def implementation_reason(self) -> str | None:
        """Why :attr:`implementation` is not the compiled kernel (``None`` if it is)."""
        return self.dispatch_choice(*self._last_input).reason

    def _on_reset(self) -> None:
        self._window = None

    def _set_reset(self, reset_mechanism: str) -> None:
        check_choice("reset_mechanism", reset_mechanism, ("zero", "subtract"))
        self.rule = dataclasses.replace(self.rule, reset=reset_mechanism)
        self._window = None  # a recorded window replays with the reset it was recorded with

    def _host_touch(self) -> None:
        super()._host_touch()
        self._on_reset()

    def _on_load(self) -> None:
        self.rule = na.NA(
            beta=float(self.beta), threshold=float(self.threshold), tau_s=self.rule.tau_s,
            distance=self.rule.distance, clamp=self.rule.clamp, error=self.rule.error,
            reset=self.rule.reset,
        )

    def sequence(self, cur_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole window in one call, from rest (faster than the per-step loop).

        Gives the same outputs and gradients as ``reset_mem()`` followed by the per-step loop;
        the only path that supports ``rescale``. The neuron's state is left as after the loop.

        Shape:
            cur_seq: ``[T, B, *]``; outputs ``(out, mem)``: ``[T, B, *]`` each.
        """
        check_float_tensor("cur_seq", cur_seq, min_dim=2)
        self._last_input = (cur_seq.device, cur_seq.dtype)
        out, u = na.sequence(cur_seq, self.rule, self.rescale)
        self._zero_states(like=cur_seq[0])
        self.mem = u[-1].detach()
        self.trace = out[-1].detach()  # the trace; the spikes (the loop's a = s) if tau_s is None
        return out * self.graded_spikes_factor, u  # the host's output scale, as per step
