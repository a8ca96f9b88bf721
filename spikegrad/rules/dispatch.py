"""The dispatcher: the one place that picks torch, cpp, Triton or CuPy for the rules with
hand-written kernels and for the spikingjelly nodes' ``backend`` (a step rule's own
``implementation`` is chosen by :func:`spikegrad.rules.stepfn.choice`, which asks this module
about CuPy).

Implementations:

* ``"torch"``: the rule's reference, as the torch operators of :mod:`spikegrad.rules.na.ops`
  and ``spikegrad.rules.<rule>.ops`` (any device and dtype);
* ``"cpp"``: NA's compiled CPU kernel (:mod:`spikegrad.rules.na.cpu`; CPU float32/float64);
* ``"triton"``: the fused kernels in ``spikegrad.rules.<rule>.triton`` (whole sequences on
  CUDA tensors, float32/float16/bfloat16);
* ``"cupy"``: the fused kernels in ``spikegrad.rules.<rule>.cupy`` (whole sequences on CUDA
  tensors, float32/float16; spikingjelly nodes only).

Two entry points read the same checks:

* :func:`rule_choice` / :func:`rule_implementation` for a rule's own functions, driven by
  ``NA.implementation`` (``"auto" | "torch" | "cpp" | "triton"``): ``"auto"`` takes the Triton
  kernels for a whole NA sequence on a CUDA tensor when they can run, the compiled kernel on
  CPU float32/float64 tensors when it is built, else the torch reference;
* :func:`select` for spikingjelly nodes, driven by ``backend`` (``"torch" | "cupy" | "triton" |
  "auto"``, multi-step mode): ``"auto"`` takes Triton, then CuPy, where they can run, and
  otherwise the node's own path (whose rule may still run the compiled CPU kernel: NA);
* :func:`replay_choice` for NA's replay operator ``spikegrad::na_replay`` (the backward of a
  torch-path window, and of each step of a per-step host loop: NALeaky, NALIFNode('s')): on
  CUDA tensors the Triton replay kernel (:mod:`spikegrad.rules.na.triton_replay`) when it
  can run, else the torch reference; on CPU the reference (the compiled kernel is its own
  operator, picked by :func:`rule_implementation`). :func:`force_replay` overrides it.

Before a fused kernel first runs a configuration (device, dtype),
:mod:`spikegrad.rules.first_use` runs it once on a tiny input (forward, backward,
synchronised; cached per configuration): if it fails to compile or launch or is not
finite, ``"auto"`` takes the next candidate or the torch path for that configuration, with one
:class:`~spikegrad.rules.first_use.KernelFallbackWarning`, and an explicit request raises
RuntimeError with the cause.

``"auto"`` may fall back and records the reason (:class:`Choice`); an explicit request that
cannot be honoured raises with the reason: ImportError for a missing package, RuntimeError for
no usable CUDA device (checked before the package, so the message names the device first),
ValueError for a configuration, device or dtype the kernels do not take. Importing this module
imports neither CuPy nor Triton.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from spikegrad._checks import check_choice
from spikegrad.rules import first_use
from spikegrad.rules.first_use import KernelFallbackWarning
from spikegrad.rules.triton_kernels import spec as triton_spec

__all__ = ["BACKENDS", "RULE_IMPLEMENTATIONS", "KERNEL_DTYPES", "CPP_DTYPES", "INSTALL_HINT",
           "Choice", "cupy_problem", "cuda_problem", "triton_problem", "cpp_problem",
           "check_backend", "select", "rule_choice", "rule_implementation", "replay_problem",
           "replay_choice", "replay_implementation", "force_replay", "KernelFallbackWarning"]

#: spikingjelly nodes' ``backend`` values ("auto" and "triton" are spikegrad's own options)
BACKENDS = ("torch", "cupy", "triton", "auto")
#: ``NA.implementation`` values
RULE_IMPLEMENTATIONS = ("auto", "torch", "cpp", "triton")
#: storage dtypes of the CuPy kernels
KERNEL_DTYPES = (torch.float32, torch.float16)
#: dtypes of NA's compiled CPU kernel
CPP_DTYPES = (torch.float32, torch.float64)
#: dtypes of the Triton kernels (float32 arithmetic)
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: rules with Triton kernels for a whole sequence
TRITON_RULES = ("na", "reset_term", "bpsta", "multistrength")
INSTALL_HINT = ("pip install 'spikegrad[cupy]' (cupy-cuda13x, for torch built with CUDA 13) or "
                "'spikegrad[cupy12]' (cupy-cuda12x, CUDA 12), matching your torch build's "
                "torch.version.cuda")
_LABELS = {"cupy": "CuPy", "triton": "Triton"}


@dataclass(frozen=True)
class Choice:
    """What ran (or will run) and, when it is not what was asked for, why.

    Args:
        implementation: ``"torch"``, ``"cpp"``, ``"triton"`` or ``"cupy"``.
        reason: why ``"auto"`` (or a single-step call) did not take a faster path; ``None``
            when the implementation is the requested one (or the fastest there is).
    """

    implementation: str
    reason: str | None = None


# --- CuPy --------------------------------------------------------------------------------------
@functools.cache
def _import_cupy() -> Any:
    """CuPy, or the exception its import raised (cached: imported once per process)."""
    if importlib.util.find_spec("cupy") is None:
        return ModuleNotFoundError("cupy")
    try:
        return importlib.import_module("cupy")
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised here
        return exc


#: the one-time probe: one thread writes 1.0 (compiles with NVRTC and launches)
_PROBE_SOURCE = 'extern "C" __global__ void sg_probe(float* p) { p[threadIdx.x] = 1.0f; }'


@functools.cache
def _probe(cp: Any, index: int) -> str | None:
    """Why a tiny kernel cannot be compiled and launched on device ``index`` (cached per CuPy
    module and device: run once), or ``None`` when it ran."""
    try:
        with cp.cuda.Device(index):
            kernel = cp.RawKernel(_PROBE_SOURCE, "sg_probe")
            buf = cp.zeros(1, dtype=cp.float32)
            kernel((1,), (1,), (buf,))
            wrote = float(cp.asnumpy(buf)[0])
    except Exception as exc:  # noqa: BLE001 - any failure: the kernels cannot run here
        return (f"cupy cannot compile or launch a kernel on cuda:{index} "
                f"({type(exc).__name__}: {exc}); the cupy package must match the driver and "
                f"torch.version.cuda={torch.version.cuda!r}: {INSTALL_HINT}")
    return None if wrote == 1.0 else f"a probe kernel on cuda:{index} did not run (wrote {wrote})"


def _device_index(device: torch.device | int | None) -> int:
    if isinstance(device, int):
        return device
    if device is None or device.index is None:
        return torch.cuda.current_device()
    return device.index


def cuda_problem(kernels: str = "the kernels") -> str | None:
    """Why there is no usable CUDA device (``None`` if there is one)."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return (f"no CUDA device: this torch is a CPU-only build (torch.version.cuda is None); "
                f"install a CUDA build of torch to run {kernels}")
    return ("no CUDA device: torch.cuda.is_available() is False (no visible GPU: check the "
            f"driver and CUDA_VISIBLE_DEVICES), and {kernels} run on CUDA tensors")


