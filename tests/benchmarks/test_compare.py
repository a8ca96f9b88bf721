"""compare.py end to end on small data: files and keys, resume after an interruption, recorded
failures, a missing dataset, and data-parallel training under torchrun (gloo, 2 processes)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import compare  # noqa: E402
import datasets  # noqa: E402
from suite import recipes, store, train  # noqa: E402

from tests.benchmarks.test_datasets import _fake_fashion  # noqa: E402

pytest.importorskip("snntorch")
pytest.importorskip("spikingjelly")

ARCH = "64-24-10"  # all-linear: 8x8 images


def _learnable(n: int, seed: int) -> torch.utils.data.TensorDataset:
    """Ten classes of 8x8 images: a fixed random binary prototype per class, plus noise."""
    protos = (torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(99)) > 0.6)
    y = torch.arange(n) % 10
    noise = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return torch.utils.data.TensorDataset(0.8 * protos[y].float() + 0.2 * noise, y)


@pytest.fixture
def small_data(monkeypatch):
    spec = datasets.DataSpec(name="fashion-mnist", train=_learnable(256, 0),
                             test=_learnable(100, 1), in_shape=(1, 8, 8), num_classes=10,
                             temporal=False, source="synthetic test data")
    monkeypatch.setattr(compare, "load_dataset", lambda *a, **k: spec)
    return spec


def _run(out: Path, *extra: str) -> int:
    return compare.main(["--arch", ARCH, "--T", "3", "--batch-size", "32", "--lr", "0.01",
                         "--out", str(out), "--no-progress", "--device", "cpu", *extra])


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_help_explains_every_option():
    text = compare.parser().format_help()
    for opt in ("--framework", "--rules", "--dataset", "--arch", "--T", "--epochs",
                "--batch-size", "--lr", "--seed", "--device", "--amp", "--out", "--quick",
                "--mode", "--recipe", "--data-dir"):
        assert opt in text
    for word in ("snntorch", "spikingjelly", "both", "na-mnist", "csnn", "nmnist", "cifar10"):
        assert word in text


def test_train_mode_writes_results_summary_and_plots(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--rules", "baseline", "na", "ttfs", "--epochs", "2") == 0
    rows = _rows(out)
    assert len(rows) == 2 * 3 * 2  # frameworks x rules x epochs, one row per epoch
    for r in rows:
        assert set(store.KEYS) <= set(r)
        assert r["status"] == "ok" and r["dataset"] == "fashion-mnist" and r["T"] == 3
        assert 0.0 <= r["test_acc"] <= 100.0
        assert r["best_test_acc"] >= r["test_acc"]
        assert r["step_ms_forward"] > 0 and r["step_ms_backward"] > 0
        assert r["peak_mem_mb"] is None  # CPU: unknown, not guessed
        assert len(r["spike_rate"]) == 2 and all(0.0 <= v <= 1.0 for v in r["spike_rate"])
        assert r["versions"]["torch"] == torch.__version__
        if r["rule"] == "na":
            assert r["impl"] in ("cpp", "torch")  # the compiled CPU kernel, or why not
            assert (r["impl"] == "cpp") == (r["impl_reason"] is None)
        elif r["framework"] == "spikingjelly":  # the host's LIFNode: its dispatcher's choice
            assert r["impl"].startswith("spikingjelly ")
        else:
            assert r["impl"] == "torch"
    na_rows = [r for r in rows if r["rule"] == "na"]
    assert all(r["synops"]["acs"] == 0 for r in na_rows)  # PSP traces: analog inputs, MACs
    base = [r for r in rows if r["rule"] == "baseline"]
    assert all(r["synops"]["acs"] > 0 for r in base)  # spikes into the second layer: ACs
    # the task is easy: the baseline learns it
    assert max(r["best_test_acc"] for r in base) > 50.0
    md = (out / "summary.md").read_text()
    assert "### snntorch (training)" in md and "### spikingjelly (training)" in md
    assert "### Cross-framework" in md
    for name in ("accuracy.png", "cost.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "Cross-framework" in capsys.readouterr().out


def _final(rows: list[dict], rule: str, framework: str) -> dict:
    return max((r for r in rows if r["rule"] == rule and r["framework"] == framework),
               key=lambda r: r["epoch"])


def _same_training(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"]
    assert a["test_acc"] == b["test_acc"]
    assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-9)
    assert math.isclose(a["test_loss"], b["test_loss"], rel_tol=1e-9)


def test_interrupted_run_resumes_from_its_last_epoch(small_data, tmp_path, monkeypatch):
    args = ("--rules", "na", "--framework", "spikingjelly", "--epochs", "3")
    assert _run(tmp_path / "straight", *args) == 0

    calls = {"n": 0}
    real_fetch = train.fetch

    def killed_in_epoch_2(ds, idx):
        calls["n"] += 1
        if calls["n"] == 8 + 2:  # 8 train steps per epoch, then a few test chunks
            raise KeyboardInterrupt  # like Ctrl-C / a kill: not caught as a failure
        return real_fetch(ds, idx)

    monkeypatch.setattr(train, "fetch", killed_in_epoch_2)
    assert _run(tmp_path / "resumed", *args) == 130  # interrupted, says how to resume
    rows = _rows(tmp_path / "resumed")
    assert [r["epoch"] for r in rows] == [1]
    monkeypatch.setattr(train, "fetch", real_fetch)
    assert _run(tmp_path / "resumed", *args) == 0
    rows = _rows(tmp_path / "resumed")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    _same_training(_final(rows, "na", "spikingjelly"),
                   _final(_rows(tmp_path / "straight"), "na", "spikingjelly"))
    # the same command again: nothing left to do, nothing added
    assert _run(tmp_path / "resumed", *args) == 0
    assert len(_rows(tmp_path / "resumed")) == 3


def test_a_crash_between_checkpoint_and_row_loses_nothing(small_data, tmp_path, monkeypatch):
    """The epoch's checkpoint is written before its row, and the previous checkpoint is kept
    until the row is: a crash between the two resumes from the last recorded epoch."""
    args = ("--rules", "reset-term", "--framework", "snntorch", "--epochs", "2")
    assert _run(tmp_path / "straight", *args) == 0
    real_add = store.Store.add

    def crash_on_epoch_2(self, row):
        if row.get("epoch") == 2:
            raise KeyboardInterrupt
        real_add(self, row)

    monkeypatch.setattr(store.Store, "add", crash_on_epoch_2)
    assert _run(tmp_path / "r", *args) == 130
    assert [r["epoch"] for r in _rows(tmp_path / "r")] == [1]
    monkeypatch.setattr(store.Store, "add", real_add)
    assert _run(tmp_path / "r", *args) == 0
    _same_training(_final(_rows(tmp_path / "r"), "reset-term", "snntorch"),
                   _final(_rows(tmp_path / "straight"), "reset-term", "snntorch"))
    assert [p.name.split("-")[-1] for p in (tmp_path / "r" / "checkpoints").iterdir()] == [
        "epoch2.pt"]


def test_more_epochs_continue_a_finished_run(small_data, tmp_path):
    args = ("--rules", "baseline", "--framework", "snntorch")
    assert _run(tmp_path / "a", *args, "--epochs", "1") == 0
    assert _run(tmp_path / "a", *args, "--epochs", "2") == 0
    assert _run(tmp_path / "b", *args, "--epochs", "2") == 0
    _same_training(_final(_rows(tmp_path / "a"), "baseline", "snntorch"),
                   _final(_rows(tmp_path / "b"), "baseline", "snntorch"))

    def summary_epochs() -> list[str]:
        lines = (tmp_path / "a" / "summary.md").read_text().splitlines()
        head = next(line for line in lines if line.startswith("| rule |")).split("|")
        col = [c.strip() for c in head].index("epochs")
        return [line.split("|")[col].strip() for line in lines
                if line.startswith("| baseline |")]

    assert summary_epochs() == ["2"]
    assert _run(tmp_path / "a", *args, "--epochs", "1") == 0  # the summary at this budget
    assert summary_epochs() == ["1"] and len(_rows(tmp_path / "a")) == 2


def test_a_failing_configuration_is_recorded_and_the_rest_go_on(small_data, tmp_path,
                                                                monkeypatch):
    real = recipes.loss_fn

    def nan_for_na(rec):
        fn = real(rec)
        return (lambda out, y: fn(out, y) * float("nan")) if rec.rule == "na" else fn

    monkeypatch.setattr(recipes, "loss_fn", nan_for_na)
    args = ("--rules", "na", "baseline", "--framework", "snntorch", "--epochs", "1")
    assert _run(tmp_path / "r", *args) == 0
    rows = _rows(tmp_path / "r")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["rule"] == "na"
    assert "NonFiniteLoss" in failed[0]["error"] and failed[0]["test_acc"] is None
    assert set(store.KEYS) <= set(failed[0])
    assert [r["rule"] for r in rows if r["status"] == "ok"] == ["baseline"]
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "| na | paper | 0 | failed |" in md
    assert "snntorch na (paper) failed after 0 epochs: NonFiniteLoss" in md
    # rerun: the failure counts as finished unless --retry-failed
    assert _run(tmp_path / "r", *args) == 0
    assert len(_rows(tmp_path / "r")) == 2
    monkeypatch.setattr(recipes, "loss_fn", real)
    assert _run(tmp_path / "r", *args, "--retry-failed") == 0
    assert sorted(r["status"] for r in _rows(tmp_path / "r")) == ["ok", "ok"]


def test_missing_dataset_says_what_to_do(tmp_path, capsys):
    code = compare.main(["--dataset", "mnist", "--data-dir", str(tmp_path / "nowhere"),
                         "--out", str(tmp_path / "o"), "--framework", "snntorch"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "does not exist" in err
    assert not (tmp_path / "o" / "results.jsonl").exists()


@pytest.mark.parametrize("argv, message", [
    (["--T", "0"], "--T must be >= 1"),
    (["--arch", "64-24-7"], "ends with 7 outputs"),
    (["--arch", "64-Q-10"], "unknown token"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--rules", "nope"], "invalid choice"),
])
def test_bad_options_are_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit):
        compare.main(argv)
    assert message in capsys.readouterr().err


def test_corrupt_results_file_is_reported_not_overwritten(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    good = json.dumps({"mode": "train", "config_id": "x", "status": "ok", "framework": "snntorch",
                       "rule": "na", "epoch": 1, "test_acc": 50.0})
    (out / "results.jsonl").write_text(good + '\n{"truncated": \n')
    assert compare.main(["--out", str(out), "--framework", "snntorch"]) == 2
    assert "line 2" in capsys.readouterr().err
    assert (out / "results.jsonl").read_text() == good + '\n{"truncated": \n'


def test_results_are_replaced_atomically(tmp_path, monkeypatch):
    s = store.Store(tmp_path)
    row = {**{k: None for k in store.KEYS}, "mode": "train", "status": "ok"}
    s.add({**row, "config_id": "a"})
    before = (tmp_path / "results.jsonl").read_bytes()

    def crash(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        s.add({**row, "config_id": "b"})
    assert (tmp_path / "results.jsonl").read_bytes() == before  # old file, whole
    assert not list(tmp_path.glob(".results.jsonl.*"))  # no temporary left behind
    with pytest.raises(ValueError, match="lacks the keys"):
        s.add({"config_id": "c"})


def test_two_runs_sharing_an_output_directory_keep_each_others_rows(tmp_path):
    row = {**{k: None for k in store.KEYS}, "mode": "train", "status": "ok"}
    a, b = store.Store(tmp_path), store.Store(tmp_path)  # two processes' views
    a.add({**row, "config_id": "a1"})
    b.add({**row, "config_id": "b1"})  # b never saw a1: it re-reads under the lock
    a.add({**row, "config_id": "a2"})
    assert [r["config_id"] for r in _rows(tmp_path)] == ["a1", "b1", "a2"]


def test_a_row_without_its_keys_is_reported_with_its_line(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"mode": "train", "rule": "na"}\n')
    with pytest.raises(store.CorruptResults, match="line 1: no config_id, status"):
        store.Store(tmp_path)


def test_an_arch_that_does_not_fit_the_data_is_an_error_not_failed_rows(small_data, tmp_path,
                                                                        capsys):
    assert _run(tmp_path / "o", "--arch", "100-10") == 2
    err = capsys.readouterr().err
    assert "--arch 100-10 does not fit" in err and "(1, 8, 8)" in err
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_the_same_recipe_is_not_trained_twice(small_data, tmp_path, capsys):
    assert _run(tmp_path / "o", "--rules", "multi-strength", "na", "--recipe", "paper",
                "common", "--framework", "snntorch", "--epochs", "1") == 0
    assert sorted((r["rule"], r["recipe"]) for r in _rows(tmp_path / "o")) == [
        ("multi-strength", "paper"), ("na", "common"), ("na", "paper")]
    assert "is the paper recipe of multi-strength" in capsys.readouterr().out


@pytest.mark.parametrize("option", [["--arch", "na-mnist"], ["--epochs", "2"], ["--amp"],
                                    ["--seed", "1"], ["--recipe", "common"]])
def test_speed_mode_refuses_train_options(option, capsys):
    with pytest.raises(SystemExit):
        compare.main(["--mode", "speed", *option])
    assert "train mode only" in capsys.readouterr().err


def test_torchrun_two_processes_train_like_one(tmp_path):
    """DistributedDataParallel (gloo, 2 CPU processes, half the batch each) trains as one
    process on the whole batch; rank 0 alone writes the results."""
    _fake_fashion(tmp_path / "data", gz=True, n_train=96, n_test=40)
    common = ["--data-dir", str(tmp_path / "data"), "--framework", "snntorch", "--rules",
              "baseline", "--arch", "784-16-10", "--T", "2", "--epochs", "2",
              "--batch-size", "32", "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "benchmarks" / "compare.py")
    single = subprocess.run([sys.executable, script, *common, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29517", script, *common, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["epoch"] for r in two] == [1, 2]  # written once, not once per rank
    assert all(r["world_size"] == 2 for r in two) and one[0]["world_size"] == 1
    for a, b in zip(one, two, strict=True):
        assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-4)
        assert abs(a["test_acc"] - b["test_acc"]) <= 2.5  # one test image of 40
    assert multi.stdout.count("Cross-framework") == 0 and multi.stdout.count("\nwrote\n") == 1
    # a last batch smaller than the number of processes is dropped, not fed empty to a rank
    odd = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29518", script, *common, "--train-subset", "65", "--epochs", "1",
         "--out", str(tmp_path / "odd")], env=env, capture_output=True, text=True, timeout=300)
    assert odd.returncode == 0, odd.stderr[-3000:]
    assert [(r["status"], r["steps_per_epoch"]) for r in _rows(tmp_path / "odd")] == [("ok", 2)]


def test_event_frames_train_through_the_cli(tmp_path):
    """N-MNIST in tonic's on-disk format (.bin recordings) trains end to end: the frames
    ``[B, T, 2, 34, 34]`` enter the network time-major."""
    pytest.importorskip("tonic")
    from tests.benchmarks.test_datasets_formats import _nmnist_copy

    _nmnist_copy(tmp_path / "data" / "NMNIST")
    out = tmp_path / "o"
    assert compare.main(["--dataset", "nmnist", "--data-dir", str(tmp_path / "data"),
                         "--arch", "4C5-P2-10", "--T", "4", "--epochs", "1", "--batch-size", "2",
                         "--rules", "na", "--framework", "both", "--out", str(out),
                         "--no-progress", "--device", "cpu"]) == 0
    rows = _rows(out)
    assert [(r["framework"], r["status"], r["dataset"]) for r in rows] == [
        ("snntorch", "ok", "nmnist"), ("spikingjelly", "ok", "nmnist")]
    assert rows[0]["synops"] == rows[1]["synops"]  # the same network on the same events
    assert rows[0]["synops"]["macs"] > 0  # the recording with events reaches the first layer


# --- what one command shows: its own configurations, in plots and tables a newcomer reads ---

def _figures(monkeypatch) -> dict[str, dict]:
    """Record what every saved figure shows: its title, tick labels, legend entries, the
    lines (as point lists) and bar heights of each panel."""
    import matplotlib.text
    from suite import plots

    seen: dict[str, dict] = {}
    real = plots._save

    def save(fig, path):
        legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        seen[path.name] = {
            "title": fig._suptitle.get_text() if fig._suptitle else "",
            "legend": legend,
            "text": " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text)),
            "ticks": [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes],
            "lines": [[list(zip(*ln.get_data(), strict=True)) for ln in ax.get_lines()]
                      for ax in fig.axes],
            "bars": [[round(b.get_height(), 6) for b in ax.patches] for ax in fig.axes],
        }
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    return seen


def test_each_command_shows_only_its_own_configurations(small_data, tmp_path, capsys,
                                                        monkeypatch):
    """Two commands sharing --out: the second's summary and plots hold its configurations
    only; the first's rows stay in results.jsonl and are reused when it runs again."""
    out = tmp_path / "shared"
    first = ("--rules", "baseline", "--framework", "snntorch", "--epochs", "1")
    second = ("--rules", "na", "--framework", "snntorch", "--epochs", "1", "--T", "2",
              "--train-subset", "128")
    assert _run(out, *first) == 0
    capsys.readouterr()
    figs = _figures(monkeypatch)
    assert _run(out, *second) == 0
    printed = capsys.readouterr().out.split("\nwrote\n")[0]
    md = (out / "summary.md").read_text()
    assert len(_rows(out)) == 2  # both kept
    for text in (md, printed):
        assert "na" in text.split() or "| na |" in text
        assert "baseline" not in text  # the first command's configuration is not shown
        assert "T=2" in text and "T=3" not in text
    assert figs["accuracy.png"]["ticks"][0] == ["na"]
    assert len(figs["accuracy.png"]["bars"][0]) == 1  # one bar: na in snntorch
    assert "baseline" not in figs["cost.png"]["text"]
    # the first command again: nothing retrained, its own summary back
    figs.clear()
    assert _run(out, *first) == 0
    assert "skipped" in capsys.readouterr().out
    assert len(_rows(out)) == 2
    md = (out / "summary.md").read_text()
    assert "| baseline |" in md and "| na |" not in md
    assert figs["accuracy.png"]["ticks"][0] == ["baseline"]


