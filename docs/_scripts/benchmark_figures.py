"""The results page's table and plots of the main comparison, drawn from the committed result
rows (``benchmarks/results/compare_cpu/results.jsonl``) with the benchmark suite's own code, so
that they are exactly what ``benchmarks/compare.py`` prints and plots for those rows."""

from __future__ import annotations

import re
from pathlib import Path

from suite import plots, store

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "compare_cpu"


def make(out_dir: Path) -> None:
    rows = store.Store(RESULTS).rows
    if not rows:
        raise FileNotFoundError(f"{RESULTS / 'results.jsonl'} holds no rows: the results page "
                                "needs the committed comparison")
    plots.accuracy(rows, out_dir / "compare_accuracy.png")
    plots.cost(rows, out_dir / "compare_cost.png")
    # the columns a printed summary has (summary.md, committed beside the rows, has them all)
    tables = store.train_tables(rows, terminal=True)
    text = "\n".join(t.markdown() if isinstance(t, store.Table)
                     else t + "\n" for t in tables)
    # a browser must not break "60 000" across lines either
    (out_dir / "compare_tables.md").write_text(re.sub(r"(?<=\d) (?=\d{3}(?!\d))", "\u00a0", text))
