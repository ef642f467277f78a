"""A ``cnnlab backprop train`` run directory is a cnnlab run like any other: ``eval`` and ``predict``
load its best.pt (the NumPy weights copied into the torch model) and get the NumPy engine's numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import ROOT, cli

from cnnlab.cli import main

pytestmark = pytest.mark.slow  # a NumPy training run of one epoch


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("backprop") / "run"
    args = ["backprop", "train", "--epochs", "1", "--batch-size", "128", "--lr", "0.05", "--out", str(out), "--quiet"]
    assert main(args) == 0
    return out


def test_config_is_finished_and_holds_train_options(numpy_run: Path) -> None:
    payload = json.loads((numpy_run / "config.json").read_text())
    assert payload["status"] == "finished"
    config = payload["config"]
    assert config["engine"] == "numpy"
    assert (config["model"], config["dataset"], config["optimizer"]) == ("seednet", "mnist5k", "sgd")
    assert (config["epochs"], config["batch_size"], config["lr"]) == (1, 128, 0.05)
    # not given on the command line: TrainConfig's defaults (the tutorial's recipe)
    assert (config["momentum"], config["seed"], config["loss"]) == (0.5, 1, "nll")


def test_eval_reads_the_numpy_weights(numpy_run: Path) -> None:
    """``cnnlab eval`` on the run's validation split reproduces the NumPy engine's own val accuracy,
    so best.pt holds exactly the weights the engine trained."""
    with open(numpy_run / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    code, out, err = cli("eval", numpy_run, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["accuracy"] == pytest.approx(float(last["val_acc"]), abs=1e-9)
    assert report["loss"] == pytest.approx(float(last["val_loss"]), rel=1e-5)  # metrics.csv keeps 6 digits
    assert report["accuracy"] > 0.5  # one epoch of real learning, not chance (0.1)


def test_predict_loads_the_run(numpy_run: Path) -> None:
    image = ROOT / "examples" / "images" / "digit-7.png"
    code, out, err = cli("predict", numpy_run, image, "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["label"] in [str(d) for d in range(10)] and row["topk"][0] == [row["label"], row["probability"]]
    probabilities = [p for _, p in row["topk"]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-6


def test_resuming_it_with_cnnlab_train_is_one_line(numpy_run: Path, capsys: pytest.CaptureFixture) -> None:
    before = (numpy_run / "config.json").read_bytes()
    assert main(["train", "--resume", str(numpy_run)]) == 2
    assert "trained by the NumPy engine" in capsys.readouterr().err
    assert (numpy_run / "config.json").read_bytes() == before
