"""The compiled CPU kernel of NA (``csrc/na_cpu.cpp``), registered as torch operators.

Loading the extension registers ``torch.ops.spikegrad.na_forward_cpp``, ``na_step_cpp`` and
``na_replay_cpp`` (the kernels are their CPU dispatcher kernels, defined with ``TORCH_LIBRARY``
in the C++ file; :mod:`spikegrad.rules.na.ops` adds their fake implementations and the
autograd of the forward operator). The kernel computes exactly
:func:`spikegrad.rules.na.forward` / :func:`~spikegrad.rules.na.backward` (equations there),
one neuron per loop iteration with every neighbor replayed in registers, parallel over
neurons, stopping a replay as soon as it merges with the original trajectory. It is built
with torch's C++ extension machinery the first time it is needed (a C++ compiler and
``ninja`` are required; ``python -m spikegrad.rules.na`` builds it ahead
of time, as the README's install command and CI do, and ``--require`` makes a failed build an
error).

One build per environment and source: the library goes into
``<torch extensions root>/spikegrad/spikegrad_na_ops_<isa>-<environment>-<source>`` (the root is
``$TORCH_EXTENSIONS_DIR`` or torch's default, ``~/.cache/torch_extensions``),
where ``<environment>`` hashes the interpreter's ``sys.prefix``, Python, torch's version, git
revision and C++ ABI, and ``<source>`` hashes the C++ source and the compiler flags
(:func:`build_directory`). Two checkouts or virtual environments on one machine therefore never
rebuild each other's kernel, nor load a library built against another torch; a changed source
builds anew. A build prints one line to stderr: that it builds, where, why, and how long it
took.

If it cannot be built, :func:`status` says why and ``implementation="auto"`` uses the torch
reference; ``implementation="cpp"`` raises with that reason.

The build runs once, under a lock, at the first call of :func:`load` or :func:`status`; every
later call reads the result without taking the lock (so a traced step never meets it), and
:func:`status` is a constant for ``torch.compile``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from spikegrad.rules import dispatch
from spikegrad.rules.na import ops

_SOURCE = Path(__file__).with_name("csrc") / "na_cpu.cpp"
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"module": None, "error": None, "done": False}


_ISA_FLAGS = {"avx2": ["-mavx2"], "generic": []}


def _isa() -> str:
    """``"avx2"`` where the CPU has it (x86-64 Linux), else ``"generic"``."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "generic"
    return "avx2" if "avx2" in flags else "generic"


_CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]


def _digest(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:12]


def environment_key() -> str:
    """A hash of what a built library depends on besides its source: this interpreter's
    environment (``sys.prefix``), Python, and the torch build it links against."""
    import torch

    return _digest(sys.prefix, sys.version, torch.__version__, torch.version.git_version,
                   torch.compiled_with_cxx11_abi())


def build_directory(name: str, source: Path, cflags: list[str],
                    root: str | os.PathLike[str] | None = None) -> Path:
    """Where the library ``name`` built from ``source`` with ``cflags`` lives for this
    environment: ``<root>/spikegrad/<name>-<environment>-<source and flags>``."""
    if root is None:
        from torch.utils.cpp_extension import get_default_build_root

        root = get_default_build_root()
    key = _digest(hashlib.sha256(source.read_bytes()).hexdigest(), *cflags)
    return Path(root) / "spikegrad" / f"{name}-{environment_key()}-{key}"


def build_library(name: str, source: Path, cflags: list[str], *, verbose: bool = False,
                  root: str | os.PathLike[str] | None = None) -> tuple[str, bool]:
    """Build (unless this environment already has it) and load a plain C++ library.

    Returns:
        ``(path of the library, whether it was built now)``.
    """
    from torch.utils.cpp_extension import load as _load

    directory = build_directory(name, source, cflags, root)
    library = directory / f"{name}.so"
    built = not library.exists()
    if built:
        others = sorted(p.name for p in directory.parent.glob(f"{name}-{environment_key()}-*")
                        if p != directory)
        why = ("an earlier build there did not finish" if directory.exists() else
               f"the source or its flags changed since {others[-1]}" if others else
               f"first build in the environment {sys.prefix}")
        sys.stderr.write(f"spikegrad: building {name} into {directory} ({why}) ... ")
        sys.stderr.flush()
        directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        _load(name=name, sources=[str(source)], extra_cflags=cflags,
              extra_ldflags=["-fopenmp"], build_directory=str(directory),
              is_python_module=False,  # a plain library: TORCH_LIBRARY registers the operators
              verbose=verbose)
    except Exception:
        if built:
            sys.stderr.write("failed\n")
        raise
    if built:
        sys.stderr.write(f"done in {time.perf_counter() - start:.1f} s\n")
    return str(library), built


