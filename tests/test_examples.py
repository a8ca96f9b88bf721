"""The examples (examples/<host>/<rule>.py) train on a tiny budget, with and without --recipe.

Each script runs through its ``main(argv)`` in this process (one interpreter start for all of
them); two run as the user runs them, ``python examples/<host>/<rule>.py``. They need the local
Fashion-MNIST copy (Debian's package, ``$SPIKEGRAD_DATA``): the tests skip, saying so, where it
is missing.
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("snntorch")
pytest.importorskip("spikingjelly")
pytest.importorskip("torchvision")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
HOSTS = {  # directory -> (the host's name in the result line, its extra tiny-budget options)
    "snntorch_tutorial": ("snntorch-tutorial", []),
    "spikingjelly_csnn": ("spikingjelly-csnn", ["--channels", "4"]),
}
RULES = {"baseline": "baseline", "reset_term": "reset-term", "na": "na",
         "bpsa_bpta": "bpsa-bpta", "ttfs": "ttfs", "multi_strength": "multi-strength",
         "adaptive_lif": "adaptive-lif"}  # a user-defined step rule (examples/adaptive_lif.py)
TINY = ["--train-images", "64", "--test-images", "32", "--epochs", "1", "--batch-size", "32",
        "--T", "3", "--seed", "0"]
RESULT = re.compile(r"^result: rule=(?P<rule>\S+) host=(?P<host>\S+) recipe=(?P<recipe>on|off)"
                    r".* test_acc=(?P<acc>[\d.]+)% .* final_loss=(?P<loss>\S+) finite=True "
                    r"min_weight_grad=(?P<grad>\S+) .*; data: ", re.M)

sys.path[:0] = [str(EXAMPLES / host) for host in HOSTS]  # the scripts' own folders, as when run
sys.path.insert(0, str(EXAMPLES))
import common  # noqa: E402  (examples/common.py)


def _data_missing() -> str | None:
    datasets = common._benchmark_datasets()
    try:
        datasets.locate_fashion_mnist(None, download=False)
    except datasets.DatasetNotFound as exc:
        return f"no local Fashion-MNIST copy (install dataset-fashion-mnist or set " \
               f"$SPIKEGRAD_DATA): {exc}"
    return None


pytestmark = pytest.mark.skipif(bool(_data_missing()), reason=str(_data_missing()))


def _script(host: str, rule: str):
    path = EXAMPLES / host / f"{rule}.py"
    spec = importlib.util.spec_from_file_location(f"example_{host}_{rule}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # __name__ is not "__main__": nothing runs yet
    return module


def _check(out: str, host: str, rule: str, recipe: bool) -> re.Match:
    match = RESULT.search(out)
    assert match, f"no result line (or a non-finite loss) in:\n{out}"
    assert match["rule"] == RULES[rule] and match["host"] == HOSTS[host][0]
    assert match["recipe"] == ("on" if recipe else "off")
    assert math.isfinite(float(match["loss"]))
    assert float(match["grad"]) > 0, "no gradient reached the first synapse, behind every neuron"
    assert 0.0 <= float(match["acc"]) <= 100.0
    return match


def test_every_rule_and_host_has_a_script():
    for host in HOSTS:
        found = {p.stem for p in (EXAMPLES / host).glob("*.py")} - {"tutorial", "csnn"}
        assert found == set(RULES), host


@pytest.mark.parametrize("recipe", [False, True], ids=["default", "recipe"])
@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("host", list(HOSTS))
def test_example_trains(host, rule, recipe, capsys):
    argv = TINY + HOSTS[host][1] + (["--recipe"] if recipe else [])
    result = _script(host, rule).main(argv)
    _check(capsys.readouterr().out, host, rule, recipe)
    assert result["finite"] and math.isfinite(result["final_loss"])
    # every conv/linear layer got a gradient at the last step, the first one through every
    # spiking layer (the swapped neurons)
    assert len(result["weight_grads"]) == (2 if host == "snntorch_tutorial" else 4)
    assert all(g > 0 for g in result["weight_grads"]), result["weight_grads"]
    assert result["steps"] == 2


@pytest.mark.parametrize("host", list(HOSTS))
def test_example_runs_as_a_script(host):
    argv = TINY + HOSTS[host][1] + ["--recipe"]
    proc = subprocess.run([sys.executable, str(EXAMPLES / host / "bpsa_bpta.py"), *argv],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _check(proc.stdout, host, "bpsa_bpta", True)


def test_missing_data_dir_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _script("snntorch_tutorial", "baseline").main(TINY + ["--data-dir",
                                                             str(tmp_path / "nowhere")])
    assert exc.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_datasets_cli_prints_a_torchvision_root():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "datasets.py")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    root = proc.stdout.strip()
    assert "Fashion-MNIST from" in proc.stderr
    from torchvision.datasets import FashionMNIST

    assert len(FashionMNIST(root, train=False, download=False)) == 10000
