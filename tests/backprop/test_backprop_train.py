"""train_numpy's contract, and the rule that only compare.py and convert.py import torch."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import cnnlab.backprop
from cnnlab.backprop.train import train_numpy, train_numpy_net

PACKAGE = Path(cnnlab.backprop.__file__).parent


def test_only_compare_and_convert_import_torch() -> None:
    importers = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "torch" or name.startswith("torch.") for name in names):
                importers.add(path.name)
    assert importers == {"compare.py", "convert.py"}


@pytest.mark.slow
def test_train_numpy_rows_and_callbacks() -> None:
    epochs_seen: list[dict] = []
    steps: list[tuple[int, float]] = []
    history = train_numpy(
        epochs=2, batch_size=64, seed=1, progress=False, max_steps=70,
        on_epoch=epochs_seen.append, on_step=lambda step, value: steps.append((step, value)),
    )  # fmt: skip
    # 4000 training images in batches of 64: 63 steps in epoch 1, then 7 more in epoch 2
    assert [r["epoch"] for r in history] == [1, 2]
    assert epochs_seen == history
    assert [s for s, _ in steps] == list(range(1, 71))
    for row in history:
        assert set(row) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["val_acc"] <= 1 and row["seconds"] > 0
    assert history[0]["val_acc"] > 0.5  # 63 SGD steps already learn (chance is 0.1)
    assert np.mean([v for _, v in steps[-10:]]) < np.mean([v for _, v in steps[:10]])


@pytest.mark.slow
def test_train_numpy_is_float32_and_reproducible() -> None:
    a, net = train_numpy_net(epochs=1, progress=False, max_steps=5, seed=3)
    b = train_numpy(epochs=1, progress=False, max_steps=5, seed=3)
    assert all(w.dtype == np.float32 for _, w in net.named_params())
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]
