"""Your own images: ``folder:PATH`` and ``csv:FILE.csv`` datasets, decoded once and kept as tensors.

Layouts (hidden files and folders, names starting with ``.``, are skipped silently at any depth):

* ``PATH/<class>/...``: split into train and val, stratified and deterministic (``val_fraction`` of
  each class to val, default 0.2);
* ``PATH/train/<class>/...`` with ``PATH/val|valid|validation/<class>/...`` (without one, val is
  held out of train as above) and optionally ``PATH/test/<class>/...``;
* ``csv:FILE.csv`` with columns ``image,label[,split]`` (see :mod:`cnnlab.data.csvfile`).

Every image goes through :func:`cnnlab.data.images.read_image` (any size and mode → grey if every
sampled image is grey, else RGB, resized to a square ``image_size``: default 28 grey, 32 colour), in
parallel DataLoader workers, once: the result is kept by :func:`cnnlab.data.cache.cached_tensors`,
keyed on the file list (paths, sizes, modification times), the channels and the size, so a changed,
added or removed file is noticed. When the decoded splits fit ``memory_budget`` they are
:class:`TensorSplit` s (trained tensor-resident, like the IDX datasets); otherwise :class:`FileSplit` s
of the readable files, streamed by DataLoader workers. Files that are not readable images are
skipped with one warning that counts them and names the first few.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnlab.data.cache import cached_tensors
from cnnlab.data.files import (
    CSV_PREFIX,
    DEFAULT_VAL_FRACTION,
    FOLDER_PREFIX,
    SPLIT_NAMES,
    Found,
    check_same_classes,
    sort_classes,
)  # fmt: skip
from cnnlab.data.images import IMAGE_SUFFIXES, READER_VERSION, image_mode, read_image
from cnnlab.data.splits import Data, FileSplit, Split, TensorSplit, stratified_split
from cnnlab.errors import UserError
from cnnlab.spec import image_spec
from cnnlab.text import safe

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
DEFAULT_MEMORY_FRACTION = 0.25  # of the memory available when no budget is given
STATS_SAMPLE = 512  # training images the mean and std are measured on
PARALLEL_FROM = 1000  # fewer files are decoded in this process (starting workers costs more)


@dataclass
class Decoded:
    """One group after decoding: its readable images (in memory or as files) and which files were readable."""

    split: Split
    ok: torch.Tensor  # bool [len(group)]


def load_image_dataset(
    name: str,
    splits: tuple[str, ...] = ("train", "val"),
    image_size: int | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    memory_budget: float | None = None,
    workers: int | None = None,
    resize: int | None = None,
) -> Data:
    """Load ``folder:PATH`` or ``csv:FILE`` (see the module docstring).

    ``memory_budget`` (GiB, default a quarter of the available memory) bounds the decoded images kept
    in memory; ``workers`` decoding processes (default one per core, none for small sets). ``resize``
    (pretrained weights' preprocessing): scale each image's shorter side to it, then crop the central
    ``image_size`` square, instead of squeezing the whole image into the square."""
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    found = scan(name)
    warn_ignored(name, found.ignored)
    has = ["train", "val", *(["test"] if "test" in found.groups else [])]
    missing = [s for s in splits if s not in has]
    if missing:
        raise UserError(f"{name} has no {missing[0]!r} split (it has: {', '.join(has)})")
    held_out = "val" not in found.groups
    needed = [g for g in found.groups if g in splits or (g == "train" and held_out and "val" in splits)]
    channels = guess_channels(found.groups["train"].paths)
    size = image_size or (28 if channels == 1 else 32)
    total = sum(len(found.groups[g]) for g in needed) * channels * size * size
    in_memory = total <= budget_bytes(memory_budget)
    decoded = {
        g: decode_group(found.groups[g], channels, size, in_memory, workers, f"decoding {g}", resize) for g in needed
    }
    warn_skipped(
        sorted([p for g in needed for p in found.not_images.get(g, [])]),
        sorted([p for g in needed for p, ok in zip(found.groups[g].paths, decoded[g].ok.tolist()) if not ok]),
        channels,
        size,
        resize=resize,
    )
    out = {g: d.split for g, d in decoded.items()}
    empty = [g for g, split in out.items() if len(split) == 0]
    if empty:
        raise UserError(f"{name}: no readable images in its {empty[0]} split")
    if "train" in out:
        require_every_class(name, out["train"], found.classes)
        if held_out:
            out |= hold_out(name, out["train"], val_fraction)
    mean, std = train_stats(name, found.groups["train"], decoded.get("train"), channels, size, resize=resize)
    spec = image_spec(name, found.classes, channels, size, mean, std, resize)
    return Data(name, spec, {s: out[s] for s in splits})


def scan(name: str) -> Found:
    """List the files of ``folder:PATH`` or ``csv:FILE`` with their labels."""
    if name.startswith(CSV_PREFIX):
        from cnnlab.data.csvfile import scan_csv

        return scan_csv(dataset_path(name))
    return scan_folder(dataset_path(name))


def dataset_path(name: str) -> Path:
    """The path in ``folder:PATH`` or ``csv:PATH`` (``~`` expanded); an empty one is refused."""
    prefix = CSV_PREFIX if name.startswith(CSV_PREFIX) else FOLDER_PREFIX
    value = name[len(prefix) :].strip()
    if not value:
        example = "csv:labels.csv" if prefix == CSV_PREFIX else "folder:./my_images"
        raise UserError(f"--dataset {prefix} needs a path after the colon, e.g. --dataset {example}")
    return Path(value).expanduser()


def is_hidden(name: str) -> bool:
    """Hidden files and folders (``.DS_Store``, ``._x.png``, ``.ipynb_checkpoints/``) are never data."""
    return name.startswith(".")


def scan_folder(root: Path) -> Found:
    """The files of a folder dataset, grouped by split and labelled by their class sub-folder."""
    if root.is_file():
        hint = f"; for a table of files and labels use --dataset csv:{root}" if root.suffix.lower() == ".csv" else ""
        raise UserError(f"folder:{root} is a file, not a folder{hint}")
    if not root.is_dir():
        raise UserError(f"folder:{root}: no such folder")
    split_dirs = _split_dirs(root)
    if "train" not in split_dirs:
        classes = _class_names(root)
        group, skipped = _list_group(root, classes)
        return Found(classes, {"train": group}, {"train": skipped})
    classes = _class_names(split_dirs["train"])
    found = Found(classes, {}, ignored=_stray_dirs(root, split_dirs))
    for split, folder in split_dirs.items():
        if split != "train":
            check_same_classes(f"folder:{root}", split, classes, _class_names(folder, minimum=0))
        found.groups[split], found.not_images[split] = _list_group(folder, classes)
    return found


def _split_dirs(root: Path) -> dict[str, Path]:
    """``train``, ``val`` and ``test`` sub-folders of ``root`` (``valid/`` or ``validation/`` are ``val``)."""
    dirs: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        split = SPLIT_NAMES.get(entry.name.lower())
        if split is None or not entry.is_dir():
            continue
        if split in dirs:
            raise UserError(f"folder:{root}: both {dirs[split].name}/ and {entry.name}/ hold a {split} split; keep one")
        dirs[split] = entry
    if dirs and "train" not in dirs:
        named = ", ".join(f"{d.name}/" for d in dirs.values())
        raise UserError(f"folder:{root} has {named} but no train/: put the training images in {root}/train/<class>/")
    return dirs


def _stray_dirs(root: Path, split_dirs: dict[str, Path]) -> list[Path]:
    """The visible folders of a train/val/test layout's root that are not one of its splits."""
    used = set(split_dirs.values())
    return sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name) and p not in used)


