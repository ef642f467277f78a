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
    """A dataset ready for training: its splits plus what a model and a predictor need to know."""

    name: str
    classes: list[str]
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: dict[str, Split] = field(default_factory=dict)
    resize: int | None = None  # folder:/csv: images: shorter side scaled to this, then centre-cropped (None: squeezed)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images [N, C, H, W] → float32 ``(x / 255 − mean) / std`` per channel, on their device."""
    x = images.float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def stratified_split(labels: torch.Tensor, holdout: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic stratified split: (train_index, holdout_index), holdout ≈ ``holdout`` samples.

    Each class gives the same share of its samples to the holdout, chosen by a fixed-seed shuffle.
    """
    from sklearn.model_selection import train_test_split

    index = torch.arange(len(labels)).numpy()
    train, held = train_test_split(index, test_size=holdout, stratify=labels.numpy(), random_state=seed, shuffle=True)
    return torch.from_numpy(train).sort().values, torch.from_numpy(held).sort().values
