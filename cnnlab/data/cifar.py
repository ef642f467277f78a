"""CIFAR-10 and CIFAR-100 from their binary version: fixed-length records, never a pickle.

The binary version (``cifar-10-binary.tar.gz`` → ``cifar-10-batches-bin/``, ``cifar-100-binary.tar.gz``
→ ``cifar-100-binary/``) stores each image as one record: the label byte(s), then 3,072 pixel bytes,
the 32×32 red plane, then green, then blue, each row by row. CIFAR-10 records have 1 label byte
(``data_batch_1.bin`` … ``data_batch_5.bin``, ``test_batch.bin``); CIFAR-100 records have 2, the
coarse label (20 superclasses) then the fine label (100 classes) (``train.bin``, ``test.bin``).

Each file's size is checked against the record length and the most records such a file holds
before a byte of it is read, and every label against the number of classes, so a truncated,
oversized or foreign file is one :class:`~cnnlab.errors.UserError` naming it. The Python version
(``cifar-10-batches-py/``) is never read: loading it means unpickling, which can run code.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.cache import cached_tensors
from cnnlab.data.splits import TensorSplit
from cnnlab.errors import UserError

CHANNELS, SIZE = 3, 32
PIXELS = CHANNELS * SIZE * SIZE  # 3,072 bytes: red plane, green plane, blue plane


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR dataset's binary files live and how their records are laid out."""

    url: str  # the published archive of the binary version
    md5: str  # its MD5, as published on https://www.cs.toronto.edu/~kriz/cifar.html
    folder: str  # the folder the archive extracts to
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    records_per_train_file: int
    records_per_test_file: int
    label_bytes: int  # label bytes in front of each record's pixels
    label_at: int  # which of them is the label used
    num_classes: int
    python_names: tuple[str, ...]  # what the Python (pickle) version holds; only ever named in messages

    @property
    def record(self) -> int:
        return self.label_bytes + PIXELS

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[-1]


CIFAR10 = CifarFormat(
    "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
    "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), 10_000, 10_000,
    1, 0, 10, ("cifar-10-batches-py", "data_batch_1", "batches.meta"),
)  # fmt: skip
CIFAR100 = CifarFormat(
    "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
    "cifar-100-binary", ("train.bin",), ("test.bin",), 50_000, 10_000, 2, 1, 100, ("cifar-100-python",),
)  # fmt: skip
CIFAR100_COARSE = CifarFormat(**{**CIFAR100.__dict__, "label_at": 0, "num_classes": 20})

FORMATS = {"cifar10": CIFAR10, "cifar100": CIFAR100, "cifar100-coarse": CIFAR100_COARSE}


def read_cifar_file(path: Path, fmt: CifarFormat, max_records: int) -> tuple[np.ndarray, np.ndarray]:
    """One binary CIFAR file → (images uint8 [N, 3, 32, 32] in RGB order, labels uint8 [N])."""
    try:
        size = path.stat().st_size
        if size == 0 or size % fmt.record or size // fmt.record > max_records:
            raise UserError(
                f"{path}: {size:,} bytes is not a {fmt.folder} file (expected up to {max_records:,} records "
                f"of {fmt.record:,} bytes): truncated or corrupt; download {fmt.archive} again"
            )
        with open(path, "rb") as f:
            raw = f.read(size + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) != size:
        raise UserError(f"{path}: the file changed while it was read ({size:,} bytes, then {len(raw):,})")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, fmt.record)
    labels = records[:, fmt.label_at].copy()
    if int(labels.max()) >= fmt.num_classes:
        bad = int(np.argmax(labels >= fmt.num_classes))
        raise UserError(
            f"{path}: record {bad} has label {labels[bad]} (expected 0 to {fmt.num_classes - 1}): "
            f"not a {fmt.folder} file, or corrupt"
        )
    images = records[:, fmt.label_bytes :].reshape(-1, CHANNELS, SIZE, SIZE).copy()
    return images, labels


def extract_archive(archive: Path, into: Path) -> None:
    """Extract the ``.tar.gz`` ``archive`` into ``into`` with tarfile's ``data`` filter: a member that would
    land outside ``into`` (an absolute path, ``..``, a link pointing out), a device or a FIFO is refused,
    and no permission bits beyond the user's are set. A refused or broken archive is a UserError."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except tarfile.FilterError as exc:
        raise UserError(f"{archive}: refused to extract it: {exc}") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"{archive}: cannot extract it ({type(exc).__name__}: {exc}); download it again") from None


def find_files(data_dir: Path, fmt: CifarFormat, source: str) -> list[Path] | None:
    """The ``source`` (``train`` or ``test``) files, all in ``data_dir`` or all in ``data_dir/<folder>``."""
    names = fmt.train_files if source == "train" else fmt.test_files
    for folder in (data_dir, data_dir / fmt.folder):
        paths = [folder / name for name in names]
        if all(p.is_file() for p in paths):
            return paths
    return None


def read_source(name: str, fmt: CifarFormat, paths: list[Path], source: str) -> TensorSplit:
    """Decode (or take from the cache) the files of one source, concatenated in order."""
    most = fmt.records_per_train_file if source == "train" else fmt.records_per_test_file

    def decode() -> dict[str, torch.Tensor]:
        parts = [read_cifar_file(path, fmt, most) for path in paths]
        images = np.concatenate([images for images, _ in parts])
        labels = np.concatenate([labels for _, labels in parts]).astype(np.int64)
        return {"images": torch.from_numpy(images), "labels": torch.from_numpy(labels)}

    tensors = cached_tensors(name, paths, decode)
    return TensorSplit(tensors["images"], tensors["labels"])


def missing_message(name: str, fmt: CifarFormat, data_dir: Path, source: str, failure: str) -> str:
    """The one line for files that are not there; it names the Python version if only that is."""
    names = fmt.train_files if source == "train" else fmt.test_files
    listed = names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}"
    get = f"download {fmt.url} and extract it into {data_dir}"
    python = [data_dir / n for n in fmt.python_names if (data_dir / n).exists()]
    if python:
        return (
            f"{name}: {data_dir} holds only the Python version of {name} ({python[0].name}), which cnnlab does not "
            f"read (loading it means unpickling, which can run code){failure}; get the binary version: {get}"
        )
    return (
        f"{name}: {source} files not found in {data_dir} (looked for {listed}, also under {fmt.folder}/){failure}; "
        f"run once online to download them, or {get} and pass --data-dir {data_dir}"
    )
