"""TTFS losses: snntorch parity (non-negative targets), hand-computed fixes, errors, pickling."""

from __future__ import annotations

import pickle

import pytest
import torch

from spikegrad.rules import ttfs

SF = pytest.importorskip("snntorch.functional")

T, B, N = 9, 6, 5
SEEDS = (0, 1, 2)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def spikes(seed: int, steps: int = T, batch: int = B, outputs: int = N, dtype=torch.float32):
    """Random binary record with silent neurons, multi-spike neurons and last-step spikes."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(steps, batch, outputs, generator=g) < 0.25).to(dtype)
    s[:, 0, 0] = 0  # silent
    s[:, 1, 1] = 0
    s[-1, 1, 1] = 1  # spikes only at the last step
    s[:, 2, 2] = 0
    s[1::2, 2, 2] = 1  # many spikes
    s[:, 3, :] = 0  # a silent sample
    return s


def labels(seed: int, batch: int = B, outputs: int = N) -> torch.Tensor:
    return torch.randint(0, outputs, (batch,), generator=torch.Generator().manual_seed(seed + 7))


def value_and_grad(fn, spk: torch.Tensor, seed: int):
    """Loss value and d(random upstream use of the loss)/d spk_rec."""
    x = spk.clone().requires_grad_(True)
    loss = fn(x)
    up = torch.rand(loss.shape, generator=torch.Generator().manual_seed(seed + 99)) + 0.5
    (loss * up.to(loss)).sum().backward()
    return loss.detach(), x.grad


def assert_parity(ours, theirs, spk: torch.Tensor, seed: int) -> None:
    v1, g1 = value_and_grad(ours, spk, seed)
    v2, g2 = value_and_grad(theirs, spk, seed)
    assert v1.shape == v2.shape
    torch.testing.assert_close(v1, v2.to(v1.dtype))
    torch.testing.assert_close(g1, g2)
    assert g1.abs().sum() > 0


# ----------------------------------------------------------------------------- first_spike_time


def test_first_spike_time_by_hand():
    s = torch.zeros(5, 2, 3)
    s[[2, 4], 0, 0] = 1  # first at 2
    s[0, 0, 1] = 1  # first at 0
    s[4, 1, 0] = 1  # only at the last step -> 4
    s[[1, 2, 3], 1, 1] = 0.5  # graded values count as spikes -> 1
    # (0, 2) and (1, 2) are silent -> T-1 = 4
    x = s.clone().requires_grad_(True)
    t = ttfs.first_spike_time(x)
    torch.testing.assert_close(t, torch.tensor([[2.0, 0.0, 4.0], [4.0, 1.0, 4.0]]))
    g = torch.arange(1.0, 7.0).view(2, 3)
    t.backward(g)
    want = torch.zeros(5, 2, 3)
    for (b, n), step in {(0, 0): 2, (0, 1): 0, (0, 2): 4, (1, 0): 4, (1, 1): 1, (1, 2): 4}.items():
        want[step, b, n] = -g[b, n]
    torch.testing.assert_close(x.grad, want)


@pytest.mark.parametrize("seed", SEEDS)
def test_first_spike_time_matches_snntorch(seed):
    s = spikes(seed)
    assert_parity(
        ttfs.first_spike_time, lambda x: SF.loss.SpikeTime.FirstSpike.apply(x, "cpu"), s, seed
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_first_spike_time_any_trailing_shape(dtype):
    s = spikes(3, dtype=dtype).reshape(T, B, 1, N).expand(T, B, 2, N).contiguous()
    t = ttfs.first_spike_time(s)
    assert t.shape == (B, 2, N) and t.dtype == dtype
    torch.testing.assert_close(t[:, 0], ttfs.first_spike_time(spikes(3, dtype=dtype)))


# ----------------------------------------------------------------------------- ce parity


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("inverse", ["negate", "reciprocal"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_ce_temporal_parity(seed, inverse, reduction, weighted):
    weight = (
        torch.rand(N, generator=torch.Generator().manual_seed(seed)) + 0.1 if weighted else None
    )
    kw = dict(inverse=inverse, reduction=reduction, weight=weight)
    y = labels(seed)
    ours, theirs = ttfs.ce_temporal_loss(**kw), SF.ce_temporal_loss(**kw)
    assert_parity(lambda x: ours(x, y), lambda x: theirs(x, y), spikes(seed), seed)


def test_ce_temporal_float64_parity():
    s, y = spikes(4, dtype=torch.float64), labels(4)
    ours, theirs = ttfs.ce_temporal_loss("reciprocal"), SF.ce_temporal_loss("reciprocal")
    assert_parity(lambda x: ours(x, y), lambda x: theirs(x, y), s, 4)


# ----------------------------------------------------------------------------- mse parity

ON_OFF = [(0, T - 1), (2, 6), (7, 1), (3, 3), (0.5, 4.5)]  # non-negative; both snntorch branches


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("on_off", ON_OFF)
@pytest.mark.parametrize("tolerance", [0, 1, 2.5])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_temporal_labels_parity(seed, on_off, tolerance, reduction):
    kw = dict(on_target=on_off[0], off_target=on_off[1], tolerance=tolerance, reduction=reduction)
    y = labels(seed)
    ours, theirs = ttfs.mse_temporal_loss(**kw), SF.mse_temporal_loss(**kw)
    assert_parity(lambda x: ours(x, y), lambda x: theirs(x, y), spikes(seed), seed)


@pytest.mark.filterwarnings("ignore:Using a target size")  # snntorch broadcasts shared times
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("tolerance", [0, 2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mse_temporal_times_parity(seed, shared, tolerance, reduction, dtype):
    g = torch.Generator().manual_seed(seed + 3)
    times = torch.randint(0, T, (N,) if shared else (B, N), generator=g).float()
    times[..., 0] += 0.5  # non-integer times too
    kw = dict(target_is_time=True, tolerance=tolerance, reduction=reduction)
    ours, theirs = ttfs.mse_temporal_loss(**kw), SF.mse_temporal_loss(**kw)
    assert_parity(
        lambda x: ours(x, times),
        lambda x: theirs(x, times.clone()),
        spikes(seed, dtype=dtype),
        seed,
    )


def snntorch_per_sample(kw: dict, x: torch.Tensor, y: torch.Tensor, reduction: str):
    """snntorch's weighted mse with batches of one (its batched weight fails unless B == N)."""
    fn = SF.mse_temporal_loss(reduction="none", **kw)
    loss = torch.cat([fn(x[:, b : b + 1], y[b : b + 1]) for b in range(x.size(1))])
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("tolerance", [0, 2])
def test_mse_temporal_weight_parity(seed, reduction, tolerance):
    weight = torch.rand(N, generator=torch.Generator().manual_seed(seed)) + 0.1
    kw = dict(on_target=1, off_target=6, tolerance=tolerance, weight=weight)
    y = labels(seed)
    ours = ttfs.mse_temporal_loss(reduction=reduction, **kw)
    assert_parity(
        lambda x: ours(x, y), lambda x: snntorch_per_sample(kw, x, y, reduction), spikes(seed), seed
    )
    if reduction == "none":  # with a batch of one snntorch's own batched call agrees directly
        one = SF.mse_temporal_loss(reduction="none", **kw)
        s = spikes(seed)[:, :1]
        assert_parity(lambda x: ours(x, y[:1]), lambda x: one(x, y[:1]), s, seed)


