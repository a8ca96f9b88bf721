"""The documentation is checked like code: the site builds with every warning an error (and
every cross-reference resolved), every Python snippet of the docs and the README runs, every
command they show names a script, module, option and extra that exist, the README's links
point at files of the repository, and the README stays short."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.docs import snippets

ROOT = snippets.ROOT
PAGES = snippets.pages()
PY_PAGES = [p for p in PAGES if snippets.python_blocks(p)]
CMD_PAGES = [p for p in PAGES if snippets.commands(p)]


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_docs_build_without_a_warning(tmp_path):
    """Sphinx, nitpicky, warnings as errors; the figures are drawn by the build itself."""
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    html = tmp_path / "html"
    for name in ("index.html", "api.html", "rules/na.html", "genindex.html"):
        assert (html / name).is_file(), name
    # every image a page shows was written (a missing figure is only a warning in some builders)
    for page in html.rglob("*.html"):
        for src in re.findall(r'<img[^>]+src="([^"]+)"', page.read_text()):
            if not src.startswith(("http:", "https:", "data:")):
                assert (page.parent / src).is_file(), f"{page.relative_to(html)}: {src}"


@functools.cache
def _ran() -> dict[str, str | None]:
    """Every page's Python blocks, run once in one fresh interpreter (pages after each other,
    each in its own namespace)."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(Path(snippets.__file__)), *map(str, PY_PAGES)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=1200)
    seen = {}
    for line in proc.stdout.splitlines():
        if line.startswith(snippets.MARK):
            row = json.loads(line.removeprefix(snippets.MARK))
            seen[row["page"]] = row["error"]
    if len(seen) != len(PY_PAGES):
        pytest.fail(f"the snippet runner stopped (exit {proc.returncode}):\n"
                    + proc.stderr[-6000:])
    return seen


@pytest.mark.parametrize("page", PY_PAGES, ids=_id)
def test_python_snippets_run(page):
    error = _ran()[str(page)]
    assert error is None, f"{_id(page)}: {error}"


_HELP_RUNNER = r"""
import contextlib, io, json, runpy, sys
out = {}
for kind, target in json.loads(sys.argv[1]):
    buf = io.StringIO()
    sys.argv = [target, "--help"]
    code = 0
    try:
        with contextlib.redirect_stdout(buf):
            if kind == "module":
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:  # as `python script.py`: the script's folder first on the path
                import os
                sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
                try:
                    runpy.run_path(target, run_name="__main__")
                finally:
                    sys.path.pop(0)
    except SystemExit as e:
        code = e.code or 0
    except BaseException as e:  # reported, not raised: the other targets still run
        code = f"{type(e).__name__}: {e}"
    out[f"{kind}:{target}"] = [code, buf.getvalue()]
print("@@help@@" + json.dumps(out))
"""


