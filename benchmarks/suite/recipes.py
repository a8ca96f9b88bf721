"""Each rule in each host, trained by its paper's recipe or by one common recipe.

The recipe pieces themselves (losses, readout, input filter, warm-up, NA's initialisation and
optimiser constants) are the installed :mod:`spikegrad.recipes`; this module only says which
rule gets which piece in the benchmark.

Neurons (every conv/linear layer of the ``--arch`` network gets one; ``τm = 5`` so ``β = 0.8``,
``θ = 1``, ``τs = 2`` wherever a rule has these constants):

==============  =====================================  ======================================
rule            snntorch                               spikingjelly
==============  =====================================  ======================================
baseline        ``snn.Leaky(beta=0.8,                  ``LIFNode(tau=5, decay_input=False,
                reset_mechanism="zero")`` (atan,        v_reset=0)`` (Sigmoid(alpha=4), reset
                reset detached: the host's defaults)   not detached: the host's defaults)
reset-term      ``ResetTermLeaky(beta=0.8)``            ``ResetTermLIFNode(tau=5)``
na              ``NALeaky(beta=0.8)``                   ``NALIFNode(tau=5)``
bpsa-bpta       ``HTDGLIFLeaky()`` (paper mode)         ``HTDGLIFNode()`` (paper mode)
ttfs            the baseline neuron                     the baseline neuron
multi-strength  ``MultiStrengthLeaky()``                ``MultiStrengthIFNode()``
==============  =====================================  ======================================

The paper recipe (``--recipe paper``) of each rule:

- ``na``: every layer outputs its PSP trace (``tau_s=2``), non-spiking sum pooling ×1.1, the
  image PSP-filtered as input, loss ``½ Σ_t Σ_n (a_out - ε*d)²`` against the trace of the target
  train (the label neuron spikes every step), the authors' AdamW recipe (lr 5e-4, weight decay
  0.01, ExponentialLR 0.985/epoch, gradient norm clip 1, weights clamped to [-4, 4]) and their
  ``kaiming_normal_`` linear layers (RULES.md §3).
- ``reset-term``: the same network and optimiser (the author's framework), hidden layers output
  their trace, the output layer its spikes, and the van Rossum loss
  (``recipes.van_rossum_target_loss``, ``τs = 2``) to the same target train (RULES.md §2).
- ``bpsa-bpta``: a voting output layer (10 neurons per class, averaged), MSE between the
  time-averaged vote and the one-hot label, the first 5 % of the first epoch's steps in warm-up
  (the nodes run as ReLU), max pooling (RULES.md §4).
- ``ttfs``: ``ttfs.ce_temporal_loss()``, prediction = the earliest-spiking output (RULES.md §5).
- ``multi-strength`` and ``baseline``: cross-entropy on the output rate as snntorch's
  ``functional.ce_rate_loss`` defines it (the cross-entropy of the outputs at every step,
  averaged over the steps), max pooling.

The seeds do not give an optimiser for the last four, so they get the snntorch tutorial's Adam
(lr 5e-4). The common recipe (``--recipe common``) gives every rule the same network (spike
outputs, max pooling, the image repeated ``T`` times), the same loss (the rate cross-entropy;
``ttfs`` keeps its loss, since that loss is the rule) and the same optimiser (Adam,
lr 5e-4, no schedule, no clipping), with PyTorch's default initialisation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
from torch import nn

from spikegrad import recipes as pieces
from spikegrad.adapters import network as netlib
from spikegrad.rules import ttfs

RULES = ("baseline", "reset-term", "na", "bpsa-bpta", "ttfs", "multi-strength")
RECIPES = ("paper", "common")
FRAMEWORKS = ("snntorch", "spikingjelly")
TAU_M, BETA, THRESHOLD, TAU_S = 5.0, 0.8, 1.0, pieces.TAU_S
VOTES = pieces.VOTES  # BPSA/BPTA's voting layer: neurons per class


@dataclass(frozen=True)
class Optimiser:
    """An optimiser with its schedule and the per-step clipping/clamping of a recipe."""

    name: str  # "adam" | "adamw"
    lr: float
    weight_decay: float = 0.0
    gamma: float | None = None  # ExponentialLR factor per epoch
    clip_norm: float | None = None
    weight_clamp: float | None = None

    def build(self, params: Iterable[nn.Parameter]
              ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        cls = torch.optim.AdamW if self.name == "adamw" else torch.optim.Adam
        opt = cls(params, lr=self.lr, betas=(0.9, 0.999), weight_decay=self.weight_decay)
        sched = (torch.optim.lr_scheduler.ExponentialLR(opt, self.gamma)
                 if self.gamma is not None else None)
        return opt, sched

    def describe(self) -> str:
        parts = [f"{'AdamW' if self.name == 'adamw' else 'Adam'} lr {self.lr:g}"]
        if self.weight_decay:
            parts.append(f"wd {self.weight_decay:g}")
        if self.gamma is not None:
            parts.append(f"ExponentialLR {self.gamma:g}/epoch")
        if self.clip_norm is not None:
            parts.append(f"clip {self.clip_norm:g}")
        if self.weight_clamp is not None:
            parts.append(f"|w| <= {self.weight_clamp:g}")
        return ", ".join(parts)


NA_OPTIMISER = Optimiser("adamw", pieces.NA_LR, weight_decay=pieces.NA_WEIGHT_DECAY,
                         gamma=pieces.NA_GAMMA, clip_norm=pieces.NA_CLIP_NORM,
                         weight_clamp=pieces.NA_WEIGHT_CLAMP)
TUTORIAL_OPTIMISER = Optimiser("adam", 5e-4)


@dataclass(frozen=True)
class Recipe:
    """How one rule is trained: network outputs, loss, readout, optimiser."""

    rule: str
    name: str  # "paper" | "common"
    hidden_trace: bool  # hidden layers output their PSP trace (tau_s = 2)
    output_trace: bool  # the output layer outputs its PSP trace
    pooling: str  # "max" | "sum1.1"
    input_trace: bool  # PSP-filter the input
    votes: int  # output neurons per class
    loss: str  # "trace-mse" | "van-rossum" | "rate-mse" | "rate-ce" | "ttfs-ce"
    readout: str  # "count" | "first-spike"
    optimiser: Optimiser
    warm_up_fraction: float = 0.0  # of the first epoch's steps, nodes run as ReLU (BPSA)
    na_init: bool = False  # kaiming_normal_ linear layers (the NA authors')

    def describe(self) -> str:
        loss = {"trace-mse": "½Σ(a_out - ε*d)² (trace target)", "van-rossum": "van Rossum",
                "rate-mse": "MSE(rate, one-hot)", "rate-ce": "CE per step, averaged (ce_rate_loss)",
                "ttfs-ce": "ttfs.ce_temporal_loss"}[self.loss]
        extra = [f"{self.votes} votes/class"] if self.votes > 1 else []
        if self.warm_up_fraction:
            extra.append(f"warm-up {self.warm_up_fraction:.0%} of epoch 1")
        return "; ".join([loss, f"{self.pooling} pooling", self.optimiser.describe(), *extra])


_COMMON = Recipe("", "common", False, False, "max", False, 1, "rate-ce", "count",
                 TUTORIAL_OPTIMISER)
_PAPER = {
    "baseline": replace(_COMMON, name="paper"),
    "multi-strength": replace(_COMMON, name="paper"),
    "ttfs": replace(_COMMON, name="paper", loss="ttfs-ce", readout="first-spike"),
    "na": Recipe("", "paper", True, True, "sum1.1", True, 1, "trace-mse", "count",
                 NA_OPTIMISER, na_init=True),
    "reset-term": Recipe("", "paper", True, False, "sum1.1", True, 1, "van-rossum", "count",
                         NA_OPTIMISER, na_init=True),
    "bpsa-bpta": replace(_COMMON, name="paper", votes=VOTES, loss="rate-mse",
                         warm_up_fraction=0.05),
}


def same_as_paper(rule: str) -> bool:
    """Whether ``rule``'s common recipe is its paper recipe (nothing to train twice)."""
    return replace(recipe(rule, "common"), name="paper") == recipe(rule, "paper")