def cupy_problem(device: torch.device | int | None = None) -> tuple[type[Exception], str] | None:
    """``None`` if the CuPy kernels can launch on ``device`` (default: torch's current CUDA
    device), else ``(exception type, message)``. The first call per device compiles and launches
    a tiny kernel (cached), so a CuPy that imports but cannot compile or launch is reported."""
    # the device first: installing CuPy would not help on a machine without a usable GPU
    no_gpu = cuda_problem("the CuPy kernels")
    if no_gpu is not None:
        return RuntimeError, no_gpu
    cp = _import_cupy()
    if isinstance(cp, ModuleNotFoundError):
        return ImportError, f"cupy is not installed ({INSTALL_HINT})"
    if isinstance(cp, Exception):
        return ImportError, (f"cupy cannot be imported ({type(cp).__name__}: {cp}); "
                             f"reinstall it: {INSTALL_HINT}")
    reason = _probe(cp, _device_index(device))
    return None if reason is None else (RuntimeError, reason)


def constant_for_compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``fn`` as :func:`torch.compiler.assume_constant_result` does (dynamo calls it when
    tracing and keeps the result), without importing ``torch._dynamo`` (seconds) at import."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


# --- Triton ------------------------------------------------------------------------------------
@constant_for_compile
def _triton_package_problem() -> str | None:
    """Why Triton cannot be imported (``None`` if it can); a constant for ``torch.compile``."""
    return triton_spec.triton_problem()


