"""Train the tutorial network with the NumPy engine alone.

Initial weights: the torch model is built with ``torch.manual_seed(seed)`` (PyTorch's
default init, kaiming-uniform with a = √5) and copied into NumPy by
:func:`cnnlab.backprop.convert.from_torch`, so a NumPy run and a PyTorch run with the same
seed start from identical weights. Batches follow the core trainer's
:func:`cnnlab.data.epoch_order`, so both also see the same batches in the same order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cnnlab.backprop import threads
from cnnlab.backprop.data import ArrayData, epoch_batches, load_arrays
from cnnlab.backprop.losses import LOSSES, Loss, make_loss
from cnnlab.backprop.net import SGD, Sequential
from cnnlab.config import TrainConfig

DEFAULTS = TrainConfig()  # the tutorial's recipe: the one source of every default below

__all__ = ["train_numpy", "train_numpy_net", "initial_net", "evaluate", "predict", "train_steps"]


def initial_net(
    model: str, in_channels: int, image_size: int, num_classes: int, seed: int, dtype: Any = np.float32
) -> Sequential:
    """The NumPy copy of ``cnnlab.models.build_model(...)`` initialised after ``torch.manual_seed(seed)``
    (see :func:`cnnlab.backprop.convert.seeded_from_torch`)."""
    from cnnlab.backprop.convert import seeded_from_torch

    return seeded_from_torch(model, in_channels, image_size, num_classes, seed, dtype)


def predict(output: np.ndarray) -> np.ndarray:
    """Class per row: argmax, or z > 0 (σ(z) > ½) for a single logit."""
    if output.shape[1] == 1:
        return (output[:, 0] > 0).astype(np.int64)
    return output.argmax(axis=1)


def evaluate(net: Sequential, loss: Loss, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> tuple[float, float]:
    """(mean loss, accuracy) of ``net`` over a whole split, in batches."""
    total, correct = 0.0, 0
    dtype = _net_dtype(net)
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size].astype(dtype, copy=False), y[start : start + batch_size]
        out = net.forward(xb)
        total += loss.forward(out, yb) * len(yb)
        correct += int((predict(out) == yb).sum())
    return total / len(y), correct / len(y)


def _net_dtype(net: Sequential) -> np.dtype:
    for _, p in net.named_params():
        return p.dtype
    return np.dtype(np.float32)


def train_steps(
    net: Sequential,
    loss: Loss,
    opt: SGD,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
) -> Iterator[tuple[float, int, int]]:
    """One epoch of SGD; yields (batch loss, correct predictions, batch size) after each step.

    Per step: forward, E, ∂E/∂output, backward through every layer, then w ← w − α·v.
    """
    dtype = _net_dtype(net)
    for xb, yb in epoch_batches(x, y, batch_size, seed, epoch):
        out = net.forward(xb.astype(dtype, copy=False))
        value = loss.forward(out, yb)
        net.zero_grad()
        net.backward(loss.backward(), input_grad=False)
        opt.step(net)
        yield value, int((predict(out) == yb).sum()), len(yb)


def train_numpy(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Train ``model`` (the tutorial's seednet) on ``dataset`` with the NumPy engine.

    Returns the per-epoch history; :func:`train_numpy_net` also returns the trained network.

    SGD with momentum on ``loss`` (the tutorial's recipe by default), in ``dtype``
    (float32 by default). After each optimiser step ``on_step(step, batch_loss)`` is called
    (step is 1-based); after each epoch ``on_epoch(row)``. Returns one row per epoch:
    ``{epoch, train_loss, train_acc, val_loss, val_acc, seconds}``; the train columns are
    running means over the epoch's batches (computed before each step's update).
    ``max_steps`` stops after that many optimiser steps (the epoch is then evaluated as is).
    """
    return train_numpy_net(*args, **kwargs)[0]


def train_numpy_net(
    epochs: int = DEFAULTS.epochs,
    lr: float = DEFAULTS.lr,
    momentum: float = DEFAULTS.momentum,
    batch_size: int = DEFAULTS.batch_size,
    seed: int = DEFAULTS.seed,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    *,
    model: str = DEFAULTS.model,
    dataset: str = DEFAULTS.dataset,
    loss: str = DEFAULTS.loss,
    classes: list[str] | None = None,
    data_dir: str = DEFAULTS.data_dir,
    dtype: Any = np.float32,
    on_step: Callable[[int, float], None] | None = None,
    max_steps: int | None = None,
    data: ArrayData | None = None,
    net: Sequential | None = None,
    blas_threads: int | None = 1,
) -> tuple[list[dict[str, Any]], Sequential]:
    """:func:`train_numpy`, returning ``(history, trained network)``; ``net`` (trained in
    place, in its own dtype) replaces the seeded initial network when given. NumPy's BLAS
    runs with ``blas_threads`` threads (see :mod:`cnnlab.backprop.threads`)."""
    with threads.blas_threads(blas_threads):
        return _train(
            epochs, lr, momentum, batch_size, seed, on_epoch, progress, model, dataset, loss, classes,
            data_dir, dtype, on_step, max_steps, data, net,
        )  # fmt: skip


def _train(
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    seed: int,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    progress: bool,
    model: str,
    dataset: str,
    loss: str,
    classes: list[str] | None,
    data_dir: str,
    dtype: Any,
    on_step: Callable[[int, float], None] | None,
    max_steps: int | None,
    data: ArrayData | None,
    net: Sequential | None,
) -> tuple[list[dict[str, Any]], Sequential]:
    if loss not in LOSSES:
        from cnnlab.errors import UserError

        raise UserError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    if epochs < 1 or batch_size < 1:
        from cnnlab.errors import UserError

        raise UserError("epochs and batch size must be at least 1")
    if loss == "logistic" and (not classes or len(classes) != 2):
        from cnnlab.errors import UserError

        raise UserError("the logistic loss needs a two-class task: pass two classes, e.g. 3,8")
    if data is None:
        data = load_arrays(dataset, data_dir, splits=("train", "val"), classes=classes)
    num_classes = 1 if loss == "logistic" else data.spec.num_classes
    if net is None:
        net = initial_net(model, data.spec.channels, data.spec.size, num_classes, seed, dtype)
    opt = SGD(lr, momentum)
    loss_fn = make_loss(loss)
    xtr, ytr = data.x["train"], data.y["train"]
    n_batches = (len(ytr) + batch_size - 1) // batch_size

    history: list[dict[str, Any]] = []
    step = 0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        total, correct, seen = 0.0, 0, 0
        bar = _progress(n_batches, f"epoch {epoch}/{epochs}", progress)
        for value, ok, n in train_steps(net, loss_fn, opt, xtr, ytr, batch_size, seed, epoch):
            step += 1
            total += value * n
            correct += ok
            seen += n
            if on_step is not None:
                on_step(step, value)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
            if max_steps is not None and step >= max_steps:
                break
        if bar is not None:
            bar.close()
        val_loss, val_acc = evaluate(net, loss_fn, data.x["val"], data.y["val"])
        row = {
            "epoch": epoch,
            "train_loss": total / seen,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if max_steps is not None and step >= max_steps:
            break
    return history, net


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