def snntorch_per_neuron(x, target_times, tolerance, reduction, sample_weight=None):
    """snntorch's multi-spike loss on one neuron at a time, where its cross-neuron zeroing of
    time steps cannot act; the [F, B, N] results are then reduced like a batched call."""
    fn = SF.mse_temporal_loss(
        target_is_time=True, multi_spike=True, tolerance=tolerance, reduction="none"
    )
    loss = torch.stack(
        [
            torch.stack(
                [
                    fn(x[:, b : b + 1, n : n + 1], target_times[:, b : b + 1, n : n + 1].clone())
                    for n in range(x.size(2))
                ],
                dim=-1,
            )
            for b in range(x.size(1))
        ],
        dim=1,
    ).reshape(target_times.shape)
    if sample_weight is not None:
        loss = loss * sample_weight.view(1, -1, 1)
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("tolerance", [0, 1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_temporal_multi_spike_times_parity(seed, count, tolerance, reduction):
    g = torch.Generator().manual_seed(seed + 5)
    times = torch.randint(0, T, (count, B, N), generator=g).float().sort(0).values
    ours = ttfs.mse_temporal_loss(
        target_is_time=True, multi_spike=True, tolerance=tolerance, reduction=reduction
    )
    assert_parity(
        lambda x: ours(x, times),
        lambda x: snntorch_per_neuron(x, times, tolerance, reduction),
        spikes(seed),
        seed,
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_mse_temporal_multi_spike_labels_parity(seed, weighted, reduction):
    on, off = (0, 2, 5), (3, 6, 8)
    weight = torch.rand(N, generator=torch.Generator().manual_seed(seed)) + 0.1
    y = labels(seed)
    hot = torch.nn.functional.one_hot(y, N).bool()
    times = torch.where(hot, torch.tensor(on).view(3, 1, 1), torch.tensor(off).view(3, 1, 1))
    ours = ttfs.mse_temporal_loss(
        on_target=on, off_target=off, multi_spike=True, reduction=reduction,
        weight=weight if weighted else None,
    )  # fmt: skip
    sw = weight[y] if weighted else None
    assert_parity(
        lambda x: ours(x, y),
        lambda x: snntorch_per_neuron(x, times.float(), 0, reduction, sw),
        spikes(seed),
        seed,
    )
    if not weighted:  # snntorch's own label conversion, one neuron per call
        theirs = SF.mse_temporal_loss(on_target=on, off_target=off, multi_spike=True)
        s = spikes(seed)[:, :1, :1]
        one = ttfs.mse_temporal_loss(on_target=on, off_target=off, multi_spike=True)
        zero = torch.zeros(1, dtype=torch.long)
        assert_parity(lambda x: one(x, zero), lambda x: theirs(x, zero), s, seed)


def test_multi_spike_own_spikes_only():
    """snntorch zeroes whole time steps; here each neuron's k-th spike is its own."""
    s = torch.zeros(6, 1, 2)
    s[[0, 2], 0, 0] = 1
    s[[2, 4], 0, 1] = 1
    fn = ttfs.mse_temporal_loss(target_is_time=True, multi_spike=True, reduction="none")
    x = s.clone().requires_grad_(True)
    loss = fn(x, torch.zeros(3, 1, 2))
    torch.testing.assert_close(
        loss * 36, torch.tensor([[[0.0, 4.0]], [[4.0, 16.0]], [[25.0, 25.0]]])
    )
    loss.sum().backward()  # third slot of both neurons: T-1
    want = torch.zeros(6, 1, 2)
    want[[0, 2, 5], 0, 0] = -torch.tensor([0.0, 4.0, 10.0]) / 36
    want[[2, 4, 5], 0, 1] = -torch.tensor([4.0, 8.0, 10.0]) / 36
    torch.testing.assert_close(x.grad, want)


# ----------------------------------------------------------------------------- negative targets


def hand_mse(s: torch.Tensor, tau: torch.Tensor):
    """Independent loop: value and gradient of mean(((t - tau)/T)^2) with the sign estimator."""
    steps, batch, outputs = s.shape
    value, grad = 0.0, torch.zeros_like(s)
    for b in range(batch):
        for n in range(outputs):
            hits = [t for t in range(steps) if s[t, b, n] != 0]
            t = hits[0] if hits else steps - 1
            err = (t - float(tau[b, n])) / steps
            value += err * err / (batch * outputs)
            grad[t, b, n] = -2 * err / steps / (batch * outputs)
    return torch.tensor(value), grad


@pytest.mark.parametrize("seed", SEEDS)
def test_default_mse_negative_off_target_is_last_step(seed):
    s, y = spikes(seed), labels(seed)
    tau = torch.full((B, N), float(T - 1))
    tau[torch.arange(B), y] = 0.0
    want_v, want_g = hand_mse(s, tau)
    x = s.clone().requires_grad_(True)
    loss = ttfs.mse_temporal_loss()(x, y)
    loss.backward()
    torch.testing.assert_close(loss, want_v)
    torch.testing.assert_close(x.grad, want_g)
    # equal to snntorch given the non-negative spelling, unequal to its (all-zero) defaults
    torch.testing.assert_close(loss, SF.mse_temporal_loss(off_target=T - 1)(s, y))
    # snntorch's defaults target step 0 everywhere (as on_target=off_target=0 would): a different
    # gradient from ours
    host = SF.mse_temporal_loss()
    zero = SF.mse_temporal_loss(on_target=0, off_target=0)
    _, host_g = value_and_grad(lambda x: host(x, y), s, seed)
    _, zero_g = value_and_grad(lambda x: zero(x, y), s, seed)
    torch.testing.assert_close(host_g, zero_g)
    assert not torch.allclose(
        host_g, value_and_grad(lambda x: ttfs.mse_temporal_loss()(x, y), s, seed)[1]
    )


def test_negative_on_and_off_targets_and_times():
    s, y = spikes(5), labels(5)
    tau = torch.full((B, N), float(T - 3))
    tau[torch.arange(B), y] = float(T - 1)
    neg = tau - T
    before = neg.clone()
    want_v, want_g = hand_mse(s, tau)
    for fn, targets in (  # on > off: the branch where snntorch clamps to zero
        (ttfs.mse_temporal_loss(on_target=-1, off_target=-3), y),
        (ttfs.mse_temporal_loss(target_is_time=True), neg),
    ):
        x = s.clone().requires_grad_(True)
        loss = fn(x, targets)
        loss.backward()
        torch.testing.assert_close(loss, want_v)
        torch.testing.assert_close(x.grad, want_g)
    torch.testing.assert_close(neg, before)  # caller's targets untouched


def test_negative_multi_spike_targets():
    s, y = spikes(6), labels(6)
    fn = ttfs.mse_temporal_loss(on_target=(0, -4), off_target=(-2, -1), multi_spike=True)
    ref = ttfs.mse_temporal_loss(on_target=(0, T - 4), off_target=(T - 2, T - 1), multi_spike=True)
    assert_parity(lambda x: fn(x, y), lambda x: ref(x, y), s, 6)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: ttfs.ce_temporal_loss(inverse="foo"), "inverse"),
        (lambda: ttfs.ce_temporal_loss(reduction="avg"), "reduction"),
        (lambda: ttfs.mse_temporal_loss(reduction="avg"), "reduction"),
        (lambda: ttfs.mse_temporal_loss(tolerance=-1), "tolerance"),
        (lambda: ttfs.mse_temporal_loss(multi_spike=True), "on_target"),
        (
            lambda: ttfs.mse_temporal_loss(on_target=(1, 2), off_target=(3,), multi_spike=True),
            "same",
        ),
        (lambda: ttfs.mse_temporal_loss(target_is_time=True, on_target=3), "target_is_time"),
        (lambda: ttfs.mse_temporal_loss(target_is_time=True, weight=torch.ones(N)), "weight"),
        (lambda: ttfs.ce_temporal_loss(weight=torch.ones(2, 2)), "weight"),
    ],
)
def test_bad_options(make, arg):
    with pytest.raises(ValueError, match=arg) as info:
        make()
    if arg in ("inverse", "reduction"):
        assert "mean" in str(info.value) or "negate" in str(info.value)


