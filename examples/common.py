"""What every example shares, whatever the host: the options, Fashion-MNIST from the local copy,
each rule's paper recipe as the lines you add to your own loop, the loop and the result line.

The host modules (``snntorch_tutorial/tutorial.py``, ``spikingjelly_csnn/csnn.py``) hold the
networks; the per-rule scripts next to them say which neuron goes in and which recipe applies.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib.util
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn

from spikegrad import recipes

REPO = Path(__file__).resolve().parents[1]
WARM_UP_FRACTION = 0.05  # BPSA/BPTA: the nodes run as ReLU for the first 5 % of epoch 1's steps

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (out [T, B, n], labels [B])
Predict = Callable[[torch.Tensor], torch.Tensor]  # out [T, B, n] -> classes [B]


# --- data -------------------------------------------------------------------------------------
def _benchmark_datasets():
    """benchmarks/datasets.py, imported by path (it finds the local Fashion-MNIST copy)."""
    name = "spikegrad_benchmark_datasets"
    if name not in sys.modules:
        sys.path.insert(0, str(REPO / "benchmarks"))  # for its sibling data_formats.py
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "datasets.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


@functools.lru_cache(maxsize=2)
def _load_split(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # the plain torchvision call: any script can load this root the same way
    ds = torchvision.datasets.FashionMNIST(root, train=train, download=False)
    return ds.data.float().div(255.0), ds.targets  # [N, 28, 28] in [0, 1], labels [N]


def fashion_mnist(data_dir: str | None, train_images: int, test_images: int):
    """``((x_train, y_train), (x_test, y_test), source)``: the first images of each split.

    The copy is found offline (``--data-dir``, then ``$SPIKEGRAD_DATA``, then the Debian package
    ``/usr/share/datasets/fashion-mnist``) and unpacked once into a torchvision root.
    """
    datasets = _benchmark_datasets()
    found = datasets.locate_fashion_mnist(data_dir, download=False)  # DatasetNotFound if none
    root = str(found.root)
    (x_train, y_train), (x_test, y_test) = _load_split(root, True), _load_split(root, False)
    return ((x_train[:train_images], y_train[:train_images]),
            (x_test[:test_images], y_test[:test_images]), found.source)


# --- each rule's paper recipe (spikegrad.recipes): what --recipe adds to the host's loop -------
@dataclass
class Recipe:
    """What a recipe changes in the training loop; ``None`` keeps the host's own."""

    loss: Loss | None = None
    predict: Predict | None = None
    encode: Callable[[torch.Tensor], torch.Tensor] = lambda x_seq: x_seq  # the input [T, B, *]
    optimiser: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # stepped once per epoch
    context: Callable[[int], contextlib.AbstractContextManager] = (
        lambda step: contextlib.nullcontext())  # around the forward pass of training step `step`
    after_backward: Callable[[], object] = lambda: None  # e.g. gradient clipping
    after_step: Callable[[], object] = lambda: None  # e.g. the weight clamp
    notes: list[str] = field(default_factory=list)


def na_recipe(net: nn.Module, steps_per_epoch: int) -> Recipe:
    """NA: trace outputs (the neurons' ``tau_s``), PSP-filtered input, the trace-target loss,
    the authors' initialisation, AdamW, clipping and the weight clamp."""
    recipes.na_init_(net)
    opt, sched = recipes.na_optimiser(net.parameters())
    return Recipe(
        loss=recipes.trace_target_loss, encode=recipes.psp_filter, optimiser=opt,
        scheduler=sched,
        after_backward=lambda: nn.utils.clip_grad_norm_(net.parameters(), recipes.NA_CLIP_NORM),
        after_step=lambda: recipes.clamp_weights_(net))


def reset_term_recipe(net: nn.Module, steps_per_epoch: int) -> Recipe:
    """Reset-term: NA's recipe (the author's framework) with spike outputs and the van Rossum
    loss to the target train (the hidden layers output their traces: the neurons' ``tau_s``)."""
    rec = na_recipe(net, steps_per_epoch)
    rec.loss = recipes.van_rossum_target_loss
    return rec


