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
        return [line.split("|")[9].strip() for line in lines if line.startswith("| baseline |")]

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
    assert "failed: NonFiniteLoss" in (tmp_path / "r" / "summary.md").read_text()
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
    assert multi.stdout.count("Cross-framework") == 0 and multi.stdout.count("wrote ") == 1
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
