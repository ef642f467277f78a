"""Loss functions, by name. Each takes ``(output, target)`` and returns the batch mean.

``output`` is what a cnnlab model returns: log-probabilities ``[N, C]`` for the multi-class losses
(``ce`` also accepts raw logits: log_softmax of log-probabilities changes nothing), or
one logit ``[N, 1]`` for ``logistic``. ``target`` holds class indices ``[N]`` (0/1 for logistic).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnnlab.errors import UserError

LN2 = math.log(2.0)


def nll(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of log-probabilities (the tutorial's loss):
    E = −(1/N) Σ_n log p(y_n | x_n)."""
    return F.nll_loss(output, target)


def ce(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on logits, in nats: E = −(1/N) Σ_n log softmax(z_n)[y_n].
    The tutorial writes it with log2: the same loss in bits is E / ln 2 (see :func:`nats_to_bits`)."""
    return F.cross_entropy(output, target)


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The tutorial's mean squared error between the predicted probabilities ŷ and one-hot targets y:
    E = 1/(2N) Σ_n ‖ŷ_n − y_n‖², with ŷ = exp(output) (the model outputs log-probabilities)."""
    probs = output.exp()
    one_hot = F.one_hot(target, probs.shape[1]).to(probs.dtype)
    return 0.5 * (probs - one_hot).pow(2).sum(dim=1).mean()


def logistic(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary logistic regression: one logit z per image, σ(z) = P(class 1), binary cross-entropy
    E = −(1/N) Σ_n [y_n log σ(z_n) + (1 − y_n) log(1 − σ(z_n))]."""
    return F.binary_cross_entropy_with_logits(output.squeeze(1), target.to(output.dtype))


def nats_to_bits(loss: float) -> float:
    """A loss in nats (natural log) → bits (log2): divide by ln 2."""
    return loss / LN2


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "nll": nll,
    "ce": ce,
    "mse": mse,
    "logistic": logistic,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[name]


def predictions(output: torch.Tensor) -> torch.Tensor:
    """Predicted class per row: argmax of the outputs, or σ(z) > 0.5 for a single logit."""
    if output.shape[1] == 1:
        return (output.squeeze(1) > 0).long()
    return output.argmax(dim=1)


def probabilities(output: torch.Tensor) -> torch.Tensor:
    """Class probabilities [N, C]: softmax of the outputs, or [1 − σ(z), σ(z)] for a single logit."""
    if output.shape[1] == 1:
        p1 = torch.sigmoid(output)
        return torch.cat([1 - p1, p1], dim=1)
    return torch.softmax(output.float(), dim=1)
