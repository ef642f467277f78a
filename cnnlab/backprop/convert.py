"""Copy networks between PyTorch (``nn.Sequential``) and the NumPy engine.

This module and :mod:`cnnlab.backprop.compare` are the only ones in
``cnnlab.backprop`` that import torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.backprop import layers as L
from cnnlab.backprop.net import Sequential

__all__ = ["UnsupportedModule", "from_torch", "to_torch", "build_torch_model", "seeded_from_torch"]


class UnsupportedModule(TypeError):
    """A torch module (or module setting) the NumPy engine has no counterpart for."""


def _single(v: Any, what: str, module: nn.Module) -> int:
    """An int from an int or a square tuple; anything else is not supported."""
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise UnsupportedModule(f"{module}: non-square {what} {tuple(v)} is not supported")
        v = v[0]
    return int(v)


def _conv(m: nn.Conv2d, dtype: Any) -> L.Conv2d:
    if m.groups != 1 or _single(m.dilation, "dilation", m) != 1 or m.padding_mode != "zeros":
        raise UnsupportedModule(f"{m}: only groups=1, dilation=1, padding_mode='zeros' are supported")
    if isinstance(m.padding, str):
        raise UnsupportedModule(f"{m}: string padding {m.padding!r} is not supported")
    if m.bias is None:
        raise UnsupportedModule(f"{m}: a convolution without bias is not supported")
    kh, kw = m.kernel_size
    if kh != kw:
        raise UnsupportedModule(f"{m}: non-square kernel {m.kernel_size} is not supported")
    layer = L.Conv2d(
        m.in_channels,
        m.out_channels,
        kh,
        stride=_single(m.stride, "stride", m),
        padding=_single(m.padding, "padding", m),
        dtype=dtype,
    )
    _copy_in(layer, m)
    return layer


def _pool(m: nn.MaxPool2d) -> L.MaxPool2d:
    if (
        _single(m.padding, "padding", m) != 0
        or _single(m.dilation, "dilation", m) != 1
        or m.ceil_mode
        or m.return_indices
    ):
        raise UnsupportedModule(f"{m}: only padding=0, dilation=1, ceil_mode=False are supported")
    k = _single(m.kernel_size, "kernel_size", m)
    s = _single(m.stride, "stride", m) if m.stride is not None else k
    return L.MaxPool2d(k, s)


def _linear(m: nn.Linear, dtype: Any) -> L.Linear:
    if m.bias is None:
        raise UnsupportedModule(f"{m}: a linear layer without bias is not supported")
    layer = L.Linear(m.in_features, m.out_features, dtype=dtype)
    _copy_in(layer, m)
    return layer


def _flatten(m: nn.Flatten) -> L.Flatten:
    if m.start_dim != 1 or m.end_dim != -1:
        raise UnsupportedModule(f"{m}: only Flatten(start_dim=1, end_dim=-1) is supported")
    return L.Flatten()


def _logsoftmax(m: nn.LogSoftmax) -> L.LogSoftmax:
    if m.dim is None:
        raise UnsupportedModule(f"{m}: LogSoftmax needs an explicit dim")
    return L.LogSoftmax(m.dim)


def _copy_in(layer: L.Layer, m: nn.Module) -> None:
    for key in layer.params:
        t = getattr(m, key).detach().cpu().numpy()
        if t.shape != layer.params[key].shape:  # pragma: no cover - defensive
            raise ValueError(f"{m}: {key} has shape {t.shape}, expected {layer.params[key].shape}")
        layer.params[key] = t.astype(layer.dtype, copy=True)
        layer.grads[key] = np.zeros_like(layer.params[key])


def from_torch(module: nn.Module, dtype: Any = np.float64) -> Sequential:
    """A NumPy :class:`Sequential` equal to ``module`` with copied weights in ``dtype``.

    Supported modules: Conv2d, MaxPool2d, ReLU, Sigmoid, Linear, Flatten, LogSoftmax
    (anything else raises ``TypeError`` naming it).
    """
    if not isinstance(module, nn.Sequential):
        raise UnsupportedModule(f"from_torch expects a torch.nn.Sequential, got {type(module).__name__}")
    out: list[L.Layer] = []
    for i, m in enumerate(module):
        if isinstance(m, nn.Conv2d):
            out.append(_conv(m, dtype))
        elif isinstance(m, nn.MaxPool2d):
            out.append(_pool(m))
        elif isinstance(m, nn.ReLU):
            out.append(L.ReLU())
        elif isinstance(m, nn.Sigmoid):
            out.append(L.Sigmoid())
        elif isinstance(m, nn.Linear):
            out.append(_linear(m, dtype))
        elif isinstance(m, nn.Flatten):
            out.append(_flatten(m))
        elif isinstance(m, nn.LogSoftmax):
            out.append(_logsoftmax(m))
        else:
            raise UnsupportedModule(f"layer {i} ({type(m).__name__}) has no NumPy counterpart")
    net = Sequential(*out)
    for layer in net:
        layer.dtype = np.dtype(dtype)
    return net


def to_torch(net: Sequential, module: nn.Module) -> nn.Module:
    """Copy the NumPy weights of ``net`` into the matching layers of ``module`` (in place,
    keeping the module's dtype and device); returns ``module``."""
    if len(net) != len(module):
        raise ValueError(f"to_torch: {len(net)} NumPy layers but {len(module)} torch modules")
    with torch.no_grad():
        for i, (layer, m) in enumerate(zip(net, module, strict=True)):
            for key, value in layer.params.items():
                p = getattr(m, key, None)
                if not isinstance(p, torch.Tensor) or tuple(p.shape) != value.shape:
                    raise ValueError(f"to_torch: layer {i} {layer!r} does not match {type(m).__name__}")
                p.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(p.dtype))
    return module


def build_torch_model(
    name: str = "seednet", in_channels: int = 1, image_size: int = 28, num_classes: int = 10
) -> nn.Sequential:
    """``cnnlab.models.build_model(name, ...)``; for one output (logistic loss) a trailing
    LogSoftmax, if any, is removed (it would turn the single logit into the constant 0)."""
    from cnnlab.models import build_model

    model = build_model(name, in_channels, image_size, num_classes)
    if num_classes == 1 and isinstance(model, nn.Sequential) and isinstance(model[-1], nn.LogSoftmax):
        model = nn.Sequential(*list(model)[:-1])
    return model


def seeded_from_torch(
    name: str, in_channels: int, image_size: int, num_classes: int, seed: int, dtype: Any = np.float32
) -> Sequential:
    """``torch.manual_seed(seed)``, build the torch model (PyTorch's default init: kaiming-uniform
    with a = √5, i.e. U(±1/√fan_in)) and copy it into NumPy: the same start as a torch run."""
    torch.manual_seed(seed)
    return from_torch(build_torch_model(name, in_channels, image_size, num_classes), dtype)