def warn_ignored(root: str, ignored: list[Path]) -> None:
    """One warning line naming the folders beside train/ val/ test/ that are not read."""
    if ignored:
        names = ", ".join(f"{p.name}/" for p in ignored)
        verb = "is" if len(ignored) == 1 else "are"
        print(f"warning: {root}: {names} beside train/ val/ test/ {verb} ignored", file=sys.stderr)


def _class_names(folder: Path, minimum: int = 2) -> list[str]:
    classes = sort_classes([p.name for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name)])
    if len(classes) < minimum:
        raise UserError(f"folder:{folder}: needs at least two class sub-folders, found {len(classes)}")
    return classes


def _list_group(folder: Path, classes: list[str]) -> tuple[FileSplit, list[Path]]:
    """Every image file under ``folder/<class>/`` (any depth, hidden names skipped), and the files skipped
    by name: not image file names, and entries that are not regular files (see :func:`_walk`)."""
    paths: list[Path] = []
    labels: list[int] = []
    not_images: list[Path] = []
    for label, name in enumerate(classes):
        files, odd = _walk(folder / name)
        not_images.extend(odd)
        for path in files:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(label)
            else:
                not_images.append(path)
    return FileSplit(paths, torch.tensor(labels, dtype=torch.int64)), not_images


def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """The regular files under ``folder`` (links to them followed), sorted, without hidden names or anything
    in hidden folders; and, sorted, the entries that are neither regular files nor folders (a FIFO, a
    device, a dangling or looping link) or folders that cannot be listed. Folders are walked with a stack,
    not recursion, so any depth works; links to folders are not followed (as ``os.walk``)."""
    files: list[Path] = []
    odd: list[Path] = []
    stack = [folder]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as entries:
                listed = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries if not is_hidden(e.name)]
        except OSError:
            odd.append(top)
            continue
        for name, is_dir in listed:
            path = top / name
            if is_dir:
                stack.append(path)
                continue
            kind = _file_kind(path)
            if kind == "file":
                files.append(path)
            elif kind != "folder":
                odd.append(path)
    return sorted(files), sorted(odd)