def test_configurations_that_differ_are_never_one_line(small_data, tmp_path, monkeypatch):
    """Two seeds over two epochs: a curve per seed (never one line through both seeds'
    points), labelled by its seed; the plot of rows with other settings keeps them apart."""
    figs = _figures(monkeypatch)
    assert _run(tmp_path / "o", "--rules", "na", "--framework", "snntorch", "--epochs", "2",
                "--seed", "0", "1") == 0
    acc = figs["accuracy.png"]
    assert [len(line) for line in acc["lines"][0]] == [2, 2]  # two curves of two epochs
    assert acc["legend"] == ["na, seed 0", "na, seed 1"]
    assert "2 epochs" in acc["title"] and "seed" not in acc["title"]
    # rows of other settings handed to the plots (e.g. a whole results file) stay apart too
    from suite import plots

    rows = _rows(tmp_path / "o")
    other = [{**r, "config_id": r["config_id"] + "x", "T": 7} for r in rows if r["seed"] == 0]
    figs.clear()
    plots.accuracy(rows + other, tmp_path / "a.png")
    acc = figs["a.png"]
    assert [len(line) for line in acc["lines"][0]] == [2, 2, 2]
    assert sorted(acc["legend"]) == ["na, T=3, seed 0", "na, T=3, seed 1", "na, T=7, seed 0"]