def triton_problem(device: torch.device | None = None) -> tuple[type[Exception], str] | None:
    """``None`` if the Triton kernels can run on CUDA ``device`` (``None``: any CUDA device),
    else ``(exception type, message)``. The CUDA device is checked before the package.

    CPU tensors are never dispatched to Triton (its interpreter, ``TRITON_INTERPRET=1``, is for
    tests, which call the rules' ``triton`` modules directly).
    """
    if device is not None and device.type != "cuda":
        return ValueError, f"the input is on {device}: the Triton kernels run on CUDA tensors"
    reason = cuda_problem("the Triton kernels")
    if reason is not None:
        return RuntimeError, reason
    reason = _triton_package_problem()
    return None if reason is None else (ImportError, reason)


# --- compiled CPU kernels ----------------------------------------------------------------------
#: the rules with a compiled CPU kernel: rule -> its status function (``"available"`` or why not);
#: filled by the kernel's own module when it is imported (NA: :mod:`spikegrad.rules.na.cpu`)
_COMPILED: dict[str, Callable[[], str]] = {}


def register_compiled(rule: str, status: Callable[[], str]) -> None:
    """Record that ``rule`` has a compiled CPU kernel (float32/float64) whose ``status()`` says
    ``"available"`` or why not (it may build the kernel on its first call)."""
    _COMPILED[rule] = status


def cpp_problem(device: torch.device | None, dtype: torch.dtype | None, rule: str = "na"
                ) -> tuple[type[Exception], str] | None:
    """``None`` if ``rule``'s compiled CPU kernel runs tensors of ``device``/``dtype``, else
    ``(exception type, message)`` (ValueError: the tensors, or no such kernel; RuntimeError:
    not built)."""
    status = _COMPILED.get(rule)
    if status is None:
        return ValueError, f"{rule} has no compiled CPU kernel"
    if device is not None and device.type != "cpu":
        return ValueError, f"the compiled kernel is CPU-only; tensors on {device}"
    if dtype is not None and dtype not in CPP_DTYPES:
        return ValueError, f"the compiled kernel takes float32/float64, not {dtype}"
    state = status()
    return None if state == "available" else (RuntimeError, state)


# --- rules -------------------------------------------------------------------------------------
def _rule_pick(rule: str, requested: str, device: torch.device, dtype: torch.dtype,
               sequence: bool, spec: Any = None) -> tuple[str, str | None, type[Exception] | None]:
    """``(implementation, reason, error)``: ``error`` is set when ``requested`` cannot run.
    With ``spec`` (the rule's configuration: a real call) the Triton kernel's first-use probe
    decides too."""
    if requested == "torch":  # before asking for the compiled kernel, which may build it
        return "torch", None, None
    cpp = cpp_problem(device, dtype, rule)
    if requested == "cpp":
        return ("cpp", None, None) if cpp is None else ("torch", cpp[1], cpp[0])
    triton: tuple[type[Exception], str] | None = (
        (ValueError, "the Triton kernels run whole sequences, not single steps"
         + ("; a step's backward replay runs the Triton replay kernel on CUDA where it can "
            "(dispatch.replay_choice)" if rule == "na" else ""))
        if not sequence else triton_problem(device))
    if triton is None and dtype not in TRITON_DTYPES:
        triton = ValueError, f"dtype {dtype} has no Triton kernel (float32, float16, bfloat16)"
    if triton is None and spec is not None and requested in ("auto", "triton"):
        failed = first_use.problem("triton", spec, device, dtype)
        if failed is not None:
            triton = RuntimeError, failed
            if requested == "auto":
                first_use.warn_fallback(failed)
    if requested == "triton":
        return ("triton", None, None) if triton is None else ("torch", triton[1], triton[0])
    if device.type == "cuda" and triton is None:
        return "triton", None, None
    if cpp is None:
        return "cpp", None, None
    if device.type == "cpu":  # the reference is the fastest there is for the other rules
        return "torch", (cpp[1] if rule == "na" else None), None
    return "torch", (triton[1] if triton is not None else None), None


