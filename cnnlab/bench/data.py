"""The data ``cnnlab bench`` trains on: a synthetic MNIST-shaped set, or an in-memory dataset."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnlab.data import Data, TensorSplit, load_data
from cnnlab.data.registry import DATASETS
from cnnlab.errors import UserError


def synthetic_data(n: int, seed: int = 0) -> Data:
    """An MNIST-shaped set of ``n`` training and ``max(n // 6, 10)`` validation images (60,000 → 10,000).

    Each image is uniform noise (0..235) plus its class's pattern: a fixed random set of 4×4 blocks
    brightened by 20, faint against the noise. The label is in the pixels, so training learns it
    (not to 100 %) and the accuracies of two loops can be compared; it is not a stand-in for MNIST.
    """
    if n < 10:
        raise UserError(f"--synthetic needs at least 10 images (got {n})")
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.rand(10, 1, 7, 7, generator=generator) < 0.3
    patterns = blocks.repeat_interleave(4, 2).repeat_interleave(4, 3).to(torch.uint8) * 20
    total = n + max(n // 6, 10)
    labels = torch.randint(0, 10, (total,), generator=generator)
    images = torch.randint(0, 236, (total, 1, 28, 28), generator=generator, dtype=torch.uint8)
    images += patterns[labels]
    splits = {"train": TensorSplit(images[:n], labels[:n]), "val": TensorSplit(images[n:], labels[n:])}
    return Data(f"synthetic{n}", DATASETS["mnist"].spec, splits)


def bench_data(dataset: str | None, data_dir: str | Path, synthetic: int | None) -> Data:
    """The synthetic set, or the ``train`` and ``val`` splits of a named dataset (default mnist5k)."""
    if synthetic is not None:
        return synthetic_data(synthetic)
    data = load_data(dataset or "mnist5k", data_dir, ("train", "val"))
    if not all(isinstance(s, TensorSplit) for s in data.splits.values()):
        raise UserError(
            "bench compares in-memory datasets; this one streams from its files (raise --memory-budget to keep it in memory)"
        )
    return data
