"""Read the fenced code blocks of the documentation pages and the README, and run them.

Every ``python`` block of a page runs, in the page's order, in one namespace per page (a page
reads like one session); ``bash`` blocks are checked, not run: each ``python`` command's script
or module must exist and accept every ``--option`` it is given, each ``bash`` script must exist,
and each ``pip install -e ".[extras]"`` must name extras that ``pyproject.toml`` defines.
Run as a script, it executes the pages given on the command line and prints one JSON line per
page after :data:`MARK`: ``{"page": ..., "error": null | "..."}``.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the start of the runner's result lines (a page's own output may print anything else)
MARK = "@@spikegrad-docs-snippet@@ "
DOCS = ROOT / "docs"
#: the fence opening a block: ``` or ~~~ (3 or more), then the language, or MyST's
#: ``{code-block} python`` / ``{code-cell} python``
_OPEN = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?:\{[\w-]+\}\s*)?(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str


def pages() -> list[Path]:
    """Every Markdown page of the docs, and the README."""
    found = [p for p in DOCS.rglob("*.md")
             if not {"_build", "_generated"} & set(p.relative_to(DOCS).parts)]
    return sorted(found) + [ROOT / "README.md"]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, with MyST option lines (``:caption: ...``) removed."""
    out, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent, start = m["fence"], len(m["indent"]), i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
            i += 1
        while body and re.match(r"^:[\w-]+:", body[0]):
            body.pop(0)
        out.append(Block(page, start + 1, m["lang"].lower(), "\n".join(body) + "\n"))
        i += 1
    return out


def python_blocks(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in ("python", "py", "python3")]


def commands(page: Path) -> list[tuple[int, list[str]]]:
    """``(line, argv)`` of each simple command in the page's ``bash``/``sh``/``console``
    blocks: continuation lines joined, comments dropped, split at ``&&``, ``||``, ``;`` and
    ``|``; a ``$ `` prompt removed; ``VAR=value`` prefixes and ``(``/``)`` dropped."""
    out = []
    for b in blocks(page):
        if b.lang not in ("bash", "sh", "shell", "console"):
            continue
        text = b.code.replace("\\\n", " ")
        for k, raw in enumerate(text.splitlines()):
            line = raw.strip().removeprefix("$ ")
            if not line or line.startswith("#"):
                continue
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as e:
                where = f"{page.name}:{b.line + k}"
                raise AssertionError(f"{where}: cannot parse {line!r}: {e}") from None
            argv: list[str] = []
            for t in [*tokens, ";"]:
                if t in ("&&", "||", ";", "|") or t.endswith(";"):
                    t = t.rstrip(";")
                    if t and t not in ("&&", "||", "|"):
                        argv.append(t)
                    argv = [a.strip("()") for a in argv if a.strip("()")]
                    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
                        argv.pop(0)
                    if argv:
                        out.append((b.line + k, argv))
                    argv = []
                else:
                    argv.append(t)
    return out


def run_pages(paths: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import os

    os.chdir(ROOT)
    for p in paths:
        page = Path(p)
        error, namespace = None, {"__name__": "__main__"}
        for b in python_blocks(page):
            try:  # padded so that a traceback names the page's own line numbers
                exec(compile("\n" * b.line + b.code, str(page), "exec"), namespace)  # noqa: S102
            except BaseException:  # noqa: BLE001 - reported per page
                error = f"block at line {b.line}:\n" + traceback.format_exc(limit=-4)
                break
        print(MARK + json.dumps({"page": str(page), "error": error}), flush=True)


if __name__ == "__main__":
    run_pages(sys.argv[1:])