def test_a_one_epoch_plot_is_bars_per_rule_and_says_what_ran(small_data, tmp_path,
                                                             monkeypatch):
    figs = _figures(monkeypatch)
    assert _run(tmp_path / "o", "--rules", "baseline", "na", "--epochs", "1",
                "--train-subset", "200", "--test-subset", "50") == 0
    rows = {(r["framework"], r["rule"]): r["test_acc"] for r in _rows(tmp_path / "o")}
    acc = figs["accuracy.png"]
    assert acc["ticks"][0] == ["baseline", "na"]
    assert acc["lines"] == [[]]  # no line through a single epoch
    assert sorted(acc["bars"][0]) == sorted(round(v, 6) for v in rows.values())
    assert acc["legend"] == ["snntorch", "spikingjelly"]
    for title in (acc["title"], figs["cost.png"]["title"]):
        for words in ("Fashion-MNIST", "network 64-24-10", "T=3", "1 epoch,",
                      "200 training / 50 test images", "cpu", "batch 32"):
            assert words in title.replace("\n", " ")


def test_cost_plot_marks_loaded_runs_as_the_table_does(small_data, tmp_path, monkeypatch):
    """A row measured while the load average exceeded the cores carries "(loaded)" on its bar
    and a note saying what it means, as in the printed table; a quiet row carries neither."""
    from suite import plots, store

    figs = _figures(monkeypatch)
    assert _run(tmp_path / "o", "--rules", "baseline", "--framework", "snntorch", "--epochs",
                "1", "--train-subset", "64", "--test-subset", "32") == 0
    (row,) = _rows(tmp_path / "o")
    quiet = {**row, "load_avg": [0.5, 0.5, 0.5], "cpu_cores": 2}
    busy = {**row, "load_avg": [3.0, 2.5, 2.0], "cpu_cores": 2}
    assert not store.loaded(quiet) and store.loaded(busy)
    figs.clear()
    plots.cost([quiet], tmp_path / "quiet.png")
    plots.cost([busy], tmp_path / "busy.png")
    assert "(loaded)" not in figs["quiet.png"]["text"]
    assert "(loaded)" in figs["busy.png"]["text"]
    assert "load average exceeded the CPU cores" in figs["busy.png"]["text"]
    table = "\n".join(p.text() for p in store.train_tables([busy], terminal=True)
                      if isinstance(p, store.Table))
    assert "(loaded)" in table


