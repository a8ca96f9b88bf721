"""Run the hosts' own test suites with spikegrad's classes substituted, and report differences.

For every host test file that names a host class spikegrad replaces, pytest runs the file once
unchanged (the host's class) and once per spikegrad substitute, each in its own subprocess, with
the host attribute replaced before any test module is imported (``snntorch.Leaky =
spikegrad.neurons.ResetTermLeaky``, ``spikingjelly.activation_based.neuron.LIFNode =
spikegrad.neurons.NALIFNode``, ...; ``ResetTermLIFNode`` and ``NALIFNode`` stand in for
``LIFNode``, ``HTDGLIFNode`` and ``MultiStrengthIFNode`` for ``IFNode``, whose parameters they
take). The report lists, per (host file, substitute), the tests that pass with the host, how many
of those pass with the substitute, and every one that does not (test id, one-line error,
innermost location). Tests that fail with the host's own class and files the host cannot even
collect are out of scope and listed as such (the spikingjelly mirror's master, 2.0.0.dev1, is
not the installed 2.0.0 release: some of its tests import modules 2.0.0 does not have).

Exporting the host tests (from the bare mirrors or any clone; ``git archive`` is no use on the
snntorch mirror, whose ``tests/*.nir`` blobs are absent, hence one ``git show`` per file)::

    S=/work/.mirror/jeshraghian+snntorch/repo
    mkdir -p /tmp/host_tests/snntorch
    for f in conftest.py test_snntorch/test_leaky.py test_snntorch/test_graded_spikes.py \\
             test_snntorch/functional/test_loss.py test_nir.py; do
        git --git-dir=$S show HEAD:tests/$f > /tmp/host_tests/snntorch/${f##*/}
    done
    J=/work/.mirror/fangwei123456+spikingjelly/repo
    mkdir -p /tmp/host_tests/spikingjelly
    for f in $(git --git-dir=$J ls-tree --name-only HEAD test/activation_based/); do
        git --git-dir=$J show HEAD:$f > /tmp/host_tests/spikingjelly/${f##*/}
    done

Running (10 to 20 minutes on 2 loaded CPU cores for both hosts and every class)::

    nice .venv/bin/python benchmarks/host_suites.py \\
        --snntorch-tests /tmp/host_tests/snntorch \\
        --spikingjelly-tests /tmp/host_tests/spikingjelly --out /tmp/host_suites_report.md

``--only NALeaky`` (repeatable) restricts the substitutes; ``--files test_leaky.py`` restricts
the host files; ``--jobs 2`` runs two pytest processes at once. The hosts' tests draw unseeded
random inputs, so every test that does not pass with a substitute is rerun ``--confirm`` times
(default 5) with the host's classes; one that fails with the host in any run is reported as
flaky, out of scope.

How the substitution is made: the host's files are copied into a temporary workspace (snntorch's as
the package ``tests/``, spikingjelly's as ``test/activation_based/``, which its helpers import by
that name) next to a generated pytest plugin ``spikegrad_host_patch`` and a ``sitecustomize.py``
that loads it. Both read the environment variable ``SPIKEGRAD_HOST_PATCH``; the plugin imports each
spikegrad class first (spikegrad's snntorch neurons subclass ``snntorch.Leaky``, so the host class
must still be the original then), then assigns it to the host attribute. Through ``sitecustomize``
the same substitution holds in the Python subprocesses some host tests start (it shadows any other
``sitecustomize`` there). The plugin counts how often the substitute was constructed in the pytest
process, so a file that never builds it is visible as such, and checks at the end that no test
restored the host's attribute.

Files are chosen by their text: a substitute applies to a file that names the host attribute
(``\\bLeaky\\b``, ``\\bLIFNode\\b``, ``\\bIFNode\\b``, ``ce_temporal_loss``...; spikegrad's
surrogates only to files about surrogates, named ``*surrogate*``). Files that name none run with
the host only when in :data:`NAMED` or given with ``--files`` (reported as naming no substituted
attribute). Files in :data:`SKIP` are not run (the reason is reported); files whose host tests
are all skipped on this machine (CUDA, Triton or CuPy only) get no substitute run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Where each host's files go inside the workspace (their helpers import them by that name).
LAYOUT = {"snntorch": "tests", "spikingjelly": "test/activation_based"}


@dataclasses.dataclass(frozen=True)
class Substitute:
    """One spikegrad replacement of host attributes.

    Attributes:
        name: the name used by ``--only`` and in the report (the spikegrad class).
        host: ``"snntorch"`` or ``"spikingjelly"``.
        patches: ``(host module, attribute, "spikegrad.module:attribute")`` triples.
        pattern: a regular expression a host file must contain for the substitute to apply.
        file_pattern: a regular expression on the file name, or ``None`` for any file.
    """

    name: str
    host: str
    patches: tuple[tuple[str, str, str], ...]
    pattern: str
    file_pattern: str | None = None

    def applies(self, path: Path, text: str) -> bool:
        """Whether ``path`` (with contents ``text``) exercises the patched host attributes."""
        if self.file_pattern is not None and not re.search(self.file_pattern, path.name):
            return False
        return re.search(self.pattern, text) is not None

    def describe(self) -> str:
        """``host.attr = spikegrad.attr`` for every patch, as Markdown."""
        return "; ".join(f"`{m}.{a} = {r.replace(':', '.')}`" for m, a, r in self.patches)


_SJ_NEURON = "spikingjelly.activation_based.neuron"
_SJ_SURROGATE = "spikingjelly.activation_based.surrogate"


def _snntorch_leaky(name: str) -> Substitute:
    return Substitute(name, "snntorch", (("snntorch", "Leaky", f"spikegrad.neurons:{name}"),),
                      r"\bLeaky\b")


def _sj_node(name: str, host_class: str) -> Substitute:
    return Substitute(name, "spikingjelly",
                      ((_SJ_NEURON, host_class, f"spikegrad.neurons:{name}"),),
                      rf"\b{host_class}\b")


#: Every substitution the harness makes, in report order.
SUBSTITUTES: tuple[Substitute, ...] = (
    _snntorch_leaky("ResetTermLeaky"),
    _snntorch_leaky("NALeaky"),
    _snntorch_leaky("HTDGLIFLeaky"),
    _snntorch_leaky("MultiStrengthLeaky"),
    Substitute(
        "ttfs", "snntorch",
        (("snntorch.functional", "ce_temporal_loss", "spikegrad.rules.ttfs:ce_temporal_loss"),
         ("snntorch.functional", "mse_temporal_loss", "spikegrad.rules.ttfs:mse_temporal_loss")),
        r"\b(ce|mse)_temporal_loss\b",
    ),
    _sj_node("ResetTermLIFNode", "LIFNode"),
    _sj_node("NALIFNode", "LIFNode"),
    _sj_node("HTDGLIFNode", "IFNode"),  # it takes IFNode's parameters (README)
    _sj_node("MultiStrengthIFNode", "IFNode"),
    Substitute(
        "surrogate", "spikingjelly",
        ((_SJ_SURROGATE, "Sigmoid", "spikegrad.rules.surrogate:Sigmoid"),
         (_SJ_SURROGATE, "ATan", "spikegrad.rules.surrogate:ATan")),
        r"\bsurrogate\.(Sigmoid|ATan)\b", file_pattern="surrogate",
    ),
)

#: Host files not run at all, with the reason (by file name).
SKIP = {
    "test_nir.py": "needs the `nir` package (snntorch's NIR export), not a spikegrad dependency",
    "test_cupy_backend_comprehensive.py": "CuPy kernels on CUDA only",
    "test_cuda_custom_op_migration.py": "CUDA custom operators only",
    "test_triton_neuron.py": "Triton kernels on CUDA only",
    "test_precision_fp8_hardware.py": "FP8 on CUDA hardware only",
    "test_train_distributed_v2.py": "multi-process torch.distributed training (minutes)",
    "test_ann2snn_qwen2.py": "a Qwen2 language model conversion (large model, minutes)",
}
_SKIP_PATTERNS = {
    r"^test_distributed_": "multi-process torch.distributed (sockets, process groups; minutes)",
}


#: Host files run with the host even where they name no substituted attribute (so that the
#: report says so): the ones a substitute is most often assumed to touch.
NAMED = {"test_graded_spikes.py", "test_monitor.py", "test_neuron_variants.py"}


def skip_reason(name: str) -> str | None:
    """Why the host file ``name`` is not run, or ``None``."""
    if name in SKIP:
        return SKIP[name]
    return next((why for pat, why in _SKIP_PATTERNS.items() if re.search(pat, name)), None)


# --- the generated plugin ---------------------------------------------------------------------

PLUGIN = '''"""Generated by spikegrad's benchmarks/host_suites.py: substitute host attributes."""
import functools
import importlib
import json
import os

