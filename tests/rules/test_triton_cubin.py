"""Every Triton kernel variant builds into a cubin for real GPUs (sm_80, sm_90) without one.

:mod:`spikegrad.rules.triton_kernels.check` (``--cubin``) compiles every variant the operators
can launch on a GPU (each kernel's ``tl.constexpr`` flags as the operators pass them ×
float32/float16/bfloat16 storage, the launch's ``BLOCK``, 4 warps, no FP fusion) with Triton's
own compiler and bundled ``ptxas``, for sm_80 and sm_90. It runs in a fresh process without
``TRITON_INTERPRET`` (the interpreter compiles nothing; ``test_triton_kernels.py`` sets it in
this process). About 1.5-3 minutes on two CPU cores.

``SPIKEGRAD_CUBIN_BLOCK=8192 pytest tests/rules/test_triton_cubin.py`` builds with that block
size instead: the first test must then fail (register spills), which shows it can.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed: there is no Triton compiler to build cubins with",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
ARCHS = (80, 90)
#: Counted here, independently of the check: the values each ``tl.constexpr`` flag can take in
#: a GPU launch of a rule folder's triton.py / na/triton_replay.py (``RECIP`` is ``x.is_cuda``:
#: one value; every other flag is a bool or the surrogate kind 0/1 taken from the caller's
#: configuration: two).
FLAG_VALUES = {
    "reset_term_fwd": {"SUBTRACT": 2, "INCLUSIVE": 2, "TRACE": 2},
    "reset_term_bwd": {"SURROGATE": 2, "SUBTRACT": 2, "INCLUSIVE": 2, "TRACE": 2,
                       "HAS_G_OUT": 2, "HAS_G_V": 2, "RECIP": 1},
    "bpsta_fwd": {"PAPER": 2},
    "bpsta_bwd": {"PAPER": 2, "HAS_G_O": 2, "HAS_G_V": 2},
    "multistrength_fwd": {"CAPPED": 2, "RECIP": 1},
    "multistrength_bwd": {"CAPPED": 2, "DETACH": 2, "HAS_G_THETA": 2, "HAS_G_V": 2, "RECIP": 1},
    "na_fwd": {"TRACE": 2, "SUBTRACT": 2},
    "na_bwd": {"TRACE": 2, "SUBTRACT": 2, "CUBE": 2, "ACCUMULATED": 2, "HAS_G": 2,
               "HAS_G_U": 2},
    "na_replay_kernel": {"TRACE": 2, "SUBTRACT": 2, "CUBE": 2, "HAS_A0": 2, "HAS_CHANGED": 2},
}
#: storage types per kernel: fp32, fp16, bf16; the replay's ``u`` is also float32 under half
#: storage (the first-use probe passes ``u.float()``), two more
STORAGE = {k: 3 + (2 if k == "na_replay_kernel" else 0) for k in FLAG_VALUES}
EXPECTED = {k: math.prod(v.values()) * STORAGE[k] for k, v in FLAG_VALUES.items()}


def _check(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """``python -m spikegrad.rules.triton_kernels.check --cubin *args`` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["TORCH_LOGS"] = "-all"
    return subprocess.run([sys.executable, "-m", "spikegrad.rules.triton_kernels.check",
                           "--cubin", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout, check=False)


def test_every_variant_builds_for_sm80_and_sm90_without_spills(tmp_path):
    """All 664 variants × {sm_80, sm_90}: each compiled (a cubin for its architecture), no
    register spill, at most 255 registers, nothing missing or doubled, and the check's table
    printed (registers, spills, shared memory per build and per kernel)."""
    out = tmp_path / "cubin.json"
    block = os.environ.get("SPIKEGRAD_CUBIN_BLOCK")
    res = _check("--arch", *map(str, ARCHS), "--json", str(out), "--summary", "--fail-fast",
                 *(("--block", block) if block else ()))
    text = res.stdout + res.stderr[-3000:]
    assert res.returncode == 0, textwrap.shorten(text, 6000) if len(text) > 6000 else text
    records = json.loads(out.read_text())["records"]
    assert all(r["arch"] in ARCHS for r in records), [r["why"] for r in records if not r["arch"]]
    bad = [r for r in records if not r["ok"] or r["spill_stores"] != 0 or r["spill_loads"] != 0
           or r["registers"] is None or r["registers"] > 255 or r["shared"] is None]
    assert not bad, bad[:5]
    counts = Counter((r["kernel"], r["arch"]) for r in records)
    assert counts == Counter({(k, a): n for k, n in EXPECTED.items() for a in ARCHS}), counts
    assert sum(EXPECTED.values()) == 664
    keys = Counter((r["kernel"], r["arch"], r["dtype"], json.dumps(r["flags"], sort_keys=True))
                   for r in records)
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1][:5]
    assert {r["dtype"] for r in records} == {"fp32", "fp16", "bf16"}
    assert f"cubin ok {len(records)}" in res.stdout, res.stdout[-2000:]


def test_an_over_large_block_fails_naming_the_spill():
    """``BLOCK = 8192`` (64 neurons per thread) spills registers: exit status 1, and the
    message names the kernel, the architecture and the spill bytes."""
    res = _check("--only", "bpsta_fwd", "--block", "8192", "--summary", timeout=600)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    failures = [ln for ln in res.stdout.splitlines() if ln.startswith("  bpsta_fwd [")]
    assert failures, res.stdout[-3000:]
    assert any("sm_80" in ln for ln in failures) and any("sm_90" in ln for ln in failures)
    assert all("(BLOCK=8192): register spill:" in ln and "bytes spill stores" in ln
               for ln in failures), failures
    assert "FAILED:" in res.stdout
