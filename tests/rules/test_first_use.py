"""A fused kernel that fails on first use: ``"auto"`` falls back to the torch path for that
configuration with one warning, an explicit request raises with the cause, the probe runs once
per configuration (no per-step cost), and a compiled model falls back the same way.

No GPU here: the dispatcher is told that Triton can run CPU tensors (``triton_problem`` returns
``None``), and the kernel fails either by an injected compile error (in this process, whether or
not Triton's interpreter is on) or for real (a fresh process without the interpreter, where
Triton's JIT finds no GPU driver when the kernel launches).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from spikegrad import neurons
from spikegrad.rules import bpsta, dispatch, first_use, na
from spikegrad.rules.first_use import KernelFallbackWarning

triton = pytest.importorskip("triton", reason="triton is not installed")
from triton.compiler.errors import CompilationError  # noqa: E402

from spikegrad.rules.bpsta import triton as ht_triton  # noqa: E402

X = torch.rand(5, 2, 7) * 1.2


class Injected:
    """Stands in for a Triton entry point whose kernel does not compile; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        raise CompilationError("spikegrad_test.py", None, "injected: ptxas out of registers")


@pytest.fixture
def triton_everywhere(monkeypatch):
    """The dispatcher believes Triton runs every tensor; no recorded outcome carries over."""
    monkeypatch.setattr(dispatch, "triton_problem", lambda device=None: None)
    first_use.forget()
    yield
    first_use.forget()


def _inject(monkeypatch, name: str) -> Injected:
    """Replace the Triton entry point of ``name`` (``"<rule>_sequence"``) with a failure."""
    fail = Injected()
    rule = name.removesuffix("_sequence")
    monkeypatch.setattr(importlib.import_module(f"spikegrad.rules.{rule}.triton"), "sequence", fail)
    return fail


def _run_recording(fn, times=3):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [fn() for _ in range(times)]
    return outs, [w for w in caught if issubclass(w.category, KernelFallbackWarning)]


