"""Training options as one plain dataclass. Its defaults are the tutorial's recipe."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.errors import UserError

RECIPES = ("auto", "tutorial", "fast", "photos")
HFLIPS = ("auto", "on", "off")
OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")
SCHEDULES = ("none", "step", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "float64")
MONITORS = ("val_loss", "val_acc")
BALANCES = ("none", "weights", "sampler")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # reduce-overhead: CUDA graphs on a GPU
MAX_FACTOR = 1e30  # a larger --lr or --weight-decay overflows float32 inside the optimiser step


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A :class:`TrainConfig` field: its default and the ``--help`` text beside it (the one place for both)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainConfig:
    """Every option of a training run, its default (the tutorial's recipe) and its ``--help`` text."""

    recipe: str = option(
        "auto",
        "named option set the run starts from, your flags on top: auto (tutorial for the MNIST family and "
        "digits, photos for folder:, csv: and CIFAR), tutorial, fast (fastnet, one-cycle, 4 epochs) or photos "
        "(resnet9, photo augmentation, one-cycle sized by the data, early stop, bounded time)",
    )
    model: str = option(
        "seednet", "network to train (see `cnnlab models`; seednet is the tutorial's CNN; tv:NAME a torchvision model)"
    )
    pretrained: bool = option(
        False,
        "tv: models: start from torchvision's DEFAULT weights (from TORCH_HOME, else downloaded) and their preprocessing",
    )
    freeze: int = option(
        0, "with --pretrained: train only the new classifier head for the first N epochs, then everything"
    )
    lr_mult: float = option(
        1.0,
        "discriminative learning rates (fine-tuning with --pretrained): the head trains at --lr, each earlier "
        "layer group at this times the next one's (e.g. 0.5); 1: one rate for all",
    )
    dataset: str = option(
        "mnist5k",
        "mnist5k (embedded), digits, mnist, fashion-mnist, kmnist, cifar10, cifar100, cifar100-coarse, folder:PATH",
    )
    data_dir: str = option("./data", "where downloaded or IDX files live")
    classes: list[str] = option(
        [], "keep only these classes, relabelled in order (e.g. 3,8; needed by --loss logistic)"
    )
    image_size: int | None = option(
        None,
        "image side for folder: and csv: datasets (default 28 grey, 32 colour; with --pretrained the weights' crop)",
    )
    val_fraction: float = option(
        0.2, "folder: and csv: data without a val split: the share of each class held out for it"
    )
    memory_budget: float | None = option(
        None, "GiB of decoded folder:/csv: images kept in memory (default a quarter of the free memory); beyond, stream"
    )
    balance: str = option(
        "none",
        "unbalanced classes: none, weights (loss weights ∝ 1/class frequency) or sampler (batches drawn ∝ 1/frequency)",
    )
    loss: str = option("nll", "nll, ce, mse or logistic")
    optimizer: str = option("sgd", "sgd, adam, adamw or adadelta")
    lr: float = option(0.01, "learning rate α, or auto: run cnnlab lr-find first and use its suggestion")
    momentum: float = option(0.5, "SGD momentum μ (0 gives plain Δw = −α ∂E/∂w)")
    nesterov: bool = option(False, "Nesterov momentum")
    weight_decay: float = option(0.0, "L2 weight decay")
    schedule: str = option("none", "learning-rate schedule: none, step, cosine or onecycle")
    gamma: float = option(0.7, "factor per epoch for --schedule step")
    label_smoothing: float = option(0.0, "label smoothing for --loss ce")
    augment: str | int = option(
        "none",
        "training augmentation: none, light (pad-and-crop, flip), strong (resized crop, flip, colour jitter), "
        "trivial (light + TrivialAugment), or N: shift up to N pixels (flip on CIFAR)",
    )
    hflip: str = option(
        "auto",
        "left-right flips in --augment: auto (colour photos yes; digits, letters and grey images no), on (forced) or off",
    )
    batch_size: int = option(64, "images per optimiser step (per process with --nproc)")
    epochs: int = option(9, "passes over the training split")
    seed: int = option(1, "the one seed for weights, order and augmentation")
    max_steps: int | None = option(None, "stop after N optimiser steps (smoke runs)")
    time_limit: float | str | None = option(
        None,
        "train for at most this long (90, 90s, 2.5m, 1h): the schedule is sized from the speed of the first "
        "steps to end on time; without --epochs, as many epochs as fit",
    )
    early_stop: int | None = option(None, "stop after N epochs without improvement of --monitor (default: never)")
    monitor: str = option("val_acc", "what --early-stop watches: val_acc (as best.pt does) or val_loss")
    min_delta: float = option(0.0, "smallest change of --monitor that counts as an improvement")
    device: str = option("auto", "auto, cpu, cuda or mps")
    deterministic: bool = option(False, "deterministic kernels only (bit-exact reruns)")
    amp: bool = option(False, "bfloat16 autocast (mixed precision)")
    channels_last: bool = option(
        True, "channels-last (NHWC) memory format, faster here; --no-channels-last gives the NCHW numbers"
    )
    compile: bool = option(False, "torch.compile the model")
    compile_mode: str = option(
        "default", "torch.compile mode (not default implies --compile); reduce-overhead replays CUDA graphs"
    )
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice)")
    out: str | None = option(None, "run directory (default runs/<time>-<model>-<dataset>)")
    tensorboard: bool = option(False, "also log to RUN_DIR/tensorboard (needs: pip install 'cnnlab[tensorboard]')")
    checkpoint_every: int = option(0, "also write last.pt every N optimiser steps (0: once per epoch)")
    dtype: str = option("float32", "parameter precision: float32 or float64")
    progress: bool = option(True, "progress bars and epoch lines")
    unknown_keep: float = option(
        0.95, "the unknown rule's threshold keeps this share of the validation images (the rest would be 'unknown')"
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# Options that may change when a run is resumed; everything else comes from the stored run.
RESUME_OVERRIDES = {
    "epochs",
    "early_stop",
    "device",
    "progress",
    "max_steps",
    "checkpoint_every",
    "tensorboard",
    "threads",
}

MAX_EPOCHS = 100_000


def parse_duration(value: float | str) -> float:
    """``--time-limit``: seconds from ``90``, ``90s``, ``2.5m``, ``1h`` (a number alone is seconds)."""
    text = str(value).strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(text[-1:])
    try:
        seconds = float(text[:-1] if scale else text) * (scale or 1.0)
    except ValueError:
        raise UserError(f"--time-limit {value!r}: give a duration like 90, 90s, 2.5m or 1h") from None
    if not 0 < seconds < 1e7 or seconds != seconds:
        raise UserError(f"--time-limit must be more than 0 and under 10^7 seconds (got {value!r})")
    return seconds


def _normalise(cfg: TrainConfig) -> None:
    """Values with several spellings stored one way: ``augment`` as a level or a shift, ``time_limit`` in seconds."""
    from cnnlab.data.augment import parse_level

    try:
        cfg.augment = parse_level(cfg.augment)
    except ValueError:
        raise UserError(
            f"--augment must be none, light, strong, trivial or a pixel shift 0 to 8 (got {cfg.augment!r})"
        ) from None
    if cfg.time_limit is not None:
        cfg.time_limit = parse_duration(cfg.time_limit)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Refuse impossible values with a one-line UserError; return ``cfg`` unchanged otherwise."""
    from cnnlab.losses import LOSSES
    from cnnlab.models import is_model, unknown_model

    _check_types(cfg)
    _normalise(cfg)
    checks = [
        (cfg.recipe in RECIPES, f"unknown recipe {cfg.recipe!r}; choose one of: {', '.join(RECIPES)}"),
        (cfg.hflip in HFLIPS, f"--hflip must be one of {', '.join(HFLIPS)} (got {cfg.hflip!r})"),
        (is_model(cfg.model), "" if is_model(cfg.model) else unknown_model(cfg.model)),
        (cfg.loss in LOSSES, f"unknown loss {cfg.loss!r}; choose one of: {', '.join(LOSSES)}"),
        (cfg.optimizer in OPTIMIZERS, f"unknown optimizer {cfg.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"),
        (cfg.schedule in SCHEDULES, f"unknown schedule {cfg.schedule!r}; choose one of: {', '.join(SCHEDULES)}"),
        (cfg.balance in BALANCES, f"unknown balance {cfg.balance!r}; choose one of: {', '.join(BALANCES)}"),
        (cfg.device in DEVICES, f"unknown device {cfg.device!r}; choose one of: {', '.join(DEVICES)}"),
        (cfg.compile_mode in COMPILE_MODES, f"--compile-mode must be one of {', '.join(COMPILE_MODES)}"),
        (cfg.dtype in DTYPES, f"--dtype must be float32 or float64, not {cfg.dtype!r}"),
        (0 < cfg.lr_mult <= 1, f"--lr-mult must be in (0, 1] (got {cfg.lr_mult})"),
        (0 < cfg.lr <= MAX_FACTOR, f"--lr must be > 0 and at most {MAX_FACTOR:g} (got {cfg.lr})"),
        (cfg.batch_size > 0, f"--batch-size must be > 0 (got {cfg.batch_size})"),
        (1 <= cfg.epochs <= MAX_EPOCHS, f"--epochs must be 1 to {MAX_EPOCHS} (got {cfg.epochs})"),
        (0 <= cfg.momentum < 1, f"--momentum must be in [0, 1) (got {cfg.momentum})"),
        (0 <= cfg.weight_decay <= MAX_FACTOR, f"--weight-decay must be ≥ 0 and at most {MAX_FACTOR:g} (got {cfg.weight_decay})"),
        (0 <= cfg.seed < 2**32, f"--seed must be 0 to 2**32 - 1 (got {cfg.seed})"),
        (0 < cfg.gamma <= 1, f"--gamma must be in (0, 1] (got {cfg.gamma})"),
        (0 <= cfg.label_smoothing < 1, f"--label-smoothing must be in [0, 1) (got {cfg.label_smoothing})"),
        (cfg.max_steps is None or cfg.max_steps >= 1, f"--max-steps must be ≥ 1 (got {cfg.max_steps})"),
        (cfg.checkpoint_every >= 0, f"--checkpoint-every must be ≥ 0 (got {cfg.checkpoint_every})"),
        (cfg.early_stop is None or cfg.early_stop >= 1, f"--early-stop must be at least 1 epoch (got {cfg.early_stop})"),
        (cfg.monitor in MONITORS, f"--monitor must be one of {', '.join(MONITORS)} (got {cfg.monitor!r})"),
        (cfg.min_delta >= 0, f"--min-delta must be ≥ 0 (got {cfg.min_delta})"),
        (cfg.threads is None or 1 <= cfg.threads <= 1024, f"--threads must be 1 to 1024 (got {cfg.threads})"),
        (0 < cfg.val_fraction < 1, f"--val-fraction must be between 0 and 1 (got {cfg.val_fraction})"),
        (cfg.memory_budget is None or cfg.memory_budget >= 0, f"--memory-budget must be ≥ 0 GiB (got {cfg.memory_budget})"),
        (cfg.image_size is None or 4 <= cfg.image_size <= 512, f"--image-size must be 4 to 512 (got {cfg.image_size})"),
        (not cfg.nesterov or (cfg.optimizer == "sgd" and cfg.momentum > 0), "--nesterov needs --optimizer sgd with --momentum > 0"),
        (cfg.label_smoothing == 0 or cfg.loss == "ce", "--label-smoothing works with --loss ce only"),
        (cfg.balance != "weights" or cfg.loss in ("nll", "ce"), "--balance weights works with --loss nll or ce; use --balance sampler"),
        (not cfg.pretrained or cfg.model.startswith("tv:"), "--pretrained needs a torchvision model: --model tv:NAME (see cnnlab models)"),
        (0 <= cfg.freeze < 1000, f"--freeze must be 0 to 999 epochs (got {cfg.freeze})"),
        (cfg.freeze == 0 or cfg.pretrained, "--freeze needs --pretrained (it trains the new head on top of pretrained weights)"),
        (cfg.loss != "logistic" or len(cfg.classes) == 2, "--loss logistic needs a two-class task: pass --classes A,B"),
        (0.5 <= cfg.unknown_keep <= 1, f"--unknown-keep must be 0.5 to 1 (got {cfg.unknown_keep})"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    return cfg


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "float": (int, float), "int": (int,), "bool": (bool,), "list[str]": (list, tuple),
    "int | None": (int, type(None)), "str | int": (str, int), "float | str | None": (int, float, str, type(None)), "str | None": (str, type(None)), "float | None": (int, float, type(None)),
}  # fmt: skip


def _check_types(cfg: TrainConfig) -> None:
    """Refuse values of the wrong type (from a TOML file or the API) before comparing any of them.

    Paths (``out``, ``data_dir``) may be given as ``pathlib.Path``; they are stored as strings.
    """
    for name in ("out", "data_dir"):
        if isinstance(getattr(cfg, name), Path):
            setattr(cfg, name, str(getattr(cfg, name)))
    for f in dataclasses.fields(cfg):
        value, kinds = getattr(cfg, f.name), _TYPES.get(str(f.type))
        if kinds is None:
            continue
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise UserError(f"option {f.name} must be of type {f.type}, not {type(value).__name__} ({value!r})")
    if not all(isinstance(c, str) for c in cfg.classes):
        raise UserError(f"option classes must be a list of class names, not {cfg.classes!r}")


def read_toml(path: str | Path, flag: str) -> dict[str, Any]:
    """A TOML file as a dict; an unreadable or invalid file is a UserError naming ``flag`` and the file."""
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{flag} {path}: not valid TOML ({exc})") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file: keys are the flag names with ``_`` or ``-`` (``batch_size = 128``)."""
    raw = read_toml(path, "--config")
    tables = sorted(key for key, value in raw.items() if isinstance(value, dict))
    if tables:
        raise UserError(
            f"--config {path}: options go at the top level of the file (batch_size = 128), "
            f"not in a table like [{tables[0]}]"
        )
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    options = {key.replace("-", "_"): value for key, value in raw.items()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"--config {path}: unknown option(s) {', '.join(unknown)} (see cnnlab train --help)")
    try:
        _check_types(TrainConfig(**options))
    except UserError as exc:
        raise UserError(f"--config {path}: {exc}") from None
    return options
