"""Backpropagation from scratch in NumPy, proven equal to PyTorch autograd.

* :mod:`~cnnlab.backprop.layers` — Conv2d, MaxPool2d, ReLU, Sigmoid, Linear, Flatten,
  LogSoftmax: each ``forward`` next to its ``backward``, with the chain-rule formula.
* :mod:`~cnnlab.backprop.losses` — nll, ce, mse (the tutorial's quadratic loss), logistic.
* :mod:`~cnnlab.backprop.net` — :class:`Sequential` and :class:`SGD` (torch.optim.SGD's rule).
* :mod:`~cnnlab.backprop.derivation` — the tutorial's closed-form FC-layer gradient.
* :mod:`~cnnlab.backprop.gradcheck` — central finite differences on sampled coordinates.
* :mod:`~cnnlab.backprop.convert` / :mod:`~cnnlab.backprop.compare` — the only modules that
  import torch: copy weights between the worlds and compare every gradient with autograd.
* :mod:`~cnnlab.backprop.train` — train seednet on mnist5k with the NumPy engine alone.
* :mod:`~cnnlab.backprop.cli` — ``cnnlab backprop check`` and ``cnnlab backprop train``.
"""

from cnnlab.backprop.layers import Conv2d, Flatten, Layer, Linear, LogSoftmax, MaxPool2d, ReLU, ShapeError, Sigmoid
from cnnlab.backprop.losses import LOSSES, CrossEntropyLoss, LogisticLoss, Loss, MSELoss, NLLLoss, make_loss
from cnnlab.backprop.net import SGD, Sequential

__all__ = [
    "LOSSES",
    "SGD",
    "Conv2d",
    "CrossEntropyLoss",
    "Flatten",
    "Layer",
    "Linear",
    "LogSoftmax",
    "LogisticLoss",
    "Loss",
    "MSELoss",
    "MaxPool2d",
    "NLLLoss",
    "ReLU",
    "Sequential",
    "ShapeError",
    "Sigmoid",
    "make_loss",
]
