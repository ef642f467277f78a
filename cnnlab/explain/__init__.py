"""See inside a trained CNN: ``cnnlab explain`` (attribution maps through Captum, and the sanity checks
of Adebayo et al. with ``--sanity``) and ``cnnlab viz`` (first-layer filters, feature maps).

The Python API: :func:`explain` (image files → prediction + attribution map + overlay PNG),
:func:`attribute` (a batch of model inputs → maps), :func:`sanity_checks` and :func:`visualize`.
Each name is imported on first use, so importing this package loads neither torch nor Captum; the
commands are in :mod:`cnnlab.explain.cli`, the method names in :mod:`cnnlab.explain.methods`.
"""

from __future__ import annotations

import importlib
from typing import Any

from cnnlab.explain.methods import DEFAULT_METHOD, METHODS

_EXPORTS = {
    "explain": "cnnlab.explain.attribution",
    "attribute": "cnnlab.explain.attribution",
    "last_conv": "cnnlab.explain.attribution",
    "sanity_checks": "cnnlab.explain.sanity",
    "format_sanity": "cnnlab.explain.sanity",
    "visualize": "cnnlab.explain.viz",
}

__all__ = ["METHODS", "DEFAULT_METHOD", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cnnlab.explain' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
