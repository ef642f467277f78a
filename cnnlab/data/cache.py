"""A decode-once cache: uint8 tensors saved under ``~/.cache/cnnlab`` keyed by their source files.

Set ``CNNLAB_CACHE_DIR`` to move it, or to an empty string to turn it off.

An entry's name is a hash of the dataset tag and its sources (path, size, mtime). The entry holds
that source key and a SHA-256 of the tensors (names, dtypes, shapes and bytes) beside the tensors;
both are checked on every load, so an entry that was altered (every label changed, say), damaged
or written in another layout is rebuilt from the source files with one warning line, never used.
The hash guards against accidents and tampering that does not recompute it; the cache folder
should still be the user's own.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cnnlab.atomic import write_atomic

FORMAT = "cnnlab-cache-2"


def cache_dir() -> Path | None:
    value = os.environ.get("CNNLAB_CACHE_DIR")
    if value == "":
        return None
    return Path(value) if value else Path.home() / ".cache" / "cnnlab"


def source_key(tag: str, sources: list[Path]) -> str:
    """SHA-256 of ``tag`` and each source's resolved path, size and modification time."""
    key = hashlib.sha256(tag.encode())
    for src in sources:
        stat = src.stat()
        key.update(f"|{src.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return key.hexdigest()


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over each tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy() if t.numel() else b"")  # the array's buffer: no copy
    return digest.hexdigest()


def cached_tensors(
    tag: str, sources: list[Path], build: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Return ``build()`` (a split: ``images`` and ``labels``, see :func:`is_split`), reusing a cached
    copy made from the same ``sources`` (path, size, mtime) whose content hash checks out."""
    folder = cache_dir()
    if folder is None:
        return build()
    key = source_key(tag, sources)
    path = folder / f"{tag}-{key[:16]}.pt"
    if path.is_file():
        tensors, problem = read_entry(path, key)
        if tensors is not None:
            return tensors
        print(f"warning: cache entry {path} {problem}; rebuilding it from the source files", file=sys.stderr)
    tensors = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_entry(path, key, tensors)
    except OSError:
        pass  # a read-only home still trains, just without the cache
    return tensors


def is_split(tensors: Any) -> bool:
    """Whether ``tensors`` is what every cached dataset holds: ``images`` uint8 [N, C, H, W] and
    ``labels`` int64 [N], nothing else."""
    if not isinstance(tensors, dict) or set(tensors) != {"images", "labels"}:
        return False
    images, labels = tensors["images"], tensors["labels"]
    return (
        isinstance(images, torch.Tensor)
        and isinstance(labels, torch.Tensor)
        and images.dtype == torch.uint8
        and images.ndim == 4
        and labels.dtype == torch.int64
        and labels.shape == (len(images),)
    )


def write_entry(path: Path, key: str, tensors: dict[str, torch.Tensor]) -> None:
    """Save ``tensors`` with the source key and their hash (atomically; straight into the file, without a
    copy of the tensors in memory)."""
    entry = {"format": FORMAT, "key": key, "sha256": tensors_hash(tensors), "tensors": tensors}
    write_atomic(path, lambda f: torch.save(entry, f))


def read_entry(path: Path, key: str) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The entry's tensors if it is whole and matches ``key`` and its hash, else ``(None, why not)``."""
    try:
        entry: Any = torch.load(path, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, pickled objects: all rebuilt
        return None, f"is unreadable ({type(exc).__name__})"
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return None, "is not in this version's format"
    tensors = entry.get("tensors")
    if not is_split(tensors):
        return None, "is malformed (not uint8 images [N, C, H, W] and int64 labels [N])"
    if entry.get("key") != key:
        return None, "was made from other source files"
    if entry.get("sha256") != tensors_hash(tensors):
        return None, "does not match its content hash (altered or damaged)"
    return tensors, ""
