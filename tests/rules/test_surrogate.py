"""Contract tests for ``spikegrad.rules.surrogate`` (RULES.md §1-2; API.md, public helpers).

Expectations are independent of the implementation: snntorch's own surrogates, closed forms
written here, finite differences (gradcheck) of the primitive.
"""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest
import torch
from snntorch import surrogate as snn_surrogate

from spikegrad.rules import surrogate

SURROGATES = [
    surrogate.Sigmoid(),
    surrogate.Sigmoid(temperature=0.1),
    surrogate.Sigmoid(temperature=2.0),
    surrogate.ATan(),
    surrogate.ATan(alpha=0.5),
    surrogate.ATan(alpha=7.0),
]


def _ids(s: surrogate.Surrogate) -> str:
    return repr(s)


def _closed_form(s: surrogate.Surrogate, x: torch.Tensor) -> torch.Tensor:
    """The derivative formulas of RULES.md, typed out here."""
    if isinstance(s, surrogate.Sigmoid):
        sig = 1.0 / (1.0 + torch.exp(-x / s.temperature))
        return sig * (1.0 - sig) / s.temperature
    a = s.alpha
    return (a / 2.0) / (1.0 + (math.pi * a * x / 2.0) ** 2)


def _spike_grad(fn, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    (grad,) = torch.autograd.grad(out, x, g)
    return out.detach(), grad


# --- parity with snntorch -------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.3, 0.05, 1.0, 4.0])
def test_sigmoid_matches_snntorch_sigmoid(temperature: float, gen: torch.Generator) -> None:
    # float64 input; snntorch's spikes are float32, so the upstream gradient it sees is rounded
    # to float32 (relative error ~6e-8): rtol 1e-6
    x = torch.randn(5, 3, 17, generator=gen, dtype=torch.float64) * 2
    g = torch.randn(5, 3, 17, generator=gen, dtype=torch.float64)
    out, grad = _spike_grad(surrogate.Sigmoid(temperature=temperature), x, g)
    ref_out, ref_grad = _spike_grad(snn_surrogate.sigmoid(slope=1 / temperature), x, g)
    assert torch.equal(out, ref_out.to(out.dtype))
    # snntorch evaluates exp(-x/T) directly, which overflows (nan) for very negative x/T
    ok = (x / temperature) > -700
    assert ok.double().mean() > 0.9
    torch.testing.assert_close(grad[ok], ref_grad[ok], rtol=1e-6, atol=1e-12)
    assert grad.abs().max() > 0
    assert torch.isfinite(grad).all()


def test_sigmoid_is_stable_where_snntorch_overflows() -> None:
    """Far below threshold the derivative is 0, not nan (snntorch's closure gives nan there)."""
    x = torch.tensor([-100.0, -10.0, -5.0, 5.0, 10.0, 100.0])
    g = torch.ones(6)
    _, grad = _spike_grad(surrogate.Sigmoid(temperature=0.05), x, g)
    assert torch.isfinite(grad).all()
    assert torch.equal(grad, torch.zeros(6))
    _, ref = _spike_grad(snn_surrogate.sigmoid(slope=20.0), x, g)
    assert torch.isnan(ref[:2]).all()  # the host's limit, documented by this test


@pytest.mark.parametrize("alpha", [2.0, 0.5, 5.0])
def test_atan_matches_snntorch_atan(alpha: float, gen: torch.Generator) -> None:
    for dt in (torch.float32, torch.float64):
        x = torch.randn(4, 6, 11, generator=gen).to(dt)
        g = torch.randn(4, 6, 11, generator=gen).to(dt)
        out, grad = _spike_grad(surrogate.ATan(alpha=alpha), x, g)
        ref_out, ref_grad = _spike_grad(snn_surrogate.atan(alpha=alpha), x, g)
        assert torch.equal(out, ref_out.to(dt))
        tol = {"rtol": 1e-5, "atol": 1e-6} if dt == torch.float32 else {"rtol": 1e-6, "atol": 1e-12}
        torch.testing.assert_close(grad, ref_grad, **tol)


def test_default_atan_is_seed_002_formula() -> None:
    """RULES.md §1: at the default alpha = 2 the derivative is 1 / (1 + (pi U)^2)."""
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    torch.testing.assert_close(surrogate.ATan().derivative(x), 1.0 / (1.0 + (math.pi * x) ** 2))
    assert surrogate.ATan().derivative(torch.zeros((), dtype=torch.float64)).item() == 1.0


def test_sigmoid_default_is_the_reset_term_paper_temperature() -> None:
    assert surrogate.Sigmoid().temperature == 0.3
    # the derivative peaks at 1 / (4 T)
    peak = surrogate.Sigmoid(temperature=0.3).derivative(torch.zeros((), dtype=torch.float64))
    assert peak.item() == pytest.approx(1 / 1.2, rel=1e-12)


# --- the derivative is the derivative of the primitive -----------------------------------


@pytest.mark.parametrize("s", SURROGATES, ids=_ids)
def test_primitive_passes_gradcheck(s: surrogate.Surrogate, gen: torch.Generator) -> None:
    x = (torch.randn(20, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    assert torch.autograd.gradcheck(s.primitive, (x,))
    assert torch.autograd.gradgradcheck(s.primitive, (x,))


@pytest.mark.parametrize("s", SURROGATES, ids=_ids)
def test_derivative_equals_autograd_of_primitive_and_closed_form(
    s: surrogate.Surrogate, gen: torch.Generator
) -> None:
    x = torch.randn(3, 40, generator=gen, dtype=torch.float64) * 3
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(s.primitive(xr).sum(), xr)
    torch.testing.assert_close(s.derivative(x), auto, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(s.derivative(x), _closed_form(s, x), rtol=1e-12, atol=1e-14)
    # central finite differences of the primitive, written out
    eps = 1e-6
    fd = (s.primitive(x + eps) - s.primitive(x - eps)) / (2 * eps)
    torch.testing.assert_close(s.derivative(x), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("s", SURROGATES, ids=_ids)
def test_spike_backward_is_upstream_times_derivative(
    s: surrogate.Surrogate, dtype: torch.dtype, tol: dict, gen: torch.Generator
) -> None:
    x = torch.randn(2, 3, 4, 5, generator=gen).to(dtype)
    g = torch.randn(2, 3, 4, 5, generator=gen).to(dtype)
    out, grad = _spike_grad(s, x, g)
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(out, (x > 0).to(dtype))
    torch.testing.assert_close(grad, g * _closed_form(s, x), **tol)


@pytest.mark.parametrize("s", SURROGATES, ids=_ids)
def test_primitive_values(s: surrogate.Surrogate) -> None:
    x = torch.tensor([-1e6, 0.0, 1e6], dtype=torch.float64)
    torch.testing.assert_close(s.primitive(x), torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64),
                               atol=1e-5, rtol=0)


# --- forward values and the spiking / inclusive axes ---------------------------------------


@pytest.mark.parametrize("cls", [surrogate.Sigmoid, surrogate.ATan])
def test_value_at_exactly_zero_strict_vs_inclusive(cls: type, dtype: torch.dtype) -> None:
    x = torch.tensor([-1.0, -1e-30, 0.0, 1e-30, 1.0], dtype=dtype)
    strict = cls()(x)
    inclusive = cls(inclusive=True)(x)
    assert torch.equal(strict, torch.tensor([0, 0, 0, 1, 1], dtype=dtype))
    assert torch.equal(inclusive, torch.tensor([0, 0, 1, 1, 1], dtype=dtype))
    assert torch.equal(surrogate.heaviside(x), strict)
    assert torch.equal(surrogate.heaviside(x, inclusive=True), inclusive)


@pytest.mark.parametrize("cls", [surrogate.Sigmoid, surrogate.ATan])
def test_inclusive_changes_only_the_forward(cls: type, gen: torch.Generator) -> None:
    x = torch.randn(50, generator=gen, dtype=torch.float64)
    x[::7] = 0.0
    g = torch.randn(50, generator=gen, dtype=torch.float64)
    _, grad_strict = _spike_grad(cls(), x, g)
    _, grad_incl = _spike_grad(cls(inclusive=True), x, g)
    assert torch.equal(grad_strict, grad_incl)


@pytest.mark.parametrize("s", SURROGATES, ids=_ids)
def test_spiking_false_returns_the_primitive(s: surrogate.Surrogate, gen: torch.Generator) -> None:
    smooth = dataclasses.replace(s, spiking=False)
    x = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(smooth(x), s.primitive(x), rtol=0, atol=0)
    if isinstance(s, surrogate.Sigmoid):
        torch.testing.assert_close(smooth(x), torch.sigmoid(x / s.temperature))
    else:
        torch.testing.assert_close(smooth(x), torch.atan(math.pi / 2 * s.alpha * x) / math.pi + 0.5)
    xr = x.clone().requires_grad_(True)
    g = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad(smooth(xr), xr, g)
    torch.testing.assert_close(grad, g * _closed_form(s, x))
    assert not torch.equal(smooth(x), s(x))  # not binary


# --- dataclass contract: frozen, picklable, equal ------------------------------------------


@pytest.mark.parametrize("s", SURROGATES, ids=_ids)
def test_frozen(s: surrogate.Surrogate) -> None:
    field = "temperature" if isinstance(s, surrogate.Sigmoid) else "alpha"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(s, field, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.spiking = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.inclusive = True  # type: ignore[misc]


@pytest.mark.parametrize(
    "s",
    SURROGATES + [surrogate.Sigmoid(0.2, inclusive=True), surrogate.ATan(3.0, spiking=False)],
    ids=_ids,
)
def test_pickle_round_trip(s: surrogate.Surrogate, gen: torch.Generator) -> None:
    clone = pickle.loads(pickle.dumps(s))
    assert clone == s and type(clone) is type(s) and hash(clone) == hash(s)
    x = torch.randn(30, generator=gen, dtype=torch.float64)
    x[0] = 0.0
    g = torch.randn(30, generator=gen, dtype=torch.float64)
    out_a, grad_a = _spike_grad(s, x, g)
    out_b, grad_b = _spike_grad(clone, x, g)
    assert torch.equal(out_a, out_b) and torch.equal(grad_a, grad_b)


def test_equality_depends_on_fields() -> None:
    assert surrogate.Sigmoid(0.3) == surrogate.Sigmoid(temperature=0.3)
    assert surrogate.Sigmoid(0.3) != surrogate.Sigmoid(0.4)
    assert surrogate.Sigmoid(0.3) != surrogate.Sigmoid(0.3, inclusive=True)
    assert surrogate.ATan(2.0) != surrogate.ATan(2.0, spiking=False)


def test_tensor_hyperparameter_is_stored_as_float() -> None:
    s = surrogate.Sigmoid(temperature=torch.tensor(0.5))
    assert type(s.temperature) is float and s.temperature == 0.5
    assert pickle.loads(pickle.dumps(s)) == s


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name"), [(surrogate.Sigmoid, "temperature"), (surrogate.ATan, "alpha")]
)
@pytest.mark.parametrize("bad", [0, 0.0, -0.3, -2, float("nan"), float("inf"), "0.3", None, True])
def test_invalid_hyperparameter_names_the_argument(cls: type, name: str, bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match=name):
        cls(**{name: bad})


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_non_bool_flags_raise(bad: object) -> None:
    with pytest.raises(TypeError, match="spiking"):
        surrogate.Sigmoid(spiking=bad)
    with pytest.raises(TypeError, match="inclusive"):
        surrogate.ATan(inclusive=bad)


@pytest.mark.parametrize("s", [surrogate.Sigmoid(), surrogate.ATan(),
                               surrogate.ATan(spiking=False)], ids=_ids)
@pytest.mark.parametrize("int_dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_input_raises_type_error(s: surrogate.Surrogate, int_dtype: torch.dtype) -> None:
    with pytest.raises(TypeError):
        s(torch.zeros(3, dtype=int_dtype))


def test_non_tensor_input_raises_type_error() -> None:
    with pytest.raises(TypeError):
        surrogate.Sigmoid()([0.1, 0.2])  # type: ignore[arg-type]


# --- shapes, dtypes, devices --------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7,), (5, 3), (4, 2, 3, 5, 5)])
@pytest.mark.parametrize("cls", [surrogate.Sigmoid, surrogate.ATan])
def test_shapes_dtypes_devices(
    cls: type, shape: tuple, dtype: torch.dtype, device: str, gen: torch.Generator
) -> None:
    s = cls()
    x = torch.randn(shape, generator=gen).to(dtype=dtype, device=device)
    g = torch.randn(shape, generator=gen).to(dtype=dtype, device=device)
    out, grad = _spike_grad(s, x, g)
    assert out.shape == shape and out.dtype == dtype and out.device == x.device
    assert grad.dtype == dtype and grad.device == x.device
    assert torch.equal(out.cpu(), (x.cpu() > 0).to(dtype))
    torch.testing.assert_close(grad.cpu(), g.cpu() * _closed_form(s, x.cpu()),
                               rtol=1e-5, atol=1e-6)
