"""The results page's table and plots of the main comparison, drawn from the committed result
rows (``benchmarks/results/compare_cpu/results.jsonl``) with the benchmark suite's own code, so
that they are exactly what ``benchmarks/compare.py`` prints and plots for those rows."""

from __future__ import annotations

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
    tables = store.train_tables(rows)
    text = "\n".join(t.markdown().replace("### ", "#### ", 1) if isinstance(t, store.Table)
                     else t + "\n" for t in tables)
    (out_dir / "compare_tables.md").write_text(text)
