"""cnnlab: learn, train and ship convolutional neural networks with PyTorch.

The public API mirrors the ``cnnlab`` command: :func:`train`, :func:`evaluate`, :func:`predict`,
:func:`load`, :func:`summary` and :func:`hello`; a model's images are described by :class:`ImageSpec`
and become its input by :func:`to_model_input`. Each name is imported on first use, so that
``import cnnlab`` (and the ``cnnlab`` command's start-up) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name → the module that defines it
_EXPORTS = {
    "train": "cnnlab.training",
    "TrainResult": "cnnlab.training",
    "load": "cnnlab.inference",
    "predict": "cnnlab.inference",
    "Predictor": "cnnlab.inference",
    "ImageSpec": "cnnlab.spec",
    "to_model_input": "cnnlab.spec",
    "evaluate": "cnnlab.reports",
    "summary": "cnnlab.reports",
    "TrainConfig": "cnnlab.config",
    "hello": "cnnlab.env",
    "UserError": "cnnlab.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