SPEC = json.loads(os.environ.get("SPIKEGRAD_HOST_PATCH") or "[]")
COUNTS = {}
APPLIED = []


def _load(path):
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _count(label, cls):
    init = cls.__init__
    COUNTS[label] = 0

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        COUNTS[label] += 1
        init(self, *args, **kwargs)

    cls.__init__ = __init__


def _apply():
    for host_module, attr, replacement in SPEC:
        value = _load(replacement)  # spikegrad first: its classes subclass the host's
        if isinstance(value, type):
            _count(replacement, value)
        module = importlib.import_module(host_module)
        setattr(module, attr, value)
        APPLIED.append((module, attr, value, replacement))


_apply()


def pytest_report_header(config):
    return ["spikegrad substitution: " + (", ".join(
        f"{m.__name__}.{a} = {r}" for m, a, _, r in APPLIED) or "none (host classes)")]


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("SPIKEGRAD_HOST_PATCH_OUT")
    if not out:
        return
    intact = all(getattr(m, a) is v for m, a, v, _ in APPLIED)
    with open(out, "w") as f:
        json.dump({"constructed": COUNTS, "intact": intact}, f)
'''

SITECUSTOMIZE = '''"""Generated by benchmarks/host_suites.py: the substitution in subprocesses."""
import os