def test_wrapped_text_never_splits_a_grouped_number():
    """"4 096" stays on one line wherever the suite wraps text (headers, notes, titles)."""
    from suite import store

    text = "Training: Fashion-MNIST, 1 epoch on 4 096 training / 1 000 test images, batch 64"
    for width in range(20, len(text)):
        lines = store.fill(text, width).splitlines()
        for number in ("4 096", "1 000"):
            assert any(number in ln for ln in lines), (width, lines)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing lost
    assert store.fill("a 12 345", 6).splitlines() == ["a", "12 345"]
    assert store.fill("a 1 2345", 4).splitlines() == ["a 1", "2345"]  # not a digit group


def test_the_speed_plot_has_time_and_ratio_axes(tmp_path, monkeypatch):
    from suite import speed

    monkeypatch.setattr(speed, "COPY_MIB", 8)
    figs = _figures(monkeypatch)
    assert compare.main(["--mode", "speed", "--quick", "--framework", "snntorch", "--rules",
                         "na", "--min-run-time", "0.01", "--out", str(tmp_path),
                         "--device", "cpu"]) == 0
    fig = figs["speed.png"]
    assert "batch 16, cpu" in fig["title"]
    assert fig["legend"] == ["host's native LIF", "na"]
    ratios = fig["lines"][2]  # layer panel, ratio row: native at 1.0
    assert ratios[0] == [(4.0, 1.0), (8.0, 1.0)]
    assert "time / host's native LIF" in fig["text"] and "log scale" in fig["text"]


