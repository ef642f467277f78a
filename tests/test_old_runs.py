"""A run directory written before this version (tests/fixtures/run-2026-12-05: seednet, 20 steps on
mnist5k, by cnnlab as of commit f53166f) still evaluates, predicts and serves, with the same numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from fastapi.testclient import TestClient

import cnnlab
from cnnlab.cli import main
from cnnlab.serve.app import create_app

FIXTURE = ROOT / "tests" / "fixtures" / "run-2026-12-05"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    run = tmp_path / "old"
    shutil.copytree(FIXTURE, run)
    return run


def test_the_old_checkpoint_loads_with_weights_only():
    ckpt = torch.load(FIXTURE / "best.pt", weights_only=True)
    assert ckpt["arch"]["model"] == "seednet" and "trust" not in ckpt and "tta" not in ckpt


def test_an_old_run_evaluates_to_its_recorded_accuracy(old_run: Path, capsys: pytest.CaptureFixture):
    recorded = json.loads((FIXTURE / "config.json").read_text())["result"]["best_val_acc"]
    assert main(["eval", str(old_run), "--split", "val", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy"] == pytest.approx(recorded, abs=1e-9)  # same data, preprocessing and weights
    assert report["calibration"]["temperature"] == 1.0  # no temperature stored: T = 1


def test_an_old_run_predicts_and_serves_the_same_answer(old_run: Path, digit_png: tuple[Path, str]):
    path, _ = digit_png
    (answer,) = cnnlab.predict(old_run, [path], topk=3)
    assert answer["known_score"] is None and answer["unknown"] is None  # no rule stored: none applied
    with TestClient(create_app(old_run)) as client:
        served = client.post("/api/predict", files={"file": ("d.png", path.read_bytes(), "image/png")}).json()
    assert served["label"] == answer["label"]
    assert served["probability"] == pytest.approx(answer["probability"], abs=1e-6)
