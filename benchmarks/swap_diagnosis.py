"""Per-layer evidence for a rule swapped into a host network at a small budget: why does it
learn less than the host's own neuron?

Three host networks on real Fashion-MNIST, the rule default-constructed unless an option says
otherwise, ``--steps`` training steps (200), seed 0, then test accuracy on ``--test-images``:

* ``sj_mlp``: a spikingjelly MLP 784-100-10, multi-step mode, ``layer.Linear`` + node twice,
  direct input repeated T = 4 times, rate MSE to the one-hot label (as the CSNN example), Adam
  lr 1e-3, batch 64; host node ``IFNode(surrogate_function=ATan())``.
* ``csnn``: ``examples/spikingjelly_csnn/csnn.py`` (16 channels), Adam lr 2e-3, batch 64;
  ``--swap hidden`` keeps the host's output node, ``--swap all`` replaces every node.
* ``tutorial``: ``examples/snntorch_tutorial/tutorial.py`` (784-1000-10, T = 25,
  ``ce_rate_loss``, Adam lr 5e-4, batch 128); both layers get the rule's neuron.

Recorded per spiking layer at steps 0, 1, 2, 5, 10, 20, 50, 100 and the last one (and averaged
over the first 20 and the last 20 steps): the spike rate (mean output per neuron and step), the
*silent* fraction (sample-neuron pairs with no spike in the whole sequence), the *dead* fraction
(neurons silent for every sample of the batch), the *saturated* fraction (pairs that spike at
every step; multi-strength: pairs with a strength above 1 at some step, and the largest
strength), the gradient norms at the node's output and input (spikingjelly's
``monitor.GradOutputMonitor`` / ``GradInputMonitor``; tensor hooks in the snntorch per-step loop)
and the fraction of input elements that receive a nonzero gradient, and each synapse's weight
gradient norm. HTDGLIF also reports the mean BPSA gain ``1/h`` at its spikes (h recomputed from
the node's input by ``spikingjelly.activation_based.monitor.InputMonitor``). Warnings the
neurons emit are captured and listed.

    OMP_NUM_THREADS=1 nice python benchmarks/swap_diagnosis.py --case sj_mlp --rule htdglif
    OMP_NUM_THREADS=1 nice python benchmarks/swap_diagnosis.py --suite \\
        --out benchmarks/results/swap_diagnosis_raw.md     # every case of the evidence file
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "examples"), str(REPO / "examples" / "spikingjelly_csnn"),
                str(REPO / "examples" / "snntorch_tutorial")]
import common  # noqa: E402  (examples/common.py: the data)

RECORD_AT = (0, 1, 2, 5, 10, 20, 50, 100)
WINDOW = 20  # steps: "dead over a window" = silent for every sample of W consecutive steps


# --- the neurons --------------------------------------------------------------------------------
def sj_node(rule: str, opts: dict) -> nn.Module:
    from spikingjelly.activation_based import neuron, surrogate

    from spikegrad import neurons
    if rule == "host":
        return neuron.IFNode(surrogate_function=surrogate.ATan(), **opts)
    cls = {"htdglif": neurons.HTDGLIFNode, "multistrength": neurons.MultiStrengthIFNode,
           "na": neurons.NALIFNode, "reset_term": neurons.ResetTermLIFNode}[rule]
    return cls(**opts)


def snn_neuron(rule: str, opts: dict) -> nn.Module:
    import snntorch as snn

    from spikegrad import neurons
    if rule == "host":
        return snn.Leaky(beta=0.95, **opts)
    cls = {"htdglif": neurons.HTDGLIFLeaky, "multistrength": neurons.MultiStrengthLeaky,
           "na": neurons.NALeaky, "reset_term": neurons.ResetTermLeaky}[rule]
    if rule in ("na", "reset_term"):
        opts = {"beta": 0.95, **opts}
    return cls(**opts)


# --- the networks ------------------------------------------------------------------------------
def build(case: str, rule: str, swap: str, opts: dict, channels: int, votes: int = 1
          ) -> tuple[nn.Module, dict]:
    if case == "sj_mlp":
        from spikingjelly.activation_based import functional, layer

        class MLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(
                    layer.Flatten(), layer.Linear(784, 100, bias=False),
                    sj_node(rule, opts),
                    layer.Linear(100, 10 * votes, bias=False),
                    sj_node(rule, opts) if swap == "all" else sj_node("host", {}))
                functional.set_step_mode(self, "m")

            def forward(self, x_seq):
                functional.reset_net(self)
                return self.net(x_seq)
        return MLP(), dict(T=4, batch=64, lr=1e-3, shape=(1, 28, 28), loss="mse")
    if case == "csnn":
        import csnn as host

        def make(output):
            return sj_node(rule, opts) if (swap == "all" or not output) else sj_node("host", {})
        return host.CSNN(make, channels, 10 * votes), dict(T=4, batch=64, lr=2e-3,
                                                           shape=(1, 28, 28), loss="mse")
    if case == "tutorial":
        import tutorial as host
        return (host.TutorialNet(lambda output: snn_neuron(rule, opts), 10 * votes),
                dict(T=25, batch=128, lr=5e-4, shape=(784,), loss="ce_rate"))
    raise ValueError(case)


def spiking_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    from spikingjelly.activation_based import neuron
    try:
        import snntorch as snn
        kinds: tuple[type, ...] = (neuron.BaseNode, snn.SpikingNeuron)
    except ImportError:  # pragma: no cover
        kinds = (neuron.BaseNode,)
    return [(n, m) for n, m in net.named_modules() if isinstance(m, kinds)]


def synapses(net: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


# --- the records --------------------------------------------------------------------------------
class Recorder:
    """Per spiking layer: the output sequence [T, B, ...], the input sequence, the gradient at
    the output and at the input, for one training step."""

    def __init__(self, net: nn.Module, host: str) -> None:
        self.layers = spiking_layers(net)
        self.host = host
        self.clear()
        self.handles = []
        if host == "sj":
            from spikingjelly.activation_based import monitor
            kinds = tuple({type(m) for _, m in self.layers})
            self.out_mon = monitor.OutputMonitor(net, kinds, lambda y: y.detach())
            self.in_mon = monitor.InputMonitor(net, kinds, lambda x: x.detach())
            self.gout_mon = monitor.GradOutputMonitor(net, kinds, lambda g: g.detach())
            self.gin_mon = monitor.GradInputMonitor(net, kinds, lambda g: g.detach())
        else:  # snntorch: per-step calls; tensor hooks for the gradients
            for name, m in self.layers:
                self.handles.append(m.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            x = inputs[0]
            self.steps[name]["out"].append(out.detach())
            self.steps[name]["in"].append(x.detach())
            if out.requires_grad:
                t = len(self.steps[name]["out"]) - 1
                out.register_hook(lambda g, n=name, t=t: self._grad(n, "gout", t, g))
            if x.requires_grad:
                t = len(self.steps[name]["in"]) - 1
                x.register_hook(lambda g, n=name, t=t: self._grad(n, "gin", t, g))
        return hook

    def _grad(self, name, key, t, g):
        self.steps[name][key][t] = g.detach()

    def clear(self) -> None:
        self.steps = {n: {"out": [], "in": [], "gout": {}, "gin": {}} for n, _ in self.layers}
        if self.host == "sj" and hasattr(self, "out_mon"):
            for mon in (self.out_mon, self.in_mon, self.gout_mon, self.gin_mon):
                mon.clear_recorded_data()

    def sequences(self) -> dict[str, dict[str, torch.Tensor | None]]:
        res = {}
        for name, _ in self.layers:
            if self.host == "sj":
                out = self.out_mon[name][-1]
                x = self.in_mon[name][-1]
                gout = self.gout_mon[name][-1] if self.gout_mon[name] else None
                gin = self.gin_mon[name][-1] if self.gin_mon[name] else None
            else:
                rec = self.steps[name]
                out, x = torch.stack(rec["out"]), torch.stack(rec["in"])
                T = len(rec["out"])

                def stack(d, like, T=T):
                    if not d:
                        return None
                    return torch.stack([d.get(t, torch.zeros_like(like[t])) for t in range(T)])
                gout, gin = stack(rec["gout"], out), stack(rec["gin"], x)
            res[name] = {"out": out, "in": x, "gout": gout, "gin": gin}
        return res


def bpsa_gain(x_seq: torch.Tensor, module: nn.Module) -> float:
    """Mean of 1/h at the spikes of an HTDGLIF layer (paper mode), h recomputed from its input."""
    cfg = getattr(module, "rule_cfg", None) or getattr(module, "rule", None)
    if cfg is None or getattr(cfg, "mode", None) != "paper":
        return float("nan")
    v = torch.zeros_like(x_seq[0])
    total, count = 0.0, 0
    for x in x_seq:
        h = cfg.decay * v + torch.relu(x)
        fired = h >= cfg.threshold
        total += float((1.0 / h[fired]).sum())
        count += int(fired.sum())
        v = h * (~fired)
    return total / count if count else float("nan")


def layer_stats(seq: dict, module: nn.Module) -> dict[str, float]:
    out = seq["out"].float()
    T, B = out.shape[:2]
    o = out.reshape(T, B, -1)
    fired_any = (o > 0).any(0)  # [B, n]
    stats = {
        "alive": fired_any.any(0),  # per neuron: fired for some sample (dropped from the JSON)
        "rate": float(o.mean()),
        "silent": float((~fired_any).float().mean()),
        "dead": float((~fired_any.any(0)).float().mean()),
        "saturated": float((o > 0).all(0).float().mean()),
        "max_out": float(o.max()),
        "multi": float((o > 1).any(0).float().mean()),
        "mean_fired": float(o.sum() / (o > 0).sum().clamp_min(1)),
        "in_pos": float((seq["in"] > 0).float().mean()),
    }
    for key, g in (("gout", seq["gout"]), ("gin", seq["gin"])):
        stats[key] = float(g.norm()) if g is not None else float("nan")
    stats["gin_nonzero"] = (float((seq["gin"] != 0).float().mean())
                            if seq["gin"] is not None else float("nan"))
    if "HTDGLIF" in type(module).__name__:
        stats["inv_h"] = bpsa_gain(seq["in"], module)
    return stats


# --- training -------------------------------------------------------------------------------------
def loss_fn(kind: str, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if kind == "mse":
        rate = out.mean(0)
        return F.mse_loss(rate, F.one_hot(labels, rate.shape[-1]).to(rate.dtype))
    return F.cross_entropy(out.flatten(0, 1), labels.repeat(out.shape[0]))  # ce_rate_loss


def diagnose(case: str, rule: str, swap: str = "all", steps: int = 200, seed: int = 0,
             opts: dict | None = None, warm_up_steps: int = 0, lr: float | None = None,
             channels: int = 16, test_images: int = 2000, quiet: bool = False,
             votes: int = 1) -> dict:
    from spikegrad import recipes
    opts = dict(opts or {})
    torch.manual_seed(seed)
    net, cfg = build(case, rule, swap, opts, channels, votes)
    if votes > 1:  # BPSA/BPTA's recipe: the voting layer, its MSE and readout
        cfg["loss"] = "voting"
    if lr is not None:
        cfg["lr"] = lr
    (x_train, y_train), (x_test, y_test), _ = common.fashion_mnist(
        None, steps * cfg["batch"], test_images)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    rec = Recorder(net, "snn" if case == "tutorial" else "sj")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x_train), generator=gen).split(cfg["batch"])
    history, caught, windows = [], [], {}
    start = time.perf_counter()
    net.train()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for step, idx in enumerate(order[:steps]):
            x = recipes.repeat(x_train[idx].reshape(-1, *cfg["shape"]), cfg["T"])
            rec.clear()
            ctx = recipes.warm_up(net) if step < warm_up_steps else contextlib.nullcontext()
            with ctx:
                out = net(x)
                loss = (recipes.voting_mse_loss(out, y_train[idx], votes=votes)
                        if votes > 1 else loss_fn(cfg["loss"], out, y_train[idx]))
            opt.zero_grad()
            loss.backward()
            seqs = rec.sequences()
            row = {"step": step, "loss": float(loss),
                   "layers": {n: layer_stats(seqs[n], m) for n, m in rec.layers},
                   "wgrad": {n: (float(m.weight.grad.norm()) if m.weight.grad is not None
                                 else 0.0) for n, m in synapses(net)}}
            history.append(row)
            for n, _ in rec.layers:  # neurons silent for every sample of the last W steps
                alive = row["layers"][n].pop("alive")
                win = windows.setdefault(n, [])
                if step % WINDOW == 0:
                    win.append(torch.zeros_like(alive))
                win[-1] |= alive
            opt.step()
        caught = [f"{x.category.__name__}: {x.message}" for x in w
                  if issubclass(x.category, (RuntimeWarning, UserWarning))
                  and "spikegrad" in (x.filename + str(x.message)) or "Node" in str(x.message)
                  or "Leaky" in str(x.message)]
    train_s = time.perf_counter() - start
    net.eval()
    correct = 0
    with torch.no_grad():
        for idx in torch.arange(len(x_test)).split(500):
            x = recipes.repeat(x_test[idx].reshape(-1, *cfg["shape"]), cfg["T"])
            correct += int((recipes.predict(net(x), votes=votes) == y_test[idx]).sum())
    for mon in ("out_mon", "in_mon", "gout_mon", "gin_mon"):
        if hasattr(rec, mon):
            getattr(rec, mon).close()
    result = {"case": case, "rule": rule, "swap": swap, "opts": opts, "steps": steps,
              "seed": seed, "lr": cfg["lr"], "warm_up_steps": warm_up_steps, "votes": votes,
              "test_acc": 100.0 * correct / len(x_test), "train_s": train_s,
              "dead_windows": {n: [float(1.0 - a.float().mean()) for a in w]
                               for n, w in windows.items()},
              "warnings": sorted(set(caught)), "history": history,
              "layers": [n for n, _ in rec.layers], "synapses": [n for n, _ in synapses(net)]}
    if not quiet:
        print(markdown(result))
    return result


# --- the report ---------------------------------------------------------------------------------
def _mean(rows, layer, key):
    vals = [r["layers"][layer][key] for r in rows if key in r["layers"][layer]]
    vals = [v for v in vals if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def markdown(res: dict) -> str:
    h = res["history"]
    opts = ", ".join(f"{k}={v}" for k, v in res["opts"].items()) or "defaults"
    head = (f"#### {res['case']}: {res['rule']} ({opts}), swap {res['swap']}, "
            f"{res['steps']} steps, lr {res['lr']}, seed {res['seed']}"
            + (f", {res['warm_up_steps']} warm-up steps" if res["warm_up_steps"] else "")
            + (f", voting layer ({res['votes']} per class, voting MSE)"
               if res.get("votes", 1) > 1 else ""))
    lines = [head, "",
             f"test accuracy **{res['test_acc']:.1f} %** ({res['train_s']:.0f} s); "
             f"loss {h[0]['loss']:.4g} -> {sum(r['loss'] for r in h[-20:]) / len(h[-20:]):.4g} "
             f"(mean of the last 20 steps); warnings: "
             + ("; ".join(f"`{w[:200]}`" for w in res["warnings"]) or "none"), "",
             "| step | layer | rate | silent | dead | saturated | max out | mean out where > 0 "
             "| |dL/d out| | |dL/d in| | in grad ≠ 0 | 1/h at spikes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    picks = [r for r in h if r["step"] in RECORD_AT or r["step"] == len(h) - 1]
    for r in picks:
        for n in res["layers"]:
            s = r["layers"][n]
            lines.append(
                f"| {r['step']} | {n} | {s['rate']:.3f} | {s['silent']:.2f} | {s['dead']:.2f} | "
                f"{s['saturated']:.2f} | {s['max_out']:.0f} | {s.get('mean_fired', 1.0):.2f} | "
                f"{s['gout']:.3g} | {s['gin']:.3g} | "
                f"{s['gin_nonzero']:.2f} | {s.get('inv_h', float('nan')):.2f} |")
    lines += ["", "weight-gradient norms (steps " + ", ".join(str(r["step"]) for r in picks)
              + "):", ""]
    for n in res["synapses"]:
        lines.append(f"* `{n}`: " + ", ".join(f"{r['wgrad'][n]:.3g}" for r in picks))
    lines += ["", f"dead over each window of {WINDOW} steps (fraction of neurons silent for "
              f"every sample of {WINDOW} consecutive training steps):", ""]
    for n in res["layers"]:
        lines.append(f"* `{n}`: " + ", ".join(f"{d:.2f}" for d in res["dead_windows"][n]))
    lines += ["", "means over the first 20 / last 20 steps (rate, silent, saturated, "
              "|dL/d in|):", ""]
    for n in res["layers"]:
        f20, l20 = h[:20], h[-20:]
        lines.append(f"* `{n}`: " + " / ".join(
            f"{_mean(rows, n, 'rate'):.3f}, {_mean(rows, n, 'silent'):.2f}, "
            f"{_mean(rows, n, 'saturated'):.2f}, {_mean(rows, n, 'gin'):.3g}"
            for rows in (f20, l20)))
    return "\n".join(lines) + "\n"


def _short_warning(w: str) -> str:
    """``Neuron: k of this layer's n neurons ...`` -> ``Neuron k/n no spike|no gradient``."""
    import re
    owner = w.split(":")[1].strip() if w.count(":") > 1 else w
    m = re.search(r"(\d+) of this layer's (\d+) neurons", w)
    if m:
        kind = "no spike" if "emitted no spike" in w and "(" not in w.split("neurons")[1][:3] \
            else "no gradient" if "below 0" in w else "no spike"
        return f"{owner} {m[1]}/{m[2]} {kind}"
    if "whole training sequence" in w:
        return f"{owner} silent sequence"
    return w[:60]


