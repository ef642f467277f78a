"""Your own images: ``folder:PATH`` with one sub-folder per class.

Either ``PATH/<class>/*.png`` (split 80/20 into train/val, stratified and deterministic) or
``PATH/train/<class>/...`` and ``PATH/val/<class>/...`` (and optionally ``PATH/test/<class>/...``).
Images of any size and mode are converted to the dataset's channels (grey if every sampled image is
grey, else RGB) and to a square ``image_size`` (default 28 for grey, 32 for colour). Files that
are not readable images (other suffixes, corrupt or truncated files, decompression bombs, modes with
no grey or RGB form) are skipped with one warning that counts them and names the first.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from cnnlab.data.images import IMAGE_SUFFIXES, open_image, read_image, to_model_input
from cnnlab.data.splits import FileSplit, stratified_split
from cnnlab.errors import UserError

GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def load_folder(root: Path, image_size: int | None = None) -> tuple[list[str], int, int, dict[str, FileSplit]]:
    """Scan ``root`` → (classes, channels, image_size, splits)."""
    if not root.is_dir():
        raise UserError(f"folder:{root}: no such folder")
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" in split_dirs:
        classes = _class_names(split_dirs["train"])
        splits = {s: _scan(d, classes) for s, d in split_dirs.items()}
        if "val" not in splits:
            splits = _holdout(splits["train"]) | {k: v for k, v in splits.items() if k == "test"}
    else:
        classes = _class_names(root)
        splits = _holdout(_scan(root, classes))
    channels = _guess_channels(splits["train"].paths[:32])
    size = image_size or (28 if channels == 1 else 32)
    return classes, channels, size, splits


def folder_stats(split: FileSplit, channels: int, size: int, limit: int = 512) -> tuple[tuple, tuple]:
    """Per-channel mean and std of up to ``limit`` training images (evenly spaced), in 0..1 units."""
    step = max(1, len(split) // limit)
    batch = torch.stack([read_image(p, channels, size) for p in split.paths[::step][:limit]]).float() / 255
    mean = batch.mean(dim=(0, 2, 3))
    std = batch.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _class_names(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UserError(f"folder:{folder}: needs at least two class sub-folders, found {len(classes)}")
    return classes


def _scan(folder: Path, classes: list[str]) -> FileSplit:
    paths: list[Path] = []
    labels: list[int] = []
    skipped: list[str] = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        files = sorted(p for p in class_dir.rglob("*") if p.is_file()) if class_dir.is_dir() else []
        for path in files:
            problem = _problem(path)
            if problem:
                skipped.append(problem)
                continue
            paths.append(path)
            labels.append(label)
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable or non-image file(s), e.g. {skipped[0]}", file=sys.stderr)
    counts = torch.bincount(torch.tensor(labels, dtype=torch.int64), minlength=len(classes))
    empty = [classes[i] for i in range(len(classes)) if counts[i] == 0]
    if empty:
        raise UserError(f"folder:{folder}: no readable images for class(es) {', '.join(empty)}")
    return FileSplit(paths, torch.tensor(labels, dtype=torch.int64))


def _problem(path: Path) -> str | None:
    """Why ``path`` cannot be a training image (not an image suffix, unreadable, unconvertible), or None."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"{path}: not an image file name ({', '.join(sorted(IMAGE_SUFFIXES))})"
    try:
        to_model_input(open_image(path), 3, 4)
    except UserError as exc:
        return str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
    return None


def _holdout(split: FileSplit) -> dict[str, FileSplit]:
    counts = torch.bincount(split.labels)
    if int(counts.min()) < 2:
        raise UserError("folder dataset: every class needs at least 2 images to split into train and val")
    holdout = max(len(counts), round(0.2 * len(split)))
    train, val = stratified_split(split.labels, holdout)
    return {"train": split.subset(train), "val": split.subset(val)}


def _guess_channels(paths: list[Path]) -> int:
    return 1 if all(open_image(p).mode in GREY_MODES for p in paths) else 3