def _file_kind(path: Path) -> str:
    """``file`` (regular, links followed), ``folder`` (a link to one), else what it is: ``a symbolic link
    that loops``, ``a symbolic link to nothing``, ``not a regular file (a pipe, device or socket)``."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link that loops"
        return "a symbolic link to nothing" if os.path.islink(path) else f"unreadable ({exc.strerror})"
    if stat.S_ISREG(mode):
        return "file"
    return "folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, device or socket)"


def guess_channels(paths: list[Path], sample: int = 32) -> int:
    """1 if every one of the first ``sample`` readable images is grey, else 3 (read from the headers by the
    one image reader, :func:`~cnnlab.data.images.image_mode`: its format allowlist and bounds included)."""
    modes = []
    for path in paths:
        try:
            modes.append(image_mode(path))
        except UserError:  # unreadable: skipped later with the others
            continue
        if len(modes) == sample:
            break
    return 1 if all(m in GREY_MODES for m in modes) else 3


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``; else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**31


def budget_bytes(memory_budget: float | None) -> int:
    """``memory_budget`` GiB in bytes; None: :data:`DEFAULT_MEMORY_FRACTION` of the available memory."""
    if memory_budget is None:
        return int(DEFAULT_MEMORY_FRACTION * available_memory())
    if memory_budget < 0:
        raise UserError(f"--memory-budget must be 0 or more GiB, got {memory_budget}")
    return int(memory_budget * 2**30)


def decode_workers(n: int) -> int:
    """Decoding processes for ``n`` files: one per core this process may use, none for small sets."""
    if n < PARALLEL_FROM:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores if cores > 1 else 0


class _Decode(Dataset):
    """Chunk ``i`` of the files → (bytes of uint8 [k, C, S, S] images, bytes of bool [k] readable?); an
    unreadable file gives zeros and False. With ``keep_pixels=False`` the images are only checked (no bytes).

    A whole chunk per item: a worker decodes straight into one array and sends it in one message, instead
    of one message, one small tensor and a collate per file. Bytes rather than tensors: a tensor from a
    worker travels through shared memory, whose setup and page faults per message cost more main-process
    time than copying a few megabytes through the pipe."""

    def __init__(
        self, paths: list[Path], channels: int, size: int, keep_pixels: bool, chunk: int, resize: int | None = None
    ):
        self.paths, self.channels, self.size, self.keep_pixels = paths, channels, size, keep_pixels
        self.chunk, self.resize = chunk, resize

    def __len__(self) -> int:
        return -(-len(self.paths) // self.chunk)

    def __getitem__(self, i: int) -> tuple[bytes, bytes]:
        paths = self.paths[i * self.chunk : (i + 1) * self.chunk]
        shape = (self.channels, self.size, self.size) if self.keep_pixels else (0, 0, 0)
        images = np.zeros((len(paths), *shape), dtype=np.uint8)
        ok = np.zeros(len(paths), dtype=np.bool_)
        for j, path in enumerate(paths):
            try:
                image = read_image(path, self.channels, self.size, resize=self.resize)
            except UserError:
                continue
            ok[j] = True
            if self.keep_pixels:
                images[j] = image.numpy()
        return images.tobytes(), ok.tobytes()


def decode_chunk(n: int, workers: int, channels: int, size: int) -> int:
    """Files per chunk: at most about 4 MB of pixels (and 512 files), and at least 4 chunks per worker so
    that the workers finish together and the progress bar moves."""
    by_bytes = max(16, min(512, (4 << 20) // (channels * size * size)))
    return max(1, min(by_bytes, -(-n // (4 * max(1, workers)))))


def decode_files(
    paths: list[Path],
    channels: int,
    size: int,
    keep_pixels: bool = True,
    workers: int | None = None,
    desc: str = "",
    resize: int | None = None,
) -> dict[str, torch.Tensor]:
    """Decode every file with :func:`read_image`, in parallel, in the cache's split format:
    ``images`` uint8 [K, C, S, S] of the K readable files ([K, 0, 0, 0] when only checked) and
    ``labels`` int64 [K], each image's index in ``paths`` (the class labels come from the scan)."""
    from torch.utils.data import DataLoader
    from torchvision.transforms.v2 import functional  # noqa: F401  imported once here, not in every worker
    from tqdm import tqdm

    n = len(paths)
    workers = decode_workers(n) if workers is None else workers
    shape = (channels, size, size) if keep_pixels else (0, 0, 0)
    chunk = decode_chunk(n, workers, channels, size)
    dataset = _Decode(paths, channels, size, keep_pixels, chunk, resize)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    images = torch.empty(n, *shape, dtype=torch.uint8)
    ok = torch.empty(n, dtype=torch.bool)
    pixels, readable = images.numpy(), ok.numpy()  # views to copy each chunk's bytes into
    start = 0
    with tqdm(total=n, desc=desc, unit="img", disable=None, leave=False, file=sys.stderr) as bar:
        for data, good in loader:
            end = start + len(good)
            pixels[start:end] = np.frombuffer(data, dtype=np.uint8).reshape(end - start, *shape)
            readable[start:end] = np.frombuffer(good, dtype=np.bool_)
            bar.update(end - start)
            start = end
    index = torch.nonzero(ok).squeeze(1)
    return {"images": images if bool(ok.all()) else images[index], "labels": index}