if os.environ.get("SPIKEGRAD_HOST_PATCH"):
    import spikegrad_host_patch  # noqa: F401
'''


# --- running pytest -------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """One test's result: ``passed``, ``failed``, ``error``, ``skipped`` or ``xfailed``."""

    status: str
    message: str = ""
    where: str = ""


@dataclasses.dataclass
class Run:
    """One pytest process over one host file."""

    file: str
    substitute: str | None
    outcomes: dict[str, Outcome]
    seconds: float
    returncode: int
    collection_error: str | None = None
    timed_out: bool = False
    constructed: int | None = None
    intact: bool = True

    def ids(self, status: str) -> list[str]:
        """The test ids with ``status``."""
        return [k for k, v in self.outcomes.items() if v.status == status]


def make_workspace(tests_dir: Path, host: str) -> Path:
    """A temporary copy of ``tests_dir`` laid out as the host's repository, plus the plugin."""
    root = Path(tempfile.mkdtemp(prefix=f"host_suites_{host}_"))
    target = root / LAYOUT[host]
    target.mkdir(parents=True)
    for path in sorted(tests_dir.iterdir()):
        if path.is_file() and path.suffix in (".py", ".nir", ".json", ".txt"):
            shutil.copy2(path, target / path.name)
    # a regular package shadows the standard library's ``test`` (spikingjelly's helpers are
    # imported as ``test.activation_based._...``); snntorch's tests are the package ``tests``
    (root / LAYOUT[host].split("/")[0] / "__init__.py").touch()
    (root / "pytest.ini").write_text("[pytest]\n")  # pins the rootdir; no outer ini applies
    (root / "spikegrad_host_patch.py").write_text(PLUGIN)
    (root / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return root


def _one_line(text: str, limit: int = 300) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _error_line(element: ET.Element, workspace: Path) -> tuple[str, str]:
    """``(one-line error, innermost file:line)`` of a junit failure/error element."""
    text = element.text or ""
    message = element.get("message", "")
    e_lines = [s[1:].strip() for s in text.splitlines() if s.startswith("E ")]
    named = [s for s in e_lines if re.match(r"^[\w.]*(Error|Exception|Warning|Exit)\b", s)]
    if message.startswith("collection failure") or not message:
        message = (named or e_lines or [message])[0]
    elif message.startswith("assert") and named:
        message = named[0] + " | " + message
    where = ""
    for line in text.splitlines():
        m = re.match(r"^(\S+\.py):(\d+): (\w+)", line)
        if m and not m.group(1).endswith("spikegrad_host_patch.py"):
            where = f"{m.group(1)}:{m.group(2)}"
    where = where.replace(str(workspace) + "/", "").replace(str(REPO) + "/", "")
    where = re.sub(r"^.*/site-packages/", "", where)
    return _one_line(message), where


def parse_junit(path: Path, file: str, workspace: Path) -> tuple[dict[str, Outcome], str | None]:
    """Per-test outcomes of a junit XML file, and a collection error if there was one."""
    outcomes: dict[str, Outcome] = {}
    collection_error = None
    module = Path(file).stem
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        children = {child.tag: child for child in case}
        if not classname and "error" in children:  # the file could not be imported
            collection_error = _error_line(children["error"], workspace)[0]
            continue
        parts = classname.split(".")
        inner = parts[parts.index(module) + 1:] if module in parts else parts[-1:]
        test_id = "::".join([file, *inner, name])
        for tag in ("failure", "error"):
            if tag in children:
                message, where = _error_line(children[tag], workspace)
                status = "failed" if tag == "failure" else "error"
                if test_id in outcomes and outcomes[test_id].status == "passed":
                    message = "(teardown) " + message
                outcomes[test_id] = Outcome(status, message, where)
                break
        else:
            if "skipped" in children:
                kind = children["skipped"].get("type", "")
                status = "xfailed" if kind == "pytest.xfail" else "skipped"
                outcomes[test_id] = Outcome(status, _one_line(children["skipped"].get(
                    "message", "")))
            elif test_id not in outcomes:
                outcomes[test_id] = Outcome("passed")
    return outcomes, collection_error


def _host_id(test_id: str, names: list[tuple[str, str]]) -> str:
    """``test_id`` with spikegrad class names in its parameters replaced by the host's."""
    head, bracket, params = test_id.partition("[")
    for ours, host in names:
        params = re.sub(rf"\b{ours}\b", host, params)
    return head + bracket + params


def run_pytest(workspace: Path, host: str, file: str, substitute: Substitute | None,
               timeout: float, select: list[str] | None = None) -> Run:
    """Run pytest on one host file in a subprocess, with or without ``substitute``.

    ``select``: only these test ids (as in the report) instead of the whole file.
    """
    tag = (substitute.name if substitute else "host") + ("_select" if select else "")
    xml = workspace / f"junit_{Path(file).stem}_{tag}.xml"
    info = workspace / f"patch_{Path(file).stem}_{tag}.json"
    for stale in (xml, info):
        stale.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(workspace), str(REPO), env.get("PYTHONPATH", "")) if p)
    env["SPIKEGRAD_HOST_PATCH"] = json.dumps(substitute.patches if substitute else [])
    env["SPIKEGRAD_HOST_PATCH_OUT"] = str(info)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    targets = [f"{LAYOUT[host]}/{t}" for t in select] if select else [f"{LAYOUT[host]}/{file}"]
    cmd = [sys.executable, "-m", "pytest", *targets, "-q", "-p",
           "no:cacheprovider", "-p", "spikegrad_host_patch", f"--junitxml={xml}"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=workspace, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    timed_out = False
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)  # the pytest we started and its children only
        stdout, _ = proc.communicate()
    seconds = time.monotonic() - start
    outcomes: dict[str, Outcome] = {}
    collection_error = None
    if xml.exists():
        outcomes, collection_error = parse_junit(xml, file, workspace)
    elif not timed_out:
        collection_error = "pytest wrote no report: " + _one_line(stdout[-2000:])
    if substitute is not None:  # parametrize ids that name the class: use the host's name
        names = [(r.rpartition(":")[2].rpartition(".")[2], a) for _, a, r in substitute.patches]
        outcomes = {_host_id(k, names): v for k, v in outcomes.items()}
    run = Run(file, substitute.name if substitute else None, outcomes, seconds,
              proc.returncode, collection_error, timed_out)
    if info.exists():
        data = json.loads(info.read_text())
        run.constructed = sum(data["constructed"].values()) if data["constructed"] else None
        run.intact = data["intact"]
    return run


def merge_host_runs(runs: list[Run]) -> Run:
    """One host run from repeated ones (the first over the whole file, later ones possibly over
    some of its tests): a test whose outcome differs between them is ``flaky`` (the hosts'
    tests draw unseeded random inputs)."""
    first = runs[0]
    merged = dataclasses.replace(first, outcomes=dict(first.outcomes),
                                 seconds=sum(r.seconds for r in runs))
    for test in first.outcomes:
        seen = [r.outcomes[test].status for r in runs if test in r.outcomes]
        if len(set(seen)) > 1:
            merged.outcomes[test] = Outcome(
                "flaky", f"host outcomes over {len(runs)} runs: {', '.join(seen)}")
    return merged


# --- planning and reporting -------------------------------------------------------------------


@dataclasses.dataclass
class FilePlan:
    """What to do with one host file."""

    host: str
    file: str
    substitutes: list[Substitute]
    skip: str | None = None


def plan(host: str, tests_dir: Path, only: set[str] | None, files: set[str] | None
         ) -> list[FilePlan]:
    """The host files of ``tests_dir`` that name a substituted attribute (or are in ``files``)."""
    subs = [s for s in SUBSTITUTES if s.host == host and (not only or s.name in only)]
    plans = []
    for path in sorted(tests_dir.glob("test_*.py")):
        if files and path.name not in files:
            continue
        applicable = [s for s in subs if s.applies(path, path.read_text(errors="replace"))]
        if not applicable and not files and path.name not in NAMED:
            continue
        plans.append(FilePlan(host, path.name, applicable, skip_reason(path.name)))
    return plans


def _versions() -> str:
    names = ("torch", "snntorch", "spikingjelly", "pytest")
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "?"
    return ", ".join(versions) + f", spikegrad at {rev}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def report(plans: list[FilePlan], runs: dict[tuple[str, str, str | None], Run],
           command: str) -> str:
    """The Markdown report."""
    out = ["# Host test suites with spikegrad substituted", "",
           f"{datetime.datetime.now():%Y-%m-%d %H:%M}; {_versions()}.", "",
           f"Command: `{command}`", "", "## Substitutions", ""]
    used = {s.name for p in plans for s in p.substitutes}
    out += [f"- **{s.name}**: {s.describe()}" for s in SUBSTITUTES if s.name in used]
    out += ["", "## Summary", "",
            "Per (host file, substitute): tests that pass with the host's class, how many of "
            "those pass with the substitute, how often the substitute was constructed in the "
            "pytest process.", "",
            "| host | file | substitute | host-passing | pass with substitute | "
            "not passing | constructed |", "|---|---|---|---:|---:|---:|---:|"]
    details, scope = [], []
    for p in plans:
        host_run = runs.get((p.host, p.file, None))
        if p.skip:
            scope.append(f"- `{p.file}` ({p.host}): not run: {p.skip}")
            continue
        if host_run is None:
            continue
        hosts_passing = host_run.ids("passed")
        if host_run.collection_error or host_run.timed_out:
            why = "timed out" if host_run.timed_out else host_run.collection_error
            scope.append(f"- `{p.file}` ({p.host}): the host's own run fails to collect: "
                         f"{_cell(why or '')}")
            continue
        counts = {k: len(host_run.ids(k)) for k in ("passed", "failed", "error", "skipped")}
        if hosts_passing == [] and counts["skipped"]:
            scope.append(f"- `{p.file}` ({p.host}): all {counts['skipped']} tests skipped on "
                         "this machine (CUDA/Triton/CuPy); no substitute run")
            continue
        failing = host_run.ids("failed") + host_run.ids("error")
        flaky = host_run.ids("flaky")
        if flaky:
            scope.append(f"- `{p.file}` ({p.host}): flaky with the host's own class (out of "
                         f"scope): {len(flaky)}")
            scope += [f"  - `{t}`: {host_run.outcomes[t].message}" for t in flaky]
        if failing:
            scope.append(f"- `{p.file}` ({p.host}): {len(failing)} of "
                         f"{len(host_run.outcomes)} tests fail with the host's own class "
                         "(out of scope):")
            scope += [f"  - `{t}`: {_cell(host_run.outcomes[t].message)}" for t in failing]
        if not p.substitutes:
            out.append(f"| {p.host} | `{p.file}` | (none: names no substituted attribute) | "
                       f"{len(hosts_passing)} | - | - | - |")
            continue
        for sub in p.substitutes:
            run = runs.get((p.host, p.file, sub.name))
            if run is None:
                continue
            bad = []
            for test in hosts_passing:
                got = run.outcomes.get(test)
                if got is None:
                    why = ("timed out" if run.timed_out else run.collection_error
                           or "not collected with the substitute")
                    bad.append((test, Outcome("missing", why)))
                elif got.status != "passed":
                    bad.append((test, got))
            constructed = "-" if run.constructed is None else str(run.constructed)
            if run.constructed == 0:
                constructed = "0 (never built: the host's tests do not reach it)"
            if not run.intact:
                constructed += " (a test restored the host's attribute)"
            out.append(f"| {p.host} | `{p.file}` | {sub.name} | {len(hosts_passing)} | "
                       f"{len(hosts_passing) - len(bad)} | {len(bad)} | {constructed} |")
            if bad:
                details += ["", f"### `{p.file}` with {sub.name} ({len(bad)} of "
                            f"{len(hosts_passing)} host-passing tests do not pass)", ""]
                for test, got in bad:
                    where = f" (at `{got.where}`)" if got.where else ""
                    details.append(f"- `{test}` **{got.status}**: {_cell(got.message)}{where}")
            gained = [t for t in failing if run.outcomes.get(t, Outcome("")).status == "passed"]
            if gained:
                details += ["", f"`{p.file}` with {sub.name}: passing with the substitute, "
                            "failing with the host: " + ", ".join(f"`{t}`" for t in gained)]
    out += ["", "## Tests that do not pass with the substitute"]
    out += details or ["", "None."]
    out += ["", "## Out of scope", ""] + (scope or ["None."])
    timing = sorted(runs.values(), key=lambda r: -r.seconds)[:5]
    out += ["", "## Slowest runs", ""]
    out += [f"- `{r.file}` ({r.substitute or 'host'}): {r.seconds:.1f} s"
            + (" (timed out)" if r.timed_out else "") for r in timing]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snntorch-tests", type=Path, help="directory of snntorch test files")
    parser.add_argument("--spikingjelly-tests", type=Path,
                        help="directory of spikingjelly test/activation_based files")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown report to write")
    parser.add_argument("--only", action="append", metavar="CLASSNAME",
                        help="only this substitute (repeatable): " + ", ".join(
                            s.name for s in SUBSTITUTES))
    parser.add_argument("--files", nargs="+", metavar="FILE",
                        help="only these host files (by name); run even if they name no "
                        "substituted attribute")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds per pytest process (default 300)")
    parser.add_argument("--jobs", type=int, default=1, help="pytest processes at once")
    parser.add_argument("--host-runs", type=int, default=1,
                        help="runs of each whole file with the host's classes (default 1)")
    parser.add_argument("--confirm", type=int, default=5,
                        help="host reruns of the tests that do not pass with a substitute; one "
                        "that fails with the host in any of them is flaky (default 5)")
    args = parser.parse_args(argv)
    only = set(args.only) if args.only else None
    if only and not only <= {s.name for s in SUBSTITUTES}:
        parser.error(f"unknown --only {sorted(only - {s.name for s in SUBSTITUTES})}")
    dirs = {"snntorch": args.snntorch_tests, "spikingjelly": args.spikingjelly_tests}
    if not any(dirs.values()):
        parser.error("give --snntorch-tests and/or --spikingjelly-tests")
    plans, workspaces, jobs = [], {}, []
    for host, directory in dirs.items():
        if directory is None:
            continue
        if not directory.is_dir():
            parser.error(f"{directory} is not a directory")
        host_plans = plan(host, directory, only, set(args.files) if args.files else None)
        plans += host_plans
        workspaces[host] = make_workspace(directory, host)
        jobs += [p for p in host_plans if p.skip is None]
    runs: dict[tuple[str, str, str | None], Run] = {}

    def run_file(p: FilePlan) -> None:
        ws = workspaces[p.host]
        host_run = merge_host_runs([run_pytest(ws, p.host, p.file, None, args.timeout)
                                    for _ in range(max(1, args.host_runs))])
        runs[(p.host, p.file, None)] = host_run
        print(f"{p.host} {p.file} host: {len(host_run.ids('passed'))} passed "
              f"({host_run.seconds:.1f} s)", flush=True)
        if host_run.collection_error or host_run.timed_out or not host_run.ids("passed"):
            return
        suspects: set[str] = set()
        for sub in p.substitutes:
            run = run_pytest(ws, p.host, p.file, sub, args.timeout)
            runs[(p.host, p.file, sub.name)] = run
            bad = {t for t in host_run.ids("passed")
                   if run.outcomes.get(t, Outcome("")).status != "passed"}
            suspects |= bad
            print(f"{p.host} {p.file} {sub.name}: {len(host_run.ids('passed')) - len(bad)}/"
                  f"{len(host_run.ids('passed'))} ({run.seconds:.1f} s)", flush=True)
        if suspects and args.confirm > 0:  # do they pass with the host every time?
            select = sorted(suspects)
            again = [run_pytest(ws, p.host, p.file, None, args.timeout, select)
                     for _ in range(args.confirm)]
            runs[(p.host, p.file, None)] = merge_host_runs([host_run, *again])

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(run_file, jobs))
    finally:
        for ws in workspaces.values():
            shutil.rmtree(ws, ignore_errors=True)
    command = " ".join(["python", "benchmarks/host_suites.py", *(argv or sys.argv[1:])])
    args.out.write_text(report(plans, runs, command))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
