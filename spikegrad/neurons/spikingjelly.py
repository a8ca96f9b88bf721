"""spikegrad's spikingjelly nodes: ``BaseNode`` subclasses wiring a rule to the host.

No equations here: each node maps spikingjelly's arguments (``tau``, ``decay_input``,
``v_reset``, ``detach_reset``) to a rule of :mod:`spikegrad.rules` and one step to that rule's
step function; :mod:`spikegrad.adapters.spikingjelly` turns the step into both step modes, on
spikingjelly 0.0.0.0.14 and 2.x. Names, defaults and outputs follow API.md.

``v`` after a step is the host's post-reset state. Every node accepts ``backend="torch" |
"cupy" | "triton" | "auto"``; in ``step_mode="m"`` the ``"cupy"`` and ``"triton"`` paths run the
rule's fused kernels (``spikegrad.rules.<rule>.cupy``,
``spikegrad.rules.<rule>.triton``) with the same returns as the torch path.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from spikegrad._checks import check_number
from spikegrad.adapters.na_window import Window, eager, na_step
from spikegrad.adapters.silence import (
    BPSA_DEAD_FIX,
    BPSA_FIX,
    MULTISTRENGTH_FIX,
    MULTISTRENGTH_REASON,
    MULTISTRENGTH_SILENT,
    SilenceWatch,
    multistrength_window,
)
from spikegrad.adapters.spikingjelly import SpikegradNode, check_tau, host_order, refuse
from spikegrad.rules import bpsta, multistrength, na, reset_term, surrogate
from spikegrad.rules.reset_term.spec import reset_term_spec
from spikegrad.rules.triton_kernels.spec import f32

__all__ = ["ResetTermLIFNode", "NALIFNode", "HTDGLIFNode", "MultiStrengthIFNode"]

class _Unset:
    """The default of an argument that must not be passed (its repr shows in signatures)."""

    def __repr__(self) -> str:
        return "<not given>"


_UNSET: Any = _Unset()


def _mechanism(v_reset: float | None, node: str) -> str:
    """spikingjelly's ``v_reset`` as a reset mechanism: 0.0 -> zero, None -> subtract."""
    if v_reset is None:
        return "subtract"
    if v_reset == 0.0:
        return "zero"
    raise ValueError(
        f"{node} supports v_reset=0.0 (hard reset to zero) or v_reset=None (soft reset by "
        f"subtraction), got v_reset={v_reset!r}"
    )


def _host_surrogate(fn: Any) -> Any:
    """A spikegrad surrogate fires at ``x >= 0`` on this host (spikingjelly's convention)."""
    if isinstance(fn, surrogate.Surrogate) and not fn.inclusive:
        return dataclasses.replace(fn, inclusive=True)
    return fn