def files_key(paths: list[Path]) -> str:
    """SHA-256 of every file's absolute path, size and modification time, in order."""
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def decode_group(
    group: FileSplit,
    channels: int,
    size: int,
    in_memory: bool,
    workers: int | None = None,
    desc: str = "",
    resize: int | None = None,
) -> Decoded:
    """Decode (or, when it streams, only check) every file of ``group`` once, through the cache.

    The cache entry is keyed on the file list with sizes and modification times (hashed here, in
    the tag: one ``stat`` per file), the image reader's version, the channels, the size and the resize
    before the crop."""
    kind = "folder" if in_memory else "folder-check"
    tag = f"{kind}-v{READER_VERSION}-{channels}x{size}{shape_tag(resize)}-{files_key(group.paths)[:16]}"
    tensors = cached_tensors(
        tag, [], lambda: decode_files(group.paths, channels, size, in_memory, workers, desc, resize)
    )
    index = tensors["labels"]
    ok = torch.zeros(len(group), dtype=torch.bool)
    ok[index] = True
    labels = group.labels[index]
    if in_memory:
        return Decoded(TensorSplit(tensors["images"], labels), ok)
    return Decoded(FileSplit([group.paths[i] for i in index.tolist()], labels), ok)


def shape_tag(resize: int | None) -> str:
    """The cache tag's note of a resize-then-crop decoding (empty for the squeezed square)."""
    return "" if resize is None else f"r{resize}"


