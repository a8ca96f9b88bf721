"""One training configuration: train, evaluate after every epoch, record, resume.

A configuration is (framework, rule, recipe, dataset, arch, T, seed, batch size, lr, device,
AMP, data subsets); its id hashes all of these except the number of epochs, so that rerunning
with more epochs continues a finished run. After every epoch, rank 0 appends the epoch's row to
``results.jsonl`` and saves a checkpoint (model, optimiser, schedule, RNG states) atomically;
a rerun skips configurations whose rows reach ``--epochs`` and resumes the others from their
last completed epoch. A configuration that fails (a non-finite loss, out of memory, any error)
gets one ``status: "failed"`` row with the error, and the run goes on with the next one.

Data parallel: under ``torchrun`` every rank takes its share of each global batch (the global
batch is ``--batch-size``, split evenly), gradients are averaged by
``DistributedDataParallel``, evaluation is split across ranks and summed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from suite import metrics, recipes
from suite.store import Store, atomic_write

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm is in the bench extra
    def tqdm(it, **_):  # type: ignore[no-redef]
        return it


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    framework: str
    rule: str
    recipe: str
    dataset: str
    arch: str
    T: int
    seed: int
    epochs: int
    batch_size: int
    lr: float | None  # None: the recipe's
    device: str
    amp: bool
    train_subset: int | None
    test_subset: int | None

    @property
    def config_id(self) -> str:
        d = asdict(self)
        d.pop("epochs")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Dist:
    """The data-parallel context (``world == 1``: a single process)."""

    rank: int = 0
    world: int = 1

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def subset_indices(n: int, keep: int | None, seed: int = 12345) -> torch.Tensor:
    """A fixed random subset of ``range(n)`` (all of it when ``keep`` is None or >= n)."""
    if keep is None or keep >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:keep]


def fetch(ds: torch.utils.data.Dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch ``idx`` of a dataset (tensor datasets by indexing, others item by item)."""
    if isinstance(ds, torch.utils.data.TensorDataset):
        return ds.tensors[0][idx], ds.tensors[1][idx]
    items = [ds[int(i)] for i in idx]
    return (torch.stack([torch.as_tensor(x, dtype=torch.float32) for x, _ in items]),
            torch.as_tensor([int(y) for _, y in items]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset(net: nn.Module) -> None:
    inner = getattr(net, "module", net)
    if inner.host == "spikingjelly":
        inner.reset()


def _amp_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=_amp_dtype(device), enabled=amp)


@torch.no_grad()
def evaluate(net: nn.Module, rec: recipes.Recipe, data, idx: torch.Tensor, cfg: TrainConfig,
             device: torch.device, dist: Dist, chunk: int = 500) -> dict[str, Any]:
    """Test accuracy, loss, spike rate per layer and synaptic operations on ``idx``."""
    inner = getattr(net, "module", net)
    inner.eval()
    loss_fn = recipes.loss_fn(rec)
    counters = metrics.Counters()
    mine = idx[dist.rank::dist.world]
    correct, loss_sum = 0.0, 0.0
    with metrics.counting(inner, counters):
        for i in range(0, len(mine), chunk):
            x, y = fetch(data.test, mine[i:i + chunk])
            x, y = x.to(device), y.to(device)
            with _autocast(device, cfg.amp):
                out = inner(recipes.encode(rec, x, cfg.T, data.temporal))
            _reset(inner)
            correct += float((recipes.predict(rec, out) == y).sum())
            loss_sum += float(loss_fn(out, y)) * len(y)
            counters.samples += len(y)
    n_layers = len(counters.spike_rate)
    totals = dist.all_sum([correct, loss_sum, counters.samples, counters.acs, counters.macs,
                           counters.dense,
                           *(counters.spikes[k] for k in range(n_layers)),
                           *(float(counters.elements[k]) for k in range(n_layers))], device)
    correct, loss_sum, samples, acs, macs, dense = totals[:6]
    spikes, elements = totals[6:6 + n_layers], totals[6 + n_layers:]
    inner.train()
    return {"test_acc": 100.0 * correct / samples, "test_loss": loss_sum / samples,
            "spike_rate": [s / e for s, e in zip(spikes, elements, strict=True)],
            "synops": {"acs": acs / samples, "macs": macs / samples, "dense": dense / samples}}


def _row(cfg: TrainConfig, **fields: Any) -> dict[str, Any]:
    base = {"mode": "train", "config_id": cfg.config_id, **asdict(cfg),
            "loss": recipes.recipe(cfg.rule, cfg.recipe).loss,  # named in the summary
            "status": "ok", "impl": None, "impl_reason": None, "test_acc": None,
            "best_test_acc": None, "epoch": None, "step_ms_forward": None,
            "step_ms_backward": None, "step_ms_optimizer": None, "epoch_train_s": None,
            "peak_mem_mb": None, "spike_rate": None, "synops": None,
            "versions": metrics.versions(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    base.update(fields)
    return base


def run(cfg: TrainConfig, data, store: Store, *, dist: Dist, progress: bool = True,
        retry_failed: bool = False, log: Callable[[str], None] = print) -> str:
    """Train ``cfg`` (or resume it, or skip it); returns ``"done"``, ``"skipped"`` (already
    recorded), ``"failed"`` or ``"failed before"`` (recorded as failed by an earlier run)."""
    rows = store.of(cfg.config_id)
    if any(r.get("status") == "failed" for r in rows):
        if not retry_failed:
            return "failed before"
        if dist.rank == 0:
            store.drop(cfg.config_id)
        dist.barrier()
        rows = []
    done = max((r["epoch"] for r in rows), default=0)
    if done >= cfg.epochs:
        return "skipped"
    state = {"epoch": done, "best": None, "impl": (None, None)}
    try:
        return _train(cfg, data, store, done, state, dist, progress, log)
    except Exception as exc:  # noqa: BLE001 - one failed configuration must not stop the rest
        if cfg.device.startswith("cuda"):
            torch.cuda.empty_cache()
        msg = f"{type(exc).__name__}: {exc}".strip()
        rank = f" (rank {dist.rank})" if dist.world > 1 else ""
        print(f"[{cfg.framework}/{cfg.rule}]{rank} FAILED after epoch {state['epoch']}: {msg}",
              file=sys.stderr, flush=True)
        if dist.rank == 0:
            store.add(_row(cfg, status="failed", error=msg[:2000], epoch=state["epoch"] or None,
                           best_test_acc=state["best"], impl=state["impl"][0],
                           impl_reason=state["impl"][1]))
        return "failed"


def checkpoint_path(store: Store, cfg: TrainConfig, epoch: int) -> Path:
    """Where the state after ``epoch`` is kept (one file per epoch; older ones are removed once
    the next epoch's row is written, so a crash between the two never loses the way back)."""
    return store.dir / "checkpoints" / f"{cfg.config_id}-epoch{epoch}.pt"


def _train(cfg: TrainConfig, data, store: Store, done: int, state: dict,
           dist: Dist, progress: bool, log: Callable[[str], None]) -> str:
    device = torch.device(cfg.device)
    rec = recipes.recipe(cfg.rule, cfg.recipe)
    torch.manual_seed(cfg.seed)
    net = recipes.build(rec, cfg.framework, cfg.arch, data.in_shape, data.num_classes).to(device)
    opt_spec = rec.optimiser if cfg.lr is None else type(rec.optimiser)(
        **{**asdict(rec.optimiser), "lr": cfg.lr})
    opt, sched = opt_spec.build(net.parameters())
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    state["impl"] = metrics.implementation(
        net.neurons(), device, _amp_dtype(device) if cfg.amp else torch.float32)
    ckpt = checkpoint_path(store, cfg, done)
    if done and ckpt.exists():
        saved = torch.load(ckpt, map_location=device, weights_only=True)
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        if sched is not None:
            sched.load_state_dict(saved["sched"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"].cpu())
        log(f"[{cfg.framework}/{cfg.rule}] resuming after epoch {done}")
    elif done:
        raise RuntimeError(f"results.jsonl has {done} epochs of this configuration but its "
                           f"checkpoint {ckpt} is missing; remove its rows or use another --out")
    accs = [r["test_acc"] for r in store.of(cfg.config_id) if r.get("test_acc") is not None]
    state["best"] = max(accs, default=None)
    model = net
    if dist.world > 1:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    for name, asked, split in (("train_subset", cfg.train_subset, data.train),
                               ("test_subset", cfg.test_subset, data.test)):
        if asked is not None and asked > len(split):  # the CLI refuses it before; an API use
            raise ValueError(f"{name}={asked} but the split has {len(split)} samples: the row "
                             "would be labelled with more samples than were used")
    train_idx = subset_indices(len(data.train), cfg.train_subset)
    test_idx = subset_indices(len(data.test), cfg.test_subset, seed=54321)
    if cfg.batch_size % dist.world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the "
                         f"{dist.world} processes")
    steps = math.ceil(len(train_idx) / cfg.batch_size)
    if len(train_idx) % cfg.batch_size and len(train_idx) % cfg.batch_size < dist.world:
        steps -= 1  # a last batch too small to give every process a sample is dropped
    if steps < 1:
        raise ValueError(f"{len(train_idx)} training samples cannot feed {dist.world} processes")
    warm_steps = round(rec.warm_up_fraction * steps)  # independent of --epochs: resumable
    loss_fn = recipes.loss_fn(rec)
    name = f"{cfg.framework}/{cfg.rule}"
    for epoch in range(done, cfg.epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=torch.Generator()
                                         .manual_seed(cfg.seed * 1000 + epoch))]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t_fwd, t_bwd, t_opt, loss_sum, seen = [], [], [], 0.0, 0
        load_start = os.getloadavg()[0]
        t_epoch = time.perf_counter()
        bar = tqdm(range(steps), desc=f"{name} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   mininterval=2, disable=not progress or dist.rank != 0)
        for i in bar:
            if warm_steps:  # only BPSA's paper recipe has a warm-up
                recipes.set_warm_up(net, epoch * steps + i < warm_steps)
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size][dist.rank::dist.world]
            x, y = fetch(data.train, idx)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            _sync(device)
            t0 = time.perf_counter()
            with _autocast(device, cfg.amp):
                out = model(recipes.encode(rec, x, cfg.T, data.temporal))
            loss = loss_fn(out, y)
            _sync(device)
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            _sync(device)
            t2 = time.perf_counter()
            _reset(model)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise NonFiniteLoss(f"loss {loss_value} at epoch {epoch + 1}, step {i + 1}")
            if opt_spec.clip_norm is not None:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(net.parameters(), opt_spec.clip_norm)
            scaler.step(opt)
            scaler.update()
            if opt_spec.weight_clamp is not None:
                with torch.no_grad():
                    for p in net.parameters():
                        p.clamp_(-opt_spec.weight_clamp, opt_spec.weight_clamp)
            _sync(device)
            t3 = time.perf_counter()
            t_fwd.append(t1 - t0)
            t_bwd.append(t2 - t1)
            t_opt.append(t3 - t2)
            loss_sum += loss_value * len(idx)
            seen += len(idx)
        epoch_s = time.perf_counter() - t_epoch
        load = [load_start, os.getloadavg()[0]]
        recipes.set_warm_up(net, False)
        if sched is not None:
            sched.step()
        peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                else None)
        ev = evaluate(model, rec, data, test_idx, cfg, device, dist)
        loss_total, seen_total = dist.all_sum([loss_sum, float(seen)], device)
        state["epoch"] = epoch + 1
        state["best"] = max(ev["test_acc"], state["best"] or -1.0)
        log(f"[{name}] epoch {epoch + 1}: train loss {loss_total / seen_total:.4f}, test acc "
            f"{ev['test_acc']:.2f} %, spike rates {', '.join(f'{r:.3f}' for r in ev['spike_rate'])}"
            f", {epoch_s:.0f} s")
        if max(load) > (os.cpu_count() or 1):
            log(f"[{name}] warning: load average {max(load):.1f} > {os.cpu_count()} cores during "
                "this epoch: its times include other work")
        if dist.rank == 0:  # the checkpoint first: a row always has its checkpoint
            _save(checkpoint_path(store, cfg, epoch + 1), net, opt, sched, scaler, epoch + 1)
            store.add(_row(
                cfg, epoch=epoch + 1, impl=state["impl"][0], impl_reason=state["impl"][1],
                test_acc=ev["test_acc"], best_test_acc=state["best"], test_loss=ev["test_loss"],
                train_loss=loss_total / seen_total, spike_rate=ev["spike_rate"],
                synops=ev["synops"], epoch_train_s=epoch_s,
                step_ms_forward=1e3 * statistics.median(t_fwd),
                step_ms_backward=1e3 * statistics.median(t_bwd),
                step_ms_optimizer=1e3 * statistics.median(t_opt), peak_mem_mb=peak,
                step_ms_spread=_spread(t_fwd, t_bwd), load_avg=load, cpu_cores=os.cpu_count(),
                steps_per_epoch=steps, train_images=len(train_idx), test_images=len(test_idx),
                world_size=dist.world, recipe_detail=rec.describe(),
                machine=metrics.machine(device)))
            checkpoint_path(store, cfg, epoch).unlink(missing_ok=True)
        dist.barrier()
    return "done"


def _spread(t_fwd: list[float], t_bwd: list[float]) -> dict[str, float]:
    """Minimum and quartiles of the per-step forward + backward times, in ms."""
    total = sorted(1e3 * (f + b) for f, b in zip(t_fwd, t_bwd, strict=True))
    q = statistics.quantiles(total, n=4) if len(total) > 1 else [total[0]] * 3
    return {"min": total[0], "q1": q[0], "q3": q[2]}


def _save(path: Path, net: nn.Module, opt: torch.optim.Optimizer, sched: Any,
          scaler: torch.amp.GradScaler, epoch: int) -> None:
    buf = io.BytesIO()
    torch.save({"epoch": epoch, "model": net.state_dict(), "opt": opt.state_dict(),
                "sched": None if sched is None else sched.state_dict(),
                "scaler": scaler.state_dict(), "rng": torch.get_rng_state()}, buf)
    atomic_write(path, buf.getvalue())