def test_one_T_is_drawn_as_bars_not_a_column_of_dots(tmp_path, monkeypatch):
    """One T (the tutorial set, or --T): a panel per measurement and framework, a bar per
    rule and variant, forward below and backward above, labelled with the total and the
    ratio to the host's LIF; no lines."""
    from suite import plots, speed, store

    rows = []
    for what, scale in (("tutorial", 100.0), ("tutorial-compiled", 60.0),
                        ("tutorial-neuron", 20.0), ("tutorial-neuron-compiled", 5.0)):
        for k, rule in enumerate(("native", "reset-term")):
            n = 1000 if "neuron" in what else 784
            case = speed.Case("snntorch", rule, what, n, 128, 25, "cpu", 2)
            rows.append(speed.row(case, step_ms_forward=scale * (1 + k) / 2,
                                  step_ms_backward=scale / 4, impl="torch"))
    figs = _figures(monkeypatch)
    assert plots.speed(rows, tmp_path / "speed.png") == tmp_path / "speed.png"
    fig = figs["speed.png"]
    assert fig["lines"] == [[], []]  # two panels (network, neuron alone), bars only
    assert fig["ticks"][0] == ["host's LIF", "reset-term"]
    # per panel: eager forward (2 rules), eager backward, compiled forward, compiled backward
    assert fig["bars"][0] == [50.0, 100.0, 25.0, 25.0, 30.0, 60.0, 15.0, 15.0]
    assert fig["bars"][1] == [10.0, 20.0, 5.0, 5.0, 2.5, 5.0, 1.25, 1.25]
    assert fig["legend"] == ["eager: forward", "eager: backward", "compiled: forward",
                             "compiled: backward"]
    assert "125.0\n1.67x" in fig["text"] and "T=25" in fig["title"]
    assert store.speed_tables(rows)  # and the tables still render


