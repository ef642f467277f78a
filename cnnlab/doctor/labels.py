"""Likely label errors: out-of-fold predicted probabilities from K-fold training, then cleanlab's
:func:`~cleanlab.filter.find_label_issues` (confident learning, Northcutt et al. 2021)."""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from cnnlab.config import TrainConfig
from cnnlab.data import TensorSplit
from cnnlab.doctor.data import Pool
from cnnlab.errors import UserError


def out_of_fold_probabilities(pool: Pool, cfg: TrainConfig, folds: int, progress: bool = True) -> torch.Tensor:
    """[N, classes]: each image's class probabilities from the model trained on the other K − 1 folds
    (stratified, seeded by ``cfg.seed``)."""
    import dataclasses

    from sklearn.model_selection import StratifiedKFold

    from cnnlab.assembly import eval_batches, initial_model, make_loss
    from cnnlab.engine import evaluate, fit

    labels = pool.labels
    smallest = int(torch.bincount(labels, minlength=pool.data.spec.num_classes).min())
    if smallest < folds:
        raise UserError(
            f"--folds {folds} needs at least {folds} images of every class (the smallest class has {smallest})"
        )
    probs = torch.zeros(len(labels), pool.data.spec.num_classes)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.seed % 2**32)
    for train_index, held_index in tqdm(
        list(splitter.split(labels.numpy(), labels.numpy())), desc="doctor: K-fold training", unit="fold",
        disable=not progress,
    ):  # fmt: skip
        train_index, held_index = torch.from_numpy(train_index), torch.from_numpy(held_index)
        splits = {
            "train": TensorSplit(pool.images[train_index], labels[train_index]),
            "val": TensorSplit(pool.images[held_index], labels[held_index]),
        }
        data = dataclasses.replace(pool.data, splits=splits)
        model = initial_model(cfg, data, pretrained=False)
        fit(model, data, cfg)
        held = evaluate(model, eval_batches(data, "val", cfg, model), make_loss(cfg), keep_outputs=True)
        probs[held_index] = torch.softmax(held["outputs"].float(), dim=1)
    return probs


def label_issues(pool: Pool, probs: torch.Tensor) -> list[dict[str, Any]]:
    """cleanlab's label issues, most likely first: image, given label, suggested label (the most probable
    class) and score = 1 − the out-of-fold probability of the given label (higher: more likely wrong)."""
    from cleanlab.filter import find_label_issues

    labels = pool.labels.numpy()
    ranked = find_label_issues(labels, probs.numpy(), return_indices_ranked_by="self_confidence")
    classes = list(pool.data.spec.classes)
    return [
        {
            "image": pool.names[i],
            "label": classes[int(labels[i])],
            "suggested": classes[int(probs[i].argmax())],
            "score": round(1 - float(probs[i, labels[i]]), 4),
        }
        for i in ranked.tolist()
    ]
