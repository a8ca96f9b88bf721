"""``compare.py --mode gradient``'s configurations: every rule in both hosts on a tiny
synthetic problem, the same rule giving the same cosine in both hosts, rows recorded and
resumed, failures recorded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from datasets import DataSpec  # noqa: E402
from suite import gradient_run, recipes  # noqa: E402
from suite.store import Store  # noqa: E402
from suite.train import Dist  # noqa: E402

pytest.importorskip("snntorch")
pytest.importorskip("spikingjelly")


def tiny_data() -> DataSpec:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 10, 10, generator=g)
    y = torch.randint(0, 10, (40,), generator=g)
    ds = TensorDataset(x, y)
    return DataSpec("fashion-mnist", ds, ds, (1, 10, 10), 10, False, "synthetic")


def cfg(fw: str, rule: str, **kw) -> gradient_run.GradientConfig:
    base = dict(framework=fw, rule=rule, dataset="fashion-mnist", arch="4C3-P2-16-10", T=3,
                seed=0, batch_size=8, device="cpu", directions=8, sigma=1.0, dims=6)
    base.update(kw)
    return gradient_run.GradientConfig(**base)


def test_every_rule_in_both_hosts(tmp_path):
    store, data = Store(tmp_path), tiny_data()
    for fw in recipes.FRAMEWORKS:
        for rule in recipes.RULES:
            assert gradient_run.run(cfg(fw, rule), data, store, dist=Dist(), log=lambda _: None) \
                == "done"
    rows = [r for r in store.rows if r["mode"] == "gradient"]
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    keys = ("grad_cosine", "grad_cosine_lo", "grad_cosine_hi", "grad_sign_agree",
            "loss_drop_ratio", "framework", "rule", "dataset", "arch", "T", "seed")
    measured = [r for r in rows if r["grad_cosine"] is not None]
    assert len(measured) >= 8
    for r in rows:
        assert all(k in r for k in keys)
        assert len(r["layers"]) == 3 and r["measured_weights"] == 18
        assert 0.0 <= r["grad_sign_agree"] <= 1.0
        if r["grad_cosine"] is None:  # a flat loss: not measurable, and said so
            assert r["grad_cosine_lo"] is None and r["grad_cosine_ceiling"] is None
            continue
        assert r["grad_cosine_lo"] <= r["grad_cosine"] <= r["grad_cosine_hi"]
        assert -1.0 <= r["grad_cosine"] <= 1.0
    # the spikegrad rules are one rule in two hosts: the same cosine within its band
    for rule in ("reset-term", "na", "bpsa-bpta", "multi-strength"):
        a, b = ([r for r in rows if r["rule"] == rule and r["framework"] == fw][0]
                for fw in recipes.FRAMEWORKS)
        assert a["grad_cosine"] is not None
        assert b["grad_cosine_lo"] <= a["grad_cosine"] <= b["grad_cosine_hi"]
    table = gradient_run.table(store.rows)
    assert table.count("\n") == 13 and "| na | spikingjelly |" in table
    assert gradient_run.plot(store.rows, tmp_path / "gradient.png", "t").is_file()


def test_resume_and_failures(tmp_path):
    store, data = Store(tmp_path), tiny_data()
    c = cfg("snntorch", "na")
    assert gradient_run.run(c, data, store, dist=Dist(), log=lambda _: None) == "done"
    assert gradient_run.run(c, data, store, dist=Dist(), log=lambda _: None) == "skipped"
    assert cfg("snntorch", "na", sigma=0.5).config_id != c.config_id  # sigma is in the id
    bad = cfg("snntorch", "na", arch="4C3-P2-16-7")  # 7 outputs for 10 classes
    assert gradient_run.run(bad, data, store, dist=Dist(), log=lambda _: None) == "failed"
    assert store.of(bad.config_id)[-1]["status"] == "failed"
    assert gradient_run.run(bad, data, store, dist=Dist(), log=lambda _: None) == "failed before"


def test_compare_gradient_mode_end_to_end(tmp_path, monkeypatch, capsys):
    """``compare.py --mode gradient``: rows for both hosts, the summary and the plot cover
    exactly this invocation's configurations, a rerun resumes, wrong options are refused."""
    import compare

    monkeypatch.setattr(compare, "load_dataset", lambda *a, **k: tiny_data())
    out = tmp_path / "g"
    base = ["--mode", "gradient", "--arch", "4C3-P2-16-10", "--T", "3", "--batch-size", "8",
            "--directions", "6", "--gradient-dims", "5", "--device", "cpu", "--out", str(out)]
    assert compare.main([*base, "--rules", "na", "bpsa-bpta"]) == 0
    printed = capsys.readouterr().out
    assert "| bpsa-bpta | spikingjelly |" in printed
    assert max(len(line) for line in printed.splitlines()) <= 120  # fits a terminal
    rows = [r for r in Store(out).rows if r["mode"] == "gradient"]
    assert {(r["framework"], r["rule"]) for r in rows} == {
        (f, r) for f in recipes.FRAMEWORKS for r in ("na", "bpsa-bpta")}
    assert (out / "gradient.png").is_file()
    assert compare.main([*base, "--rules", "na", "--sigma", "0.35"]) == 0
    summary = (out / "summary.md").read_text()
    assert summary.count("| na |") == 2 and "bpsa-bpta |" not in summary  # this command only
    assert len(Store(out).rows) == 6  # the first command's rows are kept
    capsys.readouterr()
    assert compare.main([*base, "--rules", "na", "--sigma", "0.35"]) == 0
    assert "already in" in capsys.readouterr().out  # resumed, nothing measured twice
    assert len(Store(out).rows) == 6
    with pytest.raises(SystemExit):
        compare.main(["--directions", "8"])  # a gradient-mode option in train mode
    with pytest.raises(SystemExit):
        compare.main([*base, "--epochs", "2"])


def test_torchrun_splits_the_directions(tmp_path):
    """Two processes (gloo) share the direction pairs and give the same row as one process."""
    import json
    import os
    import subprocess

    from tests.benchmarks.test_datasets import _fake_fashion

    root = Path(__file__).resolve().parents[2]
    _fake_fashion(tmp_path / "data", gz=True, n_train=64, n_test=16)
    common = ["--mode", "gradient", "--data-dir", str(tmp_path / "data"), "--framework",
              "snntorch", "--rules", "na", "--arch", "784-16-10", "--T", "2", "--batch-size",
              "8", "--directions", "8", "--gradient-dims", "6", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    script = str(root / "benchmarks" / "compare.py")
    runs = {}
    for name, launcher in (("one", [sys.executable, script]),
                           ("two", [sys.executable, "-m", "torch.distributed.run",
                                    "--nproc_per_node", "2", "--master_port", "29531", script])):
        res = subprocess.run([*launcher, *common, "--out", str(tmp_path / name)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        lines = (tmp_path / name / "results.jsonl").read_text().splitlines()
        assert len(lines) == 1  # rank 0 alone writes
        runs[name] = json.loads(lines[0])
    assert (runs["one"]["pairs_rank0"], runs["two"]["pairs_rank0"]) == (8, 4)
    assert runs["two"]["world_size"] == 2
    for key in ("grad_cosine", "grad_cosine_lo", "grad_cosine_hi", "grad_sign_agree"):
        assert runs["one"][key] == pytest.approx(runs["two"][key], abs=1e-9)
