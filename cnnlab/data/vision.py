"""MNIST-family datasets, CIFAR-10 and CIFAR-100: local files first, torchvision's downloader when online.

MNIST-family files are the standard IDX files, looked for directly in ``data_dir`` and in
torchvision's ``data_dir/<Name>/raw/`` layout; CIFAR files are the binary version's records
(:mod:`cnnlab.data.cifar`), in ``data_dir`` or the folder its archive extracts to. Only the files of
the requested splits are read, and only those are downloaded when missing: ``eval --split test`` on
MNIST needs (and fetches) just the two ``t10k`` files. ``train`` and ``val`` come from the official
training set (5,000 stratified images held out for ``val``), ``test`` is the official test set. A
download that fails leaves nothing behind: no partial file, no empty folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnnlab.data.cache import cached_tensors
from cnnlab.data.idx import find_idx_file, read_idx
from cnnlab.data.splits import TensorSplit, stratified_split
from cnnlab.errors import UserError

if TYPE_CHECKING:
    from cnnlab.data.cifar import CifarFormat

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
            failure = _download(tv_class, data_dir / tv_class / "raw", source)
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
            out["train"], out["val"] = hold_out_val(full)
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


def _download(tv_class: str, raw_folder: Path, source: str) -> str:
    """Fetch ``source``'s two IDX files (``train-*`` or ``t10k-*``, gzip-compressed, checked against
    their MD5) from torchvision's mirrors for the dataset into ``raw_folder``; "" or why it failed."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_url

    dataset_class = getattr(tvd, tv_class)
    prefix = "t10k" if source == "test" else "train"
    wanted = [(name, md5) for name, md5 in dataset_class.resources if name.startswith(prefix)]
    return fetch_without_leftovers(
        raw_folder,
        [raw_folder / name for name, _ in wanted],
        lambda: [_from_mirrors(download_url, dataset_class.mirrors, raw_folder, name, md5) for name, md5 in wanted],
    )


def _from_mirrors(download_url, mirrors: list[str], folder: Path, name: str, md5: str) -> None:
    """Download ``name`` from the first mirror that has it (torchvision's mirror order)."""
    errors = []
    for mirror in mirrors:
        try:
            download_url(f"{mirror}{name}", str(folder), filename=name, md5=md5)
            return
        except Exception as exc:  # this mirror failed: try the next
            errors.append(exc)
    raise errors[-1]


def fetch_without_leftovers(folder: Path, outputs: list[Path], fetch: Callable[[], object]) -> str:
    """Run ``fetch()`` (a download into ``folder``); "" on success, else why it failed, after removing
    what it left: the ``outputs`` and folders that were not there before (a failed or offline download
    changes nothing on disk)."""
    folder = Path(os.path.abspath(folder))
    created = [p for p in (*reversed(folder.parents), folder, *outputs) if not p.exists() and not p.is_symlink()]
    try:
        fetch()
    except Exception as exc:  # offline, blocked, wrong checksum, disk full: reported in the caller's one line
        for path in sorted(created, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink()
        return f" and the download failed ({type(exc).__name__}: offline?)"
    return ""


def load_cifar(name: str, data_dir: Path, splits: tuple[str, ...], download: bool = True) -> dict[str, TensorSplit]:
    """CIFAR-10 or CIFAR-100 (see :mod:`cnnlab.data.cifar`) from the binary version's files in ``data_dir``
    or ``data_dir/<folder>``; downloaded when missing and ``download`` (the published archive, checked
    against its MD5 by torchvision's downloader, then extracted)."""
    from cnnlab.data import cifar

    fmt = cifar.FORMATS[name]
    out: dict[str, TensorSplit] = {}
    for source in sorted({"test" if s == "test" else "train" for s in splits}):
        paths = cifar.find_files(data_dir, fmt, source)
        failure = ""
        if paths is None and download:
            failure = _download_cifar(fmt, data_dir)
            paths = cifar.find_files(data_dir, fmt, source)
        if paths is None:
            raise UserError(cifar.missing_message(name, fmt, data_dir, source, failure))
        full = cifar.read_source(name, fmt, paths, source)
        if source == "test":
            out["test"] = full
        else:
            out["train"], out["val"] = hold_out_val(full)
    return {s: out[s] for s in splits}


def _download_cifar(fmt: CifarFormat, data_dir: Path) -> str:
    """Fetch the binary archive into ``data_dir`` (torchvision's downloader, MD5 checked) and extract it
    there with tarfile's ``data`` filter (:func:`cnnlab.data.cifar.extract_archive`); "" or why it failed."""
    from torchvision.datasets.utils import download_url

    from cnnlab.data.cifar import extract_archive

    def fetch() -> None:
        download_url(fmt.url, str(data_dir), filename=fmt.archive, md5=fmt.md5)
        extract_archive(data_dir / fmt.archive, data_dir)
        (data_dir / fmt.archive).unlink()

    return fetch_without_leftovers(data_dir, [data_dir / fmt.archive, data_dir / fmt.folder], fetch)


def hold_out_val(full: TensorSplit) -> tuple[TensorSplit, TensorSplit]:
    """The official training set → (train, val): ``VAL_HOLDOUT`` images, stratified and always the same
    (a tenth of a training set smaller than ten times that)."""
    train, val = stratified_split(full.labels, min(VAL_HOLDOUT, len(full) // 10))
    return full.subset(train), full.subset(val)
