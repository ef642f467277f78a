"""Checkpoints: written atomically, read without running any code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
``model`` (the state dict), ``arch`` (how to rebuild the network), ``data`` (classes and
normalisation), ``config`` (every option of the run), and for resuming ``optimizer``,
``scheduler``, ``rng``, ``epoch``, ``batch``, ``step``, ``history``.

Writing goes to a temporary file in the same folder, is flushed and fsynced, then renamed over the
old file: a crash at any moment leaves either the old checkpoint or the new one, never half of one.
Reading uses ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import UserError

FORMAT = "cnnlab-checkpoint-1"


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` via a fsynced temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory → its ``best.pt`` (else ``last.pt``); a file → itself."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path}: no best.pt or last.pt in this folder (is it a cnnlab run directory?)")
    if not path.is_file():
        raise UserError(f"{path}: no such run directory or checkpoint file")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a cnnlab checkpoint safely (``weights_only=True``); anything else is a UserError."""
    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"{path}: refused to load: the file contains Python objects other than tensors and "
            "plain data (it could run code); only cnnlab checkpoints are accepted"
        ) from None
    except Exception as exc:  # truncated, not a zip, not a torch file: all mean the same to a user
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "arch" not in ckpt:
        raise UserError(f"{path}: not a cnnlab checkpoint (no 'model' and 'arch' entries)")
    return ckpt


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and plain data."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
