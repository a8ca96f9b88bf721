"""Sphinx configuration of spikegrad's documentation.

Build (from the repository root): ``.venv/bin/python -m sphinx -W -n --keep-going -b html docs
docs/_build/html``. The figures are drawn at build time by the scripts in ``docs/_scripts/``
into ``docs/_generated/`` (not committed).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmark suite's plotting code

import spikegrad  # noqa: E402

project = "spikegrad"
author = "the spikegrad developers"
copyright = "2026, the spikegrad developers"  # noqa: A001
release = version = spikegrad.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated", "README.md"]
root_doc = "index"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# every cross-reference must resolve; names of the hosts, torch and Python's own types have no
# inventory offline (no intersphinx), so only those are exempt
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|snntorch|spikingjelly|numpy|np|triton|cupy|matplotlib)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|nn\.Module|Path|Any|Callable|Iterable|Iterator|Sequence|"
               r"Mapping|Literal|Optional|Union|TypeAlias|NamedTuple|Enum|Protocol|"
               r"dataclasses\..*|typing\..*|collections\..*|pathlib\..*|os\..*|"
               r"enum\..*|abc\..*|types\..*|warnings\..*|contextlib\..*)"),
    # private names (a leading underscore) are not documented
    (r"py:.*", r"spikegrad(\.\w+)*\._\w+"),
    # base classes of the installed spikingjelly, as its modules name them
    (r"py:class", r"(SimpleBaseNode|surrogate\.SurrogateFunctionBase|BaseNode|MemoryModule)"),
    (r"py:class", r"(int|float|str|bool|bytes|dict|list|tuple|set|object|type|None|"
                  r"Exception|ValueError|TypeError|RuntimeError|ImportError|Warning|"
                  r"UserWarning|optional|callable)"),
]

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # the hosts' docstrings are theirs (and reST of their own)
autodoc_typehints = "description"
autodoc_class_signature = "mixed"  # the constructor's signature on the class line
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("Shape", "params_style")]  # "name: shape" lines, as Args

html_theme = "sphinx_rtd_theme"
html_title = f"spikegrad {release}"
html_static_path = ["_static"]
html_css_files = ["spikegrad.css"]
html_show_sourcelink = False
# MathJax comes from its CDN; SPIKEGRAD_DOCS_MATHJAX points at a local copy for offline reading
if os.environ.get("SPIKEGRAD_DOCS_MATHJAX"):
    mathjax_path = os.environ["SPIKEGRAD_DOCS_MATHJAX"]


def _draw_figures(app) -> None:
    """Run every ``docs/_scripts/*.py``'s ``make(out_dir)``: the pictures the pages show."""
    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    for script in sorted((DOCS / "_scripts").glob("*.py")):
        if script.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"_docs_{script.stem}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.make(out)


def setup(app):
    app.connect("builder-inited", _draw_figures)