def summary(paths: list[str]) -> str:
    """One markdown row per diagnosed run (JSON lines written with --json)."""
    rows = ["| case | rule | swap | setting | steps, lr | test acc % | per layer, mean of the "
            "last 20 steps: rate / silent / saturated; dead over the last window | warnings |",
            "|---|---|---|---|---|---|---|---|"]
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            h = r["history"][-20:]
            setting = ", ".join(f"{k}={v}" for k, v in r["opts"].items()) or "default"
            if r.get("votes", 1) > 1:
                setting += f", voting layer ({r['votes']}/class)"
            if r["warm_up_steps"]:
                setting += f", {r['warm_up_steps']} warm-up steps"
            layers = "; ".join(
                f"{n}: {_mean(h, n, 'rate'):.2f} / {_mean(h, n, 'silent'):.2f} / "
                f"{_mean(h, n, 'saturated'):.2f}; "
                + (f"{r['dead_windows'][n][-1]:.2f}" if r.get("dead_windows") else "–")
                for n in r["layers"])
            warned = "; ".join(_short_warning(w) for w in r["warnings"]) or "none"
            rows.append(f"| {r['case']} | {r['rule']} | {r['swap']} | {setting} | "
                        f"{r['steps']}, {r['lr']:g} | {r['test_acc']:.1f} | {layers} | "
                        f"{warned} |")
    return "\n".join(rows) + "\n"