def rule_choice(rule: str, requested: str, device: torch.device | str,
                dtype: torch.dtype, *, sequence: bool = True) -> Choice:
    """Which implementation a rule's function runs for tensors on ``device`` of ``dtype``.

    Args:
        rule: ``"na"``, ``"reset_term"``, ``"bpsta"`` or ``"multistrength"``.
        requested: ``"auto"``, ``"torch"``, ``"cpp"`` or ``"triton"`` (``NA.implementation``).
        sequence: a whole sequence (Triton may run it) or one step (torch or cpp only).

    Raises:
        ValueError, RuntimeError, ImportError: ``requested`` is explicit and cannot run here;
            the message names the reason and the fix.
    """
    check_choice("implementation", requested, RULE_IMPLEMENTATIONS)
    impl, reason, error = _rule_pick(rule, requested, torch.device(device), dtype, sequence)
    if error is not None:
        raise error(f"implementation={requested!r} cannot run here: {reason}; use "
                    "implementation='auto' or 'torch'")
    return Choice(impl, reason)


def rule_implementation(rule: str, requested: str, x: torch.Tensor, *,
                        sequence: bool = True, spec: Any = None) -> str:
    """:func:`rule_choice` for the tensor ``x``: the name only (the traced fast path).
    ``spec``: the rule's configuration, for the Triton kernel's first-use probe."""
    impl, reason, error = _rule_pick(rule, requested, x.device, x.dtype, sequence, spec)
    if error is not None:
        raise error(f"implementation={requested!r} cannot run here: {reason}; use "
                    "implementation='auto' or 'torch'")
    if (rule == "na" and impl == "torch" and requested == "auto" and x.device.type == "cpu"
            and x.dtype in CPP_DTYPES and reason and "could not be built" in reason
            and not torch.compiler.is_compiling()):
        _warn_cpp_fallback(reason)
    return impl


# --- NA's replay operator -----------------------------------------------------------------------
#: what ``spikegrad::na_replay`` runs when forced (:func:`force_replay`); module-wide, not per
#: thread: autograd runs the backward of CUDA tensors on its own threads
_REPLAY: dict[str, str | None] = {"forced": None}


def replay_problem(device: torch.device | str, dtype: torch.dtype
                   ) -> tuple[type[Exception], str] | None:
    """``None`` if the Triton replay kernel runs tensors of ``device``/``dtype``, else
    ``(exception type, message)``. CPU tensors run only in Triton's interpreter
    (``TRITON_INTERPRET=1``, tests) and only when forced (:func:`force_replay`)."""
    device = torch.device(device)
    if device.type == "cpu":
        if _triton_package_problem() is not None:
            return ImportError, _triton_package_problem()
        reason = triton_spec.device_problem(device, dtype)
        return None if reason is None else (ValueError, reason)
    problem = triton_problem(device)
    if problem is None and dtype not in TRITON_DTYPES:
        problem = ValueError, f"dtype {dtype} has no Triton kernel (float32, float16, bfloat16)"
    return problem


