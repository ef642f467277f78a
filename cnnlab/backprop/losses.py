"""Loss functions of the NumPy engine: ``forward(output, target) -> float`` and
``backward() -> ∂E/∂output``.

Each one is defined exactly like the PyTorch expression quoted in its docstring, so
the two worlds can be compared to rounding error. N is the batch size, C the number
of classes, ``y_n`` the integer target of sample n and ``e_y`` its one-hot vector.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnlab.backprop.layers import ShapeError, as_real_array, sigmoid

__all__ = ["Loss", "NLLLoss", "CrossEntropyLoss", "MSELoss", "LogisticLoss", "LOSSES", "make_loss"]


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax(z) along axis 1: z_i − (m + log Σ_j e^{z_j − m}), m = max_j z_j."""
    m = z.max(axis=1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))


class Loss:
    """Base class: validates (output, target) and keeps what backward needs."""

    name = "loss"

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None
        self.value: float | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __call__(self, output: Any, target: Any) -> float:
        return self.forward(output, target)

    def _cached(self) -> dict[str, Any]:
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return self._cache

    def _class_inputs(self, output: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
        """Output [N, C] as float, target as int class indices [N] in [0, C)."""
        out = as_real_array(output, np.float64, repr(self), keep_float=True)
        if out.ndim != 2:
            raise ShapeError(f"{self!r}: expected output (N, C), got {tuple(out.shape)}")
        tgt = np.asarray(target)
        if tgt.dtype.kind not in "iu":
            raise TypeError(f"{self!r}: target must be integer class indices, got dtype {tgt.dtype}")
        if tgt.shape != (out.shape[0],):
            raise ShapeError(
                f"{self!r}: expected target ({out.shape[0]},) for output {tuple(out.shape)}, got {tuple(tgt.shape)}"
            )
        if tgt.size and (tgt.min() < 0 or tgt.max() >= out.shape[1]):
            raise ValueError(
                f"{self!r}: target classes must lie in [0, {out.shape[1]}), got range [{tgt.min()}, {tgt.max()}]"
            )
        if out.shape[0] == 0:
            raise ShapeError(f"{self!r}: empty batch")
        return out, tgt.astype(np.int64)

    def forward(self, output: Any, target: Any) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class NLLLoss(Loss):
    """E = −(1/N) Σ_n o[n, y_n] for log-probabilities o; ``F.nll_loss(out, y)``."""

    name = "nll"

    def forward(self, output: Any, target: Any) -> float:
        o, y = self._class_inputs(output, target)
        n = o.shape[0]
        self._cache = {"shape": o.shape, "dtype": o.dtype, "y": y}
        self.value = float(-o[np.arange(n), y].mean())
        return self.value

    def backward(self) -> np.ndarray:
        c = self._cached()
        n = c["shape"][0]
        grad = np.zeros(c["shape"], dtype=c["dtype"])
        grad[np.arange(n), c["y"]] = -1.0 / n  # ∂E/∂o[n,c] = −[c = y_n] / N
        return grad


class CrossEntropyLoss(Loss):
    """E = −(1/N) Σ_n log softmax(z_n)[y_n] in nats; ``F.cross_entropy(out, y)``.

    Feeding log-probabilities instead of logits gives the same value, because
    log softmax is idempotent. ``.bits`` holds the same value in bits (nats / ln 2).
    """

    name = "ce"

    def __init__(self) -> None:
        super().__init__()
        self.bits: float | None = None

    def forward(self, output: Any, target: Any) -> float:
        z, y = self._class_inputs(output, target)
        n = z.shape[0]
        logp = log_softmax(z)
        self._cache = {"p": np.exp(logp), "y": y}
        self.value = float(-logp[np.arange(n), y].mean())
        self.bits = self.value / math.log(2)
        return self.value

    def backward(self) -> np.ndarray:
        c = self._cached()
        p, y = c["p"], c["y"]
        n = p.shape[0]
        grad = p.copy()
        grad[np.arange(n), y] -= 1
        return grad / n  # ∂E/∂z_n = (softmax(z_n) − e_{y_n}) / N


class MSELoss(Loss):
    """The tutorial's quadratic loss on probabilities, E = 1/(2N) Σ_n ‖ŷ_n − e_{y_n}‖²,
    where ŷ = exp(o) for log-probabilities o (so ŷ = softmax of the logits).

    ``0.5 * ((out.exp() - one_hot(y)).pow(2).sum(1)).mean()`` in PyTorch.
    """

    name = "mse"

    def forward(self, output: Any, target: Any) -> float:
        o, y = self._class_inputs(output, target)
        n = o.shape[0]
        yhat = np.exp(o)
        diff = yhat.copy()
        diff[np.arange(n), y] -= 1  # ŷ − e_y
        self._cache = {"yhat": yhat, "diff": diff}
        self.value = float(0.5 * (diff**2).sum(axis=1).mean())
        return self.value

    def backward(self) -> np.ndarray:
        c = self._cached()
        n = c["yhat"].shape[0]
        # ∂E/∂ŷ = (ŷ − e_y)/N, and ∂ŷ/∂o = ŷ (elementwise, ŷ = e^o): ∂E/∂o = (ŷ − e_y) ⊙ ŷ / N
        return c["diff"] * c["yhat"] / n


class LogisticLoss(Loss):
    """Binary cross-entropy of σ(z) for one logit per sample, target t ∈ {0, 1}:

    E = −(1/N) Σ_n [t_n log σ(z_n) + (1 − t_n) log(1 − σ(z_n))]
      = (1/N) Σ_n [softplus(z_n) − t_n z_n],   softplus(z) = log(1 + e^z) (stable form)

    ``F.binary_cross_entropy_with_logits(out.squeeze(1), y.float())``.
    """

    name = "logistic"

    def forward(self, output: Any, target: Any) -> float:
        z = as_real_array(output, np.float64, repr(self), keep_float=True)
        if z.ndim == 2 and z.shape[1] == 1:
            zz = z[:, 0]
        elif z.ndim == 1:
            zz = z
        else:
            raise ShapeError(f"{self!r}: expected output (N, 1), got {tuple(z.shape)}")
        t = np.asarray(target)
        if t.dtype.kind not in "biuf":
            raise TypeError(f"{self!r}: target must be 0/1 numbers, got dtype {t.dtype}")
        if t.shape != zz.shape:
            raise ShapeError(
                f"{self!r}: expected target ({zz.shape[0]},) for output {tuple(z.shape)}, got {tuple(t.shape)}"
            )
        if zz.size == 0:
            raise ShapeError(f"{self!r}: empty batch")
        if not np.all((t == 0) | (t == 1)):
            raise ValueError(f"{self!r}: target must contain only 0 and 1")
        t = t.astype(z.dtype)
        self._cache = {"z": zz, "t": t, "shape": z.shape}
        self.value = float((np.logaddexp(0, zz) - t * zz).mean())
        return self.value

    def backward(self) -> np.ndarray:
        c = self._cached()
        n = c["z"].shape[0]
        return ((sigmoid(c["z"]) - c["t"]) / n).reshape(c["shape"])  # ∂E/∂z_n = (σ(z_n) − t_n)/N


LOSSES: dict[str, type[Loss]] = {
    "nll": NLLLoss,
    "ce": CrossEntropyLoss,
    "mse": MSELoss,
    "logistic": LogisticLoss,
}


def make_loss(name: str) -> Loss:
    """A fresh loss object by registry name (``nll``, ``ce``, ``mse``, ``logistic``)."""
    try:
        return LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}") from None
