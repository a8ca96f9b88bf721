"""``python -m spikegrad.rules.na``: --help helps without building, a failed build shows the
compiler's own error lines, and NA's run-time fallback to its torch reference warns once."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from spikegrad.rules import dispatch
from spikegrad.rules.na import cpu as na_cpu

ROOT = Path(__file__).resolve().parents[2]


def test_help_does_not_build():
    res = subprocess.run([sys.executable, "-m", "spikegrad.rules.na", "--help"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0
    assert "--require" in res.stdout and "torch reference" in res.stdout
    assert "NA CPU kernel:" not in res.stdout and res.stderr == ""


def test_failed_build_shows_the_compilers_error(tmp_path):
    """A real compiler failure (a broken copy of the source, built in a scratch extensions
    directory so that the real kernel's cache is never touched)."""
    broken = tmp_path / "na_cpu.cpp"
    broken.write_text((ROOT / "spikegrad/rules/na/csrc/na_cpu.cpp").read_text()
                      .replace("namespace {", "namespace { this_is_not_cpp;", 1))
    script = ("import sys; from spikegrad.rules.na import cpu as na_cpu; "
              f"na_cpu._SOURCE = na_cpu.Path({str(broken)!r}); "
              "raise SystemExit(na_cpu.main(['--require']))")
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, env=env, cwd=ROOT)
    assert res.returncode == 1
    assert "could not be built" in res.stdout
    said = res.stdout.split("the compiler said:", 1)[1]
    assert "this_is_not_cpp" in said and "error" in said.lower()
    assert len(said.strip().splitlines()) <= 12


def test_compiler_errors_picks_error_lines():
    out = ["[1/2] c++ -c x.cpp", "x.cpp:3:1: error: 'foo' does not name a type", "    3 | foo;",
           "ninja: build stopped: subcommand failed."]
    assert na_cpu.compiler_errors(out) == out[1:3]
    assert na_cpu.compiler_errors(["no match here"]) == ["no match here"]


def test_runtime_fallback_warns_once(monkeypatch):
    from spikegrad.neurons import NALeaky

    monkeypatch.setitem(na_cpu._STATE, "module", None)
    monkeypatch.setitem(na_cpu._STATE, "done", True)
    monkeypatch.setitem(na_cpu._STATE, "error", "CalledProcessError: g++ failed")
    dispatch._warn_cpp_fallback.cache_clear()
    x = torch.rand(4, 2, 3, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="torch reference.*could not be built"):
        NALeaky(0.8).sequence(x)[0].sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NALeaky(0.8).sequence(x)  # once per process
    dispatch._warn_cpp_fallback.cache_clear()