class ResetTermLIFNode(SpikegradNode):
    """LIF node with the reset-term gradient (Yang 2020); see :mod:`spikegrad.rules.reset_term`.

    ``detach_reset=False`` (the host's default) is the reset term; ``True`` detaches it. Spikes
    at ``u >= v_threshold`` (the host's convention). The first output is the spikes, or the PSP
    trace when ``tau_s`` is set. Its snntorch twin is ``ResetTermLeaky(beta=1 - 1/tau)``.

    Args:
        tau: membrane time constant ``> 1`` (leak ``1 - 1/tau``).
        decay_input: also scale the input by ``1/tau`` (as the host's ``LIFNode``).
        v_reset: ``0.0`` (hard reset) or ``None`` (soft reset by subtraction).
        surrogate_function: any spikingjelly or spikegrad surrogate; ``None`` means
            ``surrogate.Sigmoid(temperature=0.3)`` (spikingjelly ``Sigmoid(alpha=1/0.3)``).
        detach_reset: detach the reset path (``reset_grad="detach"`` on the snntorch twin).
        reset_grad_scale: factor on the reset path (with ``detach_reset=False`` only).
        tau_s: if set (``>= 1``), output the PSP trace.
    """

    @host_order
    def __init__(
        self, tau: float = 2.0, decay_input: bool = False, v_threshold: float = 1.0,
        v_reset: float | None = 0.0, surrogate_function: Any = None, detach_reset: bool = False,
        step_mode: str = "s", store_v_seq: bool = False, *, backend: str = "torch",
        reset_grad_scale: float = 1.0, tau_s: float | None = None,
    ) -> None:
        tau = check_tau(tau)
        check_number("v_threshold", v_threshold, positive=True)
        mechanism = _mechanism(v_reset, type(self).__name__)
        scale = check_number("reset_grad_scale", reset_grad_scale)
        if detach_reset and scale != 1.0:
            raise ValueError("reset_grad_scale applies to detach_reset=False only; leave it at "
                             "1.0 with detach_reset=True")
        if surrogate_function is None:
            surrogate_function = surrogate.Sigmoid(temperature=0.3)
        # a trace state only where there is a trace: otherwise the states are the host's ('v',)
        self._extra_states = () if tau_s is None else ("trace",)
        self._init_node(v_threshold=v_threshold, v_reset=v_reset,
                        surrogate_function=_host_surrogate(surrogate_function),
                        detach_reset=detach_reset, step_mode=step_mode, backend=backend,
                        store_v_seq=store_v_seq)
        self._set_lif(tau, decay_input)
        self.mechanism = mechanism
        self.reset_grad_scale = 0.0 if detach_reset else scale
        self.tau_s = None if tau_s is None else check_number("tau_s", tau_s, low=1.0)
        self._finish_init()

    def _step(self, x, v, trace=None):  # noqa: ANN001, ANN202
        s, _, v = reset_term.step_v(
            self._input(x), v, beta=self.leak, threshold=self.v_threshold,
            spike_fn=self.surrogate_function, mechanism=self.mechanism,
            reset_grad_scale=self.reset_grad_scale,
        )
        if self.tau_s is None:
            return s, v
        trace = reset_term.trace_step(trace, s, self.tau_s)
        return trace, v, trace

    def _multi(self, x_seq, v, *trace):  # noqa: ANN001, ANN202
        if not reset_term.fused_applicable(self.surrogate_function, self.leak, self.v_threshold):
            return super()._multi(x_seq, v, *trace)
        s, v_seq, _ = reset_term.SequenceFunction.apply(
            self._input(x_seq), v, self.leak, self.v_threshold, self.surrogate_function,
            self.mechanism, self.reset_grad_scale)
        if self.tau_s is None:
            return s, v_seq, (v_seq[-1],)
        (trace,) = trace
        out = reset_term.trace(s, self.tau_s, a0=trace)
        return out, v_seq, (v_seq[-1], out[-1])

    def _cupy_kernel(self) -> Any:
        fn = self.surrogate_function
        name = f"surrogate {type(fn).__module__}.{type(fn).__qualname__}"
        if not isinstance(fn, surrogate.Surrogate):
            return (f"{name} has no CUDA expression (the kernels fuse spikegrad's surrogates, "
                    "spikegrad.rules.surrogate)")
        if not reset_term.fused_applicable(fn, self.leak, self.v_threshold):
            return f"{name} with spiking=False is not a spike function"
        try:
            return reset_term.cupy.spec(self.leak, self.v_threshold, fn, self.mechanism,
                                           self.reset_grad_scale, self.tau_s)
        except NotImplementedError as exc:
            return str(exc)

    def _multi_cupy(self, x_seq, v, trace=None):  # noqa: ANN001, ANN202
        out, v_seq = reset_term.cupy.sequence(self._input(x_seq), v, trace, self._cupy_kernel())
        return out, v_seq, ((v_seq[-1],) if self.tau_s is None else (v_seq[-1], out[-1]))

    def _triton_kernel(self) -> Any:
        spec_ = reset_term_spec(self.leak, self.v_threshold, self.surrogate_function,
                                     self.mechanism, self.reset_grad_scale, self.tau_s)
        constants = (self.leak, self.v_threshold, self.reset_grad_scale,
                     *spec_.surrogate_args[1:], *(() if self.tau_s is None else (self.tau_s,)))
        if not all(math.isfinite(f32(x)) for x in constants):
            return f"a constant of {spec_!r} is not a finite float32"
        return spec_

    def _multi_triton(self, x_seq, v, trace=None):  # noqa: ANN001, ANN202
        from spikegrad.rules.reset_term import triton  # imports Triton

        out, v_seq = triton.sequence(self._input(x_seq), v, trace,
                                                        self._triton_kernel())
        return out, v_seq, ((v_seq[-1],) if self.tau_s is None else (v_seq[-1], out[-1]))


