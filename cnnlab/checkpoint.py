"""Checkpoints: written atomically, read without running any code, resumed exactly.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
``model`` (the state dict), ``arch`` (how to rebuild the network), ``data`` (classes and
normalisation), ``config`` (every option of the run), and for resuming ``optimizer``,
``scheduler``, ``rng`` (Python, NumPy, torch, CUDA and augmentation generators), ``epoch``,
``batch`` (batches of that epoch already done), ``step``, ``history`` and ``epoch_sums``; ``best.pt`` of a
finished run also holds ``trust`` (temperature and unknown rule, see :mod:`cnnlab.trust`; optional).
The data order is not stored because it needs no state: epoch ``e`` of a run visits the samples in
:func:`cnnlab.data.loaders.epoch_order` ``(n, seed, e)``, a pure function of the seed and the epoch,
so a resumed run rebuilds the same order and skips the ``batch`` batches already done.

Writing goes to a temporary file ``.RANDOM.NAME.tmpPID`` made by mkstemp in the same folder (see
:mod:`cnnlab.atomic`), is flushed and fsynced, then
renamed over the old file: a crash at any moment, ``kill -9`` included, leaves either the old
checkpoint or the new one, never half of one. A failed write (disk full, folder gone) is a
:class:`~cnnlab.errors.UserError` and leaves the old file as it was.

Reading uses ``torch.load(weights_only=True)``, which refuses pickled code, then checks the
structure, so a damaged or hostile file is a one-line UserError, never a crash or code execution.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.atomic import write_atomic
from cnnlab.errors import UserError, WrongFileKind
from cnnlab.spec import spec_from_checkpoint

FORMAT = "cnnlab-checkpoint-1"
RESUME_KEYS = ("optimizer", "scheduler", "rng", "epoch", "batch", "step", "config")
_TEMPORARY = re.compile(r"^\..+\.tmp(\d+)$")


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through :func:`cnnlab.atomic.write_atomic` (fsynced temporary file
    made by mkstemp, atomic rename)."""
    path = Path(path)
    try:
        write_atomic(path, lambda f: torch.save(obj, f))
    except OSError as exc:
        raise UserError(
            f"cannot write checkpoint {path} ({exc.strerror or exc}); the previous one is unchanged: "
            "free some disk space (or fix the folder) and continue with --resume"
        ) from None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (``.RANDOM.NAME.tmpPID`` from
    :func:`cnnlab.atomic.write_atomic`, and the older ``.NAME.tmpPID``) whose process is gone; return them."""
    removed = []
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers can only be from an earlier, failed write
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


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
    _check_file_kind(path)
    _check_checksums(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"{path}: refused to load: the file contains Python objects other than tensors and "
            "plain data (it could run code); only cnnlab checkpoints are accepted"
        ) from None
    except Exception as exc:  # truncated, not a zip, not a torch file: all mean the same to a user
        raise UserError(
            f"{path}: not a readable checkpoint: truncated, damaged or not written by torch.save ({type(exc).__name__})"
        ) from None
    _check_structure(ckpt, path)
    return ckpt


# The first bytes of the files people pass where a checkpoint belongs (arguments swapped, a typo).
_SIGNATURES = (
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"), (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip file"), (b"PK", None), (b"\x80", None),  # zip: torch.save's format; pickle: older torch
)  # fmt: skip


def _check_file_kind(path: Path) -> None:
    """Say what a file is when it is plainly not a checkpoint (an image, a TOML or text file), rather
    than letting ``torch.load`` call it unsafe. Zip and pickle files go on to be checked by loading."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    kind = next((name for magic, name in _SIGNATURES if head.startswith(magic)), "")
    if kind is None or not head:  # empty: torch.load says it is not readable
        return
    if not kind and head[8:12] == b"WEBP":
        kind = "a WebP image"
    if not kind:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:  # neither torch.save's zip nor a pickle: never hand it to the unpickler
            raise UserError(
                f"{path}: not a readable checkpoint: truncated, damaged or not written by torch.save"
            ) from None
        kind = "a TOML file" if path.suffix == ".toml" else "a text file"
    raise WrongFileKind(f"{path} is {kind}, not a cnnlab run directory or checkpoint (arguments in the wrong order?)")


def _check_checksums(path: Path) -> None:
    """A checkpoint is a zip archive with a CRC-32 per entry, which ``torch.load`` does not check:
    verify them, so flipped bits (a bad disk, a partial copy) are refused rather than loaded."""
    try:
        if not zipfile.is_zipfile(path):
            return  # not a zip at all: torch.load tells what it is (or refuses it)
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise UserError(f"{path}: damaged checkpoint: its zip archive is corrupt ({type(exc).__name__})") from None
    if bad is not None:
        raise UserError(f"{path}: damaged checkpoint: entry {bad} fails its checksum (a bad disk or a partial copy?)")


