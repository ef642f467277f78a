"""One run assembly: ``fit`` and ``lr-find`` train what :func:`cnnlab.assembly.run_parts` builds from one
TrainConfig, and :mod:`cnnlab.runs` writes the lifecycle of both engines' runs."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT

import cnnlab
from cnnlab import runs
from cnnlab.assembly import model_for, run_parts, seed_everything, training_data
from cnnlab.cli import main
from cnnlab.config import TrainConfig, validate
from cnnlab.engine import fit
from cnnlab.errors import Diverged, Interrupted
from cnnlab.tune.lr_find import lr_find

# Digits 0 and 1 of mnist5k (about 850 training images): a run of a few steps.
TINY = dict(classes=["0", "1"], batch_size=64, progress=False)


def first_losses(cfg: TrainConfig, steps: int) -> list[float]:
    """The loss of each of ``fit``'s first ``steps`` steps (each computed before that step's update)."""
    data = training_data(cfg)
    seed_everything(cfg.seed)
    losses: list[float] = []
    fit(model_for(cfg, data), data, cfg.replace(max_steps=steps), on_step=lambda _, loss: losses.append(float(loss)))
    return losses


@pytest.mark.parametrize(
    "options",
    [
        dict(balance="weights", loss="ce", label_smoothing=0.1, optimizer="adamw", lr=0.002),  # the loss
        dict(balance="sampler", augment="light", hflip="on", optimizer="sgd", momentum=0.9, lr=0.05),  # the batches
    ],
)
def test_lr_find_takes_the_steps_fit_takes_from_one_config(options: dict) -> None:
    """lr-find's first steps, at a constant rate, are fit's: the same initial model, batches (balancing,
    augmentation and forced flips included), loss (class weights and smoothing) and optimiser update.
    Before run_parts, lr-find ignored --hflip and flipped nothing."""
    cfg = validate(TrainConfig(**TINY, **options, schedule="none"))
    ours = first_losses(cfg, 2)
    found = lr_find(cfg, start=cfg.lr, end=cfg.lr * (1 + 1e-9), steps=5, explode=1e9)  # its first step: cfg.lr
    assert found["raw_losses"][:2] == ours
    assert ours[0] != ours[1]  # the second loss comes after a real update


def test_run_parts_reflect_the_config() -> None:
    cfg = validate(TrainConfig(**TINY, balance="weights", optimizer="adamw", lr=0.002, channels_last=True))
    data = training_data(cfg)
    parts = run_parts(cfg, data, model_for(cfg, data), torch.device("cpu"))
    assert isinstance(parts.optimizer, torch.optim.AdamW) and parts.optimizer.param_groups[0]["lr"] == 0.002
    assert next(parts.model.parameters()).device.type == "cpu" and parts.dtype == torch.float32
    conv = next(p for p in parts.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    x, y = next(iter(parts.train_batches.batches(1)))
    assert x.dtype == torch.float32 and len(x) == 64 and x.is_contiguous(memory_format=torch.channels_last)
    assert parts.val_batches is not None and parts.val_batches.n == len(data.splits["val"])
    # --balance weights: the training loss weights the classes, validation keeps the plain mean
    logits = torch.zeros(4, 2)
    logits[:, 0] = 3.0  # confident "0" for every image: the class-1 images weigh more in training
    target = torch.tensor([0, 1, 1, 1])
    assert float(parts.loss_fn(logits, target)) != pytest.approx(float(parts.val_loss_fn(logits, target)))
    lr_only = training_data(cfg, ("train",))  # lr-find reads no validation split
    assert run_parts(cfg, lr_only, model_for(cfg, lr_only), torch.device("cpu")).val_batches is None


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (Interrupted("stopped at epoch 1, step 3"), "interrupted", None),
        (KeyboardInterrupt(), "interrupted", None),
        (Diverged("loss became nan at step 4"), "failed", "loss became nan at step 4"),
        (OSError(28, "No space left on device"), "failed", "OSError: [Errno 28] No space left on device"),
    ],
)
def test_fail_run_records_why_a_run_stopped(tmp_path: Path, exc: BaseException, status: str, error: str) -> None:
    runs.start_run(tmp_path, {"model": "seednet"})
    assert runs.is_running(tmp_path)
    assert runs.fail_run(tmp_path, exc) == status
    payload = runs.read_config(tmp_path)
    assert (payload["status"], payload.get("error")) == (status, error)
    assert payload["config"] == {"model": "seednet"} and not runs.is_running(tmp_path)


def test_both_engines_finish_their_runs_through_runs(tmp_path: Path) -> None:
    torch_run = cnnlab.train(TrainConfig(**TINY, max_steps=3), out=str(tmp_path / "torch")).run_dir
    assert main(["backprop", "train", "--classes", "0,1", "--batch-size", "128", "--epochs", "1",
                 "--out", str(tmp_path / "numpy"), "--quiet"]) == 0  # fmt: skip
    for run_dir in (torch_run, tmp_path / "numpy"):
        payload = runs.read_config(run_dir)
        assert payload["status"] == runs.FINISHED and payload["classes"] == ["0", "1"]
        assert payload["result"]["final_val_acc"] == runs.read_metrics(run_dir)[-1]["val_acc"]


def test_both_engines_mark_a_run_failed_when_its_metrics_cannot_be_written(tmp_path: Path) -> None:
    """A real failure mid-run (``metrics.csv`` is a folder, so writing it raises): each engine's run
    says ``failed`` and why, and the error still reaches the caller."""
    for name in ("torch", "numpy"):
        (tmp_path / name / "metrics.csv").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        cnnlab.train(TrainConfig(**TINY, max_steps=3), out=str(tmp_path / "torch"))
    try:
        code = main(["backprop", "train", "--classes", "0,1", "--epochs", "1", "--out", str(tmp_path / "numpy"),
                     "--quiet"])  # fmt: skip
    except IsADirectoryError:
        code = None
    assert code != 0
    for name in ("torch", "numpy"):
        payload = json.loads((tmp_path / name / "config.json").read_text())
        assert payload["status"] == "failed" and payload["error"].startswith("IsADirectoryError:"), name


def test_no_status_is_spelled_outside_runs() -> None:
    """Every run status is written by cnnlab.runs: no other module holds one as a string of its own."""
    statuses = {runs.RUNNING, runs.FINISHED, runs.INTERRUPTED, runs.FAILED, runs.PRUNED}
    found = []
    for path in (ROOT / "cnnlab").rglob("*.py"):
        if path.name == "runs.py" and path.parent.name == "cnnlab":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in statuses:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []
