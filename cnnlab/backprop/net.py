"""A sequential network of NumPy layers and the SGD optimiser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from cnnlab.backprop.layers import Layer

__all__ = ["Sequential", "SGD"]


class Sequential:
    """Layers applied in order: y = f_L(… f_2(f_1(x))).

    Backward runs the chain rule in reverse: g_{l−1} = f_lᵀ'(g_l), starting from
    g_L = ∂E/∂y. Parameters are named like PyTorch's ``state_dict`` keys:
    ``"<layer index>.<param>"`` (e.g. ``"0.weight"``, ``"7.bias"``).
    """

    def __init__(self, *layers: Layer) -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is {type(layer).__name__}, not a Layer")
        self.layers: list[Layer] = list(layers)

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __call__(self, x: Any) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: Any) -> np.ndarray:
        """Run every layer; each caches what its backward needs."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_out: Any, input_grad: bool = True) -> np.ndarray | None:
        """Propagate ∂E/∂output back to ∂E/∂input, accumulating parameter grads.

        With ``input_grad=False`` (training) the gradient w.r.t. the network input is not
        computed — the first layer only needs its parameter gradients — and None is returned.
        """
        g = grad_out
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            layer = self.layers[i]
            if i == 0 and not input_grad:
                if layer.params:
                    layer.backward(g, input_grad=False)  # type: ignore[call-arg]
                return None
            g = layer.backward(g)
        return g

    def named_params(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, parameter array) pairs, in layer order."""
        for i, layer in enumerate(self.layers):
            for k, v in layer.params.items():
                yield f"{i}.{k}", v

    def named_grads(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, gradient array) pairs, same names and order as :meth:`named_params`."""
        for i, layer in enumerate(self.layers):
            for k, v in layer.grads.items():
                yield f"{i}.{k}", v

    def param_slots(self) -> Iterator[tuple[Layer, str]]:
        """(layer, key) for every parameter: ``layer.params[key]`` / ``layer.grads[key]``."""
        for layer in self.layers:
            for k in layer.params:
                yield layer, k

    def zero_grad(self) -> None:
        """Reset every gradient to zero (gradients accumulate across backward calls)."""
        for layer in self.layers:
            layer.zero_grad()

    def astype(self, dtype: Any) -> Sequential:
        """Convert all parameters to ``dtype`` (float32/float64) in place; returns self."""
        for layer in self.layers:
            layer.astype(dtype)
        return self


class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum, as ``torch.optim.SGD``
    with dampening 0, no Nesterov and no weight decay:

        v ← g                       on the first step,
        v ← μ·v + g                 afterwards,
        w ← w − α·v.

    With μ = 0 this is plain Δw = −α ∂E/∂w. Use ``opt.step(net)`` after ``net.backward``.
    """

    def __init__(self, lr: float, momentum: float = 0.0) -> None:
        if not lr > 0:
            raise ValueError(f"SGD: lr must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        # velocity per parameter, keyed by (id(layer), key); the layer is kept alive with it
        self._velocity: dict[tuple[int, str], tuple[Layer, np.ndarray]] = {}

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr}, momentum={self.momentum})"

    def step(self, net: Sequential) -> None:
        """Update every parameter of ``net`` in place from its ``.grads``."""
        for layer, key in net.param_slots():
            w, g = layer.params[key], layer.grads[key]
            if self.momentum:
                slot = (id(layer), key)
                if slot not in self._velocity:
                    v = g.copy()  # first step: v = g
                    self._velocity[slot] = (layer, v)
                else:
                    v = self._velocity[slot][1]
                    v *= self.momentum  # v = μ·v + g
                    v += g
                g = v
            w -= self.lr * g  # w = w − α·v
