"""``python -m spikegrad.check``: the table, the JSON, exit status 1 on a mismatch (injected
here into a real implementation's outputs and gradients), and the Triton kernels checked in
Triton's interpreter (a fresh process: the interpreter must be on before Triton is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from spikegrad import check
from spikegrad.rules.na import cpu as na_cpu


def _cases_with(rule, impl, wrap):
    real = check._cases

    def cases():
        out = []
        for name, label, cfg, ref, kernels in real():
            if name == rule and impl in kernels:
                kernels = {**kernels, impl: wrap(kernels[impl])}
            out.append((name, label, cfg, ref, kernels))
        return out
    return cases


def test_table_json_and_exit_status(tmp_path, capsys):
    path = tmp_path / "check.json"
    assert check.main(["--no-timing", "--json", str(path)]) == 0
    text = capsys.readouterr().out
    assert all(len(line) <= 120 for line in text.splitlines()), "fits 120 columns"
    data = json.loads(path.read_text())
    rows = data["rows"]
    assert data["environment"]["torch"] == torch.__version__
    assert {r["rule"] for r in rows if r["status"] == "reference"} == {
        "reset_term", "na", "bpsta", "multistrength"}
    if not torch.cuda.is_available():
        triton = [r for r in rows if r["implementation"] == "triton"]
        assert len(triton) == 1 and triton[0]["status"] == "unavailable"
        assert "--interpret" in triton[0]["reason"]
    if na_cpu.status() == "available":
        cpp = [r for r in rows if r["implementation"] == "cpp"]
        assert len(cpp) == 4 and {r["status"] for r in cpp} == {"pass"}
        assert all(r["grad_err"] <= r["tolerance"] for r in cpp)


@pytest.mark.skipif(na_cpu.status() != "available", reason="NA's compiled kernel is not built")
@pytest.mark.parametrize("where", ["outputs", "gradient", "raises"])
def test_a_mismatch_fails_the_row_and_the_exit_status(monkeypatch, capsys, where):
    def wrap(fn):
        def broken(x, state, trace):
            if where == "raises":
                raise RuntimeError("injected launch failure")
            out, u = fn(x, state, trace)
            if where == "outputs":  # one element off by 1e-3
                return out + 1e-3 * (torch.arange(out.numel()).view(out.shape) == 7), u
            return _ScaleGrad.apply(out), u
        return broken
    monkeypatch.setattr(check, "_cases", _cases_with("na", "cpp", wrap))
    assert check.main(["--no-timing", "--implementation", "cpp"]) == 1
    text = capsys.readouterr().out
    fails = [line for line in text.splitlines() if " FAIL" in line]
    assert len(fails) == 4  # both NA configurations, float32 and float64
    assert "4 comparisons, 4 failed" in text
    if where == "raises":
        assert "RuntimeError: injected launch failure" in text
    elif where == "outputs":
        assert all("cpu    1.0e-03       0       0" in line for line in fails), fails  # out err


class _ScaleGrad(torch.autograd.Function):
    """Identity forward, gradient scaled by 1.001 (a kernel whose backward is slightly off)."""

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g * 1.001


def test_compare_is_exact_on_itself_and_sees_a_flipped_spike():
    from spikegrad.rules import reset_term, surrogate

    def rt(x, v0, a0):
        s, v, _ = reset_term.SequenceFunction.apply(x, v0, 0.75, 1.0, surrogate.Sigmoid(0.3),
                                                    "zero", 1.0)
        return s, v

    def flipped(x, v0, a0):  # one spike of the first step flipped, gradients unchanged
        s, v = rt(x, v0, a0)
        mask = torch.zeros_like(s)
        mask[0, 0] = 1
        return s + mask * (1 - 2 * s.detach()), v

    same = check.compare(rt, rt, torch.device("cpu"), torch.float32)
    assert same["ok"] and same["out_err"] == same["state_err"] == same["grad_err"] == 0.0
    off = check.compare(flipped, rt, torch.device("cpu"), torch.float32)
    assert not off["ok"] and off["out_err"] == 1.0 and off["state_err"] == 0.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the kernels are compiled")
def test_triton_kernels_in_the_interpreter_all_pass():
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, "-m", "spikegrad.check", "--interpret",
                           "--implementation", "triton", "--no-timing"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "24 comparisons, 0 failed" in done.stdout
    assert done.stdout.count(" triton ") == 24 and " FAIL" not in done.stdout
