"""What a run is assembled from, shared by every engine that trains: ``cnnlab train``, ``lr-find``,
``bench``, ``doctor``'s K-fold training and backprop's trainer. One seed, the data as the options
train on it, the model sized for it, and the header every checkpoint carries."""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.checkpoint import FORMAT
from cnnlab.config import TrainConfig
from cnnlab.data import Data, load_data
from cnnlab.data.registry import is_file_dataset
from cnnlab.errors import UserError
from cnnlab.inference import valid_tta
from cnnlab.models import build_model, load_pretrained, weights_preprocessing
from cnnlab.spec import image_spec


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """One seed for python, numpy and torch; optionally deterministic kernels only."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def training_data(cfg: TrainConfig, splits: tuple[str, ...] = ("train", "val")) -> Data:
    """The dataset as ``cfg`` trains on it. With ``--pretrained`` your own ``folder:``/``csv:`` images are
    decoded the weights' way (shorter side resized, central crop of their size or ``--image-size``) and
    every image is normalised with the weights' mean and std (their average for grey images)."""
    size, resize, prep = cfg.image_size, None, None
    if cfg.pretrained:
        prep = weights_preprocessing(cfg.model)
        if is_file_dataset(cfg.dataset):
            size, resize = prep.for_size(cfg.image_size)
    data = load_data(
        cfg.dataset, cfg.data_dir, splits, cfg.classes or None, size,
        val_fraction=cfg.val_fraction, memory_budget=cfg.memory_budget, resize=resize,
    )  # fmt: skip
    if prep is None:
        return data
    spec = data.spec
    if spec.size < prep.min_size:
        where = "pass --image-size" if is_file_dataset(cfg.dataset) else "use a dataset of larger images"
        raise UserError(
            f"{cfg.model}'s pretrained weights need images of at least {prep.min_size}x{prep.min_size} pixels, "
            f"not {spec.size}x{spec.size}: {where} {prep.min_size} or more"
        )
    mean, std = prep.mean, prep.std
    if spec.channels == 1:  # grey images are repeated to three channels inside the model
        mean, std = (round(sum(mean) / 3, 4),), (round(sum(std) / 3, 4),)
    # the recipe for new images is decided again: it depends on the normalisation (light ink on dark: digit)
    spec = image_spec(data.name, spec.classes, spec.channels, spec.size, mean, std, spec.resize)
    return dataclasses.replace(data, spec=spec)


def model_for(cfg: TrainConfig, data: Data, pretrained: bool = True) -> nn.Module:
    """The configured model sized for ``data`` (one output for logistic regression); with
    ``--pretrained`` (and ``pretrained``) holding torchvision's DEFAULT weights, all but its new head."""
    outputs = 1 if cfg.loss == "logistic" else data.spec.num_classes
    model = build_model(cfg.model, data.spec.channels, data.spec.size, outputs)
    if cfg.pretrained and pretrained:
        load_pretrained(model, cfg.model, progress=cfg.progress)
    return model.double() if cfg.dtype == "float64" else model


def checkpoint_header(cfg: TrainConfig, data: Data, world_size: int = 1) -> dict[str, Any]:
    """What every checkpoint carries besides the weights: how to rebuild the model (``arch``) and feed it
    (``spec``, :meth:`ImageSpec.to_dict`; read back by :func:`cnnlab.spec.spec_from_checkpoint`). ``arch``'s
    ``in_channels``/``image_size`` and the ``data`` entry repeat the spec for readers older than it."""
    spec = data.spec
    return {
        "format": FORMAT,
        "arch": {
            "model": cfg.model,
            "in_channels": spec.channels,
            "image_size": spec.size,
            "num_outputs": 1 if cfg.loss == "logistic" else spec.num_classes,
        },
        "spec": spec.to_dict(),
        "data": {
            "dataset": cfg.dataset,
            "classes": list(spec.classes),
            "mean": list(spec.mean),
            "std": list(spec.std),
            **({"resize": spec.resize} if spec.resize is not None else {}),
        },  # fmt: skip
        "config": cfg.to_dict(),
        "tta": valid_tta(cfg, spec.channels),  # the test-time augmentations its training makes valid (--tta)
        "world_size": world_size,  # processes that trained it (the global batch is batch_size × this)
    }
