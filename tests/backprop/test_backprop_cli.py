"""``cnnlab backprop check|train`` as a user runs them (one real subprocess; the rest through
``cnnlab.cli.main``, the same entry point, in-process to keep the suite fast)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_python_m_cnnlab_backprop_check_json() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab", "backprop", "check", "--json", "--batch-size", "8"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["passed"] is True
    assert payload["max_rel_error"] <= 1e-6
    assert payload["loss"] == "nll" and payload["model"] == "seednet"


@pytest.mark.slow
def test_backprop_check_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backprop", "check", "--loss", "logistic", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "∂E/∂7.weight" in out and "loss=logistic" in out


def test_backprop_check_bad_loss(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backprop", "check", "--loss", "hinge"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown loss 'hinge'; choose one of: nll, ce, mse, logistic"


@pytest.mark.slow
def test_backprop_check_other_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backprop", "check", "--model", "lenet5", "--batch-size", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True
    assert main(["backprop", "check", "--model", "examplenet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --model examplenet: the NumPy engine cannot run it:") and "(Dropout)" in err


@pytest.mark.slow
def test_backprop_train_writes_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["backprop", "train", "--epochs", "1", "--batch-size", "128", "--lr", "0.05", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "validation accuracy" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "finished"
    assert config["config"]["engine"] == "numpy" and config["config"]["batch_size"] == 128
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1"]
    assert set(rows[0]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}
    assert float(rows[0]["val_acc"]) > 0.5  # one epoch of real learning, not chance (0.1)
    assert (out / "curves.png").stat().st_size > 0
    assert (out / "weights.npz").stat().st_size > 0
    assert main(["backprop", "train", "--epochs", "1", "--out", str(out), "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--loss", "logistic"], "--loss logistic needs a two-class task: pass --classes A,B"),
        (["--lr", "-1"], "--lr must be > 0 and at most 1e+30 (got -1.0)"),
        (["--momentum", "1"], "--momentum must be in [0, 1) (got 1.0)"),
        (["--epochs", "0"], "--epochs must be 1 to 100000 (got 0)"),
    ],
)
def test_backprop_train_refuses_bad_options(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backprop", "train", *flags, "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "r").exists()
