"""A loss that becomes NaN or infinite stops training: the message names the exact step and its
learning rate, exit code 3, and no checkpoint of non-finite weights is ever written."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.cli import main
from cnnlab.engine import SYNC_EVERY, Diverged, NonFiniteWatch
from cnnlab.models import build_model

DIVERGING = dict(dataset="digits", lr=1e6, epochs=2, progress=False)  # SGD at lr 1e6: NaN within a few steps


def first_non_finite(losses: list[tuple[int, float]]) -> int:
    return next(step for step, loss in losses if not math.isfinite(loss))


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_every", [0, 2, 5])
def test_divergence_names_the_first_bad_step_and_keeps_the_last_good_checkpoint(tmp_path: Path, checkpoint_every: int):
    losses: list[tuple[int, float]] = []
    out = tmp_path / "run"
    with pytest.raises(Diverged) as info:
        cnnlab.train(
            out=str(out),
            checkpoint_every=checkpoint_every,
            on_step=lambda s, l: losses.append((s, float(l))),
            **DIVERGING,
        )
    bad = first_non_finite(losses)
    stopped = losses[-1][0]
    message = str(info.value)
    assert f"at step {bad} (lr 1e+06)" in message, message
    assert stopped <= (bad // SYNC_EVERY + 1) * SYNC_EVERY  # at the next sync point at the latest
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "failed" and config["error"] == message
    last_good = (bad - 1) // checkpoint_every * checkpoint_every if checkpoint_every else 0
    if last_good:  # a checkpoint was due before the bad step: it is there, intact and finite
        ckpt = torch.load(out / "last.pt", weights_only=True)
        assert ckpt["step"] == last_good
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    else:  # no checkpoint was due before it (the end of epoch 1 was never reached)
        assert not (out / "last.pt").exists()


@pytest.mark.slow
def test_the_command_exits_3_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    argv = ["train", "--dataset", "digits", "--lr", "1e6", "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.fullmatch(r"error: training diverged: loss became nan at step \d+ \(lr 1e\+06\); .*--lr\n", err), err


def test_weights_that_are_not_finite_are_never_saved():
    """The last guard before every checkpoint: a loss may still be finite while the weights are not."""
    model = build_model("seednet", 1, 28, 10)
    watch = NonFiniteWatch()
    watch.record(7, 0.5, torch.tensor(2.3))
    watch.check(model, 7)  # finite: nothing happens
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("inf")
    watch.record(8, 0.5, torch.tensor(2.1))
    with pytest.raises(Diverged, match=r"weights became non-finite by step 8 \(lr 0.5\)"):
        watch.check(model, 8)


def test_the_watch_names_the_first_of_several_bad_steps():
    watch = NonFiniteWatch()
    for step, loss in [(1, 2.0), (2, 1.5), (3, float("inf")), (4, float("nan"))]:
        watch.record(step, 0.1 * step, torch.tensor(loss))
    with pytest.raises(Diverged, match=r"loss became inf at step 3 \(lr 0.3\)"):
        watch.check()
