"""What the trust scores read from a model: its class scores (logits) and its penultimate features.

Both come from one forward pass through a hook on the model's last :class:`torch.nn.Linear` (every
cnnlab classifier ends in one): its input is the penultimate feature vector, its output the logits.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from cnnlab.errors import UserError


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier layer: the last ``nn.Linear`` among the model's modules."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError("this model has no final Linear layer: calibration and the unknown rule need one")
    return linears[-1]


@torch.no_grad()
def logits_and_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised model input ``x`` → (logits [N, classes], penultimate features [N, D]), float32 on the CPU."""
    caught: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        caught["features"], caught["logits"] = inputs[0], output

    handle = last_linear(model).register_forward_hook(hook)
    try:
        model.eval()
        model(x)
    finally:
        handle.remove()
    return caught["logits"].float().cpu(), caught["features"].flatten(1).float().cpu()


def collect(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Logits, features and labels of every batch ``(x, y)``."""
    logits, features, labels = [], [], []
    for x, y in batches:
        z, f = logits_and_features(model, x)
        logits.append(z)
        features.append(f)
        labels.append(y.cpu())
    return {"logits": torch.cat(logits), "features": torch.cat(features), "labels": torch.cat(labels)}