SUITE = [  # (case, rule, swap, opts, extra)
    ("sj_mlp", "host", "all", {}, {}),
    ("sj_mlp", "htdglif", "all", {}, {}),
    ("csnn", "host", "all", {}, {}),
    ("csnn", "htdglif", "hidden", {}, {}),
    ("csnn", "htdglif", "all", {}, {}),
    ("csnn", "multistrength", "hidden", {}, {}),
    ("csnn", "multistrength", "all", {}, {}),
    ("tutorial", "host", "all", {}, {}),
    ("tutorial", "na", "all", {}, {}),
]


#: the watch's check (steps, case, rule, swap, opts, votes, warm-up steps, seed): runs where a
#: rule fails (it must warn once, with the fix) and where it learns (it must not)
WATCH_SUITE = [
    (200, "sj_mlp", "htdglif", "all", {}, 1, 0, 0),
    (200, "sj_mlp", "htdglif", "all", {}, 1, 0, 1),
    (200, "sj_mlp", "htdglif", "hidden", {}, 1, 0, 0),
    (200, "sj_mlp", "htdglif", "all", {}, 10, 10, 0),
    (200, "sj_mlp", "multistrength", "all", {}, 1, 0, 0),
    (63, "csnn", "htdglif", "hidden", {}, 1, 0, 0),
    (63, "csnn", "multistrength", "all", {}, 1, 0, 0),
    (63, "csnn", "multistrength", "all", {"max_strength": 1}, 1, 0, 0),
    (63, "csnn", "multistrength", "hidden", {}, 1, 0, 0),
]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=("sj_mlp", "csnn", "tutorial"))
    p.add_argument("--rule", choices=("host", "htdglif", "multistrength", "na", "reset_term"))
    p.add_argument("--swap", choices=("all", "hidden"), default="all")
    p.add_argument("--opt", action="append", default=[],
                   help="a neuron option as name=python-literal, e.g. max_strength=1")
    p.add_argument("--warm-up-steps", type=int, default=0)
    p.add_argument("--votes", type=int, default=1,
                   help="output neurons per class (>1: BPSA's voting layer and voting MSE)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--suite", action="store_true", help="every case of the evidence file")
    p.add_argument("--watch-suite", action="store_true",
                   help="the cases of the evidence file's watch check (WATCH_SUITE)")
    p.add_argument("--out", default=None, help="append the markdown here")
    p.add_argument("--json", default=None, help="append the results (JSON lines) here")
    p.add_argument("--summary", nargs="+", default=None, metavar="JSONL",
                   help="print one markdown row per run of these --json files, run nothing")
    args = p.parse_args(argv)
    if args.summary:
        print(summary(args.summary))
        return
    import ast
    opts = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in args.opt)}
    if args.watch_suite:
        runs = [(st, c, r, sw, o, v, w, sd) for st, c, r, sw, o, v, w, sd in WATCH_SUITE]
    else:
        runs = [(args.steps, c, r, sw, o, args.votes, args.warm_up_steps, args.seed)
                for c, r, sw, o, _ in
                (SUITE if args.suite else [(args.case, args.rule, args.swap, opts, {})])]
    for steps, case, rule, swap, o, votes, warm, seed in runs:
        res = diagnose(case, rule, swap, steps, seed, o, warm, args.lr, args.channels,
                       args.test_images, quiet=True, votes=votes)
        text = markdown(res)
        print(text, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(text + "\n")
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({k: v for k, v in res.items()}) + "\n")


if __name__ == "__main__":
    main()
