"""NA's compiled kernel is built once per environment and source (``na_cpu.build_library``).

Two real virtual environments (made here, sharing this one's packages through a ``.pth`` file)
build a small library into one shared extensions root, alternately, each in a new process: each
builds once, then loads its own build without compiling; a changed source builds anew. The
library is a few lines of C++ without torch headers, so each build takes seconds.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from spikegrad.rules.na import cpu as na_cpu

ROOT = Path(__file__).resolve().parents[2]
PROBE = ("import json, sys; from pathlib import Path; "
         "from spikegrad.rules.na import cpu as na_cpu; "
         "path, built = na_cpu.build_library('spikegrad_build_probe', Path(sys.argv[1]), "
         "['-O1']); print(json.dumps({'path': path, 'built': built, 'prefix': sys.prefix}))")


def _venv(path: Path) -> Path:
    """A virtual environment whose interpreter sees this environment's packages."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    shared = [*site.getsitepackages(), str(ROOT)]
    Path(purelib, "spikegrad_test_shared.pth").write_text("\n".join(shared) + "\n")
    return python


def _build(python: Path, source: Path, ext: Path) -> tuple[dict, str]:
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(ext)}
    res = subprocess.run([str(python), "-c", PROBE, str(source)], capture_output=True,
                         text=True, timeout=600, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="the venv layout used here is Linux's")
def test_two_environments_alternate_without_rebuilding(tmp_path):
    source = tmp_path / "probe.cpp"
    source.write_text('extern "C" int spikegrad_build_probe() { return 42; }\n')
    ext = tmp_path / "ext"
    a, b = _venv(tmp_path / "env_a"), _venv(tmp_path / "env_b")

    first_a, said = _build(a, source, ext)
    assert first_a["built"] and first_a["prefix"] == str(tmp_path / "env_a")
    line = [x for x in said.splitlines() if "spikegrad: building" in x]
    assert len(line) == 1 and "first build in the environment" in line[0]
    assert str(Path(first_a["path"]).parent) in line[0] and " s" in line[0].split("done in")[1]
    first_b, _ = _build(b, source, ext)
    assert first_b["built"] and first_b["path"] != first_a["path"]
    stamps = {p: os.stat(p).st_mtime_ns for p in (first_a["path"], first_b["path"])}

    for python, first in ((a, first_a), (b, first_b), (a, first_a), (b, first_b)):
        again, said = _build(python, source, ext)
        assert not again["built"] and again["path"] == first["path"]
        assert "spikegrad: building" not in said
    assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}  # nothing was rebuilt

    source.write_text('extern "C" int spikegrad_build_probe() { return 43; }\n')
    changed, said = _build(a, source, ext)
    assert changed["built"] and changed["path"] != first_a["path"]
    assert "the source or its flags changed since" in said


def test_build_directory_keys(tmp_path, monkeypatch):
    source = tmp_path / "x.cpp"
    source.write_text("int x;\n")
    d = na_cpu.build_directory("lib", source, ["-O3"], tmp_path)
    assert d == na_cpu.build_directory("lib", source, ["-O3"], tmp_path)
    assert d.parent == tmp_path / "spikegrad" and d.name.startswith("lib-")
    assert d != na_cpu.build_directory("lib", source, ["-O2"], tmp_path)
    monkeypatch.setattr(sys, "prefix", "/some/other/env")
    assert d != na_cpu.build_directory("lib", source, ["-O3"], tmp_path)
    monkeypatch.undo()
    source.write_text("int y;\n")
    assert d != na_cpu.build_directory("lib", source, ["-O3"], tmp_path)