def recipe(rule: str, name: str = "paper") -> Recipe:
    """The recipe ``name`` (``"paper"`` or ``"common"``) of ``rule``."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    if name == "common":
        base = _PAPER["ttfs"] if rule == "ttfs" else _COMMON
        return replace(base, rule=rule, name="common")
    return replace(_PAPER[rule], rule=rule)


def make_neuron(host: str, rule: str, *, trace: bool = False) -> nn.Module:
    """One neuron of ``rule`` for ``host``; ``trace``: its first output is the PSP trace."""
    tau_s = TAU_S if trace else None
    if trace and rule not in ("na", "reset-term"):
        raise ValueError(f"rule {rule!r} has no trace output")
    from spikegrad import neurons

    if host == "snntorch":
        if rule in ("baseline", "ttfs"):
            import snntorch as snn

            return snn.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism="zero")
        return {
            "reset-term": lambda: neurons.ResetTermLeaky(beta=BETA, threshold=THRESHOLD,
                                                         tau_s=tau_s),
            "na": lambda: neurons.NALeaky(beta=BETA, threshold=THRESHOLD, tau_s=tau_s,
                                          reset_mechanism="zero"),
            "bpsa-bpta": lambda: neurons.HTDGLIFLeaky(),
            "multi-strength": lambda: neurons.MultiStrengthLeaky(),
        }[rule]()
    if host != "spikingjelly":
        raise ValueError(f"unknown framework {host!r}; choose from {', '.join(FRAMEWORKS)}")
    if rule in ("baseline", "ttfs"):
        from spikingjelly.activation_based import neuron

        return neuron.LIFNode(tau=TAU_M, decay_input=False, v_threshold=THRESHOLD, v_reset=0.0,
                              step_mode="m")
    return {
        "reset-term": lambda: neurons.ResetTermLIFNode(tau=TAU_M, v_threshold=THRESHOLD,
                                                       step_mode="m", tau_s=tau_s),
        "na": lambda: neurons.NALIFNode(tau=TAU_M, v_threshold=THRESHOLD, step_mode="m",
                                        tau_s=tau_s),
        "bpsa-bpta": lambda: neurons.HTDGLIFNode(step_mode="m"),
        "multi-strength": lambda: neurons.MultiStrengthIFNode(step_mode="m"),
    }[rule]()


def spec_for(arch: str, rec: Recipe, num_classes: int) -> str:
    """The spec of ``arch`` with the recipe's voting layer; checks its class count."""
    layers = netlib.parse_spec(arch)
    last = layers[-1].out_features
    if last != num_classes:
        raise ValueError(f"--arch {arch!r} ends with {last} outputs, but the dataset has "
                         f"{num_classes} classes; end the spec with {num_classes}")
    text = netlib.resolve(arch)
    if rec.votes == 1:
        return text
    head, _, _ = text.rpartition("-")
    return f"{head}-{num_classes * rec.votes}"