def replay_choice(device: torch.device | str, dtype: torch.dtype,
                  flags: tuple[bool, ...] | None = None) -> Choice:
    """What ``spikegrad::na_replay`` runs for tensors on ``device`` of ``dtype``.

    ``"triton"`` on CUDA tensors when the Triton replay kernel can run there, else ``"torch"``
    (the reference; the reason says why on CUDA). On CPU ``"torch"``. Under
    :func:`force_replay` the forced implementation. ``flags`` (the kernel's ``(trace,
    subtract, cube, has_a_init, has_changed)``, a real call) run its first-use probe once.

    Raises:
        ValueError, RuntimeError, ImportError: ``"triton"`` is forced and cannot run here.
    """
    device = torch.device(device)
    forced = _REPLAY["forced"]
    if forced == "torch":
        return Choice("torch")
    if forced is None and device.type != "cuda":
        return Choice("torch")
    problem = replay_problem(device, dtype)
    if problem is None and forced is None and flags is not None:
        failed = first_use.problem("triton_replay", flags, device, dtype)
        if failed is not None:
            first_use.warn_fallback(failed)
            return Choice("torch", failed)
    if problem is None:
        return Choice("triton")
    if forced == "triton":
        raise problem[0](f"the Triton replay kernel was forced (dispatch.force_replay) but "
                         f"cannot run here: {problem[1]}")
    return Choice("torch", problem[1])


def replay_implementation(x: torch.Tensor, flags: tuple[bool, ...] | None = None) -> str:
    """:func:`replay_choice` for the tensor ``x``: the name only."""
    return replay_choice(x.device, x.dtype, flags).implementation


@contextlib.contextmanager
def force_replay(implementation: str | None) -> Iterator[None]:
    """Within the block, ``spikegrad::na_replay`` runs ``implementation``: ``"torch"`` (the
    reference, e.g. to compare on a GPU), ``"triton"`` (the kernel; on CPU tensors under
    ``TRITON_INTERPRET=1`` too, for tests) or ``None`` (the default choice). Module-wide (not
    per thread); blocks nest."""
    check_choice("implementation", implementation, ("torch", "triton", None))
    before = _REPLAY["forced"]
    _REPLAY["forced"] = implementation
    try:
        yield
    finally:
        _REPLAY["forced"] = before


@functools.cache
def _warn_cpp_fallback(reason: str) -> None:
    """Once per process: NA runs its torch reference because its kernel is missing."""
    warnings.warn("NA runs its torch reference on the CPU (same values, several times "
                  f"slower): {reason}", RuntimeWarning, stacklevel=4)


# --- spikingjelly nodes ------------------------------------------------------------------------
def _kernel_problem(name: str, kernel: Any, device: torch.device | None,
                    dtype: torch.dtype | None) -> tuple[type[Exception], str] | None:
    """Why kernel family ``name`` cannot run one call (``device``/``dtype`` ``None``: predict)."""
    if kernel is None:
        return ValueError, f"no {_LABELS[name]} kernel"
    if isinstance(kernel, str):  # the configuration first: installing a package would not help
        return ValueError, kernel
    if name == "cupy":
        cuda = device is not None and device.type == "cuda"
        problem = cupy_problem(device if cuda else None)
        if problem is not None:
            return problem
        if device is not None and device.type != "cuda":
            return ValueError, f"the input is on {device}: the CuPy kernels run on CUDA tensors"
        if dtype is not None and dtype not in KERNEL_DTYPES:
            return ValueError, f"dtype {dtype} has no CuPy kernel (float32, float16)"
        return None
    problem = triton_problem(device)
    if problem is None and dtype is not None and dtype not in TRITON_DTYPES:
        problem = ValueError, f"dtype {dtype} has no Triton kernel (float32, float16, bfloat16)"
    return problem


def check_backend(backend: Any, *, step_mode: str, kernel: Any = None,
                  triton_kernel: Any = None) -> None:
    """Validate a requested backend when it is set (constructor or ``node.backend = ...``).

    Args:
        backend: ``"torch"``, ``"cupy"``, ``"triton"`` or ``"auto"``.
        step_mode: the node's step mode (the kernels are multi-step).
        kernel, triton_kernel: the node's CuPy / Triton kernel spec, or a string saying why its
            configuration has none, or ``None`` if not known yet (during construction: only
            the name and the step mode are checked then; the rest when the kernel is known).

    Raises:
        ValueError: unknown backend; ``"cupy"``/``"triton"`` in single-step mode or for a
            configuration without kernels.
        RuntimeError: ``"cupy"``/``"triton"`` without a usable CUDA device.
        ImportError: ``"cupy"`` without CuPy, ``"triton"`` without Triton.
    """
    check_choice("backend", backend, BACKENDS)
    if backend not in _LABELS:
        return
    if step_mode != "m":
        raise ValueError(
            f"backend={backend!r} runs fused multi-step kernels and needs step_mode='m' "
            "(supported_backends is ('torch',) in single-step mode); use backend='torch' or "
            "'auto', or set step_mode='m' first"
        )
    spec = kernel if backend == "cupy" else triton_kernel
    if spec is None:
        return
    problem = _kernel_problem(backend, spec, None, None)
    if problem is not None:
        fix = ("use backend='torch' or 'auto' (which falls back to the torch reference)"
               if isinstance(spec, str) else "use backend='torch' or 'auto'")
        raise problem[0](f"backend={backend!r} is unavailable: {problem[1]}; {fix}")


