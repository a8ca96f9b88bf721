"""The watches that say when a rule's own limits stop a layer from learning.

BPSA/BPTA (``SilenceWatch``): a layer silent through a whole training sequence warns once,
naming the warm-up; a layer with too many neurons silent for every sample of
``DEAD_WINDOW`` consecutive training sequences (or, in a narrow/output layer, any such neuron)
warns once, naming the voting layer and the warm-up; an active layer, a layer whose silent
neurons come back within a window, inference and the warm-up itself never warn.
Multi-strength: a layer with too many neurons outside the straight-through window (potential
below 0 at every step of every sample of a window) warns once, naming ``max_strength=1`` and
the rate cross-entropy; a silent layer whose potentials stay in the window does not. No watch
reads a device value on the per-step path or does anything while ``torch.compile`` traces.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings

import pytest
import torch
from torch import nn

from spikegrad import recipes
from spikegrad.adapters import silence
from spikegrad.adapters.silence import DEAD_WINDOW, SilenceWatch

pytest.importorskip("snntorch")
pytest.importorskip("spikingjelly")

T, B, N = 4, 3, 5


def snntorch_seq(lif, x):
    mem, outs = lif.init_leaky(), []
    for t in range(x.shape[0]):
        out, mem = lif(x[t], mem)
        outs.append(out)
    return torch.stack(outs)


def sj_seq(node, x):
    from spikingjelly.activation_based import functional

    out = node(x) if node.step_mode == "m" else torch.stack([node(xt) for xt in x])
    functional.reset_net(node)
    return out


def end_seq(node):
    """Close the last sequence the way the next one would (each host's reset)."""
    if hasattr(node, "reset_mem"):
        node.reset_mem()
    else:
        from spikingjelly.activation_based import functional
        functional.reset_net(node)


def bpsa_cases():
    from spikegrad import neurons

    yield "HTDGLIFLeaky", lambda: neurons.HTDGLIFLeaky(), snntorch_seq
    yield "HTDGLIFNode-s", lambda: neurons.HTDGLIFNode(), sj_seq
    yield "HTDGLIFNode-m", lambda: neurons.HTDGLIFNode(step_mode="m"), sj_seq


def ms_cases():
    from spikegrad import neurons

    yield "MultiStrengthLeaky", lambda **kw: neurons.MultiStrengthLeaky(**kw), snntorch_seq
    yield "MultiStrengthIFNode-s", lambda **kw: neurons.MultiStrengthIFNode(**kw), sj_seq
    yield "MultiStrengthIFNode-m", (lambda **kw: neurons.MultiStrengthIFNode(step_mode="m",
                                                                             **kw)), sj_seq


BPSA = list(bpsa_cases())
MS = list(ms_cases())


@contextlib.contextmanager
def no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def spikegrad_warnings(record):
    return [w for w in record if issubclass(w.category, RuntimeWarning)]


# --- BPSA: a silent layer --------------------------------------------------------------------
@pytest.mark.parametrize("name,make,seq", BPSA, ids=[c[0] for c in BPSA])
def test_silent_training_sequence_warns_once(name, make, seq):
    node = make()
    quiet = torch.full((T, B, N), 0.01, requires_grad=True)  # never reaches θ = 0.5
    loud = torch.full((T, B, N), 2.0, requires_grad=True)
    with no_warning():
        seq(node, loud)
        seq(node, loud)  # active layers: no warning
        with torch.no_grad():
            seq(node, quiet.detach())  # inference records nothing
            seq(node, quiet.detach())
        with recipes.warm_up(nn.Sequential(node)):
            seq(node, quiet)  # ReLU warm-up: no rule runs
            seq(node, quiet)
    with pytest.warns(RuntimeWarning, match=r"no spike during a whole training sequence.*"
                                            r"recipes\.warm_up"):
        seq(node, quiet)
        seq(node, quiet)
        if node.__class__.__name__ == "HTDGLIFLeaky":
            node.reset_mem()
    with no_warning():
        seq(node, quiet)  # once only
        seq(node, quiet)


# --- BPSA: dead neurons -----------------------------------------------------------------------
def _mask_input(n, dead, steps=T, batch=B):
    """Inputs where the first ``dead`` of ``n`` neurons never fire, the others always."""
    x = torch.full((steps, batch, n), 2.0)
    x[..., :dead] = 0.0
    return x.requires_grad_()


@pytest.mark.parametrize("name,make,seq", BPSA, ids=[c[0] for c in BPSA])
def test_mostly_dead_layer_warns_once_with_the_recipe(name, make, seq):
    node = make()
    x = _mask_input(200, 190)  # 95 % of a wide layer never fire
    with no_warning():
        for _ in range(DEAD_WINDOW + 1):  # one window (and the start of the next): not yet
            seq(node, x)
    with pytest.warns(RuntimeWarning) as record:
        for _ in range(DEAD_WINDOW + 1):  # the second window in a row over the limit
            seq(node, x)
        end_seq(node)
    msgs = [str(w.message) for w in spikegrad_warnings(record)]
    assert len(msgs) == 1, msgs
    assert "190 of this layer's 200 neurons (95 %)" in msgs[0]
    assert "voting_layer" in msgs[0] and "recipes.warm_up" in msgs[0]
    with no_warning():
        for _ in range(3 * DEAD_WINDOW):  # once only
            seq(node, x)


@pytest.mark.parametrize("name,make,seq", BPSA, ids=[c[0] for c in BPSA])
def test_partly_dead_wide_layer_does_not_warn(name, make, seq):
    node = make()
    x = _mask_input(200, 170)  # 85 %: below DEAD_FRACTION (as a CSNN hidden layer that still
    # learns within 2 points of the host in one epoch)
    with no_warning():
        for _ in range(4 * DEAD_WINDOW):
            seq(node, x)


@pytest.mark.parametrize("name,make,seq", BPSA, ids=[c[0] for c in BPSA])
def test_narrow_layer_with_a_dead_neuron_warns(name, make, seq):
    node = make()
    x = _mask_input(10, 2)  # an output layer: 2 of 10 classes never fire
    with pytest.warns(RuntimeWarning, match=r"2 of this layer's 10 neurons.*never predicted"):
        for _ in range(3 * DEAD_WINDOW):
            seq(node, x)


def test_neurons_silent_in_some_sequences_only_are_alive():
    """A neuron silent for a whole batch but firing in another sequence of the window is not
    dead (the check is per window, not per batch)."""
    w = SilenceWatch("X", "fix")
    with no_warning():
        for i in range(4 * DEAD_WINDOW):
            out = torch.zeros(B, 100)
            out[:, (i % 5) * 20:(i % 5 + 1) * 20] = 1.0  # 80 % silent in every batch
            w.observe(out)
            w.boundary()
    assert not w.warned


def test_dead_check_needs_two_windows_in_a_row():
    w = SilenceWatch("X", "fix", window=2)
    live, dead = torch.ones(B, 100), torch.zeros(B, 100)
    dead[:, :5] = 1.0  # 95 % dead, but the layer is not silent
    with no_warning():
        for out in (dead, dead, live, live, dead, dead, live, live):  # alternating windows
            w.observe(out)
            w.boundary()
    with pytest.warns(RuntimeWarning, match="95 of this layer's 100"):
        for out in (dead, dead, dead, dead):
            w.observe(out)
            w.boundary()


def test_per_neuron_over_conv_positions_and_sequences():
    w = SilenceWatch("X", "fix", window=2)
    out = torch.zeros(T, B, 2, 3, 3)
    out[:, :, 0] = 1.0  # channel 1 silent at every position: 9 of 18 neurons
    with pytest.warns(RuntimeWarning, match="9 of this layer's 18 neurons"):
        for _ in range(4):
            w.observe(out, sequence=True)
            w.boundary()


def test_shape_change_inside_a_sequence_does_not_raise():
    w = SilenceWatch("X", "fix")
    with no_warning():
        w.observe(torch.ones(B, N))
        w.observe(torch.ones(2 * B, N))  # one instance serving two layers: totals only
        w.observe(torch.ones(B, N))
        w.boundary()
        w.observe(torch.ones(B, N + 1))  # a new shape after a reset: a new window
        w.boundary()
    assert not w.warned


def test_watch_pickles_without_its_sums():
    w = SilenceWatch("X", "fix it")
    w.observe(torch.ones(3))
    w2 = pickle.loads(pickle.dumps(w))
    assert w2._acc is None and w2._alive is None and not w2._read.busy and not w2.warned


# --- multi-strength ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,make,seq", MS, ids=[c[0] for c in MS])
def test_multistrength_neurons_without_gradient_warn_once_naming_max_strength(name, make, seq):
    node = make()
    x = torch.full((T, B, 10), 2.5)
    x[..., :3] = -1.0  # 3 of 10 outputs below 0 at every step: outside the STE window
    x.requires_grad_()
    with pytest.warns(RuntimeWarning, match=r"3 of this layer's 10 neurons.*below 0.*"
                                            r"max_strength=1.*rate_ce_loss") as rec:
        for _ in range(3 * DEAD_WINDOW):
            seq(node, x)
        end_seq(node)
    assert len(spikegrad_warnings(rec)) == 1
    with no_warning():
        for _ in range(3 * DEAD_WINDOW):  # once only
            seq(node, x)


@pytest.mark.parametrize("name,make,seq", MS, ids=[c[0] for c in MS])
def test_multistrength_silent_but_inside_the_window_does_not_warn(name, make, seq):
    below = torch.full((T, B, 200), 0.2, requires_grad=True)  # h in [0, τ): no spike, gradient
    strong = torch.full((T, B, 10), 5.5, requires_grad=True)  # strength 5: inside the window
    capped_out = torch.full((T, B, 10), 9.0, requires_grad=True)
    with no_warning():
        for x in (below, strong):
            node = make()
            for _ in range(3 * DEAD_WINDOW):
                seq(node, x)
        with torch.no_grad():  # inference records nothing
            node = make()
            for _ in range(3 * DEAD_WINDOW):
                seq(node, -strong.detach())
    # with a cap, a potential above τ (D + 1) at every step is outside the window too
    with pytest.warns(RuntimeWarning, match="10 of this layer's 10 neurons"):
        node = make(max_strength=1)
        for _ in range(3 * DEAD_WINDOW):
            seq(node, capped_out)


@pytest.mark.parametrize("name,make,seq", MS, ids=[c[0] for c in MS])
def test_multistrength_output_neurons_that_never_spike_warn(name, make, seq):
    """In a narrow (output) layer, neurons that never spike are classes never predicted, even
    where their potential stays inside the gradient window: 3 of 10 warn (as the CSNN's output
    layer that does not learn); 2 of 10 do not (seen early in networks that learn)."""
    def inputs(silent):
        x = torch.full((T, B, 10), 2.5)
        x[..., :silent] = 0.2  # outputs in [0, τ): gradient, but no spike
        return x.requires_grad_()

    with no_warning():
        node = make()
        for _ in range(3 * DEAD_WINDOW):
            seq(node, inputs(2))
    with pytest.warns(RuntimeWarning, match=r"3 of this layer's 10 neurons emitted no spike.*"
                                            r"classes are never predicted.*max_strength=1"):
        node = make()
        for _ in range(3 * DEAD_WINDOW):
            seq(node, inputs(3))


def test_multistrength_window_matches_the_ste():
    from spikegrad.rules import multistrength

    for cap in (None, 2):
        cfg = multistrength.MultiStrength(threshold=0.5, max_strength=cap)
        h = torch.tensor([-1.0, -0.01, 0.0, 0.3, 0.5, 1.2, 1.49, 1.5, 4.0], requires_grad=True)
        theta, v = multistrength.step(h, torch.zeros_like(h), cfg)
        (g,) = torch.autograd.grad(theta.sum(), h)
        assert torch.equal(silence.multistrength_window(theta, v, 0.5, cap), g != 0), cap


# --- no synchronisation, nothing under torch.compile ---------------------------------------------
@pytest.mark.parametrize("watch", [SilenceWatch("X", "fix"), SilenceWatch("X", None)],
                         ids=["bpsa", "multistrength"])
def test_observe_reads_nothing_on_the_host(watch, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("observe read a tensor value on the host")

    for attr in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, attr, refuse)
    for _ in range(5):
        watch.observe(torch.rand(B, N))


@pytest.mark.parametrize("make", [lambda: SilenceWatch("X", "fix", window=1),
                                  lambda: SilenceWatch("X", None, window=1)],
                         ids=["bpsa", "multistrength"])
def test_no_op_while_compiling(make):
    watch = make()

    def step(x):
        watch.observe(x * 0.0)
        watch.boundary()
        return x + 1

    compiled = torch.compile(step, fullgraph=True, backend="eager")
    with no_warning():
        for _ in range(4):
            compiled(torch.ones(B, N))
    assert watch._acc is None and not watch.warned


def test_cuda_path_reads_only_completed_copies():
    """On CUDA the reductions travel in a pinned buffer; the check reads them only once the
    copy's event has completed (here: at a later reset)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    w = SilenceWatch("X", "fix")
    quiet = torch.zeros(B, N, device="cuda")
    with pytest.warns(RuntimeWarning, match="no spike during a whole training sequence"):
        for _ in range(5):
            w.observe(quiet)
            w.boundary()
            torch.cuda.synchronize()


@pytest.mark.parametrize("watch", [SilenceWatch("X", "fix", window=2),
                                   SilenceWatch("X", None, window=2)],
                         ids=["bpsa", "multistrength"])
def test_cuda_watch_never_synchronises(watch):
    """torch's sync debug mode raises on any host synchronisation inside observe/boundary."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    out = torch.rand(B, 100, device="cuda").round()
    window = torch.ones(B, 100, device="cuda", dtype=torch.bool)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(8):
            for _ in range(T):
                watch.observe(out, gradient=window)
            watch.boundary()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_constants_are_exported():
    assert silence.DEAD_FRACTION == 0.9 and silence.NARROW == 64
    assert silence.MULTISTRENGTH_SILENT == 0.3
    assert "max_strength=1" in silence.MULTISTRENGTH_FIX
