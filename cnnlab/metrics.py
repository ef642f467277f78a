"""Classification metrics from model outputs (torchmetrics does the counting)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from cnnlab.losses import predictions, probabilities


def confusion_matrix(outputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [true class, predicted class]."""
    return multiclass_confusion_matrix(predictions(outputs), labels, num_classes)


def per_class_report(outputs: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support for each class."""
    k = len(classes)
    pred = predictions(outputs)
    precision = multiclass_precision(pred, labels, k, average=None, zero_division=0)
    recall = multiclass_recall(pred, labels, k, average=None, zero_division=0)
    f1 = multiclass_f1_score(pred, labels, k, average=None, zero_division=0)
    support = torch.bincount(labels, minlength=k)
    return [
        {"class": name, "precision": float(precision[i]), "recall": float(recall[i]),
         "f1": float(f1[i]), "support": int(support[i])}
        for i, name in enumerate(classes)
    ]  # fmt: skip


def format_report(rows: list[dict[str, Any]]) -> str:
    width = max(8, *(len(r["class"]) for r in rows))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for r in rows:
        lines.append(
            f"{r['class']:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:.4f}  {r['support']:7d}"
        )
    return "\n".join(lines)


def most_confident_mistakes(outputs: torch.Tensor, labels: torch.Tensor, k: int = 16) -> torch.Tensor:
    """Indices of the ``k`` wrong predictions made with the highest probability, most confident first."""
    probs = probabilities(outputs)
    confidence, pred = probs.max(dim=1)
    wrong = torch.nonzero(pred != labels).squeeze(1)
    order = confidence[wrong].argsort(descending=True)
    return wrong[order[:k]]


def most_confused(matrix: torch.Tensor, classes: list[str]) -> list[dict[str, Any]]:
    """Every (true → predicted) pair of different classes the model confused at least once, with its count
    from the confusion matrix [true, predicted]; largest count first (ties: in class order)."""
    m = matrix.detach().cpu().clone()
    m.fill_diagonal_(0)
    pairs = [(int(m[i, j]), i, j) for i, j in torch.nonzero(m).tolist()]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [{"true": classes[i], "predicted": classes[j], "count": count} for count, i, j in pairs]


def format_most_confused(pairs: list[dict[str, Any]], limit: int = 10) -> str:
    """The first ``limit`` most-confused pairs, one per line: ``true → predicted: count``."""
    if not pairs:
        return "most confused: none (no mistakes)"
    lines = [f"most confused (true → predicted: count){'' if len(pairs) <= limit else f', top {limit}'}:"]
    lines += [f"  {p['true']} → {p['predicted']}: {p['count']}" for p in pairs[:limit]]
    return "\n".join(lines)
