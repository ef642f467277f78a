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
    if data.image_size < prep.min_size:
        where = "pass --image-size" if is_file_dataset(cfg.dataset) else "use a dataset of larger images"
        raise UserError(
            f"{cfg.model}'s pretrained weights need images of at least {prep.min_size}x{prep.min_size} pixels, "
            f"not {data.image_size}x{data.image_size}: {where} {prep.min_size} or more"
        )
    mean, std = prep.mean, prep.std
    if data.in_channels == 1:  # grey images are repeated to three channels inside the model
        mean, std = (round(sum(mean) / 3, 4),), (round(sum(std) / 3, 4),)
    return dataclasses.replace(data, mean=mean, std=std)


def model_for(cfg: TrainConfig, data: Data, pretrained: bool = True) -> nn.Module:
    """The configured model sized for ``data`` (one output for logistic regression); with
    ``--pretrained`` (and ``pretrained``) holding torchvision's DEFAULT weights, all but its new head."""
    outputs = 1 if cfg.loss == "logistic" else data.num_classes
    model = build_model(cfg.model, data.in_channels, data.image_size, outputs)
    if cfg.pretrained and pretrained:
        load_pretrained(model, cfg.model, progress=cfg.progress)
    return model.double() if cfg.dtype == "float64" else model


def checkpoint_header(cfg: TrainConfig, data: Data, world_size: int = 1) -> dict[str, Any]:
    """What every checkpoint carries besides the weights: how to rebuild and feed the model."""
    return {
        "format": FORMAT,
        "arch": {
            "model": cfg.model,
            "in_channels": data.in_channels,
            "image_size": data.image_size,
            "num_outputs": 1 if cfg.loss == "logistic" else data.num_classes,
        },
        "data": {
            "dataset": cfg.dataset,
            "classes": data.classes,
            "mean": list(data.mean),
            "std": list(data.std),
            **({"resize": data.resize} if data.resize is not None else {}),
        },  # fmt: skip
        "config": cfg.to_dict(),
        "tta": valid_tta(cfg, data.in_channels),  # the test-time augmentations its training makes valid (--tta)
        "world_size": world_size,  # processes that trained it (the global batch is batch_size × this)
    }