LOSSES = [ttfs.ce_temporal_loss(), ttfs.mse_temporal_loss()]


@pytest.mark.parametrize("fn", LOSSES)
def test_bad_inputs(fn):
    s, y = spikes(0), labels(0)
    with pytest.raises(TypeError, match="spk_rec"):
        fn(s.long(), y)
    with pytest.raises(ValueError, match="spk_rec"):
        fn(s[0], y)
    with pytest.raises(ValueError, match="targets"):
        fn(s, y[:-1])
    with pytest.raises(TypeError, match="targets"):
        fn(s, y.float())
    with pytest.raises(ValueError, match="targets"):
        fn(s, y + N)
    with pytest.raises(TypeError, match="spk_rec"):
        ttfs.first_spike_time(s.int())
    with pytest.raises(ValueError, match="weight"):
        type(fn)(weight=torch.ones(N + 1))(s, y)


def test_bad_time_targets():
    fn = ttfs.mse_temporal_loss(target_is_time=True)
    with pytest.raises(ValueError, match="targets"):
        fn(spikes(0), torch.zeros(B + 1, N))
    with pytest.raises(ValueError, match="targets"):
        fn = ttfs.mse_temporal_loss(target_is_time=True, multi_spike=True)
        fn(spikes(0), torch.zeros(2, B + 1, N))