def bpsa_bpta_recipe(net: nn.Module, steps_per_epoch: int) -> Recipe:
    """BPSA/BPTA: the voting output layer (built by the host with ``votes=recipes.VOTES``), the
    voting MSE loss and readout, and the ReLU warm-up for the first steps."""
    warm_steps = max(1, round(WARM_UP_FRACTION * steps_per_epoch))
    return Recipe(
        loss=recipes.voting_mse_loss,
        predict=lambda out: recipes.predict(out, votes=recipes.VOTES),
        context=lambda step: recipes.warm_up(net) if step < warm_steps
        else contextlib.nullcontext(),
        notes=[f"{warm_steps} warm-up steps"])


def ttfs_recipe(net: nn.Module, steps_per_epoch: int) -> Recipe:
    """TTFS: read out the earliest-spiking class (the loss is the rule itself)."""
    return Recipe(predict=lambda out: recipes.predict(out, readout="first-spike"))


def rate_ce_recipe(net: nn.Module, steps_per_epoch: int) -> Recipe:
    """Multi-strength: cross-entropy on the output rate (snntorch's ``ce_rate_loss``)."""
    return Recipe(loss=recipes.rate_ce_loss)


# --- the host, the options, the loop --------------------------------------------------------------
@dataclass(frozen=True)
class Host:
    """A host's example network and its own training choices."""

    name: str
    build: Callable[..., nn.Module]  # build(neuron, votes, args) -> network, out [T, B, n]
    loss: Loss
    predict: Predict
    image_shape: tuple[int, ...]  # one image as the network takes it
    T: int
    batch_size: int
    lr: float
    options: Callable[[argparse.ArgumentParser], None] = lambda p: None
    describe: Callable[[argparse.Namespace], str] = lambda args: ""


def parse(host: Host, rule: str, argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=f"rule {rule} in the {host.name} network, on "
                                            "Fashion-MNIST; prints one result line")
    p.add_argument("--recipe", action="store_true",
                   help="apply the rule's paper recipe (spikegrad.recipes)")
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=host.batch_size)
    p.add_argument("--T", type=int, default=host.T, help="time steps per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None,
                   help="a directory with the Fashion-MNIST files (else $SPIKEGRAD_DATA, then "
                        "the Debian package's copy)")
    p.add_argument("--neuron-option", action="append", default=[], metavar="NAME=VALUE",
                   help="a keyword for the rule's spikegrad neuron, e.g. max_strength=1 or "
                        "reset_mechanism=subtract (the setting a spikegrad warning names); "
                        "VALUE is a Python literal or a plain string; repeatable")
    host.options(p)
    args = p.parse_args(argv)
    try:
        args.neuron_options = dict(_option(o) for o in args.neuron_option)
    except ValueError as exc:
        p.error(str(exc))
    if min(args.train_images, args.test_images, args.epochs, args.batch_size, args.T) < 1:
        p.error("--train-images, --test-images, --epochs, --batch-size and --T must be >= 1")
    return args