@functools.cache
def _helps() -> dict[str, list]:
    """``--help`` of every script and module the pages' commands name, in one interpreter
    (one torch import instead of one per script)."""
    wanted = sorted({_target(argv) for page in CMD_PAGES for _, argv in snippets.commands(page)}
                    - {None})
    proc = subprocess.run([sys.executable, "-c", _HELP_RUNNER, json.dumps(wanted)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@help@@")]
    assert line, f"the --help runner failed:\n{proc.stderr[-3000:]}"
    return json.loads(line[-1].removeprefix("@@help@@"))


def _target(argv: list[str]) -> tuple[str, str] | None:
    """``(kind, target)`` of a ``python`` command whose options are checked, else ``None``."""
    if Path(argv[0]).name not in ("python", "python3") or len(argv) < 2:
        return None
    if argv[1] == "-m" and len(argv) > 2:
        skip = ("pytest", "pip", "venv", "sphinx", "torch.distributed.run")
        if argv[2] in skip or not any(a.startswith("--") for a in argv[3:]):
            return None
        return ("module", argv[2])
    if argv[1].endswith(".py") and any(a.startswith("--") for a in argv[2:]):
        return ("script", argv[1])
    return None


def _help(kind: str, target: str) -> str:
    found = _helps().get(f"{kind}:{target}")
    if found is None:  # a target no page names (the reader's own test): run it alone
        argv = [sys.executable, "-m", target] if kind == "module" else [sys.executable, target]
        proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, cwd=ROOT,
                              timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        found = [proc.returncode, proc.stdout]
    code, text = found
    assert code == 0, f"{target} --help: exit {code}"
    return text


def _extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"])


def _check(argv: list[str]) -> None:
    exe = Path(argv[0]).name
    if exe in ("python", "python3") and len(argv) > 1:
        if argv[1] == "-m":
            kind, target, rest = "module", argv[2], argv[3:]
            if target in ("pytest", "pip", "venv", "sphinx", "torch.distributed.run"):
                return
        elif argv[1].endswith(".py"):
            kind, target, rest = "script", argv[1], argv[2:]
            assert (ROOT / target).is_file(), f"no such script: {target}"
        else:
            return
        flags = {a.split("=")[0] for a in rest if a.startswith("--")}
        if flags:
            text = _help(kind, target)
            for flag in flags:
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), \
                    f"{target} has no option {flag} (its --help does not list it)"
    elif exe == "bash" and len(argv) > 1 and argv[1].endswith(".sh"):
        assert (ROOT / argv[1]).is_file(), f"no such script: {argv[1]}"
    elif exe == "pip" or (exe == "python" and argv[1:3] == ["-m", "pip"]):
        for a in argv:
            m = re.fullmatch(r"\.?\.?/?\.?\[([\w,-]+)\]", a.strip("'\""))
            if m:
                missing = set(m[1].split(",")) - _extras()
                assert not missing, f"pyproject.toml has no extra {sorted(missing)}"


@pytest.mark.parametrize("page", CMD_PAGES, ids=_id)
def test_commands_name_what_exists(page):
    for line, argv in snippets.commands(page):
        try:
            _check(argv)
        except AssertionError as e:
            raise AssertionError(f"{_id(page)}:{line}: {' '.join(argv)}: {e}") from None


def test_readme_links_point_into_the_repository():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets, "the README links into the docs"
    for t in targets:
        if t.startswith(("http:", "https:", "mailto:", "#")):
            continue
        path = t.split("#")[0]
        assert (ROOT / path).exists(), f"README links to {t}, which is not in the repository"


def test_readme_fits_on_two_screens():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines (at most 150)"


def test_the_snippet_reader_sees_blocks_and_commands(tmp_path):
    """The reader itself: fences of both kinds, MyST options, continuations, prompts."""
    page = tmp_path / "p.md"
    page.write_text("text\n```python\nx = 1\n```\n~~~{code-block} python\n:caption: c\ny = x\n~~~\n"
                    "```bash\n$ A=1 python benchmarks/compare.py --quick \\\n  --rules na && "
                    "bash benchmarks/gpu_check.sh --dry-run  # c\n(cd x; ls)\n```\n")
    assert [(b.lang, b.code) for b in snippets.python_blocks(page)] == [
        ("python", "x = 1\n"), ("python", "y = x\n")]
    assert [argv for _, argv in snippets.commands(page)] == [
        ["python", "benchmarks/compare.py", "--quick", "--rules", "na"],
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"], ["cd", "x"], ["ls"]]
    with pytest.raises(AssertionError, match="has no option --no-such"):
        _check(["python", "benchmarks/compare.py", "--no-such"])
    with pytest.raises(AssertionError, match="no extra"):
        _check(["pip", "install", "-e", ".[nope]"])


def test_the_build_fails_on_a_broken_link_anchor_or_reference(tmp_path):
    """The site's own configuration (nitpicky, MyST heading anchors, warnings as errors) turns a
    link to a missing page, a missing section or an unknown API name into a failed build."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        f"exec(compile(open({str(ROOT / 'docs' / 'conf.py')!r}).read(), 'conf.py', 'exec'))\n"
        "def setup(app):\n    pass  # no figures: the pages below show none\n")
    (src / "index.md").write_text("# Home\n\n```{toctree}\nother\n```\n\n## A section\n")
    (src / "other.md").write_text(
        "# Other\n\n[fine](index.md#a-section), [gone](missing.md), "
        "[no anchor](index.md#no-such-section), {py:func}`spikegrad.no_such`.\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html",
         str(src), str(tmp_path / "html")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    for missing in ("missing.md", "no-such-section", "spikegrad.no_such"):
        assert missing in proc.stderr, (missing, proc.stderr[-3000:])
    assert "a-section" not in proc.stderr  # the link that exists passes
