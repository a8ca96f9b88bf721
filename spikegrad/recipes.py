"""Each rule's paper recipe as pieces you apply to your own network and training loop.

A gradient rule rarely trains well on its own: the papers pair it with a loss, an input
encoding, an output readout, an initialisation and an optimiser. This module holds those pieces,
host-independent (snntorch and spikingjelly networks alike), composed from the rules in
:mod:`spikegrad.rules` (the equations live there). Outputs are time-major ``[T, B, n]``; labels
are class indices ``[B]``.

==============  ==================================================================================
rule            its paper recipe (RULES.md; the seeds' settings)
==============  ==================================================================================
NA              hidden and output layers output their PSP trace (``tau_s=2``);
                :func:`psp_filter` on the input; :func:`trace_target_loss`; :func:`na_init_`;
                :func:`na_optimiser` with :data:`NA_CLIP_NORM` and :func:`clamp_weights_` after
                every step
reset-term      hidden layers output their trace, the output layer its spikes;
                :func:`psp_filter`; :func:`van_rossum_target_loss`; NA's initialisation and
                optimiser (the author's framework)
BPSA/BPTA       :func:`voting_layer` (10 neurons per class) and :func:`voting_mse_loss`;
                :func:`warm_up` (the nodes run as ReLU) for the first steps
TTFS            :func:`spikegrad.rules.ttfs.ce_temporal_loss`; prediction = earliest spike
                (:func:`predict` with ``readout="first-spike"``)
multi-strength  :func:`rate_ce_loss` (snntorch's ``ce_rate_loss``)
==============  ==================================================================================

Example (NA in a snntorch loop)::

    from spikegrad import neurons, recipes
    lif1, lif2 = neurons.NALeaky(0.8, tau_s=2.0), neurons.NALeaky(0.8, tau_s=2.0)
    recipes.na_init_(net)
    opt, sched = recipes.na_optimiser(net.parameters())
    x_seq = recipes.psp_filter(recipes.repeat(images, T))
    loss = recipes.trace_target_loss(out_trace, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), recipes.NA_CLIP_NORM)
    opt.step(); recipes.clamp_weights_(net)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from spikegrad._checks import check_choice, check_float_tensor, check_number
from spikegrad.rules import reset_term, ttfs

__all__ = [
    "TAU_S", "VOTES", "NA_LR", "NA_WEIGHT_DECAY", "NA_GAMMA", "NA_CLIP_NORM", "NA_WEIGHT_CLAMP",
    "repeat", "psp_filter", "target_train", "trace_target_loss", "van_rossum_target_loss",
    "rate_ce_loss", "voting_mse_loss", "vote", "voting_layer", "predict", "set_warm_up",
    "warm_up", "na_init_", "clamp_weights_", "na_optimiser",
]

#: the PSP time constant of NA's and reset-term's recipes
TAU_S = 2.0
#: output neurons per class of BPSA/BPTA's voting layer
VOTES = 10
#: the NA authors' AdamW learning rate
NA_LR = 5e-4
#: the NA authors' AdamW weight decay
NA_WEIGHT_DECAY = 0.01
#: the NA authors' ExponentialLR factor per epoch
NA_GAMMA = 0.985
#: the NA recipe's gradient-norm clip, every step
NA_CLIP_NORM = 1.0
#: the NA recipe's weight clamp ``[-c, c]``, every step
NA_WEIGHT_CLAMP = 4.0


def _check_labels(labels: torch.Tensor, out: torch.Tensor, classes: int) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dim() != 1:
        raise TypeError("labels must be an integer tensor of class indices, shape [B]")
    if labels.shape[0] != out.shape[1]:
        raise ValueError(f"labels has {labels.shape[0]} entries but the output's batch (dim 1) "
                         f"is {out.shape[1]}; outputs are time-major [T, B, n]")
    del classes  # the range is checked by one_hot / cross_entropy themselves


# --- input ----------------------------------------------------------------------------------------
def repeat(x: torch.Tensor, steps: int) -> torch.Tensor:
    """Direct (analog) input: the same ``x`` at every one of ``steps`` time steps.

    Shape:
        x: ``[B, *]``; output: ``[steps, B, *]`` (a contiguous copy).
    """
    check_float_tensor("x", x)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return x.unsqueeze(0).expand(steps, *x.shape).contiguous()


def psp_filter(x_seq: torch.Tensor, tau_s: float = TAU_S) -> torch.Tensor:
    """The PSP-filtered input of NA's and reset-term's recipes (the trace of RULES.md §2).

    Shape:
        x_seq: ``[T, B, *]``; output: the same.
    """
    return reset_term.trace(x_seq, tau_s)


# --- losses ---------------------------------------------------------------------------------
def target_train(labels: torch.Tensor, steps: int, classes: int,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The target spike train of NA and reset-term: the label neuron spikes at every step.

    Shape:
        labels: ``[B]``; output: ``[steps, B, classes]``.
    """
    onehot = F.one_hot(labels, classes).to(dtype)
    return onehot.expand(steps, -1, -1).contiguous()


