"""Every labelled image of a dataset, with a name for each: the file for ``folder:``/``csv:`` data,
``split[index]`` for built-in datasets, decoded once by the project's readers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data import Data, TensorSplit, load_data
from cnnlab.data.registry import DATASETS, is_file_dataset
from cnnlab.errors import UserError
from cnnlab.spec import image_spec


@dataclass
class Pool:
    """All images [N, C, H, W] uint8 with labels, names, splits and (files only) original sizes (w, h)."""

    data: Data  # classes, shape, mean and std (its splits are not used)
    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    splits: list[str]
    sizes: list[tuple[int, int]] | None


def load_pool(dataset: str, data_dir: str | Path = "./data", image_size: int | None = None) -> Pool:
    """Decode every split of ``dataset`` into memory (refused with a UserError when it cannot be)."""
    if is_file_dataset(dataset):
        return _file_pool(dataset, image_size)
    info = DATASETS.get(dataset)
    if info is None:
        load_data(dataset, data_dir, ("train",))  # raises the registry's one-line error for unknown names
        raise UserError(f"unknown dataset {dataset!r}")
    data = load_data(dataset, data_dir, tuple(info.splits))
    images, labels, names, splits = [], [], [], []
    for split, part in data.splits.items():
        images.append(part.images)
        labels.append(part.labels)
        names += [f"{split}[{i}]" for i in range(len(part))]
        splits += [split] * len(part)
    return Pool(data, torch.cat(images), torch.cat(labels), names, splits, None)


def _file_pool(dataset: str, image_size: int | None) -> Pool:
    from PIL import Image

    from cnnlab.data.folder import decode_group, guess_channels, scan, train_stats

    found = scan(dataset)
    channels = guess_channels(found.groups["train"].paths)
    size = image_size or (28 if channels == 1 else 32)
    images, labels, names, splits, sizes = [], [], [], [], []
    train_decoded = None
    for split, group in found.groups.items():
        decoded = decode_group(group, channels, size, in_memory=True, desc=f"decoding {split}")
        if not isinstance(decoded.split, TensorSplit):
            raise UserError(f"{dataset}: the {split} images do not fit in memory; the doctor needs them decoded")
        if split == "train":
            train_decoded = decoded
        paths = [p for p, ok in zip(group.paths, decoded.ok.tolist()) if ok]
        images.append(decoded.split.images)
        labels.append(decoded.split.labels)
        names += [str(p) for p in paths]
        splits += [split] * len(paths)
        for p in paths:
            with Image.open(p) as img:  # the header only: the original size
                sizes.append(img.size)
    if not names:
        raise UserError(f"{dataset}: no readable images")
    mean, std = train_stats(dataset, found.groups["train"], train_decoded, channels, size)
    data = Data(dataset, image_spec(dataset, found.classes, channels, size, mean, std))
    return Pool(data, torch.cat(images), torch.cat(labels), names, splits, sizes)