def build(rec: Recipe, host: str, arch: str, in_shape: tuple[int, ...], num_classes: int
          ) -> netlib.SpikingNetwork:
    """The ``arch`` network for ``host`` with ``rec``'s neurons, outputs and pooling."""
    spec = spec_for(arch, rec, num_classes)
    n_layers = sum(isinstance(lay, (netlib.Conv, netlib.Linear))
                   for lay in netlib.parse_spec(spec))
    counter = itertools.count()

    def factory() -> nn.Module:
        last = next(counter) == n_layers - 1
        return make_neuron(host, rec.rule, trace=rec.output_trace if last else rec.hidden_trace)

    net = netlib.build_network(spec, host=host, neuron=factory, in_shape=in_shape,
                               pooling=rec.pooling)
    if rec.na_init:
        pieces.na_init_(nn.ModuleList(net.synapses()))
    return net


def encode(rec: Recipe, x: torch.Tensor, T: int, temporal: bool) -> torch.Tensor:
    """The network input ``[T, B, *]``: a static image repeated ``T`` times (direct input), or
    event frames ``[B, T, *]`` made time-major; PSP-filtered where the recipe says so."""
    x_seq = x.transpose(0, 1).contiguous() if temporal else pieces.repeat(x, T)
    return pieces.psp_filter(x_seq, TAU_S) if rec.input_trace else x_seq


def loss_fn(rec: Recipe) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(out [T, B, classes·votes], labels [B])``, computed in float32 with the pieces of
    :mod:`spikegrad.recipes`."""
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if rec.loss == "rate-mse":
            return pieces.voting_mse_loss(out, y, votes=rec.votes)
        out = pieces.vote(out, rec.votes)
        if rec.loss == "ttfs-ce":
            return ttfs.ce_temporal_loss()(out, y)
        if rec.loss == "rate-ce":
            return pieces.rate_ce_loss(out, y)
        if rec.loss == "van-rossum":
            return pieces.van_rossum_target_loss(out, y, tau_s=TAU_S)
        return pieces.trace_target_loss(out, y, tau_s=TAU_S)
    return loss


def predict(rec: Recipe, out: torch.Tensor) -> torch.Tensor:
    """Predicted classes ``[B]`` from the network output."""
    return pieces.predict(out.float(), readout=rec.readout, votes=rec.votes)


set_warm_up = pieces.set_warm_up  # the BPSA/BPTA ReLU warm-up of every node that has one