# ----------------------------------------------------------------------------- pickling, devices


@pytest.mark.parametrize(
    "fn",
    [
        ttfs.ce_temporal_loss("reciprocal", "sum", torch.rand(N)),
        ttfs.mse_temporal_loss(on_target=(1, 2), off_target=(5, 6), multi_spike=True, tolerance=1),
        ttfs.mse_temporal_loss(weight=torch.rand(N), reduction="none"),
    ],
)
def test_pickle_round_trip(fn):
    back = pickle.loads(pickle.dumps(fn))
    assert type(back) is type(fn) and back.__name__ == fn.__name__
    s, y = spikes(1), labels(1)
    torch.testing.assert_close(back(s, y), fn(s, y))


@CUDA
@pytest.mark.parametrize(
    "fn",
    [
        ttfs.ce_temporal_loss(weight=torch.rand(N)),
        ttfs.mse_temporal_loss(tolerance=1, weight=torch.rand(N)),
        ttfs.mse_temporal_loss(on_target=(0, 3), off_target=(-2, -1), multi_spike=True),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(fn, dtype):
    s, y = spikes(2, dtype=dtype), labels(2)
    v1, g1 = value_and_grad(lambda x: fn(x, y), s, 2)
    v2, g2 = value_and_grad(lambda x: fn(x, y.cuda()), s.cuda(), 2)
    torch.testing.assert_close(v2.cpu(), v1)
    torch.testing.assert_close(g2.cpu(), g1)


def test_output_may_be_edited_in_place():
    x = spikes(0).requires_grad_(True)
    t = ttfs.first_spike_time(x)
    t /= T
    t.sum().backward()
    torch.testing.assert_close(x.grad.sum(), torch.tensor(-B * N / T))


def test_nan_spike_record_gives_nan_not_a_silent_neuron():
    """A NaN upstream must not look like a healthy, silent neuron (review finding)."""
    spk = torch.zeros(10, 4, 3)
    spk[2, 0, 0] = 1.0
    spk[:, 1, 1] = float("nan")
    spk.requires_grad_()
    times = ttfs.first_spike_time(spk)
    assert torch.isnan(times[1, 1]) and times[0, 0] == 2 and times[1, 0] == 9
    loss = ttfs.ce_temporal_loss()(spk, torch.tensor([0, 2, 1, 2]))
    assert torch.isnan(loss)
    loss.backward()  # no crash on the NaN entry's index


@pytest.mark.parametrize("make, targets", [
    (lambda: ttfs.mse_temporal_loss(target_is_time=True), torch.full((4, 3), 50.0)),
    (lambda: ttfs.mse_temporal_loss(on_target=100), torch.tensor([0, 2, 1, 2])),
    (lambda: ttfs.mse_temporal_loss(off_target=-11), torch.tensor([0, 2, 1, 2])),
])
def test_unreachable_target_times_raise(make, targets):
    """With T = 10 a neuron can only spike at steps 0..9 (review finding)."""
    spk = (torch.rand(10, 4, 3, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    with pytest.raises(ValueError, match=r"\[0, T\)"):
        make()(spk, targets)
