"""MNIST-family datasets and CIFAR-10: local files first, torchvision's download when online.

MNIST-family files are the standard IDX files, looked for directly in ``data_dir`` and in
torchvision's ``data_dir/<Name>/raw/`` layout; only the files of the requested splits are read.
``train`` and ``val`` come from the official training set (5,000 stratified images held out for
``val``), ``test`` is the official test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.data.cache import cached_tensors
from cnnlab.data.idx import find_idx_file, read_idx
from cnnlab.data.splits import TensorSplit, stratified_split
from cnnlab.errors import UserError

VAL_HOLDOUT = 5000
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_idx_dataset(
    name: str, tv_class: str, data_dir: Path, splits: tuple[str, ...], download: bool = True
) -> dict[str, TensorSplit]:
    """Load the requested splits of an MNIST-format dataset from IDX files."""
    folders = [data_dir, data_dir / tv_class / "raw"]
    out: dict[str, TensorSplit] = {}
    for source in sorted({"test" if s == "test" else "train" for s in splits}):
        paths = _find_pair(folders, source)
        failure = ""
        if paths is None and download:
            failure = _download(tv_class, data_dir)
            paths = _find_pair(folders, source)
        if paths is None:
            stems = " and ".join(f"{s}[.gz]" for s in IDX_FILES[source])
            raise UserError(
                f"{name}: {source} files not found in {data_dir} (looked for {stems}, also under "
                f"{tv_class}/raw/){failure}; run once online to download them, or pass --data-dir DIR holding them"
            )
        full = _read_pair(name, *paths)
        if source == "test":
            out["test"] = full
        else:
            train, val = stratified_split(full.labels, VAL_HOLDOUT)
            out["train"], out["val"] = full.subset(train), full.subset(val)
    return {s: out[s] for s in splits}


def _find_pair(folders: list[Path], source: str) -> tuple[Path, Path] | None:
    images = find_idx_file(folders, IDX_FILES[source][0])
    labels = find_idx_file(folders, IDX_FILES[source][1])
    return (images, labels) if images and labels else None


def _read_pair(name: str, images_path: Path, labels_path: Path) -> TensorSplit:
    def decode() -> dict[str, torch.Tensor]:
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1:
            raise UserError(
                f"{images_path}: expected images [N, H, W] and labels [N], got {images.shape} and {labels.shape}"
            )
        if len(images) != len(labels):
            raise UserError(f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels")
        return {
            "images": torch.from_numpy(images).unsqueeze(1),
            "labels": torch.from_numpy(labels.astype(np.int64)),
        }

    tensors = cached_tensors(name, [images_path, labels_path], decode)
    return TensorSplit(tensors["images"], tensors["labels"])


def _download(tv_class: str, data_dir: Path) -> str:
    """Fetch the dataset with torchvision's own downloader (online only); "" or why it failed."""
    import torchvision.datasets as tvd

    dataset_class = getattr(tvd, tv_class)
    try:
        for train in (True, False):
            dataset_class(root=str(data_dir), train=train, download=True)
    except Exception as exc:  # offline, blocked, disk full: reported in the caller's one line
        return f" and the download failed ({type(exc).__name__}: offline?)"
    return ""


def load_cifar10(data_dir: Path, splits: tuple[str, ...], download: bool = True) -> dict[str, TensorSplit]:
    """CIFAR-10 through torchvision (its python-pickle batches, checked against their MD5 sums)."""
    import torchvision.datasets as tvd

    out: dict[str, TensorSplit] = {}
    for train in sorted({s != "test" for s in splits}):
        try:
            ds = tvd.CIFAR10(root=str(data_dir), train=train, download=download)
        except Exception:
            ds = None
        if ds is None:
            raise UserError(
                f"cifar10: not found in {data_dir} (expected {data_dir}/cifar-10-batches-py/); "
                "run once online to download it, or pass --data-dir DIR holding it"
            )
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        full = TensorSplit(images, torch.tensor(ds.targets, dtype=torch.int64))
        if train:
            tr, val = stratified_split(full.labels, VAL_HOLDOUT)
            out["train"], out["val"] = full.subset(tr), full.subset(val)
        else:
            out["test"] = full
    return {s: out[s] for s in splits}
