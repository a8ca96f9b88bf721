"""The harness pieces: synaptic operations against a brute-force count, spike rates of trace
outputs, the recipes' losses against hand-written formulas, the same rule built in both hosts,
and speed mode."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import compare  # noqa: E402
from suite import metrics, recipes, speed, store  # noqa: E402

from spikegrad.adapters import network as netlib  # noqa: E402

pytest.importorskip("snntorch")
pytest.importorskip("spikingjelly")


def _brute_conv_ops(x: torch.Tensor, conv: nn.Conv2d) -> int:
    """Count (non-zero input, weight) pairs by walking every output position and tap."""
    _, c_in, h, w = x.shape
    k, p = conv.kernel_size[0], conv.padding[0]
    h_out, w_out = h + 2 * p - k + 1, w + 2 * p - k + 1
    ops = 0
    for b, i, j in itertools.product(range(x.shape[0]), range(h_out), range(w_out)):
        for o, c, di, dj in itertools.product(range(conv.out_channels), range(c_in), range(k),
                                              range(k)):
            r, q = i + di - p, j + dj - p
            if (0 <= r < h and 0 <= q < w and x[b, c, r, q] != 0
                    and conv.weight[o, c, di, dj] != 0):
                ops += 1
    return ops


@pytest.mark.parametrize("padding", [0, 1])
def test_synaptic_operations_match_a_brute_force_count(padding):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=padding, bias=False)
    lin = nn.Linear(20, 7, bias=False)
    with torch.no_grad():
        conv.weight[0] = 0.0  # a pruned output channel: no effective operations
        lin.weight[:, :5] = 0.0
    spikes = (torch.rand(2, 2, 6, 6, generator=g) > 0.7).float()
    analog = torch.rand(2, 20, generator=g) * (torch.rand(2, 20, generator=g) > 0.5)
    c = metrics.Counters()
    c.synapse_hook(conv, (spikes,))
    c.synapse_hook(lin, (analog,))
    assert c.acs == _brute_conv_ops(spikes, conv)  # binary input: accumulates
    assert c.macs == int((analog[:, 5:] != 0).sum()) * 7  # analog input: multiply-accumulates
    full = nn.Conv2d(2, 3, 3, padding=padding, bias=False)
    nn.init.ones_(full.weight)
    dense = _brute_conv_ops(torch.ones_like(spikes), full) + 2 * 20 * 7  # every pair
    c.samples = 2
    assert c.synops() == {"acs": c.acs / 2, "macs": c.macs / 2, "dense": dense / 2}


def test_spike_rate_of_a_trace_output_counts_its_spikes():
    """A layer that outputs its PSP trace is counted by the spikes behind the trace."""
    from spikegrad import neurons

    cur = torch.rand(6, 4, 9, generator=torch.Generator().manual_seed(1)) * 2.5
    spk = netlib.run_neuron(neurons.ResetTermLeaky(beta=0.8), cur)
    traced = neurons.ResetTermLeaky(beta=0.8, tau_s=2.0)
    a = netlib.run_neuron(traced, cur)
    c = metrics.Counters()
    c.observe(0, traced, a)
    assert 0 < spk.mean() < 1
    assert c.spike_rate[0] == pytest.approx(float(spk.mean()), abs=1e-6)


def _trace(s: torch.Tensor, tau: float) -> torch.Tensor:
    a, out = torch.zeros_like(s[0]), []
    for t in range(s.shape[0]):
        a = (1 - 1 / tau) * a + s[t] / tau
        out.append(a)
    return torch.stack(out)


def test_losses_and_readouts_follow_their_definitions():
    g = torch.Generator().manual_seed(2)
    T, B, n = 4, 3, 10
    out = (torch.rand(T, B, n, generator=g) > 0.6).float()
    y = torch.tensor([1, 7, 3])
    d = torch.nn.functional.one_hot(y, n).float().expand(T, -1, -1)
    # NA: ½ Σ_t Σ_n (a_out - ε*d)², averaged over the batch
    na = recipes.recipe("na")
    expected = 0.5 * ((out - _trace(d, 2.0)) ** 2).sum() / B
    assert recipes.loss_fn(na)(out, y).item() == pytest.approx(expected.item(), rel=1e-6)
    # reset-term: van Rossum = ½ Σ (ε*d - ε*s)²
    rt = recipes.recipe("reset-term")
    expected = 0.5 * ((_trace(d, 2.0) - _trace(out, 2.0)) ** 2).sum() / B
    assert recipes.loss_fn(rt)(out, y).item() == pytest.approx(expected.item(), rel=1e-6)
    # BPSA: MSE between the time-averaged vote (10 per class) and the one-hot label
    bp = recipes.recipe("bpsa-bpta")
    votes = (torch.rand(T, B, n * 10, generator=g) > 0.5).float()
    rate = votes.reshape(T, B, n, 10).mean(-1).mean(0)
    assert recipes.loss_fn(bp)(votes, y).item() == pytest.approx(
        ((rate - d[0]) ** 2).mean().item(), rel=1e-6)
    assert torch.equal(recipes.predict(bp, votes), rate.argmax(1))
    # baseline: the rate cross-entropy, as snntorch's own ce_rate_loss; TTFS: earliest spike
    import snntorch.functional as SF

    base = recipes.recipe("baseline")
    assert recipes.loss_fn(base)(out, y).item() == pytest.approx(
        SF.ce_rate_loss()(out, y).item(), rel=1e-6)
    first = torch.zeros(T, 2, 3)
    first[2, 0, 1] = first[3, 0, 2] = first[1, 1, 2] = first[3, 1, 0] = 1
    assert recipes.predict(recipes.recipe("ttfs"), first).tolist() == [1, 2]


def test_recipes_differ_where_the_papers_do():
    assert recipes.recipe("na").pooling == "sum1.1" and recipes.recipe("na").input_trace
    assert recipes.recipe("ttfs", "common").loss == "ttfs-ce"  # the loss is the rule
    common = {recipes.recipe(r, "common").loss for r in recipes.RULES if r != "ttfs"}
    assert common == {"rate-ce"}
    assert [r for r in recipes.RULES if recipes.same_as_paper(r)] == [
        "baseline", "ttfs", "multi-strength"]
    assert recipes.spec_for("na-mnist", recipes.recipe("bpsa-bpta"), 10).endswith("-300-100")
    with pytest.raises(ValueError, match="ends with 10 outputs.*2 classes"):
        recipes.spec_for("na-mnist", recipes.recipe("na"), 2)
    with pytest.raises(ValueError, match="unknown rule"):
        recipes.recipe("nope")
    with pytest.raises(ValueError, match="no trace output"):
        recipes.make_neuron("snntorch", "bpsa-bpta", trace=True)


@pytest.mark.parametrize("rule", ["reset-term", "na", "bpsa-bpta", "multi-strength"])
def test_a_rule_trains_the_same_in_both_hosts(rule):
    """Same seed, same spec, same input: the snntorch and spikingjelly builds of a rule's paper
    recipe give the same outputs, loss and weight gradients."""
    rec = recipes.recipe(rule)
    nets = []
    for host in ("snntorch", "spikingjelly"):
        torch.manual_seed(3)
        net = recipes.build(rec, host, "4C3-P2-24-10", (1, 10, 10), 10)
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(4.0)  # an active network, so that gradients flow everywhere
        nets.append(net)
    x = torch.rand(5, 1, 10, 10, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 3, 9, 3, 5])
    outs, grads = [], []
    for net in nets:
        out = net(recipes.encode(rec, x, 4, temporal=False))
        recipes.loss_fn(rec)(out, y).backward()
        outs.append(out.detach())
        grads.append([p.grad for p in net.parameters()])
    assert outs[0].abs().sum() > 0 and all(g.abs().sum() > 0 for g in grads[0])
    torch.testing.assert_close(outs[0], outs[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("framework", ["snntorch", "spikingjelly"])
@pytest.mark.parametrize("what", ["layer", "train-step"])
def test_speed_measures_every_rule(framework, what):
    for rule in speed.SPEED_RULES:
        row = speed.measure(speed.Case(framework, rule, what, 16, 2, 3, "cpu"), 0.01)
        assert 0 < row["step_ms_forward"] < 1e4 and 0 < row["step_ms_backward"] < 1e4
        assert row["timed_calls"] >= speed.MIN_CALLS
        assert row["peak_mem_mb"] is None and row["impl"]
        if rule == "native":
            assert row["neuron_class"] == ("Leaky" if framework == "snntorch" else "LIFNode")


def test_speed_mode_end_to_end_and_the_cpu_cap(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(speed, "COPY_MIB", 8)
    out = tmp_path / "s"
    argv = ["--mode", "speed", "--quick", "--framework", "snntorch", "--rules", "na",
            "--min-run-time", "0.01", "--out", str(out), "--device", "cpu"]
    assert compare.main(argv) == 0
    rows = store.Store(out).rows
    assert {(r["rule"], r["what"], r["T"]) for r in rows} == {
        (rule, what, T) for rule in ("native", "na") for what in ("layer", "train-step")
        for T in (4, 8)}
    assert all(set(store.KEYS) <= set(r) and r["status"] == "ok" for r in rows)
    md = (out / "summary.md").read_text()
    assert "| 1.00x |" in md  # native against itself
    # every row carries the run's copy bandwidth; the neuron-alone NA rows the fused bytes
    assert len({r["copy_gbps"] for r in rows}) == 1 and rows[0]["copy_mib"] == 8
    for r in rows:
        alone = r["what"] == "layer" and r["rule"] == "na"
        assert (r.get("gbps") is not None) == alone and (r.get("of_copy") is not None) == alone
    assert "Memory bandwidth (cpu" in md and "(speed against the memory limit" in md
    assert (out / "speed.png").exists()
    assert compare.main(argv) == 0  # rerun: everything already measured
    assert len(store.Store(out).rows) == len(rows)
    # the Open Neuromorphic workload is recorded as skipped on a CPU, with the reason
    s = store.Store(tmp_path / "cap")
    case = speed.Case("snntorch", "na", "train-step", 16384, 16, 500, "cpu")
    assert speed.run(case, s, min_run_time=0.01) == "skipped"
    assert s.rows[0]["status"] == "skipped" and "GPU only" in s.rows[0]["error"]
    capsys.readouterr()


def test_speed_tutorial_network_cases():
    """The tutorial-network set: eager and compiled, every rule against the host's LIF, left out
    of --quick 'all' runs (compiling takes minutes on a CPU) and alone with 'tutorial'."""
    tut = list(speed.cases(["snntorch"], ["na"], "cpu", quick=False, which="tutorial"))
    assert {(c.what, c.rule, c.T, c.batch, c.neurons) for c in tut} == {
        (w, r, 25, 128, 1000 if "neuron" in w else 784)
        for w in ("tutorial", "tutorial-compiled", "tutorial-neuron", "tutorial-neuron-compiled")
        for r in ("native", "na")}
    quick = list(speed.cases(["snntorch"], ["na"], "cpu", quick=True, which="all"))
    assert quick and not any(c.what.startswith("tutorial") for c in quick)
    for fw in ("snntorch", "spikingjelly"):
        row = speed.measure(speed.Case(fw, "reset-term", "tutorial", 784, 2, 2, "cpu"), 0.01)
        assert row["step_ms_forward"] > 0 and row["neuron_class"].startswith("ResetTerm")
        row = speed.measure(speed.Case(fw, "reset-term", "tutorial-neuron-compiled", 8, 2, 3,
                                       "cpu"), 0.01)
        assert row["step_ms_forward"] > 0 and row["warm_up_s"] > 0


def test_speed_times_the_backward_itself_in_the_same_calls(monkeypatch):
    """Forward and backward are each timed, in the same calls (a fake clock here): the backward
    is no longer the difference of two separately timed medians, which a loaded machine made
    negative and the table printed as a clamped "backward 0.000"."""
    now = [0.0]
    monkeypatch.setattr(speed.time, "perf_counter", lambda: now[0])
    calls = []

    def forward():
        calls.append("f")
        now[0] += 0.010 if len(calls) < 6 else 0.030  # forward slows down half-way
        return len(calls)

    def backward(out):
        calls.append(("b", out))
        now[0] += 0.002

    f_ms, b_ms, n = speed.phases(forward, backward, 0.0, torch.device("cpu"))
    assert n == speed.MIN_CALLS and len(calls) == 2 * n
    assert calls[:4] == ["f", ("b", 1), "f", ("b", 3)]  # each backward gets its forward's result
    assert b_ms == pytest.approx(2.0) and f_ms == pytest.approx(10.0)


def test_the_copy_bandwidth_and_the_fused_bytes(monkeypatch):
    """The copy counts read + write bytes; a neuron-alone row of a spikegrad rule gets the fused
    kernels' bytes per neuron-step and the bandwidth they imply; other rows none."""
    from spikegrad.rules import traffic

    bw = speed.bandwidth("cpu", mib=4)
    assert bw["copy_blocks"] == speed.COPY_BLOCKS and bw["copy_mib"] == 4
    assert bw["copy_gbps"] == pytest.approx(2 * 4 * 2**20 / (bw["copy_ms"] * 1e-3) / 1e9)
    assert bw["copy_gbps_best"] >= bw["copy_gbps"] > 0
    case = speed.Case("spikingjelly", "reset-term", "layer", 16, 2, 3, "cpu")
    cols = speed.fused_traffic(case, {"step_ms_forward": 1.0, "step_ms_backward": 2.0}, 10.0)
    per = traffic.bytes_per_neuron_step("reset-term", 3, 32)
    steps = 3 * 2 * 16
    assert cols["fused_bytes_per_neuron_step"] == per["total"]
    assert cols["gbps_forward"] == pytest.approx(per["forward"] * steps / 1e-3 / 1e9)
    assert cols["gbps_backward"] == pytest.approx(per["backward"] * steps / 2e-3 / 1e9)
    assert cols["gbps"] == pytest.approx(per["total"] * steps / 3e-3 / 1e9)
    assert cols["of_copy"] == pytest.approx(cols["gbps"] / 10.0)
    for other in (speed.Case("spikingjelly", "native", "layer", 16, 2, 3, "cpu"),
                  speed.Case("spikingjelly", "na", "train-step", 16, 2, 3, "cpu"),
                  speed.Case("snntorch", "na", "tutorial", 784, 2, 3, "cpu")):
        assert speed.fused_traffic(other, {"step_ms_forward": 1.0,
                                           "step_ms_backward": 1.0}, 10.0) == {}
    tut = speed.Case("snntorch", "na", "tutorial-neuron-compiled", 1000, 2, 3, "cpu")
    assert speed.fused_traffic(tut, {"step_ms_forward": 1.0, "step_ms_backward": 1.0}, 1.0)