class NALIFNode(SpikegradNode):
    """LIF node trained with Neighborhood Aggregation; see :mod:`spikegrad.rules.na`.

    Spikes at ``u > v_threshold`` (strict, the authors' convention, not the host's). In
    ``step_mode="m"`` the whole window runs as one autograd node (with the compiled CPU
    kernel where available); in ``"s"`` mode every step records into a window whose backward
    passes replay the neighbors causally, with equal gradients. A window starts at
    ``reset()``/``functional.reset_net``. ``rescale`` needs the whole window: ``"m"`` mode only.
    With the CuPy kernels and float16 inputs the pre-reset state ``u`` stays float32 (the
    spike is decided on it once; see :mod:`spikegrad.rules.na.cupy`).

    Args:
        tau: membrane time constant ``> 1`` (the authors' 5: leak 0.8).
        decay_input: also scale the input by ``1/tau``.
        v_reset: ``0.0`` (the authors' hard reset) or ``None`` (subtraction).
        tau_s: PSP time constant of the trace output, or ``None`` for spikes.
        distance, clamp, error, rescale: as :class:`spikegrad.neurons.NALeaky`.
    """

    _extra_states = ("u", "trace")

    @host_order
    def __init__(
        self, tau: float = 5.0, decay_input: bool = False, v_threshold: float = 1.0,
        v_reset: float | None = 0.0, surrogate_function: Any = None, detach_reset: bool = False,
        step_mode: str = "s", store_v_seq: bool = False, *, backend: str = "torch",
        tau_s: float | None = None, distance: str = "inverse_cube", clamp: float = 5.0,
        error: str = "accumulated", rescale: na.Rescale | None = None,
    ) -> None:
        name = type(self).__name__
        refuse(name, "surrogate_function", surrogate_function, None,
               "NA defines the gradient itself (the neighbors' replay), no surrogate")
        refuse(name, "detach_reset", detach_reset, False,
               "NA's replay re-simulates every neighbor through its resets; there is no reset "
               "gradient path to detach")
        tau = check_tau(tau)
        v_threshold = check_number("v_threshold", v_threshold)  # named as the user passed it
        rule = na.NA(beta=1.0 - 1.0 / tau, threshold=v_threshold, tau_s=tau_s,
                     distance=distance, clamp=clamp, error=error,
                     reset=_mechanism(v_reset, type(self).__name__))
        if rescale is not None and not isinstance(rescale, na.Rescale):
            raise TypeError("rescale must be a spikegrad.rules.na.Rescale or None, got "
                            f"{type(rescale).__name__}")
        self._init_node(v_threshold=v_threshold, v_reset=v_reset,
                        surrogate_function=surrogate.Sigmoid(), detach_reset=False,
                        step_mode=step_mode, backend=backend, store_v_seq=store_v_seq)
        self._set_lif(tau, decay_input)
        self.rule, self.rescale = rule, rescale
        self._window: Window | None = None
        self._v_out: torch.Tensor | None = None  # the v this node derived last (see _states)
        self._finish_init()

    def _post_reset(self, u: torch.Tensor) -> torch.Tensor:
        return self.rule.after_reset(u, u > self.rule.threshold)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """One step; eager while ``torch.compile`` traces (one graph break per step: see
        :data:`spikegrad.adapters.na_window.COMPILE_NOTE`)."""
        if torch.compiler.is_compiling():
            return eager(NALIFNode._stateful_step)(self, x)
        return self._stateful_step(x)

    def _stateful_step(self, x: torch.Tensor) -> torch.Tensor:
        out = SpikegradNode.single_step_forward(self, x)
        self._v_out = self.v  # derived from u (see _states); the functional path leaves it
        return out

    def _step(self, x, v, u, trace):  # noqa: ANN001, ANN202
        x = self._input(x)
        window = None
        if torch.is_grad_enabled() and x.requires_grad:
            if self.rescale is not None:
                raise ValueError("rescale needs the whole window: use step_mode='m' or "
                                 "rescale=None")
            if self._window is None or not u.requires_grad:  # detached: a new window
                self._window = Window(self.rule, trace)
            window = self._window
        out, u, trace = na_step(x, u, trace, self.rule, window)
        return out, self._post_reset(u).detach(), u, trace

    def _states(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        v = self.v
        # v is derived from u; one not derived by this node (assigned from outside, before or
        # after the first step) would be silently ignored
        assigned = isinstance(v, torch.Tensor) and v.numel() and v is not self._v_out
        if assigned:
            raise ValueError(
                "NALIFNode keeps its state as the pre-reset potential node.u; node.v is derived "
                "from it after every step, so a v assigned from outside would be ignored. Set "
                "node.u instead (or call functional.reset_net(net) to start from rest)"
            )
        states = super()._states(x)
        self._v_out = self.v  # the v in use is this node's own from here on
        return states

    def _multi(self, x_seq, v, u, trace):  # noqa: ANN001, ANN202
        x_seq = self._input(x_seq)
        out, u_seq = na.sequence(x_seq, self.rule, self.rescale, u.detach().to(x_seq.dtype),
                                 trace.detach(), triton=False)
        return self._na_returns(out, u_seq)

    def _reference_choice(self, device: torch.device | None, dtype: torch.dtype | None
                          ) -> Any:
        """The node's own path: NA's compiled CPU kernel or torch (before a call: torch)."""
        if device is None or dtype is None:
            return super()._reference_choice(device, dtype)
        return na.choice(self.rule, device, dtype, sequence=False)

    def _cupy_kernel(self) -> Any:
        return na.cupy.spec(self.rule)

    def _triton_kernel(self) -> Any:
        return self.rule

    def _multi_triton(self, x_seq, v, u, trace):  # noqa: ANN001, ANN202
        from spikegrad.rules.na import triton  # imports Triton

        out, u_seq = triton.sequence(self._input(x_seq), self.rule, self.rescale,
                                                u.detach().float(), trace.detach())
        return self._na_returns(out, u_seq)

    def _multi_cupy(self, x_seq, v, u, trace):  # noqa: ANN001, ANN202
        out, u_seq = na.cupy.sequence(self._input(x_seq), self._cupy_kernel(), self.rescale,
                                       u.detach(), trace.detach())
        return self._na_returns(out, u_seq)

    def _na_returns(self, out, u_seq):  # noqa: ANN001, ANN202
        # the kernels' u is float32 for float16 inputs: decide the spike on it, then round v
        v_seq = self._post_reset(u_seq.detach()).to(out.dtype)
        last = out[-1].detach()  # the trace; the spikes (the per-step a = s) if tau_s is None
        self._window = None
        self._v_out = v_seq[-1]
        return out, v_seq, (self._v_out, u_seq[-1].detach(), last)

    def _on_reset(self) -> None:
        self._window = None
        self._v_out = None

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        # .to()/.double() replace the memories: the derived v stays the node's own
        out = super()._apply(fn, *args, **kwargs)
        if getattr(self, "_v_out", None) is not None and isinstance(self.v, torch.Tensor):
            self._v_out = self.v
        return out

    def _on_detach(self) -> None:
        # v is derived from u; after detach_net the next step starts a new window (u has no graph)
        self._v_out = self.v if isinstance(self.v, torch.Tensor) else None


class HTDGLIFNode(SpikegradNode):
    """The HTDGLIF node with BPSA/BPTA (Shen et al. 2022; BrainCog); see
    :mod:`spikegrad.rules.bpsta`. Spikes at ``h >= v_threshold``; output as
    :class:`spikegrad.neurons.HTDGLIFLeaky`.

    Args:
        v_threshold: ``θ > 0`` (0.5).
        decay: paper mode's ``λ`` (``None`` means 0.9); must stay ``None`` in braincog mode.
        mode, alpha, dt, warm_up: as :class:`spikegrad.neurons.HTDGLIFLeaky`.
        tau: refused (BrainCog's node accepts and ignores a ``tau``; here it would silently do
            nothing, so passing one raises).
    """

    @host_order
    def __init__(
        self, v_threshold: float = 0.5, v_reset: float | None = 0.0, surrogate_function: Any = None,
        detach_reset: bool = False, step_mode: str = "s", store_v_seq: bool = False, *,
        backend: str = "torch", decay: float | None = None, mode: str = "paper",
        alpha: float = 0.2, dt: float | None = None, warm_up: bool = False, tau: Any = _UNSET,
    ) -> None:
        name = type(self).__name__
        refuse(name, "v_reset", v_reset, 0.0, "the HTDGLIF node resets to zero")
        refuse(name, "surrogate_function", surrogate_function, None,
               "BPSA defines the spike gradient (1/h at spikes)")
        refuse(name, "detach_reset", detach_reset, False,
               "BPTA's residual sets the reset-path gradient: alpha=0.0 cuts it")
        if tau is not _UNSET:
            raise ValueError("HTDGLIFNode takes no tau (BrainCog's node ignores it); the paper "
                             "mode's leak is `decay` (0.9 by default), braincog mode has none")
        v_threshold = check_number("v_threshold", v_threshold)  # named as the user passed it
        rule = bpsta.HTDGLIF(mode=mode, threshold=v_threshold, decay=decay, alpha=alpha, dt=dt)
        self._init_node(v_threshold=v_threshold, v_reset=0.0,
                        surrogate_function=surrogate.Sigmoid(), detach_reset=False,
                        step_mode=step_mode, backend=backend, store_v_seq=store_v_seq)
        self.rule_cfg, self.warm_up = rule, bool(warm_up)
        self._silence = SilenceWatch(type(self).__name__, BPSA_FIX, BPSA_DEAD_FIX)
        self._finish_init()

    def _watch(self, x: torch.Tensor, out: torch.Tensor, sequence: bool = False) -> None:
        if self.training and x.requires_grad and torch.is_grad_enabled():
            self._silence.observe(out, sequence)

    def _on_reset(self) -> None:
        self._silence.boundary()  # a silent layer, or one with dead neurons, warns (once)

    def extra_repr(self) -> str:
        r = self.rule_cfg
        return (f"v_threshold={r.threshold}, mode={r.mode!r}, decay={r.decay}, alpha={r.alpha}, "
                f"dt={r.dt}, warm_up={self.warm_up}, step_mode={self.step_mode}, "
                f"backend={self.backend}")

    def _step(self, x, v):  # noqa: ANN001, ANN202
        if self.warm_up:
            return torch.relu(x), v
        o, _, v = bpsta.step_v(x, v, self.rule_cfg)
        self._watch(x, o)
        return o, v

    def _cupy_kernel(self) -> Any:
        return bpsta.cupy.spec(self.rule_cfg)

    def _bypass(self) -> str | None:
        return "warm_up=True: the output is relu(x), no rule runs" if self.warm_up else None

    def _multi_cupy(self, x_seq, v):  # noqa: ANN001, ANN202
        o, v_seq = bpsta.cupy.sequence(x_seq, v, self._cupy_kernel())
        self._watch(x_seq, o, sequence=True)
        return o, (v_seq if self.store_v_seq else None), (v_seq[-1],)

    def _triton_kernel(self) -> Any:
        return self.rule_cfg

    def _multi_triton(self, x_seq, v):  # noqa: ANN001, ANN202
        from spikegrad.rules.bpsta import triton  # imports Triton

        o, v_seq = triton.sequence(x_seq, v, self.rule_cfg)
        self._watch(x_seq, o, sequence=True)
        return o, (v_seq if self.store_v_seq else None), (v_seq[-1],)


class MultiStrengthIFNode(SpikegradNode):
    """Integrate-and-fire node with integer-valued spikes (Chen et al. 2018); see
    :mod:`spikegrad.rules.multistrength`. Outputs the strength ``floor(relu(h)/τ)``; ``v`` is
    the remainder ``h - τθ`` (no ``v_reset``: the reset is the subtraction).

    Args:
        v_threshold: ``τ > 0``.
        max_strength, detach_reset: as :class:`spikegrad.neurons.MultiStrengthLeaky`.
    """

    @host_order
    def __init__(
        self, v_threshold: float = 1.0, v_reset: float | None = None,
        surrogate_function: Any = None, detach_reset: bool = True, step_mode: str = "s",
        store_v_seq: bool = False, *, backend: str = "torch", max_strength: int | None = None,
    ) -> None:
        name = type(self).__name__
        refuse(name, "v_reset", v_reset, None,
               "the reset subtracts τ·θ (a soft reset, spikingjelly's v_reset=None)")
        refuse(name, "surrogate_function", surrogate_function, None,
               "the strength uses a straight-through estimator")
        v_threshold = check_number("v_threshold", v_threshold)  # named as the user passed it
        rule = multistrength.MultiStrength(
            threshold=v_threshold, max_strength=max_strength, detach_reset=detach_reset)
        self._init_node(v_threshold=v_threshold, v_reset=None,
                        surrogate_function=surrogate.Sigmoid(), detach_reset=detach_reset,
                        step_mode=step_mode, backend=backend, store_v_seq=store_v_seq)
        self.rule_cfg = rule
        self._dead = SilenceWatch(type(self).__name__, None, MULTISTRENGTH_FIX,
                                  reason=MULTISTRENGTH_REASON,
                                  narrow_silent=MULTISTRENGTH_SILENT)
        self._finish_init()

    def extra_repr(self) -> str:
        r = self.rule_cfg
        return (f"v_threshold={r.threshold}, max_strength={r.max_strength}, "
                f"detach_reset={r.detach_reset}, step_mode={self.step_mode}, "
                f"backend={self.backend}")

    def _watch(self, x: torch.Tensor, theta: torch.Tensor, v: torch.Tensor,
               sequence: bool = False) -> None:
        if self.training and x.requires_grad and torch.is_grad_enabled():
            r = self.rule_cfg
            self._dead.observe(theta, sequence,
                               multistrength_window(theta, v, r.threshold, r.max_strength))

    def _on_reset(self) -> None:
        self._dead.boundary()  # neurons outside the gradient window for a long time warn (once)

    def _step(self, x, v):  # noqa: ANN001, ANN202
        theta, v = multistrength.step(x, v, self.rule_cfg)
        self._watch(x, theta, v)
        return theta, v

    def _cupy_kernel(self) -> Any:
        return multistrength.cupy.spec(self.rule_cfg)

    def _multi_cupy(self, x_seq, v):  # noqa: ANN001, ANN202
        theta, v_seq = multistrength.cupy.sequence(x_seq, v, self._cupy_kernel())
        self._watch(x_seq, theta, v_seq, sequence=True)
        return theta, (v_seq if self.store_v_seq else None), (v_seq[-1],)

    def _triton_kernel(self) -> Any:
        return self.rule_cfg

    def _multi_triton(self, x_seq, v):  # noqa: ANN001, ANN202
        from spikegrad.rules.multistrength import triton  # imports Triton

        theta, v_seq = triton.sequence(x_seq, v, self.rule_cfg)
        self._watch(x_seq, theta, v_seq, sequence=True)
        return theta, (v_seq if self.store_v_seq else None), (v_seq[-1],)