def test_a_plot_this_command_cannot_draw_is_not_left_from_an_earlier_one(tmp_path):
    from suite import plots

    (tmp_path / "accuracy.png").write_bytes(b"old")
    (tmp_path / "speed.png").write_bytes(b"old")
    assert plots.all_plots([], tmp_path, mode="train") == []
    assert not (tmp_path / "accuracy.png").exists()  # would be another command's
    assert (tmp_path / "speed.png").exists()  # another mode's plot is kept


def test_the_printed_summary_fits_a_terminal_and_names_each_loss(small_data, tmp_path,
                                                                 capsys, monkeypatch):
    """Every printed line fits 120 columns (also with a long error and seeds that differ),
    each train loss carries its loss's name, and the setting is in words; summary.md keeps
    the full tables."""
    real = recipes.loss_fn

    def nan_for_bpsa(rec):
        fn = real(rec)
        return (lambda out, y: fn(out, y) * float("nan")) if rec.rule == "bpsa-bpta" else fn

    monkeypatch.setattr(recipes, "loss_fn", nan_for_bpsa)
    assert _run(tmp_path / "o", "--rules", *recipes.RULES, "--recipe", "paper", "common",
                "--epochs", "1", "--seed", "0", "1", "--train-subset", "64",
                "--test-subset", "20") == 0
    text = capsys.readouterr().out
    printed = text[text.index("spikegrad benchmark"):]
    assert max(len(line) for line in printed.splitlines()) <= 120
    for loss in ("rate CE", "trace MSE", "van Rossum", "first-spike CE"):
        assert f"{loss} " in printed
    assert "NonFiniteLoss" in printed and "failed" in printed
    assert "64 training / 20 test images" in printed and "learning rate 0.01" in printed
    assert "seed 1" in printed
    assert "b32 lr" not in printed and "64/20" not in printed  # the old cryptic setting
    md = (tmp_path / "o" / "summary.md").read_text()
    assert "| spike rate per layer |" in md and "| loss | train loss | test loss |" in md
    assert max(len(line) for line in md.splitlines()) > 120  # the full tables live here