def load(verbose: bool = False) -> str | None:
    """Build (once per source version; cached by torch) and register the operators.

    Returns:
        The path of the loaded library, or ``None`` when it could not be built (see
        :func:`status`).
    """
    if _STATE["done"]:  # the fast path: no lock once the one-time load has run
        return _STATE["module"]
    with _LOCK:
        if not _STATE["done"]:
            _build(verbose)
            _STATE["done"] = True
    return _STATE["module"]


def _build(verbose: bool) -> None:
    """Compile and load the library, then register the operators' Python parts."""
    try:
        # importing cpp_extension warns about a missing CUDA runtime on CPU-only machines
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        isa = _isa()
        # no FP contraction: the same rounding as the torch reference; no trapping math: lets
        # the compiler turn the branch-free selects into SIMD
        _STATE["module"], _STATE["built"] = build_library(
            f"spikegrad_na_ops_{isa}", _SOURCE, [*_CFLAGS, *_ISA_FLAGS[isa]], verbose=verbose)
        ops.register_cpp()
    except Exception as exc:  # noqa: BLE001 - any build failure means: use the reference
        _STATE["module"] = None
        lines = str(exc).strip().splitlines() or [""]
        _STATE["error"] = f"{type(exc).__name__}: {lines[-1][:300]}"
        _STATE["log"] = compiler_errors(lines)


def compiler_errors(lines: list[str], keep: int = 12) -> list[str]:
    """The compiler's last error lines in a failed build's output (its ``error:`` lines with
    the line after each, else the output's last lines)."""
    picked: list[str] = []
    for i, line in enumerate(lines):
        if "error" in line.lower() and not line.lstrip().startswith("ninja: build stopped"):
            picked += lines[i:i + 2]
    return (picked or lines)[-keep:]


@dispatch.constant_for_compile
def status() -> str:
    """``"available"`` or why the kernel cannot be used here (builds it on the first call).

    ``SPIKEGRAD_NA_CPP=0`` in the environment turns the kernel off (read at every call, so a
    test can switch it; ``torch.compile`` reads it once, when it traces).
    """
    if os.environ.get("SPIKEGRAD_NA_CPP", "1") == "0":
        return "disabled by SPIKEGRAD_NA_CPP=0"
    load()
    if _STATE["module"] is not None:
        return "available"
    return (f"the C++ kernel could not be built ({_STATE['error']}); install a C++ compiler "
            f"and `pip install ninja`, then run `{sys.executable} -m spikegrad.rules.na`")


dispatch.register_compiled("na", status)


def main(argv: list[str] | None = None) -> int:
    """``python -m spikegrad.rules.na [--require] [--verbose]``: build the kernel now."""
    import argparse
    import time

    p = argparse.ArgumentParser(
        prog="python -m spikegrad.rules.na",
        description="Build NA's compiled CPU kernel now (once; torch caches it), so that the "
        "first NA call does not wait for the compiler, and say whether it is available. "
        "Without it NA runs its torch reference (same values, slower).")
    p.add_argument("--require", action="store_true",
                   help="exit with status 1 if the kernel cannot be built (CI)")
    p.add_argument("--verbose", action="store_true", help="show the compiler's commands")
    args = p.parse_args(argv)
    start = time.perf_counter()
    load(verbose=args.verbose)
    print(f"spikegrad NA CPU kernel: {status()} ({time.perf_counter() - start:.1f} s)")
    if _STATE["module"] is None and _STATE.get("log"):
        print("the compiler said:\n  " + "\n  ".join(_STATE["log"]))
    # without --require a failed build is reported, not fatal: NA then runs its torch reference
    return 1 if args.require and _STATE["module"] is None else 0

