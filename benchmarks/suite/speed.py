"""Speed mode: one neuron layer, and a full training step of Linear + neuron, per rule, against
the host's native LIF (snntorch ``Leaky`` in its per-step loop, spikingjelly ``LIFNode`` in
step mode ``"m"``), over ``T`` and layer sizes.

Timing (:func:`phases`): after two untimed warm-up calls (which also build NA's CPU kernel
once, and compile a compiled case), calls are repeated for ``min_run_time`` seconds (at least
:data:`MIN_CALLS`), each timed in two phases, forward then backward, with the device
synchronised before and after each phase (``torch.accelerator.synchronize``; a no-op on the
CPU); forward and backward are the medians of their phases. Each backward is timed itself, in
the same call as its forward: it was once the difference of two separately timed medians
(forward alone, forward + backward), which a loaded machine could make negative, printed as a
clamped ``backward 0.000``. Peak memory is reset before, and read after, one extra call per
measurement (CUDA only; ``null`` on the CPU). ``layer``: the neuron alone on a random input
current ``[T, B, N]`` (``requires_grad``); forward = the forward call with autograd recording,
backward = the backward with a random upstream gradient. ``train-step``: ``Linear(N, N)`` and
the neuron on a random input, forward + loss (a random projection of the output), then
backward and the Adam step (counted in backward).

``tutorial`` / ``tutorial-compiled``: the seed-002 tutorial network (``784-1000-10``, the host's
per-step loop in snntorch, step mode ``"m"`` in spikingjelly) at ``T = 25``, batch 128, forward
+ loss + backward, eager and under ``torch.compile`` (compiled once before timing; the compile
time is not counted). Each neuron is compared with the host's own LIF in the same mode.
``tutorial-neuron`` / ``tutorial-neuron-compiled``: its hidden layer's neuron alone (1000
neurons, batch 128, ``T = 25``, timed as ``layer``), eager and compiled: where the neuron's own
cost shows (the network's time is mostly its two matrix products).

Against the memory limit: every row measured by a run carries the machine's memory bandwidth, a
copy of :data:`COPY_MIB` MiB (``dst.copy_(src)``, read + write bytes counted, median of
:data:`COPY_BLOCKS` timed blocks; measured once per run and device, before the first
measurement: :func:`bandwidth`). The rows of a neuron alone (``layer``, ``tutorial-neuron*``, a
spikegrad rule) also carry the bytes its fused kernels (Triton / CuPy) move per neuron-step,
forward and backward (:func:`spikegrad.rules.traffic.bytes_per_neuron_step`: each distinct
element read or written once; the upstream gradient of the output present, none for the state),
the achieved bandwidth (those bytes over the measured time) and its ratio to the copy's. On the
CPU the paths timed are the torch references (NA: its C++ kernel), which move more than the
fused kernel would: their ratio says how far they are from what the fused path would need. The
host's own LIF (``native``) has no byte model: ``null``.

Sizes: the Open Neuromorphic workload (Linear + LIF, batch 16, ``T = 500``, 16 384 neurons)
runs only on a GPU; on the CPU, NA's ``T(T-1)/2`` replay makes it far too large, so CPU runs
cap the sizes (:data:`CPU_SIZES`) and record the workload as skipped with that reason.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spikegrad.adapters import network as netlib
from spikegrad.rules import traffic
from suite import metrics, recipes
from suite.store import Store

SPEED_RULES = ("native", "reset-term", "na", "bpsa-bpta", "multi-strength")
TS = (4, 8, 16, 32)
CPU_SIZES = (1024, 4096)
GPU_SIZES = (1024, 4096, 16384)
BATCH = 16
OPEN_NEUROMORPHIC = {"neurons": 16384, "batch": 16, "T": 500}
TUTORIAL = {"arch": "tutorial-mlp", "batch": 128, "T": 25, "inputs": 784, "hidden": 1000}
#: the tutorial set: the network, and its hidden neuron layer alone, each eager and compiled
TUTORIAL_WHATS = ("tutorial", "tutorial-compiled", "tutorial-neuron", "tutorial-neuron-compiled")
SETS = ("all", "layers", "tutorial")
#: the copy that measures the memory bandwidth (MiB of float32 source; as much is written)
COPY_MIB = 256
#: timed blocks of copies (the median block gives the bandwidth)
COPY_BLOCKS = 7
#: the fewest timed calls of a measurement
MIN_CALLS = 5
#: measurements of the neuron alone (no linear layer in the timed call)
NEURON_ALONE = ("layer", "tutorial-neuron", "tutorial-neuron-compiled")
_BANDWIDTH: dict[tuple[str, int], dict[str, Any]] = {}


@dataclass(frozen=True)
class Case:
    framework: str
    rule: str
    what: str  # "layer" | "train-step"
    neurons: int
    batch: int
    T: int
    device: str
    threads: int = 0  # torch CPU threads (part of the id: they change CPU timings)

    @property
    def config_id(self) -> str:
        return (f"speed:{self.framework}:{self.rule}:{self.what}:{self.neurons}:{self.batch}:"
                f"{self.T}:{self.device}:{self.threads}")


def cases(frameworks: list[str], rules: list[str], device: str, quick: bool,
          ts: tuple[int, ...] | None = None, batch: int | None = None,
          which: str = "all") -> Iterator[Case]:
    """Every measurement of a speed run (``native`` first, the ratios' reference); ``ts`` and
    ``batch`` replace the default time steps and batch size; ``which``: ``"layers"`` (layer and
    train-step timings), ``"tutorial"`` (the tutorial network eager and compiled) or ``"all"``
    (the tutorial network is left out of ``quick`` runs: compiling takes minutes on a CPU)."""
    wanted = ["native"] + [r for r in SPEED_RULES[1:] if r in rules]
    if which in ("all", "tutorial") and not (quick and which == "all"):
        threads = torch.get_num_threads()
        for fw in frameworks:
            for what in TUTORIAL_WHATS:
                for rule in wanted:
                    size = TUTORIAL["hidden"] if "neuron" in what else TUTORIAL["inputs"]
                    yield Case(fw, rule, what, size, batch or TUTORIAL["batch"],
                               (ts or (TUTORIAL["T"],))[0], device, threads)
    if which == "tutorial":
        return
    gpu = device.startswith("cuda")
    sizes = (256,) if quick else (GPU_SIZES if gpu else CPU_SIZES)
    ts = ts or ((4, 8) if quick else TS)
    threads = torch.get_num_threads()
    for fw in frameworks:
        for what in ("layer", "train-step"):
            for n in sizes:
                for T in ts:
                    for rule in wanted:
                        yield Case(fw, rule, what, n, batch or BATCH, T, device, threads)
        if not quick:
            for rule in wanted:
                yield Case(fw, rule, "train-step", OPEN_NEUROMORPHIC["neurons"],
                           OPEN_NEUROMORPHIC["batch"], OPEN_NEUROMORPHIC["T"], device,
                           threads)


def make(framework: str, rule: str) -> nn.Module:
    """The neuron of ``rule`` (spike output); ``native`` is the host's own LIF."""
    return recipes.make_neuron(framework, "baseline" if rule == "native" else rule)


def _timer(fn: Callable[[], Any]):
    # imported here, not at the top: torch.utils.benchmark imports torch.utils.cpp_extension,
    # which logs "No CUDA runtime is found" on every CPU-only machine at import time (every
    # compare.py command, --help included, would print it); the message is no concern here
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    return benchmark.Timer(stmt="fn()", globals={"fn": fn})


def phases(forward: Callable[[], Any], backward: Callable[[Any], Any], min_run_time: float,
           device: torch.device) -> tuple[float, float, int]:
    """Median ms of ``forward()`` and of ``backward(its result)``, timed in the same calls,
    synchronised around each phase; repeated for ``min_run_time`` s and at least
    :data:`MIN_CALLS` calls; returns ``(forward ms, backward ms, calls)``."""
    def sync() -> None:
        if device.type != "cpu":
            torch.accelerator.synchronize(device)

    fwd, bwd = [], []
    end = time.perf_counter() + min_run_time
    while len(fwd) < MIN_CALLS or time.perf_counter() < end:
        sync()
        t0 = time.perf_counter()
        out = forward()
        sync()
        t1 = time.perf_counter()
        backward(out)
        sync()
        t2 = time.perf_counter()
        del out
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    return statistics.median(fwd) * 1e3, statistics.median(bwd) * 1e3, len(fwd)


def bandwidth(device: str, mib: int | None = None) -> dict[str, Any]:
    """The memory bandwidth of ``device``: ``dst.copy_(src)`` of ``mib`` MiB (default
    :data:`COPY_MIB`), bytes read + written over the median of :data:`COPY_BLOCKS` timed
    blocks of about 20 ms each (``torch.utils.benchmark.Timer.timeit``, which synchronises
    CUDA; GB = 1e9 bytes); measured once per process, device and thread count."""
    mib = COPY_MIB if mib is None else mib
    key = (f"{device}:{mib}", torch.get_num_threads())
    if key not in _BANDWIDTH:
        dev = torch.device(device)
        src = torch.ones(mib * 2**20 // 4, dtype=torch.float32, device=dev)
        dst = torch.empty_like(src)
        dst.copy_(src)  # the destination's pages are touched before timing
        timer = _timer(lambda: dst.copy_(src))
        once = timer.timeit(1).median  # the copies per block: a block of about 20 ms
        per = max(1, round(0.02 / max(once, 1e-9)))
        times = [timer.timeit(per).median for _ in range(COPY_BLOCKS)]
        moved = 2 * src.numel() * src.element_size()
        med = statistics.median(times)
        _BANDWIDTH[key] = {
            "copy_mib": mib, "copy_ms": med * 1e3, "copy_blocks": len(times),
            "copy_per_block": per, "copy_gbps": moved / med / 1e9,
            "copy_gbps_best": moved / min(times) / 1e9}
        del src, dst
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return dict(_BANDWIDTH[key])


def fused_traffic(case: Case, fields: dict[str, Any], copy_gbps: float | None
                  ) -> dict[str, Any]:
    """The byte-model columns of a neuron-alone row of a spikegrad rule (else ``{}``): bytes
    per neuron-step of the fused kernels, achieved GB/s forward, backward and both, and the
    latter over the copy's bandwidth."""
    if case.what not in NEURON_ALONE or case.rule not in traffic.RULES:
        return {}
    per = traffic.bytes_per_neuron_step(case.rule, case.T, case.batch * case.neurons,
                                        has_g_out=True, has_g_state=False)
    steps = case.T * case.batch * case.neurons

    def gbps(nbytes: float, ms: float | None) -> float | None:
        return None if not ms or ms <= 0 else nbytes / (ms * 1e-3) / 1e9

    f_ms, b_ms = fields.get("step_ms_forward"), fields.get("step_ms_backward")
    total = gbps(per["total"] * steps, None if f_ms is None or b_ms is None else f_ms + b_ms)
    return {"fused_bytes_per_neuron_step_forward": per["forward"],
            "fused_bytes_per_neuron_step_backward": per["backward"],
            "fused_bytes_per_neuron_step": per["total"],
            "fused_bytes_issued_per_neuron_step": per["issued"],
            "gbps_forward": gbps(per["forward"] * steps, f_ms),
            "gbps_backward": gbps(per["backward"] * steps, b_ms),
            "gbps": total, "of_copy": None if total is None or not copy_gbps
            else total / copy_gbps}


def measure(case: Case, min_run_time: float) -> dict[str, Any]:
    """Time one case; returns the fields of its row."""
    device = torch.device(case.device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    shape = (case.T, case.batch, case.neurons)
    x = torch.rand(shape, generator=gen).to(device)
    grad = torch.randn(shape, generator=gen).to(device)
    torch.manual_seed(0)
    lif = make(case.framework, case.rule).to(device)
    if case.what in ("tutorial", "tutorial-compiled"):
        return _tutorial(case, device, min_run_time)
    if case.what in ("layer", "tutorial-neuron", "tutorial-neuron-compiled"):
        cur = (2.0 * x).requires_grad_()

        def run(c: torch.Tensor) -> torch.Tensor:
            return netlib.run_neuron(lif, c)

        if case.what.endswith("-compiled"):
            torch._dynamo.reset()
            run = torch.compile(run)

        def forward() -> torch.Tensor:
            return run(cur)

        def backward(out: torch.Tensor) -> None:
            out.backward(grad)
            cur.grad = None
    else:
        net = netlib.build_network(f"{case.neurons}-{case.neurons}", host=case.framework,
                                   neuron=lambda: make(case.framework, case.rule),
                                   in_shape=(case.neurons,)).to(device)
        lif = net.neurons()[0]
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def forward() -> torch.Tensor:
            out = net(x)
            loss = (out * grad).sum()
            net.reset()
            return loss

        def backward(loss: torch.Tensor) -> None:
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for _ in range(2):  # a compiled case compiles on the first call
        backward(forward())
    warm = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        backward(forward())
        torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    t_fwd, t_bwd, calls = phases(forward, backward, min_run_time, device)
    impl, why = metrics.implementation([lif], device, torch.float32)
    return {"step_ms_forward": t_fwd, "step_ms_backward": t_bwd, "timed_calls": calls,
            "peak_mem_mb": peak, "impl": impl, "impl_reason": why, "warm_up_s": warm,
            "neuron_class": type(lif).__name__}


def _tutorial(case: Case, device: torch.device, min_run_time: float) -> dict[str, Any]:
    """The tutorial network, eager or compiled: forward + loss, then backward."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(case.T, case.batch, case.neurons, generator=gen).to(device)
    torch.manual_seed(0)
    net = netlib.build_network(TUTORIAL["arch"], host=case.framework,
                               neuron=lambda: make(case.framework, case.rule),
                               in_shape=(case.neurons,)).to(device)
    grad = torch.randn(case.T, case.batch, 10, generator=gen).to(device)
    model: Callable[[torch.Tensor], torch.Tensor] = net
    if case.what == "tutorial-compiled":
        torch._dynamo.reset()
        model = torch.compile(net)

    def forward() -> torch.Tensor:
        loss = (model(x) * grad).sum()
        net.reset()
        return loss

    def backward(loss: torch.Tensor) -> None:
        loss.backward()
        net.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(2):  # the first call compiles
        backward(forward())
    warm = time.perf_counter() - t0
    t_fwd, t_bwd, calls = phases(forward, backward, min_run_time, device)
    impl, why = metrics.implementation(net.neurons(), device, torch.float32)
    return {"step_ms_forward": t_fwd, "step_ms_backward": t_bwd, "timed_calls": calls,
            "peak_mem_mb": None, "impl": impl, "impl_reason": why, "warm_up_s": warm,
            "neuron_class": type(net.neurons()[0]).__name__}


def row(case: Case, **fields: Any) -> dict[str, Any]:
    base = {"mode": "speed", "config_id": case.config_id, "framework": case.framework,
            "rule": case.rule, "what": case.what, "neurons": case.neurons, "batch": case.batch,
            "T": case.T, "device": case.device, "threads": case.threads, "dataset": None,
            "arch": None, "seed": 0,
            "status": "ok", "impl": None, "impl_reason": None, "test_acc": None,
            "best_test_acc": None, "epoch": None, "step_ms_forward": None,
            "step_ms_backward": None, "peak_mem_mb": None, "spike_rate": None,
            "versions": metrics.versions(), "machine": metrics.machine(torch.device(case.device)),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    base.update(fields)
    return base


def run(case: Case, store: Store, *, min_run_time: float, retry_failed: bool = False,
        log: Callable[[str], None] = print) -> str:
    """Measure ``case`` unless ``results.jsonl`` has it (a recorded failure is measured again
    with ``retry_failed``); failures are recorded, not raised."""
    done = store.of(case.config_id)
    if done and retry_failed and done[-1].get("status") == "failed":
        store.drop(case.config_id)
    elif done:
        return "skipped"
    if not case.device.startswith("cuda") and case.T == OPEN_NEUROMORPHIC["T"]:
        store.add(row(case, status="skipped", error=(
            "the Open Neuromorphic workload (batch 16, T=500, 16384 neurons) runs on a GPU "
            "only: NA's T(T-1)/2 replay makes it far too large for a CPU; CPU runs are capped "
            f"at {max(CPU_SIZES)} neurons and T <= {max(TS)}")))
        return "skipped"
    try:
        copy = bandwidth(case.device)
    except Exception as exc:  # noqa: BLE001 - the timings are still worth recording
        copy = {"copy_error": f"{type(exc).__name__}: {exc}"[:500]}
    try:
        fields = measure(case, min_run_time)
        fields.update(copy)
        fields.update(fused_traffic(case, fields, copy.get("copy_gbps")))
    except Exception as exc:  # noqa: BLE001 - recorded, and the run goes on
        if case.device.startswith("cuda"):
            torch.cuda.empty_cache()
        msg = f"{type(exc).__name__}: {exc}"
        log(f"[speed {case.config_id}] FAILED: {msg}")
        store.add(row(case, status="failed", error=msg[:2000]))
        return "failed"
    store.add(row(case, **fields))
    total = fields["step_ms_forward"] + fields["step_ms_backward"]
    log(f"[speed] {case.framework} {case.what} {case.rule} N={case.neurons} T={case.T}: "
        f"{total:.3f} ms ({fields['impl']})")
    return "done"