def warn_skipped(
    not_images: list[Path], unreadable: list[Path], channels: int, size: int, show: int = 3, resize: int | None = None
) -> None:
    """One warning for every skipped file: how many, and the first ``show`` with the reason."""
    skipped = sorted([(p, "name") for p in not_images] + [(p, "content") for p in unreadable])
    if not skipped:
        return
    reasons = []
    for path, kind in skipped[:show]:
        if kind == "name":
            odd = "a folder that cannot be listed" if os.path.isdir(path) else _file_kind(path)
            name = f"not an image file name ({', '.join(sorted(IMAGE_SUFFIXES))})"
            reasons.append(f"{path}: {name if odd == 'file' else odd}")
            continue
        try:
            read_image(path, channels, size, resize=resize)
            reasons.append(f"{path}: unreadable")
        except UserError as exc:
            reasons.append(str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}")
    more = f"; and {len(skipped) - show} more" if len(skipped) > show else ""
    print(
        f"warning: skipped {len(skipped)} unreadable or non-image file(s), e.g. {safe('; '.join(reasons))}{more}",
        file=sys.stderr,
    )


def require_every_class(name: str, train: Split, classes: list[str]) -> None:
    counts = torch.bincount(train.labels, minlength=len(classes))
    empty = [classes[i] for i in range(len(classes)) if counts[i] == 0]
    if empty:
        raise UserError(f"{name}: no readable training images for class(es) {', '.join(empty)}")


def hold_out(name: str, split: Split, val_fraction: float) -> dict[str, Split]:
    """Split into train and val: ``val_fraction`` of each class (at least one) to val, deterministically."""
    counts = torch.bincount(split.labels)
    if int(counts.min()) < 2:
        raise UserError(
            f"{name}: every class needs at least 2 images to split into train and val (or give a val split)"
        )
    holdout = max(len(counts), round(val_fraction * len(split)))
    if len(split) - holdout < len(counts):
        raise UserError(f"{name}: --val-fraction {val_fraction} leaves fewer training images than classes; lower it")
    train, val = stratified_split(split.labels, holdout)
    return {"train": split.subset(train), "val": split.subset(val)}


def train_stats(
    name: str,
    group: FileSplit,
    decoded: Decoded | None,
    channels: int,
    size: int,
    limit: int = STATS_SAMPLE,
    resize: int | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std, in 0..1 units, of up to ``limit`` evenly spaced readable training files.

    The same files give the same numbers whether the images are in memory or read here."""
    sample = torch.arange(0, len(group), max(1, len(group) // limit))[:limit]
    if len(sample) == 0:
        raise UserError(f"{name}: no training images")
    if decoded is not None and isinstance(decoded.split, TensorSplit):
        rows = torch.cumsum(decoded.ok.long(), 0) - 1
        keep = sample[decoded.ok[sample]]
        images = decoded.split.images[rows[keep]]
    else:
        paths = [group.paths[i] for i in sample.tolist()]
        tag = f"folder-stats-v{READER_VERSION}-{channels}x{size}{shape_tag(resize)}-{files_key(paths)[:16]}"
        images = cached_tensors(tag, [], lambda: decode_files(paths, channels, size, workers=0, resize=resize))[
            "images"
        ]
    if len(images) == 0:
        raise UserError(f"{name}: no readable training images")
    batch = images.float() / 255
    mean = batch.mean(dim=(0, 2, 3))
    std = batch.std(dim=(0, 2, 3)).nan_to_num(0.0).clamp_min(1e-3)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)
