"""The byte model of :mod:`spikegrad.rules.traffic` against the kernels themselves.

A fresh process runs every fused Triton kernel (through the operators of
the rules' ``triton`` modules) in Triton's interpreter on CPU tensors, with the
interpreter's masked load and store recorded: the addresses each one touched (masked lanes
left out) and their element size. Loads and stores in bytes, and the distinct addresses
loaded and stored, must equal the model for every rule, direction, storage type and flag: a
kernel that gains or loses a load or store fails here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from spikegrad.rules import traffic

_SCRIPT = textwrap.dedent(r"""
    import itertools, json, os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    import numpy as np
    import torch
    from triton.runtime import interpreter as I

    seen = {"load": [], "store": []}

    def _record(kind, ptrs, mask):
        size = ptrs.get_element_ty().primitive_bitwidth // 8
        addr = np.asarray(ptrs.data).reshape(-1)[np.asarray(mask.data, bool).reshape(-1)]
        seen[kind].append((addr.astype(np.uint64), size))

    B = I.InterpreterBuilder
    _load, _store = B.create_masked_load, B.create_masked_store

    def load(self, ptrs, mask, *a, **k):
        _record("load", ptrs, mask)
        return _load(self, ptrs, mask, *a, **k)

    def store(self, ptrs, value, mask, *a, **k):
        _record("store", ptrs, mask)
        return _store(self, ptrs, value, mask, *a, **k)

    B.create_masked_load, B.create_masked_store = load, store
    from spikegrad.rules.bpsta import triton as ht
    from spikegrad.rules.multistrength import triton as ms
    from spikegrad.rules.na import triton as na_t
    from spikegrad.rules.reset_term import triton as rt
    from spikegrad.rules.triton_kernels import lib
    assert lib.INTERPRETED

    def counted(fn, *args):
        seen["load"].clear(); seen["store"].clear()
        out = fn(*args)
        res = {}
        for kind in ("load", "store"):
            res[kind + "s"] = int(sum(a.size * s for a, s in seen[kind]))
            sizes = {}
            for a, s in seen[kind]:
                sizes.setdefault(s, []).append(a)
            res[kind + "_unique"] = int(sum(np.unique(np.concatenate(v)).size * s
                                            for s, v in sizes.items()))
        return out, res

    records = []
    F32 = torch.float32
    for dtype, T, N in [(torch.float32, 1, 5), (torch.float32, 4, 200), (torch.float16, 3, 7)]:
        g = torch.Generator().manual_seed(0)
        def r(*shape, dt=dtype):
            return (torch.rand(*shape, generator=g) * 2).to(dt)
        c, v0, a0 = r(T, N), r(N), r(N)
        for trace, g_out, g_state in itertools.product((False, True), repeat=3):
            flags = {"trace": trace, "has_g_out": g_out, "has_g_state": g_state}
            go = r(T, N) if g_out else None
            def add(rule, direction, res):
                records.append({"rule": rule, "direction": direction, "T": T, "N": N,
                                "dtype": str(dtype), "flags": flags, **res})
            # reset-term
            (out, v, u), res = counted(rt.reset_term_fwd_op, c, v0, a0, 0.9, 1.0, False, False,
                                       trace, 0.8, 0.2, 0, 1.0, 1.0, 1.0, 5.0, 0.2)
            add("reset-term", "forward", res)
            _, res = counted(rt.reset_term_bwd_op, u, go, r(T, N) if g_state else None, dtype,
                             0.9, 1.0, False, False, trace, 0.8, 0.2, 0, 1.0, 1.0, 1.0, 5.0,
                             0.2)
            add("reset-term", "backward", res)
            # BPSA / BPTA
            (o, v, h), res = counted(ht.bpsta_fwd_op, c, v0, True, 1.0, 0.5, 0.9, 1.0)
            add("bpsa-bpta", "forward", res)
            _, res = counted(ht.bpsta_bwd_op, c, h, go, r(T, N) if g_state else None, True, 1.0,
                             0.5, 0.9, 1.0)
            add("bpsa-bpta", "backward", res)
            # multi-strength
            (th, v, h), res = counted(ms.multistrength_fwd_op, c, v0, 1.0, 1.0, 0.9, False, 0.0,
                                      0.0, False)
            add("multi-strength", "forward", res)
            _, res = counted(ms.multistrength_bwd_op, h, go, r(T, N) if g_state else None, dtype,
                             1.0, 1.0, 0.9, False, 0.0, 0.0, False)
            add("multi-strength", "backward", res)
            # NA (u0, u and g_u float32)
            u0 = r(N, dt=F32)
            (out, u), res = counted(na_t.na_fwd_op, c, u0, a0, 0.9, 1.0, 0.8, 0.2, 5.0, trace,
                                    False, False, True)
            add("na", "forward", res)
            _, res = counted(na_t.na_bwd_op, c, u0, a0, go, r(T, N, dt=F32) if g_state else None,
                             0.9, 1.0, 0.8, 0.2, 5.0, trace, False, False, True)
            add("na", "backward", res)
    json.dump(records, sys.stdout)
""")


@pytest.fixture(scope="module")
def measured() -> list[dict]:
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed: the kernels cannot run")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                          env=env, timeout=900, cwd=root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_model_counts_every_load_and_store_of_every_kernel(measured):
    assert len(measured) == 3 * 8 * 8  # 3 shapes/dtypes, 8 flag sets, 4 rules x 2 directions
    assert all(m["loads"] > 0 and m["stores"] > 0 for m in measured)  # the recorder saw them
    for m in measured:
        model = traffic.kernel_traffic(m["rule"], m["direction"], m["T"], m["N"],
                                       getattr(torch, m["dtype"].removeprefix("torch.")),
                                       **m["flags"])
        where = f"{m['rule']} {m['direction']} T={m['T']} N={m['N']} {m['dtype']} {m['flags']}"
        assert (model.loads, model.stores) == (m["loads"], m["stores"]), where
        assert model.unique == m["load_unique"] + m["store_unique"], where


def test_every_element_once_except_na_backward():
    for rule in traffic.RULES:
        for direction in ("forward", "backward"):
            t = traffic.kernel_traffic(rule, direction, 8, 100, has_g_state=True)
            if (rule, direction) == ("na", "backward"):
                assert t.issued > t.unique
            else:
                assert t.issued == t.unique, (rule, direction)
    # float32 reset-term forward: c in; u (float32), v, spikes out: 16 bytes per neuron-step
    per = traffic.bytes_per_neuron_step("reset-term", 1000, 1000)
    assert per["forward"] == pytest.approx(16.0, rel=1e-2)
    assert traffic.bytes_per_neuron_step("na", 4, 10, torch.float16)["issued"] > 0
    with pytest.raises(ValueError, match="no fused kernel"):
        traffic.kernel_traffic("native", "forward", 1, 1)
