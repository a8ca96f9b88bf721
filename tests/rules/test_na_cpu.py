"""The compiled CPU kernel of NA against the torch reference (same rule, two implementations)."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from spikegrad.rules import na
from spikegrad.rules.na import cpu as na_cpu

STATUS = na_cpu.status()
if STATUS != "available":
    if os.environ.get("CI"):  # CI builds the kernel first: a failure there is a defect
        raise RuntimeError(f"NA CPU kernel unavailable in CI: {STATUS}")
    pytest.skip(f"NA CPU kernel unavailable: {STATUS}", allow_module_level=True)

CONFIGS = [
    dict(tau_s=tau_s, reset=reset, distance=dist, error=err)
    for tau_s in (None, 2.0, 4.0)
    for reset in ("zero", "subtract")
    for dist in ("inverse_cube", "inverse")
    for err in ("accumulated", "local")
]


def _pair(**kw):
    torch_cfg = na.NA(beta=0.8, implementation="torch", **kw)
    return torch_cfg, dataclasses.replace(torch_cfg, implementation="cpp")


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_backward_match_reference(kw, dtype):
    gen = torch.Generator().manual_seed(hash(tuple(kw.values())) % 1000)
    for shape in [(1, 3, 4), (7, 2, 5), (13, 2, 3, 2, 2)]:
        c = torch.rand(shape, generator=gen, dtype=dtype) * 1.6 - 0.2
        g = torch.randn(shape, generator=gen, dtype=dtype)
        ref_cfg, cpp_cfg = _pair(**kw)
        s1, u1, a1 = na.forward(c, ref_cfg)
        s2, u2, a2 = na.forward(c, cpp_cfg)
        assert torch.equal(s1, s2)
        assert torch.equal(u1, u2) and torch.equal(a1, a2)
        d1 = na.backward(c, u1, s1, a1, g, ref_cfg)
        d2 = na.backward(c, u2, s2, a2, g, cpp_cfg)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(d2, d1, **tol)


def test_threshold_crossing_exactly_and_early_merge_exercised():
    """Zero reset with regular firing: replays merge early; u == θ exactly gives +clamp."""
    ref_cfg, cpp_cfg = _pair(tau_s=2.0)
    c = torch.full((20, 1, 3), 0.6, dtype=torch.float64)
    c[0, 0, 0] = 1.0  # u == θ exactly at step 0 (not a spike, strict)
    g = torch.randn(20, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s, u, a = na.forward(c, ref_cfg)
    assert u[0, 0, 0] == 1.0 and s[0, 0, 0] == 0
    d1 = na.backward(c, u, s, a, g, ref_cfg)
    d2 = na.backward(c, u, s, a, g, cpp_cfg)
    torch.testing.assert_close(d2, d1, rtol=1e-12, atol=1e-12)


def test_per_step_suffix_path_matches_reference():
    ref_cfg, cpp_cfg = _pair(tau_s=2.0)
    gen = torch.Generator().manual_seed(3)
    c = torch.rand(9, 4, 6, generator=gen) * 1.5
    e = torch.randn(9, 4, 6, generator=gen)
    s, u, a = na.forward(c, ref_cfg)
    for k in range(9):
        before = a[k - 1] if k else None
        d1 = na.deltas(c[k:], u[k:], s[k:], a[k:], e[k:], ref_cfg, a_init=before, neighbors=1)
        d2 = na.deltas(c[k:], u[k:], s[k:], a[k:], e[k:], cpp_cfg, a_init=before, neighbors=1)
        torch.testing.assert_close(d2, d1, rtol=1e-5, atol=1e-5)


def test_single_step_matches_reference():
    ref_cfg, cpp_cfg = _pair(tau_s=2.0, reset="subtract")
    gen = torch.Generator().manual_seed(4)
    c, u_prev = torch.rand(2, 3, 5, generator=gen) * 2
    a_prev = torch.rand(3, 5, generator=gen)
    steps = na.step(c, u_prev, a_prev, ref_cfg), na.step(c, u_prev, a_prev, cpp_cfg)
    for x, y in zip(*steps, strict=True):
        assert torch.equal(x, y)


def test_explicit_cpp_request_refuses_what_it_cannot_run():
    _, cpp_cfg = _pair()
    with pytest.raises(ValueError, match="implementation='cpp'"):
        na.forward(torch.rand(3, 2, dtype=torch.float16), cpp_cfg)


def test_implementation_is_reported():
    assert na.implementation().startswith("cpp")
    assert na.implementation(na.NA(implementation="torch")) == "torch (requested)"


def test_an_explicit_torch_implementation_never_asks_for_the_compiled_kernel(monkeypatch):
    """``implementation="torch"`` must not build (or even look up) NA's kernel: the build takes
    tens of seconds in a fresh environment, and the user asked for the reference."""
    import torch

    from spikegrad.rules import dispatch, na
    from spikegrad.rules.na import cpu as na_cpu

    def no(*args, **kwargs):
        raise AssertionError("the compiled kernel was asked for")

    monkeypatch.setattr(na_cpu, "status", no)
    monkeypatch.setattr(na_cpu, "load", no)
    choice = dispatch.rule_choice("na", "torch", "cpu", torch.float32)
    assert choice.implementation == "torch"
    x = torch.rand(4, 2, 3, requires_grad=True)
    out, _ = na.sequence(x, na.NA(implementation="torch"))[:2]
    out.sum().backward()
    assert x.grad is not None