def select(backend: str, *, step_mode: str, kernel: Any = None, triton_kernel: Any = None,
           device: torch.device | None = None, dtype: torch.dtype | None = None,
           bypass: str | None = None, strict: bool = True,
           reference: Callable[[torch.device | None, torch.dtype | None], Choice] | None = None,
           ) -> Choice:
    """Pick the implementation of one spikingjelly node call.

    Args:
        backend: the node's ``backend``.
        step_mode: the node's step mode.
        kernel, triton_kernel: the node's CuPy / Triton kernel spec, or a string saying why its
            configuration has none (``None``: not needed, for ``backend="torch"``).
        device, dtype: the input's; ``None`` to predict (a CUDA tensor of a kernel dtype is
            assumed then).
        bypass: set when the call runs no rule at all (e.g. a warm-up pass-through): the torch
            path runs for every backend, with this as the reason.
        strict: raise when an explicit ``"cupy"``/``"triton"`` cannot be honoured (``False``:
            report it as a fallback instead, for read-only queries).
        reference: what the node's own path runs for ``device``/``dtype`` (NA: the compiled
            CPU kernel or torch); default torch.

    Returns:
        The :class:`Choice`.

    Raises:
        ImportError, RuntimeError, ValueError: as :func:`check_backend`, and ValueError for a
            CPU tensor or an unsupported dtype, when the backend is explicit and ``strict``.
    """
    def own(reason: str | None) -> Choice:
        if bypass is not None:
            return Choice("torch", bypass)
        ref = Choice("torch") if reference is None else reference(device, dtype)
        return Choice(ref.implementation, reason or ref.reason)

    if backend == "torch":
        return own(None)
    if step_mode != "m":
        return own(f"step_mode={step_mode!r}: the fused kernels are multi-step")
    if bypass is not None:
        return own(None)
    names = ("triton", "cupy") if backend == "auto" else (backend,)
    problems = []
    for name in names:
        spec = kernel if name == "cupy" else triton_kernel
        problem = _kernel_problem(name, spec, device, dtype)
        if problem is None and device is not None and dtype is not None:  # a real call
            failed = first_use.problem(name, spec, device, dtype)
            if failed is not None:
                if backend != "auto" and strict:
                    raise RuntimeError(f"backend={backend!r} cannot run this call: {failed}; "
                                       "use backend='auto' (it falls back to the torch path) "
                                       f"or 'torch', and {first_use.REPORT}")
                first_use.warn_fallback(failed)
                problem = RuntimeError, failed
        if problem is None:
            return Choice(name)
        problems.append(problem)
    on = f"the input is on {device}: "
    labels = " and ".join(_LABELS[n] for n in names)
    if len(names) > 1 and all(p[1].startswith(on) for p in problems):  # one sentence
        reason = f"{on}the {labels} kernels run on CUDA tensors"
    elif len(names) > 1 and all(p[1].startswith("no CUDA device") for p in problems):
        reason = cuda_problem(f"the {labels} kernels") or problems[0][1]
    else:
        reason = "; ".join(dict.fromkeys(p[1] for p in problems))
    if backend != "auto" and strict:
        raise problems[0][0](f"backend={backend!r} cannot run this call: {problems[0][1]}; use "
                             "backend='torch' or 'auto'")
    return own(reason)
