"""What a run is assembled from, shared by every engine that trains: ``cnnlab train``, ``lr-find``,
``bench``, ``doctor``'s K-fold training and backprop's trainer. One seed, the data as the options
train on it, the model sized for it, the header every checkpoint carries, and :func:`run_parts`:
from one :class:`TrainConfig`, the placed model, its losses, batches, optimiser, schedule and autocast.

:mod:`cnnlab.engine` is the loop that runs these parts; nothing here trains."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.checkpoint import FORMAT
from cnnlab.config import TrainConfig
from cnnlab.data import Data, load_data, make_batches
from cnnlab.data.loaders import Batches, balanced_sample_weights, flips_allowed
from cnnlab.data.registry import is_file_dataset
from cnnlab.errors import UserError
from cnnlab.inference import valid_tta
from cnnlab.losses import get_loss
from cnnlab.models import TorchvisionNet, build_model, layer_groups, load_pretrained, weights_preprocessing
from cnnlab.spec import image_spec

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
        assert isinstance(model, TorchvisionNet), "validate() allows --pretrained for tv:NAME models only"
        load_pretrained(model, cfg.model, progress=cfg.progress)
    return model.double() if cfg.dtype == "float64" else model


def initial_model(cfg: TrainConfig, data: Data, pretrained: bool = True) -> nn.Module:
    """The model a run starts from: every generator seeded from ``cfg.seed`` (:func:`seed_everything`,
    deterministic kernels with ``--deterministic``), then :func:`model_for`. Call it after loading the
    data, so that a cold or a warm cache gives the same weights; the same seed then gives the same
    initial weights in ``cnnlab train``, ``bench``, ``doctor`` and ``backprop train``."""
    seed_everything(cfg.seed, cfg.deterministic)
    return model_for(cfg, data, pretrained)


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


@dataclass
class RunParts:
    """What one run trains with, built by :func:`run_parts` from its :class:`TrainConfig`."""

    cfg: TrainConfig
    model: nn.Module  # on the run's device, channels-last with --channels-last
    dtype: torch.dtype  # the model's parameter dtype: every batch is cast to it
    loss_fn: LossFn  # training: class-weighted with --balance weights
    val_loss_fn: LossFn  # validation: the plain mean, comparable across runs
    train_batches: Batches  # shuffled by (seed, epoch), augmented, balanced with --balance sampler
    val_batches: Batches | None  # None when ``data`` has no val split (lr-find reads only train)
    optimizer: torch.optim.Optimizer
    autocast: torch.autocast  # bfloat16 with --amp, else a no-op; reusable for every step

    def scheduler(self, total: int | None = None) -> torch.optim.lr_scheduler.LRScheduler:
        """The per-step schedule over ``total`` steps (default: the run's :func:`total_steps`)."""
        return make_scheduler(self.optimizer, self.cfg, len(self.train_batches), total)


def run_parts(
    cfg: TrainConfig, data: Data, model: nn.Module, device: torch.device, rank: int = 0, world_size: int = 1
) -> RunParts:
    """Place ``model`` on ``device`` and build what training it per ``cfg`` needs: the losses
    (:func:`balancing`, :func:`make_loss`), the training and validation batches of ``data`` (this
    process's shard, ``rank`` of ``world_size``; ``--batch-size`` is per process), the optimiser
    (:func:`make_optimizer`) and the autocast context. ``cnnlab train``, ``lr-find`` and ``bench``
    all build their runs here."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = next(model.parameters()).dtype
    weighted, sample_weights = balancing(cfg, data, device, dtype)
    loss_fn, val_loss_fn = make_loss(cfg, weighted), make_loss(cfg)
    shard = dict(channels_last=cfg.channels_last, rank=rank, world_size=world_size)
    train_batches = make_batches(
        data.splits["train"], data, cfg.batch_size * world_size, device,
        dtype=dtype, shuffle=True, seed=cfg.seed, augment=cfg.augment, sample_weights=sample_weights,
        flips=flips_allowed(data.name, cfg.augment, cfg.hflip, data.spec.channels), **shard,
    )  # fmt: skip
    val_batches = eval_batches(data, "val", cfg, model, **shard) if "val" in data.splits else None
    return RunParts(
        cfg=cfg, model=model, dtype=dtype, loss_fn=loss_fn, val_loss_fn=val_loss_fn, train_batches=train_batches,
        val_batches=val_batches, optimizer=make_optimizer(model, cfg),
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp),
    )  # fmt: skip


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``--balance weights``: per class w_c = N / (K · n_c), N samples, K classes, n_c samples of class c
    (a class without samples gets 0). With every class present the weights average to 1 over the
    samples, so the loss keeps its scale while each class counts as much as every other in total."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    weights = len(labels) / (num_classes * counts)
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def balancing(
    cfg: TrainConfig, data: Data, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``--balance``: (class weights for the training loss, on ``device`` in ``dtype``; per-sample weights
    for each epoch's draw), each None where that balancing is not used."""
    labels = data.splits["train"].labels
    if cfg.balance == "weights":
        return class_weights(labels, data.spec.num_classes).to(device, dtype), None
    if cfg.balance == "sampler":
        return None, balanced_sample_weights(labels)
    return None, None


def make_loss(cfg: TrainConfig, class_weights: torch.Tensor | None = None) -> LossFn:
    """The loss ``cfg`` names. With ``class_weights`` (``nll`` or ``ce``) the class-weighted mean
    E = Σ_n w_(y_n) ℓ_n / Σ_n w_(y_n) of the per-sample losses ℓ_n (label smoothing included).

    Not torch's ``cross_entropy(weight=, label_smoothing=)``: it weights the smoothing term of every
    sample by the weights of all the *other* classes, Σ_c w_c · (ε/K) · (−log p_c), which pulls every
    prediction towards the rarest classes; with ``--recipe fast --balance weights`` on a small
    unbalanced folder that term dominated and the model predicted minority classes (21 % accuracy)."""
    if class_weights is not None:
        if cfg.loss not in ("nll", "ce"):
            raise UserError(f"--balance weights works with --loss nll or ce, not {cfg.loss}; use --balance sampler")
        smoothing = cfg.label_smoothing if cfg.loss == "ce" else 0.0

        def weighted(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            per_sample = F.cross_entropy(output, target, reduction="none", label_smoothing=smoothing)
            w = class_weights[target]
            return (w * per_sample).sum() / w.sum()

        return weighted
    if cfg.label_smoothing:
        return lambda output, target: F.cross_entropy(output, target, label_smoothing=cfg.label_smoothing)
    return get_loss(cfg.loss)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (with ``momentum=0`` exactly Δw = −α ∂E/∂w), Adam, AdamW or Adadelta.

    Each updates all its tensors with one multi-tensor ("foreach") kernel per operation, also on the
    CPU where torch would loop over them in Python: the same numbers, bit for bit, in less time.

    With ``cfg.lr_mult`` below 1 the layers train at discriminative rates (:func:`layer_groups`): the
    last group (the head) at ``lr``, each group before it at ``lr_mult`` times the next one's."""
    params: Any = model.parameters()
    if cfg.lr_mult != 1.0:
        groups = layer_groups(model)
        params = [{"params": g, "lr": cfg.lr * cfg.lr_mult ** (len(groups) - 1 - i)} for i, g in enumerate(groups)]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
            foreach=True,
        )  # fmt: skip
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    raise UserError(f"unknown optimizer {cfg.optimizer!r}")


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, total: int | None = None
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule over ``total`` steps (default :func:`total_steps`): constant, ×gamma each
    epoch, cosine to zero, or one-cycle."""
    total = total or total_steps(cfg, steps_per_epoch)
    lr_sched = torch.optim.lr_scheduler
    if cfg.schedule == "step":
        return lr_sched.StepLR(optimizer, step_size=steps_per_epoch, gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return lr_sched.CosineAnnealingLR(optimizer, T_max=total)
    if cfg.schedule == "onecycle" and total >= 2:  # (one step has no cycle: it keeps the constant rate)
        cycle = "momentum" in optimizer.defaults or "betas" in optimizer.defaults
        peaks = [group["lr"] for group in optimizer.param_groups]  # --lr-mult: each group its own peak
        warm_up = max(0.25, 1.5 / total)  # a quarter of the steps; a few steps more in very short runs
        return lr_sched.OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=warm_up, cycle_momentum=cycle)
    return lr_sched.LambdaLR(optimizer, lambda _: 1.0)


def total_steps(cfg: TrainConfig, steps_per_epoch: int, plan: dict[str, Any] | None = None) -> int:
    """The run's length in optimiser steps: its epochs, cut by ``--max-steps`` and by a ``--time-limit`` plan."""
    total = cfg.epochs * steps_per_epoch
    return min(total, cfg.max_steps or total, plan["steps"] if plan else total)


EVAL_BATCH = 1000  # images per evaluation batch (at least): no gradients, so memory allows more


def eval_batches(data: Data, split: str, cfg: TrainConfig, model: nn.Module, **options: Any) -> Batches:
    """The batches that evaluate ``model`` on ``data``'s ``split``, on the model's device and dtype."""
    first = next(model.parameters())
    size = max(cfg.batch_size, EVAL_BATCH)
    return make_batches(data.splits[split], data, size, first.device, dtype=first.dtype, **options)