def _check_structure(ckpt: Any, path: Path) -> None:
    """Refuse anything but the dict cnnlab writes, before a single value of it is used."""
    if not isinstance(ckpt, dict) or "model" not in ckpt or "arch" not in ckpt:
        raise UserError(f"{path}: not a cnnlab checkpoint (no 'model' and 'arch' entries)")
    weights = ckpt["model"]
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise UserError(f"{path}: damaged checkpoint: 'model' is not a state dict of named tensors")
    arch, meta = ckpt["arch"], ckpt.get("data")
    if not (
        isinstance(arch, dict)
        and isinstance(arch.get("model"), str)
        and _int_in(arch.get("in_channels"), 1, 4)
        and _int_in(arch.get("image_size"), 4, 512)
        and _int_in(arch.get("num_outputs"), 1, 100_000)
    ):
        raise UserError(f"{path}: damaged checkpoint: 'arch' does not describe a cnnlab model")
    if not (
        isinstance(meta, dict)
        and _list_of(meta.get("classes"), str)
        and _list_of(meta.get("mean"), (int, float))
        and _list_of(meta.get("std"), (int, float))
        and len(meta["mean"]) == len(meta["std"]) == arch["in_channels"]
        and (meta.get("resize") is None or _int_in(meta["resize"], 4, 4096))
    ):
        raise UserError(f"{path}: damaged checkpoint: 'data' lacks the class names or normalisation")
    if not isinstance(ckpt.get("config"), dict):
        raise UserError(f"{path}: damaged checkpoint: no 'config' entry")
    if not _spec_ok(ckpt):
        raise UserError(f"{path}: damaged checkpoint: 'spec' does not describe the images of its model ('arch')")
    if "trust" in ckpt and not _trust_ok(ckpt["trust"]):
        raise UserError(
            f"{path}: damaged checkpoint: 'trust' (temperature and unknown rule) is not as cnnlab writes it"
        )


def _trust_ok(trust: Any) -> bool:
    """The optional ``trust`` entry (see :mod:`cnnlab.trust`): a positive temperature, and a rule of
    tensors and numbers or none."""
    if not isinstance(trust, dict) or not isinstance(trust.get("temperature"), float) or not trust["temperature"] > 0:
        return False
    rule = trust.get("rule")
    if rule is None:
        return True
    tensors = ("bank", "center", "scale") + (("mu", "precision") if "mu" in rule else ())
    return (
        isinstance(rule, dict)
        and all(isinstance(rule.get(k), torch.Tensor) for k in tensors)
        and all(isinstance(rule.get(k), float) for k in ("threshold", "keep"))
        and _int_in(rule.get("k"), 1, 10_000)
        and rule["bank"].dim() == 2
        and len(rule["bank"]) >= 1
        and rule["center"].shape == rule["scale"].shape == (3,)
    )


def _spec_ok(ckpt: dict[str, Any]) -> bool:
    """The image spec (:func:`cnnlab.spec.spec_from_checkpoint`: the ``spec`` entry, or for older checkpoints
    ``arch`` and ``data``) can be built and agrees with the model in ``arch``: its input shape, and one output
    per class (one logit for two classes: ``--loss logistic``)."""
    try:
        spec = spec_from_checkpoint(ckpt)
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    arch = ckpt["arch"]
    outputs = arch["num_outputs"]
    return (
        (spec.channels, spec.size) == (arch["in_channels"], arch["image_size"])
        and (outputs == spec.num_classes or (outputs, spec.num_classes) == (1, 2))
        and (spec.resize is None or _int_in(spec.resize, 4, 4096))
        and 1 <= spec.box <= 4096
    )


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _list_of(value: Any, kind: type | tuple[type, ...]) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def stored_config(raw: Any, source: str | Path) -> Any:
    """The :class:`~cnnlab.config.TrainConfig` stored in a checkpoint or ``config.json``, validated."""
    from cnnlab.config import TrainConfig, validate

    try:
        if not isinstance(raw, dict):
            raise TypeError("not a dict")
        return validate(TrainConfig(**raw))
    except (TypeError, UserError) as exc:
        raise UserError(f"{source}: the stored training options are damaged ({exc})") from None


def resume_point(run: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """Where ``--resume RUN`` continues: ``(run directory, its last.pt)``.

    ``RUN`` may also be a checkpoint file inside a run directory. A run killed before it wrote its
    first checkpoint gives ``(run directory, None)``: it is started over from step 0 with the options
    in its ``config.json`` (the result is the same, since a run is a pure function of its options).
    Temporary files left by a killed writer are removed first.
    """
    run = Path(run)
    if run.is_file():
        run_dir, ckpt_path = run.parent, run
    elif run.is_dir():
        run_dir, ckpt_path = run, run / "last.pt"
    else:
        raise UserError(f"--resume {run}: no such run directory")
    remove_stale_temporaries(run_dir)
    if not ckpt_path.is_file():
        if (run_dir / "config.json").is_file():
            return run_dir, None
        raise UserError(f"--resume {run}: no last.pt and no config.json there (is it a cnnlab run directory?)")
    ckpt = load_checkpoint(ckpt_path)
    missing = [key for key in RESUME_KEYS if key not in ckpt]
    if missing or not all(_int_in(ckpt[k], 0, 2**62) for k in ("epoch", "batch", "step")):
        raise UserError(f"{ckpt_path}: cannot resume from it: no training state ({', '.join(missing) or 'step'})")
    return run_dir, ckpt


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