def _option(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise ValueError(f"--neuron-option takes NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value  # a plain string, e.g. reset_mechanism=subtract


@contextlib.contextmanager
def _neuron_options(options: dict[str, object]) -> Iterator[None]:
    """While a rule script builds its neurons, ``spikegrad.neurons.<Class>(...)`` gets
    ``options`` as extra keywords (the scripts look the classes up at call time)."""
    if not options:
        yield
        return
    from spikegrad import neurons
    saved = {name: getattr(neurons, name) for name in neurons.__all__}
    try:
        for name, cls in saved.items():
            setattr(neurons, name, functools.partial(cls, **options))
        yield
    finally:
        for name, cls in saved.items():
            setattr(neurons, name, cls)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return iter(order.split(batch_size))


def _synapses(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def run(host: Host, rule: str, neuron: Callable[[bool, bool], nn.Module], *,
        loss: Loss | None = None, recipe: Callable[[nn.Module, int], Recipe] | None = None,
        votes: int = 1, argv: list[str] | None = None) -> dict[str, object]:
    """Train ``rule`` in ``host``'s network and print one result line; returns the result.

    Args:
        neuron: ``neuron(output, recipe)`` returns a fresh neuron for one layer (``output``:
            the output layer).
        loss: the rule's loss where the rule is a loss (TTFS); ``None``: the host's.
        recipe: ``recipe(net, steps_per_epoch)``, applied with ``--recipe``.
        votes: output neurons per class with ``--recipe`` (BPSA/BPTA's voting layer).
    """
    args = parse(host, rule, argv)
    try:
        (x_train, y_train), (x_test, y_test), source = fashion_mnist(
            args.data_dir, args.train_images, args.test_images)
    except Exception as exc:  # the benchmark's DatasetNotFound says what to install
        if type(exc).__name__ != "DatasetNotFound":
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    with _neuron_options(args.neuron_options):
        net = host.build(lambda output: neuron(output, args.recipe),
                         votes if args.recipe else 1, args)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    rec = recipe(net, steps_per_epoch) if args.recipe and recipe else Recipe()
    opt = rec.optimiser or torch.optim.Adam(net.parameters(), lr=host.lr, betas=(0.9, 0.999))
    loss_fn = rec.loss or loss or host.loss
    predict = rec.predict or host.predict
    gen = torch.Generator().manual_seed(args.seed)
    step, losses = 0, []
    net.train()
    for _ in range(args.epochs):
        for idx in _batches(len(x_train), args.batch_size, gen):
            x = x_train[idx].reshape(-1, *host.image_shape)
            x_seq = rec.encode(recipes.repeat(x, args.T))  # direct input: the image every step
            with rec.context(step):
                batch_loss = loss_fn(net(x_seq), y_train[idx])
            opt.zero_grad()
            batch_loss.backward()
            rec.after_backward()
            opt.step()
            rec.after_step()
            losses.append(batch_loss.detach())
            step += 1
        if rec.scheduler is not None:
            rec.scheduler.step()
    # the gradient of the last step at every synapse (the first one is behind every neuron)
    weight_grads = [float(m.weight.grad.norm()) if m.weight.grad is not None else 0.0
                    for m in _synapses(net)]
    train_s = time.perf_counter() - start
    net.eval()
    correct = 0
    with torch.no_grad():
        for idx in torch.arange(len(x_test)).split(500):
            x_seq = rec.encode(recipes.repeat(x_test[idx].reshape(-1, *host.image_shape),
                                              args.T))
            correct += int((predict(net(x_seq)) == y_test[idx]).sum())
    result = {
        "rule": rule, "host": host.name, "recipe": args.recipe,
        "neuron_options": args.neuron_options,
        "test_acc": 100.0 * correct / len(x_test), "correct": correct,
        "final_loss": float(torch.stack(losses[-5:]).mean()),
        "finite": bool(torch.isfinite(torch.stack(losses)).all()),
        "weight_grads": weight_grads, "train_s": train_s,
        "total_s": time.perf_counter() - start, "source": source, "steps": step,
    }
    recipe_note = ("on" + (f" ({', '.join(rec.notes)})" if rec.notes else "")
                   if args.recipe and recipe else "on (nothing to add)" if args.recipe else "off")
    print(f"result: rule={rule} host={host.name} recipe={recipe_note} "
          f"test_acc={result['test_acc']:.2f}% ({correct}/{len(x_test)}) "
          f"final_loss={result['final_loss']:.4g} finite={result['finite']} "
          f"min_weight_grad={min(weight_grads):.3g} train_s={train_s:.1f} "
          f"total_s={result['total_s']:.1f} | {len(x_train)} train images, {args.epochs} "
          f"epoch(s) of {step} steps, batch {args.batch_size}, T={args.T}, seed {args.seed}"
          f"{host.describe(args)}"
          + "".join(f", {k}={v!r}" for k, v in args.neuron_options.items())
          + f"; data: {source}")
    return result


def example(host: Host, module: str, rule: str, neuron: Callable[[bool, bool], nn.Module],
            **kwargs) -> Callable[[list[str] | None], dict[str, object]]:
    """A rule script's ``main(argv=None)`` (see :func:`run`); runs it at once when ``module``
    (the script's ``__name__``) is ``"__main__"``, i.e. when the script is executed."""
    def main(argv: list[str] | None = None) -> dict[str, object]:
        return run(host, rule, neuron, argv=argv, **kwargs)

    if module == "__main__":
        main()
    return main


__all__ = ["Host", "Recipe", "bpsa_bpta_recipe", "example", "fashion_mnist", "na_recipe",
           "rate_ce_recipe", "reset_term_recipe", "run", "ttfs_recipe"]