def trace_target_loss(out_trace: torch.Tensor, labels: torch.Tensor, *,
                      tau_s: float = TAU_S) -> torch.Tensor:
    """NA's loss ``½ Σ_t Σ_n (a_out[t] - (ε*d)[t])²``, averaged over the batch.

    ``a_out`` is the output layer's PSP trace (``tau_s`` set on its neuron) and ``d`` the
    :func:`target_train`; ``ε*d`` its trace with the same ``tau_s``.

    Shape:
        out_trace: ``[T, B, classes]``; labels: ``[B]``; output: scalar.
    """
    check_float_tensor("out_trace", out_trace, min_dim=3)
    _check_labels(labels, out_trace, out_trace.shape[-1])
    d = target_train(labels, out_trace.shape[0], out_trace.shape[-1], out_trace.dtype)
    return 0.5 * (reset_term.trace(d, tau_s) - out_trace).pow(2).sum(dim=(0, 2)).mean()


def van_rossum_target_loss(spikes: torch.Tensor, labels: torch.Tensor, *,
                           tau_s: float = TAU_S) -> torch.Tensor:
    """Reset-term's loss: :func:`spikegrad.rules.reset_term.van_rossum_loss` between the output
    spikes and the :func:`target_train`, averaged over the batch.

    Shape:
        spikes: ``[T, B, classes]``; labels: ``[B]``; output: scalar.
    """
    check_float_tensor("spikes", spikes, min_dim=3)
    _check_labels(labels, spikes, spikes.shape[-1])
    d = target_train(labels, spikes.shape[0], spikes.shape[-1], spikes.dtype)
    return reset_term.van_rossum_loss(spikes, d, tau_s=tau_s)


