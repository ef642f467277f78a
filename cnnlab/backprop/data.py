"""Datasets and batch order for the NumPy engine, as NumPy arrays.

Everything comes from :mod:`cnnlab.data` (the same splits, the same normalisation
and the same per-epoch permutation as the core trainer), converted with ``.numpy()``;
this module itself does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.spec import ImageSpec

__all__ = ["ArrayData", "arrays_from", "load_arrays", "epoch_batches"]


@dataclass
class ArrayData:
    """Normalised images ``x[split]`` (float32, [N, C, H, W]) and labels ``y[split]`` (int64), and how the
    dataset's images feed a model (``spec``: classes, shape, mean and std)."""

    name: str
    spec: ImageSpec
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]


def load_arrays(
    name: str = "mnist5k",
    data_dir: str = "./data",
    splits: tuple[str, ...] = ("train", "val"),
    classes: list[str] | None = None,
) -> ArrayData:
    """Load a dataset with :func:`cnnlab.data.load_data` (optionally only ``classes``, relabelled
    0, 1, ...) as :func:`arrays_from` converts it."""
    from cnnlab.data import load_data

    return arrays_from(load_data(name, data_dir, splits=splits, classes=list(classes) if classes else None))


def arrays_from(data: Any) -> ArrayData:
    """Every split of a loaded :class:`cnnlab.data.Data`, normalised exactly as the core trainer does
    (float32 ``(x/255 − mean)/std``, :func:`cnnlab.spec.to_model_input`)."""
    from cnnlab.spec import to_model_input

    xs: dict[str, np.ndarray] = {}
    ys: dict[str, np.ndarray] = {}
    for s, split in data.splits.items():
        if not hasattr(split, "images"):
            from cnnlab.errors import UserError

            raise UserError(f"the NumPy engine needs an in-memory dataset; {data.name} is read from files")
        xs[s] = to_model_input(data.spec, split.images).numpy()
        ys[s] = split.labels.numpy().astype(np.int64)
    return ArrayData(data.name, data.spec, xs, ys)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The core trainer's sample order for ``epoch`` (1-based), as a NumPy index array."""
    from cnnlab.data.loaders import epoch_order as core_order

    return core_order(n, seed, epoch).numpy()


def epoch_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> Any:
    """Yield (x_batch, y_batch): consecutive ``batch_size`` slices of the epoch's order
    (the last, shorter batch is kept)."""
    n = len(y)
    order = epoch_order(n, seed, epoch) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]