def test_the_printed_speed_summary_fits_a_terminal(tmp_path, capsys, monkeypatch):
    from suite import speed

    monkeypatch.setattr(speed, "COPY_MIB", 8)
    assert compare.main(["--mode", "speed", "--quick", "--framework", "spikingjelly",
                         "--min-run-time", "0.01", "--T", "4", "--out", str(tmp_path),
                         "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    printed = printed[printed.index("spikegrad benchmark"):]
    assert max(len(line) for line in printed.splitlines()) <= 120
    assert "vs native" in printed and "1.00x" in printed
    # the memory limit: the copy's bandwidth, and a table of the neuron-alone rows
    assert "a copy of 8 MiB" in printed and "GB/s median of 7 blocks" in printed
    table = printed[printed.index("spikingjelly (speed against the memory limit"):]
    head = table.splitlines()[1]
    assert head.split()[-11:] == ["fwd", "B", "bwd", "B", "fwd", "GB/s", "bwd", "GB/s", "GB/s",
                                  "of", "copy"]
    body = [ln.split() for ln in table.split("\n\n")[0].splitlines()[3:]]
    assert [b[1] for b in body] == ["reset-term", "na", "bpsa-bpta", "multi-strength"]
    assert all(b[0] == "layer" and b[-1] == "%" for b in body)


def test_the_text_table_cuts_cells_to_fit():
    t = store.Table("t", ["a", "b"], [["x" * 200, "1.0"]], notes=["n " * 100])
    lines = t.text(width=50).splitlines()
    assert max(len(line) for line in lines) <= 50
    assert lines[3].endswith("1.0") and "…" in lines[3]


@pytest.mark.parametrize("option, size, kind", [("--train-subset", 256, "training"),
                                                ("--test-subset", 100, "test")])
def test_a_subset_larger_than_the_data_is_refused(small_data, tmp_path, capsys, option, size,
                                                  kind):
    assert _run(tmp_path / "o", option, str(size + 1)) == 2
    err = capsys.readouterr().err
    assert f"{option} {size + 1}: fashion-mnist has only {size} {kind} samples" in err
    assert f"give {option} {size} or less, or leave {option} out" in err
    assert not (tmp_path / "o" / "results.jsonl").exists()
    assert _run(tmp_path / "o", option, str(size), "--rules", "na", "--framework",
                "snntorch", "--epochs", "1") == 0  # the whole split is fine


def test_ctrl_c_before_the_first_epoch_points_to_nothing(small_data, tmp_path, capsys,
                                                         monkeypatch):
    def interrupted(ds, idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "fetch", interrupted)
    assert _run(tmp_path / "o", "--rules", "na", "--framework", "snntorch") == 130
    err = capsys.readouterr().err
    assert "before any of this command's epochs finished: nothing of it was recorded" in err
    assert "results.jsonl" not in err
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_ctrl_c_after_an_epoch_says_where_it_is_kept(small_data, tmp_path, capsys,
                                                     monkeypatch):
    calls = {"n": 0}
    real_fetch = train.fetch

    def killed_in_epoch_2(ds, idx):
        calls["n"] += 1
        if calls["n"] == 8 + 2:
            raise KeyboardInterrupt
        return real_fetch(ds, idx)

    monkeypatch.setattr(train, "fetch", killed_in_epoch_2)
    out = tmp_path / "o"
    assert _run(out, "--rules", "na", "--framework", "snntorch", "--epochs", "2") == 130
    err = capsys.readouterr().err
    assert f"this command's finished epochs (1) are kept in {out / 'results.jsonl'}" in err
    assert (out / "results.jsonl").exists()


def test_help_and_imports_print_no_warnings():
    """`compare.py --help` and importing the package print nothing on stderr (torch's "No CUDA
    runtime is found" came from importing torch.utils.benchmark on CPU-only machines)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONWARNINGS", None)
    for argv in ([str(ROOT / "benchmarks" / "compare.py"), "--help"],
                 ["-c", "import spikegrad, spikegrad.neurons, spikegrad.recipes"]):
        done = subprocess.run([sys.executable, *argv], env=env, capture_output=True,
                              text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert "warn" not in done.stderr.lower(), done.stderr
        assert done.stderr.strip() == ""
