"""The learning-rate finder: real range tests on mnist5k, the two suggestion rules, and no side effects."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli

from cnnlab.config import TrainConfig
from cnnlab.errors import UserError
from cnnlab.tune.lr_find import EXPLODE_FACTOR, lr_find, record, smooth, steepest, suggest_lr, valley


@pytest.mark.slow
def test_cli_suggests_a_rate_for_the_tutorial_model_and_writes_only_the_plot(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    code, out, err = cli("lr-find", "--json", "--out", "../lr.png", cwd=work)
    assert code == 0, err
    found = json.loads(out)
    assert 1e-4 <= found["suggestion"] <= 1
    assert found["suggestion"] == found["valley"] and found["steepest"] in found["lrs"]
    lrs = np.array(found["lrs"])
    assert lrs[0] == pytest.approx(1e-7) and len(lrs) == len(found["losses"]) <= 100
    assert np.allclose(lrs[1:] / lrs[:-1], (10.0 / 1e-7) ** (1 / 99))  # exponential growth per batch
    assert list(work.iterdir()) == []  # no run directory, no data folder, nothing
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_leaves_no_global_state_and_repeats_exactly() -> None:
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state(), torch.get_num_threads())
    cfg = TrainConfig(batch_size=32, threads=1, device="cpu")
    first = lr_find(cfg, start=1e-4, end=1.0, steps=30)
    after = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state(), torch.get_num_threads())
    assert before[0] == after[0] and np.array_equal(before[1], after[1])
    assert torch.equal(before[2], after[2]) and before[3] == after[3]
    second = lr_find(cfg, start=1e-4, end=1.0, steps=30)  # a fresh model from the same seed each time
    assert first["raw_losses"] == second["raw_losses"]
    assert suggest_lr(cfg, start=1e-4, end=1.0, steps=30) == first["suggestion"]
    kept = record(first)  # what `cnnlab train --lr auto` stores in config.json
    assert kept["rule"] == "valley" and kept["suggestion"] == first["valley"] and "lrs" not in kept
    json.dumps(kept)


@pytest.mark.slow
def test_stops_when_the_smoothed_loss_explodes() -> None:
    found = lr_find(TrainConfig(device="cpu"), start=1e-2, end=1e6, steps=100)
    assert found["stopped"] == "exploded" and found["steps"] < 100
    assert all(math.isfinite(x) for x in found["losses"])
    smoothed = smooth(found["raw_losses"])
    assert smoothed == found["losses"]
    assert max(smoothed[:-1]) <= EXPLODE_FACTOR * min(smoothed[:-1])  # it stopped at the first explosion


def test_rules_on_a_known_curve() -> None:
    lrs = list(np.logspace(-6, 0, 61))
    flat, down, up = [2.0] * 20, list(np.linspace(2.0, 0.5, 31)[1:]), list(np.linspace(0.5, 3.0, 12)[1:])
    losses = flat + down + up  # flat to index 19, falls to its minimum at index 49, then rises
    assert lrs.index(steepest(lrs, losses)) in range(20, 50)
    # the longest decreasing run is 31 points long and ends at index 49: its middle is index 49 - 15
    assert valley(lrs, losses) == lrs[34]
    steeper = flat + list(np.linspace(2.0, 1.0, 6)[1:]) + list(np.linspace(1.0, 0.9, 26)[1:]) + up
    assert lrs.index(steepest(lrs, steeper)) in range(20, 26)  # where the fall is steepest, not the longest


def test_bad_ranges_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--start < --end"):
        lr_find(TrainConfig(), start=1.0, end=0.1)
    with pytest.raises(UserError, match="--steps"):
        lr_find(TrainConfig(), steps=2)
    with pytest.raises(UserError, match="unknown model"):
        lr_find(TrainConfig(model="nonet"))
    code, _, err = cli("lr-find", "--out", "missing/lr.png", cwd=tmp_path)
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err
    assert list(tmp_path.iterdir()) == []
