"""A decode-once cache: uint8 tensors saved under ``~/.cache/cnnlab`` keyed by their source files.

Set ``CNNLAB_CACHE_DIR`` to move it, or to an empty string to turn it off.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch


def cache_dir() -> Path | None:
    value = os.environ.get("CNNLAB_CACHE_DIR")
    if value == "":
        return None
    return Path(value) if value else Path.home() / ".cache" / "cnnlab"


def cached_tensors(
    tag: str, sources: list[Path], build: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Return ``build()``, reusing a cached copy made from the same ``sources`` (path, size, mtime)."""
    folder = cache_dir()
    if folder is None:
        return build()
    key = hashlib.sha256(tag.encode())
    for src in sources:
        stat = src.stat()
        key.update(f"{src.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    path = folder / f"{tag}-{key.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            pass
    tensors = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(tensors, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home still trains, just without the cache
    return tensors
