"""The layout of ``spikegrad/rules``: one folder per rule with kernels, and an import graph
without circles (imports written inside functions counted too).

The graph is read from the source files' syntax trees (nothing is imported to build it). An
import of a package's own submodule from the package (``na/__init__.py`` importing ``na.cpu``)
is an edge; the implicit import of a package by its submodules is not (Python runs a package's
``__init__`` first whatever the submodule says), but an explicit ``from spikegrad.rules.na import
NA`` in ``na/triton.py`` is.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "spikegrad" / "rules"
#: the rule folders with hand-written kernels (found by their ``triton.py``: a new folder is
#: checked here without editing this file) and what each must hold
FOLDERS = tuple(sorted(p.parent.name for p in RULES.glob("*/triton.py")))
FILES = ("__init__.py", "reference.py", "ops.py", "triton.py", "cupy.py")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "spikegrad").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module that ``name`` (a module or a name in one) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(modules: dict[str, Path]) -> dict[str, dict[str, bool]]:
    """``{module: {imported module: written inside a function}}`` for spikegrad's modules."""
    edges: dict[str, dict[str, bool]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef,
                                                                   ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if not target.startswith("spikegrad"):
                    continue
                resolved = _resolve(target, modules)
                if resolved is None or resolved == name:
                    continue
                seen = edges.setdefault(name, {})
                seen[resolved] = seen.get(resolved, True) and id(node) in inside
    return edges


def find_cycle(edges: dict[str, dict[str, bool]]) -> list[str] | None:
    """One import circle (``[a, b, ..., a]``), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _imports_triton(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n == "triton" or n.startswith("triton.") for n in names):
            return True
    return False


MODULES = _modules()
EDGES = import_edges(MODULES)
RULE_EDGES = {a: {b: k for b, k in targets.items() if b.startswith("spikegrad.rules")}
              for a, targets in EDGES.items() if a.startswith("spikegrad.rules")}


def test_the_cycle_finder_finds_a_circle():
    """The check below can fail: a circle through a function-local import is found."""
    assert find_cycle({"a": {"b": False}, "b": {"c": True}, "c": {"a": False}}) == [
        "a", "b", "c", "a"]
    assert find_cycle({"a": {"b": False}, "b": {"c": True}}) is None


def test_the_graph_reader_sees_a_local_import(tmp_path):
    (tmp_path / "spikegrad").mkdir()
    (tmp_path / "spikegrad" / "x.py").write_text("def f():\n    from spikegrad import y\n")
    (tmp_path / "spikegrad" / "y.py").write_text("from spikegrad.x import f\n")
    mods = {"spikegrad.x": tmp_path / "spikegrad/x.py", "spikegrad.y": tmp_path / "spikegrad/y.py"}
    edges = import_edges(mods)
    assert edges == {"spikegrad.x": {"spikegrad.y": True}, "spikegrad.y": {"spikegrad.x": False}}
    assert find_cycle(edges) is not None


def test_spikegrad_has_no_import_circle():
    """Not in ``spikegrad/rules`` and not across the package, imports inside functions
    included (an import moved into a function to break a circle is still a circle)."""
    assert len(RULE_EDGES) > 30
    assert find_cycle(EDGES) is None, find_cycle(EDGES)


def test_imports_inside_functions_load_triton_only():
    """The imports of ``spikegrad.rules`` written inside functions are those of a module that
    imports Triton (loaded on first use, so that importing spikegrad never imports Triton)."""
    local = sorted((a, b) for a, targets in RULE_EDGES.items() for b, is_local in targets.items()
                   if is_local)
    assert local, "the rules load their Triton kernels on first use"
    wrong = [(a, b) for a, b in local if not _imports_triton(MODULES[b])]
    assert not wrong, f"imports inside functions that do not load Triton: {wrong}"


def test_the_dispatcher_and_the_probe_import_no_rule():
    """The dispatcher and the first-use probe know no rule: the rules register with them."""
    allowed = {"spikegrad.rules.first_use", "spikegrad.rules.triton_kernels",
               "spikegrad.rules.triton_kernels.spec"}
    for name in ("spikegrad.rules.dispatch", "spikegrad.rules.first_use"):
        rules = set(RULE_EDGES.get(name, {})) - allowed
        assert not rules, f"{name} imports {sorted(rules)}"


@pytest.mark.parametrize("rule", FOLDERS)
def test_each_rule_folder_holds_its_pieces_and_registers_its_probes(rule):
    """A rule with hand-written kernels is one folder: reference, operators, Triton and CuPy
    kernels; importing it registers each kernel's first-use probe."""
    from spikegrad.rules import first_use

    assert all((RULES / rule / f).is_file() for f in FILES), sorted(
        p.name for p in (RULES / rule).iterdir())
    importlib.import_module(f"spikegrad.rules.{rule}")
    keys = {key for family, key in first_use._RUNNERS if family == "cupy"}
    assert rule in keys
    triton_keys = {key.__module__ for family, key in first_use._RUNNERS if family == "triton"}
    assert f"spikegrad.rules.{rule}.reference" in triton_keys or (
        rule == "reset_term" and "spikegrad.rules.reset_term.spec" in triton_keys)


def test_the_rule_folders_are_found():
    """The four rules with hand-written kernels are found by their folders, by this test and by
    the kernel tools (:func:`spikegrad.rules.triton_kernels.rules_with_kernels`)."""
    from spikegrad.rules.triton_kernels import rules_with_kernels

    assert FOLDERS == rules_with_kernels()
    assert {"bpsta", "multistrength", "na", "reset_term"} <= set(FOLDERS)


def test_the_old_flat_modules_are_gone():
    """One place per rule: the per-backend files of the old layout do not come back."""
    for old in ("ops_lif.py", "ops_na.py", "na_cpu.py", "na.py", "reset_term.py", "bpsta.py",
                "multistrength.py", "triton_kernels/functions.py", "triton_kernels/ops.py",
                "triton_kernels/kernels_lif.py", "triton_kernels/kernels_na.py",
                "triton_kernels/replay.py", "cupy_kernels/kernels.py",
                "cupy_kernels/dispatch.py"):
        assert not (RULES / old).exists(), old
