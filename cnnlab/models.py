"""The model zoo: plain ``nn.Sequential`` networks built by name.

Every builder takes ``(in_channels, image_size, num_classes)`` and adapts to them. A multi-class
model ends in ``log_softmax`` (the tutorial's convention: its outputs are log-probabilities, which
every loss in :mod:`cnnlab.losses` accepts). With ``num_classes == 1`` the model is a binary
logistic-regression head instead: one logit, no log_softmax.

Small images (under 16 pixels, e.g. the 8×8 ``digits``) get ``padding=2`` in the 5×5 convolutions
so the feature maps do not shrink to nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cnnlab.errors import UserError


def _head(in_features: int, num_classes: int) -> list[nn.Module]:
    """Linear → log_softmax for classes, or a single logit for logistic regression."""
    if num_classes == 1:
        return [nn.Linear(in_features, 1)]
    return [nn.Linear(in_features, num_classes), nn.LogSoftmax(dim=1)]


def _pad5(image_size: int) -> int:
    return 0 if image_size >= 16 else 2


def _flat_features(body: nn.Sequential, in_channels: int, image_size: int, name: str) -> int:
    """Number of features ``body`` produces for one image (a dry run on zeros)."""
    with torch.no_grad():
        try:
            out = body(torch.zeros(1, in_channels, image_size, image_size))
        except RuntimeError:
            raise UserError(f"{name} cannot take {image_size}x{image_size} images (too small)") from None
    return out.numel()


def seednet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """The tutorial's canonical CNN: Conv2d(in,10,5) → MaxPool2d(2) → ReLU → Conv2d(10,20,5) →
    MaxPool2d(2) → ReLU → flatten → Linear(320,10) → log_softmax (320 inputs for 28×28)."""
    p = _pad5(image_size)
    body = nn.Sequential(
        nn.Conv2d(in_channels, 10, 5, padding=p), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, 5, padding=p), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(),
    )  # fmt: skip
    return nn.Sequential(*body, *_head(_flat_features(body, in_channels, image_size, "seednet"), num_classes))


def lenet5(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling: conv 6@5×5 (padding 2) → pool →
    conv 16@5×5 → pool → 120 → 84 → classes."""
    body = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=_pad5(image_size)), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )  # fmt: skip
    features = _flat_features(body, in_channels, image_size, "lenet5")
    return nn.Sequential(
        *body, nn.Linear(features, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), *_head(84, num_classes)
    )


def tutorialnet(in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> nn.Sequential:
    """PyTorch's CIFAR-10 tutorial network: conv 6@5×5 → pool → conv 16@5×5 → pool → 120 → 84 →
    classes, ReLU between."""
    p = _pad5(image_size)
    body = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=p), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=p), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )  # fmt: skip
    features = _flat_features(body, in_channels, image_size, "tutorialnet")
    return nn.Sequential(
        *body, nn.Linear(features, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), *_head(84, num_classes)
    )


def examplenet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """The pytorch/examples MNIST network: conv 32@3×3 → conv 64@3×3 → pool → dropout 0.25 → 128 →
    dropout 0.5 → classes."""
    body = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(),
    )  # fmt: skip
    features = _flat_features(body, in_channels, image_size, "examplenet")
    return nn.Sequential(*body, nn.Linear(features, 128), nn.ReLU(), nn.Dropout(0.5), *_head(128, num_classes))


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def fastnet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """A small modern CNN for accuracy per second: 3×3 conv–BN–ReLU blocks of 16 | pool | 32, 32 |
    pool | 64, then global max-pool → classes.

    Sized on a 2-core CPU (``benchmarks/time_to_98.py``): one block at full resolution and widths
    that are multiples of 16 (what oneDNN's vector kernels want). With ``--recipe fast`` it passes
    98 % on the official MNIST test set from the 4,000 mnist5k digits in about 5 s of training;
    the earlier 32, 32 | 64, 64 | 128 version (8 epochs, batch 128) scored ~0.4 points more in ~8x the time."""
    return nn.Sequential(
        *_conv_bn(in_channels, 16), nn.MaxPool2d(2),
        *_conv_bn(16, 32), *_conv_bn(32, 32), nn.MaxPool2d(2) if image_size >= 8 else nn.Identity(),
        *_conv_bn(32, 64), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        *_head(64, num_classes),
    )  # fmt: skip


MODELS: dict[str, Callable[[int, int, int], nn.Sequential]] = {
    "seednet": seednet,
    "lenet5": lenet5,
    "tutorialnet": tutorialnet,
    "examplenet": examplenet,
    "fastnet": fastnet,
}


def build_model(name: str, in_channels: int, image_size: int, num_classes: int) -> nn.Sequential:
    """Build model ``name`` for images [in_channels, image_size, image_size] and ``num_classes``
    outputs (1 = one logit for binary logistic regression)."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name](in_channels, image_size, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(name: str) -> str:
    """First line of the model's docstring."""
    return " ".join((MODELS[name].__doc__ or "").split("\n\n")[0].split())
