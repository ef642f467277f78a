"""The containers every dataset loads into: a :class:`Data` with named splits.

A :class:`TensorSplit` holds a whole split in memory as uint8 images ``[N, C, H, W]`` and int64
labels (every built-in dataset, and ``folder:``/``csv:`` datasets within the memory budget). A
:class:`FileSplit` holds image paths and labels and is decoded on the fly by a DataLoader (``folder:``
and ``csv:`` datasets larger than the budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.spec import ImageSpec


@dataclass
class TensorSplit:
    """A split resident in memory: ``images`` uint8 [N, C, H, W], ``labels`` int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> TensorSplit:
        return TensorSplit(self.images[index], self.labels[index])


@dataclass
class FileSplit:
    """A split of image files, decoded lazily to uint8 [C, H, W] of the dataset's shape."""

    paths: list[Path]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> FileSplit:
        return FileSplit([self.paths[i] for i in index.tolist()], self.labels[index])


Split = TensorSplit | FileSplit


@dataclass
class Data:
    """A dataset ready for training: its splits plus how its images feed a model (:class:`ImageSpec`:
    classes, channels, size, mean, std, resize and the recipe for new images)."""

    name: str
    spec: ImageSpec
    splits: dict[str, Split] = field(default_factory=dict)


def stratified_split(labels: torch.Tensor, holdout: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic stratified split: (train_index, holdout_index), holdout ≈ ``holdout`` samples.

    Each class gives the same share of its samples to the holdout, chosen by a fixed-seed shuffle.
    """
    from sklearn.model_selection import train_test_split

    index = torch.arange(len(labels)).numpy()
    train, held = train_test_split(index, test_size=holdout, stratify=labels.numpy(), random_state=seed, shuffle=True)
    return torch.from_numpy(train).sort().values, torch.from_numpy(held).sort().values
