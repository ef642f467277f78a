"""The flags built from :class:`~cnnlab.config.TrainConfig` (each field's default and help text live there),
shared by every command that takes training options: ``train``, ``lr-find``, ``sweep``, ``bench``,
``backprop train``, and the model-loading flags of ``predict``, ``eval`` and ``serve``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from cnnlab.config import (
    BALANCES,
    COMPILE_MODES,
    DEVICES,
    DTYPES,
    HFLIPS,
    MONITORS,
    OPTIMIZERS,
    RECIPES,
    SCHEDULES,
    TrainConfig,
    load_toml,
)  # fmt: skip

# How each TrainConfig field's type becomes a flag (the field's default and help live in config.py).
_FLAG_TYPES: dict[str, Any] = {
    "str": str, "str | None": str, "str | int": str, "float | str | None": str, "float": float, "float | None": float, "int": int, "int | None": int,
}  # fmt: skip
_CHOICES = {
    "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "device": DEVICES, "compile_mode": COMPILE_MODES,
    "monitor": MONITORS, "dtype": DTYPES, "balance": BALANCES, "recipe": RECIPES, "hflip": HFLIPS,
}  # fmt: skip


def _float_or_auto(text: str) -> float | str:
    """``--lr``: a number, or ``auto`` (the learning-rate finder's suggestion)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: a number or auto") from None


def _class_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def add_option_flags(p: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """A flag for each :class:`~cnnlab.config.TrainConfig` field (or those in ``names``), with the
    field's help text and default. Parsed values are only present when given (``SUPPRESS``)."""
    S = argparse.SUPPRESS
    for f in dataclasses.fields(TrainConfig):
        if names is not None and f.name not in names:
            continue
        flag, text, default = "--" + f.name.replace("_", "-"), f.metadata["help"], f.default
        if f.name == "progress":
            p.add_argument(
                "--quiet", dest="progress", action="store_false", default=S, help="no progress bars or epoch lines"
            )
        elif f.type == "bool":
            action = argparse.BooleanOptionalAction if default else "store_true"
            p.add_argument(
                flag, dest=f.name, action=action, default=S, help=text + (" (default: on)" if default else "")
            )
        elif f.type == "list[str]":
            p.add_argument(flag, dest=f.name, type=_class_list, default=S, metavar="A,B", help=text)
        else:
            shown = "" if default is None or default == "" else f" (default: {default})"
            kind = _float_or_auto if f.name == "lr" else _FLAG_TYPES[str(f.type)]
            p.add_argument(
                flag, dest=f.name, type=kind, choices=_CHOICES.get(f.name), default=S, help=text + shown,
            )  # fmt: skip


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`~cnnlab.config.TrainConfig` field, with the field's default and help text.

    Defaults are not set on the parser (``SUPPRESS``): only flags the user gives override a
    ``--config`` file, a ``--recipe`` or a resumed run's stored options."""
    p.add_argument(
        "--config", default=None, metavar="FILE.toml", help="read options from a TOML file; flags override it"
    )
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run from its last.pt")
    p.add_argument("--overwrite", action="store_true", help="reuse an --out folder that already holds a run")
    add_option_flags(p)
    p.add_argument(
        "--dry-run", action="store_true", help="one optimiser step and one validation pass (like --max-steps 1)"
    )
    p.add_argument(
        "--save-model", action="store_true", help="accepted for pytorch/examples habits: checkpoints are always saved"
    )
    p.add_argument(
        "--nproc", type=int, default=None, metavar="N",
        help="train with N processes on this machine (DDP through torchrun; --batch-size is per process)",
    )  # fmt: skip


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` fields given on the command line (``--dry-run`` is ``max_steps=1``)."""
    options = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    if getattr(args, "dry_run", False):
        options["max_steps"] = 1
    return options


def config_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a new run as given: a ``--config`` file's, the flags on top (the recipe fills the rest)."""
    return {**(load_toml(args.config) if args.config else {}), **train_options(args)}


TTA_HELP = (
    "test-time augmentation: average each image's probabilities with its mirror image's (models trained with flips)"
)


def add_backend_flags(p: argparse.ArgumentParser) -> None:
    """``--backend torch|onnx`` and ``--onnx FILE`` (predict, serve)."""
    p.add_argument(
        "--backend", default="torch", choices=("torch", "onnx"),
        help="torch (default) or onnx: the exported model in onnxruntime (exported to the run's model.onnx on "
        "first use), the same preprocessing",
    )  # fmt: skip
    p.add_argument("--onnx", metavar="FILE", help="--backend onnx: run this exported file instead of model.onnx")