@pytest.mark.parametrize(("node", "entry"), [
    (lambda backend: neurons.HTDGLIFNode(step_mode="m", backend=backend), "bpsta_sequence"),
    (lambda backend: neurons.MultiStrengthIFNode(step_mode="m", backend=backend),
     "multistrength_sequence"),
    (lambda backend: neurons.ResetTermLIFNode(step_mode="m", backend=backend),
     "reset_term_sequence"),
    (lambda backend: neurons.NALIFNode(step_mode="m", backend=backend), "na_sequence"),
], ids=["bpsta", "multistrength", "reset_term", "na"])
def test_auto_falls_back_once_and_explicit_raises(triton_everywhere, monkeypatch, node, entry):
    reference = node("torch")
    x = X.clone().requires_grad_(True)
    want = reference(x)
    (want_grad,) = torch.autograd.grad(want.sum(), x)
    fail = _inject(monkeypatch, entry)
    auto = node("auto")

    def step():
        auto.reset()
        out = auto(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
        return out, grad

    outs, caught = _run_recording(step)
    assert fail.calls == 1, "the first-use probe runs once per configuration"
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "failed on first use (CompilationError: " in message
    assert "injected: ptxas out of registers" in message and "Triton kernel of" in message
    assert "python -m spikegrad.check" in message  # how to report it
    for out, grad in outs:  # the torch path: the same values and gradients as backend="torch"
        torch.testing.assert_close(out, want, rtol=0, atol=0)
        torch.testing.assert_close(grad, want_grad, rtol=0, atol=0)
    assert auto.implementation in ("torch", "cpp") and "failed on first use" in (
        auto.implementation_reason)
    explicit = node("triton")
    with pytest.raises(RuntimeError, match=r"backend='triton' cannot run this call: the Triton "
                                           r"kernel of .* failed on first use \(Compilation"):
        explicit(x)
    assert fail.calls == 1, "the recorded outcome is reused by the explicit request"


def test_another_configuration_is_probed_on_its_own(triton_everywhere, monkeypatch):
    fail = _inject(monkeypatch, "bpsta_sequence")
    with pytest.warns(KernelFallbackWarning):
        neurons.HTDGLIFNode(step_mode="m", backend="auto")(X)
    with pytest.warns(KernelFallbackWarning):  # another decay: another kernel configuration
        neurons.HTDGLIFNode(step_mode="m", backend="auto", decay=0.7)(X)
    with pytest.warns(KernelFallbackWarning):  # another dtype
        neurons.HTDGLIFNode(step_mode="m", backend="auto")(X.bfloat16())
    assert fail.calls == 3


def test_na_implementation_auto_takes_the_next_candidate(triton_everywhere, monkeypatch):
    fail = _inject(monkeypatch, "na_sequence")
    cfg, explicit = na.NA(implementation="auto"), na.NA(implementation="triton")
    want = dispatch.rule_choice("na", "auto", "cpu", torch.float32, sequence=False)
    with pytest.warns(KernelFallbackWarning, match="failed on first use"):
        impl = dispatch.rule_implementation("na", "auto", X, spec=cfg)
    assert impl == want.implementation  # the compiled CPU kernel where built, else torch
    with pytest.raises(RuntimeError, match="implementation='triton' cannot run here: the "
                                           "Triton kernel of NA.* failed on first use"):
        na.sequence(X, explicit)
    out, _ = na.sequence(X, cfg)
    torch.testing.assert_close(out, na.sequence(X, na.NA(implementation="torch"))[0])
    assert fail.calls == 2  # one per configuration (auto and triton are two NA configs)


def test_replay_falls_back_when_its_probe_fails(monkeypatch):
    first_use.forget()
    monkeypatch.setattr(dispatch, "triton_problem", lambda device=None: None)
    gpu, flags = torch.device("cuda", 0), (True, False, True, False, True)
    monkeypatch.setattr(first_use, "_probe", lambda *a: "the Triton NA replay kernel failed "
                        "on first use (OutOfResources: injected)")
    with pytest.warns(KernelFallbackWarning, match="replay kernel failed on first use"):
        choice = dispatch.replay_choice(gpu, torch.float32, flags)
    assert choice == dispatch.Choice("torch", "the Triton NA replay kernel failed on first use "
                                              "(OutOfResources: injected)")
    assert dispatch.replay_choice(gpu, torch.float32).implementation == "triton"  # no flags
    first_use.forget()


def test_probe_records_the_error_and_nonfinite_values(monkeypatch):
    first_use.forget()
    cpu, cfg = torch.device("cpu"), bpsta.HTDGLIF()
    monkeypatch.setattr(ht_triton, "sequence", Injected())
    reason = first_use.problem("triton", cfg, cpu, torch.float32)
    assert reason.startswith("the Triton kernel of HTDGLIF(") and "CompilationError" in reason
    assert "(float32 on cpu) failed" in reason
    assert first_use.problem("triton", cfg, cpu, torch.float32) is reason  # cached

    def nan_kernel(x, v0, cfg):
        out = x * float("nan")
        return out, out
    monkeypatch.setattr(ht_triton, "sequence", nan_kernel)
    first_use.forget()
    assert "non-finite values on first use (outputs" in first_use.problem(
        "triton", cfg, cpu, torch.float32)

    def fine(x, v0, cfg):
        return x * 2, x.detach()
    monkeypatch.setattr(ht_triton, "sequence", fine)
    first_use.forget()
    assert first_use.problem("triton", cfg, cpu, torch.float32) is None
    first_use.forget()


def test_compiled_model_falls_back_too(triton_everywhere, monkeypatch):
    fail = _inject(monkeypatch, "bpsta_sequence")
    node = neurons.HTDGLIFNode(step_mode="m", backend="auto")

    def run(x):
        node.reset()
        return node(x)

    torch._dynamo.reset()
    with pytest.warns(KernelFallbackWarning):
        got = torch.compile(run, backend="aot_eager", fullgraph=True)(X)
    torch.testing.assert_close(got, neurons.HTDGLIFNode(step_mode="m")(X))
    assert fail.calls == 1
    torch._dynamo.reset()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the kernel launches")
def test_real_triton_launch_failure_in_a_fresh_process():
    """Triton's own JIT, no interpreter and no GPU driver: the launch really fails."""
    script = textwrap.dedent("""
        import warnings, torch
        from spikegrad import neurons
        from spikegrad.rules import dispatch
        from spikegrad.rules.triton_kernels import lib
        dispatch.triton_problem = lambda device=None: None   # as if a GPU were usable
        lib.device_problem = lambda *a: None                  # let CPU tensors reach the launch
        x = torch.rand(4, 3, 5, requires_grad=True)
        want = neurons.MultiStrengthIFNode(step_mode="m")(x)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            got = neurons.MultiStrengthIFNode(step_mode="m", backend="auto")(x)
        assert torch.equal(got, want)
        print("WARN", [str(m.message) for m in w])
        try:
            neurons.MultiStrengthIFNode(step_mode="m", backend="triton")(x)
        except RuntimeError as exc:
            print("RAISED", exc)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    warn = next(line for line in done.stdout.splitlines() if line.startswith("WARN"))
    assert warn.count("failed on first use (") == 1 and "Triton kernel of MultiStrength(" in warn
    raised = next(line for line in done.stdout.splitlines() if line.startswith("RAISED"))
    assert "backend='triton' cannot run this call" in raised and "failed on first use" in raised