def rate_ce_loss(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the output rate as snntorch's ``functional.ce_rate_loss`` defines it:
    the cross-entropy of the outputs at every step, averaged over the steps.

    Shape:
        out: ``[T, B, classes]``; labels: ``[B]``; output: scalar.
    """
    check_float_tensor("out", out, min_dim=3)
    _check_labels(labels, out, out.shape[-1])
    return F.cross_entropy(out.flatten(0, 1), labels.repeat(out.shape[0]))


def vote(out: torch.Tensor, votes: int = VOTES) -> torch.Tensor:
    """The voting readout: the mean of each class's ``votes`` output neurons.

    Shape:
        out: ``[T, B, classes * votes]``; output: ``[T, B, classes]``.
    """
    check_float_tensor("out", out, min_dim=1)
    if not isinstance(votes, int) or votes < 1 or out.shape[-1] % votes:
        raise ValueError(f"votes must be a positive int dividing the output size "
                         f"{out.shape[-1]}, got {votes!r}; build the last layer with "
                         "voting_layer(in_features, classes, votes)")
    return out if votes == 1 else out.unflatten(-1, (-1, votes)).mean(-1)


def voting_mse_loss(out: torch.Tensor, labels: torch.Tensor, *, votes: int = VOTES
                    ) -> torch.Tensor:
    """BPSA/BPTA's loss: MSE between the time-averaged :func:`vote` and the one-hot label.

    Shape:
        out: ``[T, B, classes * votes]``; labels: ``[B]``; output: scalar.
    """
    rate = vote(out, votes).mean(0)
    _check_labels(labels, rate.unsqueeze(0), rate.shape[-1])
    return F.mse_loss(rate, F.one_hot(labels, rate.shape[-1]).to(rate.dtype))


def voting_layer(in_features: int, classes: int, votes: int = VOTES, *, bias: bool = True
                 ) -> nn.Linear:
    """The last synapse of a voting output layer: ``classes * votes`` outputs (BPSA/BPTA)."""
    return nn.Linear(in_features, classes * votes, bias=bias)


def predict(out: torch.Tensor, *, readout: str = "count", votes: int = 1) -> torch.Tensor:
    """Predicted classes ``[B]``: the largest spike count / trace sum (``"count"``) or the
    earliest first spike (``"first-spike"``, TTFS), after the :func:`vote` of ``votes``."""
    check_choice("readout", readout, ("count", "first-spike"))
    out = vote(out, votes)
    if readout == "first-spike":
        return ttfs.first_spike_time(out).argmin(dim=1)
    return out.sum(0).argmax(dim=1)


# --- BPSA/BPTA warm-up ------------------------------------------------------------------------
def set_warm_up(model: nn.Module, on: bool) -> int:
    """Switch the ReLU warm-up of every BPSA/BPTA node in ``model`` (``HTDGLIFLeaky``,
    ``HTDGLIFNode``, nested containers included); returns how many nodes were switched.

    Raises:
        ValueError: ``on=True`` and ``model`` has no node with a warm-up (the call would do
            nothing).
    """
    from spikegrad.rules import bpsta

    nodes = [m for m in model.modules()
             if any(isinstance(getattr(m, a, None), bpsta.HTDGLIF) for a in ("rule", "rule_cfg"))]
    if on and not nodes:
        raise ValueError("set_warm_up: this model has no HTDGLIFLeaky/HTDGLIFNode neuron; the "
                         "ReLU warm-up is BPSA/BPTA's recipe only")
    for m in nodes:
        m.warm_up = bool(on)
    return len(nodes)


@contextlib.contextmanager
def warm_up(model: nn.Module) -> Iterator[nn.Module]:
    """Run the ``with`` block with every BPSA/BPTA node as ReLU (the paper's warm-up).

    For example::

        for step, (x, y) in enumerate(loader):
            with recipes.warm_up(net) if step < 50 else contextlib.nullcontext():
                loss = loss_fn(net(x), y)
                ...
    """
    set_warm_up(model, True)
    try:
        yield model
    finally:
        set_warm_up(model, False)


# --- NA's initialisation and optimiser ----------------------------------------------------------
def na_init_(model: nn.Module) -> int:
    """The NA authors' initialisation: ``kaiming_normal_`` on every ``nn.Linear`` weight (their
    convolutions keep PyTorch's default); returns how many layers were initialised."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for m in layers:
            nn.init.kaiming_normal_(m.weight)
    return len(layers)


def clamp_weights_(model: nn.Module | Iterable[nn.Parameter],
                   bound: float = NA_WEIGHT_CLAMP) -> None:
    """Clamp every parameter to ``[-bound, bound]`` in place (NA's recipe, after each step)."""
    bound = check_number("bound", bound, positive=True)
    params = model.parameters() if isinstance(model, nn.Module) else model
    with torch.no_grad():
        for p in params:
            p.clamp_(-bound, bound)


def na_optimiser(params: Iterable[nn.Parameter], lr: float = NA_LR
                 ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.ExponentialLR]:
    """The NA authors' optimiser: AdamW (weight decay 0.01) and ExponentialLR 0.985 per epoch
    (call ``sched.step()`` once per epoch); clip with :data:`NA_CLIP_NORM` and
    :func:`clamp_weights_` after every step."""
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=NA_WEIGHT_DECAY)
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, NA_GAMMA)
