"""Recipes: named option sets a run starts from, chosen once before it starts.

* ``tutorial``: :class:`~cnnlab.config.TrainConfig`'s own defaults (the tutorial's seednet, SGD, 9 epochs).
* ``fast``: fastnet, Nesterov SGD with one-cycle, label smoothing, a 2-pixel shift, 4 epochs; tuned for
  accuracy per second on a 2-core CPU (past 98 % on the MNIST test set from mnist5k in ~5 s).
* ``photos``: for your own colour images (hundreds to thousands of them): resnet9, photo augmentation,
  Nesterov SGD with one-cycle and label smoothing, a length in epochs sized from the number of training
  images (:func:`photos_epochs`), early stopping on validation accuracy and a bounded wall time.
* ``auto`` (the default): ``tutorial`` for the MNIST family and ``digits``, ``photos`` for ``folder:``,
  ``csv:`` and the CIFAR sets.

Options given explicitly (flags, ``--config`` files, keyword arguments, or fields of a ``TrainConfig``
that differ from its defaults) always override the recipe's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cnnlab.config import MAX_EPOCHS, TrainConfig

FAST: dict[str, Any] = dict(
    model="fastnet", optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
    schedule="onecycle", loss="ce", label_smoothing=0.1, augment=2, batch_size=64, epochs=4,
)  # fmt: skip

# Tuned on real colour folders (benchmarks/photos.py); the length is set by photos_epochs.
PHOTOS: dict[str, Any] = dict(
    model="resnet9", optimizer="sgd", lr=0.02, momentum=0.9, nesterov=True, weight_decay=5e-4,
    schedule="onecycle", loss="ce", label_smoothing=0.1, augment="light", batch_size=64,
    early_stop=12, monitor="val_acc", time_limit=480.0,
)  # fmt: skip

RECIPES: dict[str, dict[str, Any]] = {"tutorial": {}, "fast": FAST, "photos": PHOTOS}

PHOTOS_IMAGES_SEEN = 50_000  # images the photos recipe trains on, whatever the dataset's size ...
PHOTOS_EPOCHS = (12, 60)  # ... within these many epochs


def photos_epochs(n_train: int) -> int:
    """The photos recipe's length: about :data:`PHOTOS_IMAGES_SEEN` training images in all,
    i.e. E = clamp(round(50,000 / N), 12, 60) epochs for N training images."""
    low, high = PHOTOS_EPOCHS
    return max(low, min(high, round(PHOTOS_IMAGES_SEEN / max(n_train, 1))))


@dataclass(frozen=True)
class Choice:
    """Which recipe a run uses, why, and which options were given explicitly (they beat the recipe)."""

    name: str
    why: str
    explicit: frozenset[str]

    def line(self) -> str:
        return f"recipe {self.name}: {self.why}"


def pick(dataset: str) -> tuple[str, str]:
    """``--recipe auto``: (recipe, why) for ``dataset``."""
    from cnnlab.data.registry import is_file_dataset

    if is_file_dataset(dataset):
        return "photos", f"{dataset.split(':')[0]}: holds your own images (--recipe tutorial for the tutorial's)"
    if dataset.startswith("cifar"):
        return "photos", f"{dataset} is a set of small colour photos (--recipe tutorial for the tutorial's)"
    return "tutorial", f"{dataset} is a digits/letters set the tutorial was written for (--recipe photos for photos)"


def resolve(config: TrainConfig | None, options: dict[str, Any]) -> tuple[TrainConfig, Choice]:
    """The options of a new run: the recipe's values, with every explicitly given option on top.

    Explicit options are the keys of ``options`` and the fields of ``config`` that differ from both
    :class:`TrainConfig`'s defaults and the recipe's values. With ``--time-limit`` given and ``--epochs`` not, the run lasts
    as many epochs as fit in the time (the schedule is sized when training starts)."""
    defaults = TrainConfig().to_dict()
    stored = {k: v for k, v in (config.to_dict() if config else {}).items() if v != defaults[k]}
    name = str(options.get("recipe", stored.get("recipe", "auto")))
    if name == "auto":
        name, why = pick(str(options.get("dataset", stored.get("dataset", defaults["dataset"]))))
    else:
        why = "chosen with --recipe"
    recipe = RECIPES.get(name, {})
    # a config's fields that match the recipe are the recipe's (a resolved config passed in again stays the same)
    given = {k: v for k, v in stored.items() if k not in recipe or recipe[k] != v}
    given.update(options)
    values = {**defaults, **_compatible(recipe, given), **given, "recipe": name}
    if "time_limit" in given and "epochs" not in given:
        values["epochs"] = MAX_EPOCHS
    return TrainConfig(**values), Choice(name, why, frozenset(given) - {"recipe"})


def _compatible(recipe: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The recipe's options that still make sense with the explicit ones: another optimizer than SGD drops
    its momentum and Nesterov, another loss than ``ce`` its label smoothing."""
    dropped: set[str] = set()
    if given.get("optimizer", recipe.get("optimizer", "sgd")) != "sgd":
        dropped |= {"momentum", "nesterov"}
    if given.get("loss", recipe.get("loss")) not in (None, "ce"):
        dropped.add("label_smoothing")
    return {k: v for k, v in recipe.items() if k not in dropped}


def size_to_data(cfg: TrainConfig, choice: Choice, n_train: int) -> TrainConfig:
    """The photos recipe's epochs, from the number of training images (unless ``--epochs`` or
    ``--time-limit`` decide the length)."""
    if cfg.recipe != "photos" or cfg.epochs == MAX_EPOCHS or "epochs" in choice.explicit:
        return cfg
    return dataclasses.replace(cfg, epochs=photos_epochs(n_train))


def describe_length(cfg: TrainConfig, steps_per_epoch: int) -> str:
    """``12 epochs (228 steps)`` or ``as many epochs as fit``, and ``, cut to N steps by --max-steps`` when
    that ends the run sooner: for the recipe line."""
    planned = None if cfg.epochs == MAX_EPOCHS else cfg.epochs * steps_per_epoch
    text = "as many epochs as fit" if planned is None else f"{cfg.epochs} epochs ({planned} steps)"
    if cfg.max_steps and (planned is None or cfg.max_steps < planned):
        text += f", cut to {cfg.max_steps} steps by --max-steps"
    return text
