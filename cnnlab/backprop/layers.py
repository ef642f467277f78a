"""Layers of the NumPy backpropagation engine.

Every layer has ``forward(x)``, which caches what the backward pass needs, and
``backward(grad_out) -> grad_in``, which turns ∂E/∂(output) into ∂E/∂(input) and
*adds* ∂E/∂(parameter) into ``.grads`` (like ``torch`` accumulates into ``.grad``;
:meth:`Layer.zero_grad` clears them). Parameters live in ``.params`` with the same
keys and the same layouts as PyTorch (Conv2d weight ``[out, in, kh, kw]``, Linear
weight ``[out, in]``).

Notation in the comments: ``x`` layer input, ``y`` layer output, ``g = ∂E/∂y``.

dtype rules: a layer with parameters computes in its parameters' dtype (float32 or
float64); any real-valued input (float of another width, int, bool) is converted to
it. A layer without parameters keeps a floating input's dtype and converts other
real inputs to its ``dtype`` attribute (float64 unless set). Strings, objects and
complex numbers are refused with :class:`TypeError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "ShapeError",
    "Layer",
    "Conv2d",
    "MaxPool2d",
    "ReLU",
    "Sigmoid",
    "Linear",
    "Flatten",
    "LogSoftmax",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ShapeError(ValueError):
    """An array reached a layer (or loss) with a shape it cannot take."""


def _shape(shape: tuple[int, ...]) -> str:
    """``(64, 320)`` style text for a shape (a 1-tuple keeps no trailing comma)."""
    return "(" + ", ".join(str(s) for s in shape) + ")"


def as_real_array(x: Any, dtype: Any, who: str, keep_float: bool = False) -> np.ndarray:
    """``x`` as a float array of ``dtype``; with ``keep_float`` a float32/float64 input keeps
    its own dtype. Ints and bools are converted; strings, objects, complex: TypeError."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{who}: input must be a numeric array, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{who}: input must be a numeric array, got {type(x).__name__}") from exc
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{who}: input must be a real numeric array, got dtype {arr.dtype} ({type(x).__name__})")
    if keep_float and arr.dtype in FLOAT_DTYPES:
        return arr
    return arr.astype(dtype, copy=False)


def _check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _pair(v: int, what: str) -> int:
    if isinstance(v, (tuple, list)):
        if len(v) != 2 or v[0] != v[1]:
            raise ValueError(f"{what} must be an int or a square pair, got {v!r}")
        v = v[0]
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
        raise TypeError(f"{what} must be an int, got {v!r}")
    return int(v)


class Layer:
    """Base class: holds ``params``/``grads`` and the cache of the last forward."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.dtype: np.dtype = np.dtype(np.float64)
        self._cache: dict[str, Any] | None = None

    # -- helpers ---------------------------------------------------------------
    def _input(self, x: Any) -> np.ndarray:
        """Convert ``x`` following the module's dtype rules."""
        return as_real_array(x, self.dtype, repr(self), keep_float=not self.params)

    def _cached(self) -> dict[str, Any]:
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return self._cache

    def _grad_out(self, grad_out: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        g = as_real_array(grad_out, dtype, repr(self))
        if g.shape != shape:
            raise ShapeError(f"{self!r}: expected grad_out {_shape(shape)} (the forward output), got {_shape(g.shape)}")
        return g

    # -- public API ------------------------------------------------------------
    def __call__(self, x: Any) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_out: Any) -> np.ndarray | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Set every gradient in ``.grads`` to zero."""
        for g in self.grads.values():
            g.fill(0)

    def astype(self, dtype: Any) -> Layer:
        """Convert parameters (and gradients) to ``dtype`` in place; returns self."""
        dt = _check_dtype(dtype)
        self.dtype = dt
        for k in self.params:
            self.params[k] = self.params[k].astype(dt)
            self.grads[k] = np.zeros_like(self.params[k])
        self._cache = None
        return self

    def _init_params(self, fan_in: int, shapes: dict[str, tuple[int, ...]], rng: Any) -> None:
        """PyTorch's default init: U(-1/√fan_in, 1/√fan_in) for weight and bias
        (kaiming_uniform with a=√5 reduces to this bound)."""
        rng = np.random.default_rng(rng)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        for k, shp in shapes.items():
            self.params[k] = rng.uniform(-bound, bound, size=shp).astype(self.dtype)
            self.grads[k] = np.zeros(shp, dtype=self.dtype)


class Conv2d(Layer):
    """2-D cross-correlation, as ``torch.nn.Conv2d`` (square kernel, zero padding).

    y[n,o,i,j] = b[o] + Σ_{c,p,q} W[o,c,p,q] · x_pad[n, c, s·i+p, s·j+q]

    Implemented as im2col: the windows of ``x_pad`` become the columns of a matrix ``X``
    of shape [C·kh·kw, OH·OW·N], so y = W X + b is one matrix product (W as [out, C·kh·kw]).
    Inside, images are laid out [C, H, W, N] (batch last) so that both im2col and its
    inverse move long contiguous runs; inputs and outputs are the usual [N, C, H, W].
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        *,
        dtype: Any = np.float64,
        rng: Any = None,
    ) -> None:
        super().__init__()
        self.in_ch, self.out_ch = int(in_ch), int(out_ch)
        self.kernel = _pair(kernel, "kernel")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        if self.in_ch < 1 or self.out_ch < 1 or self.kernel < 1 or self.stride < 1:
            raise ValueError("Conv2d: channels, kernel and stride must be >= 1")
        if self.padding < 0:
            raise ValueError("Conv2d: padding must be >= 0")
        self.dtype = _check_dtype(dtype)
        k = self.kernel
        self._init_params(
            self.in_ch * k * k,
            {"weight": (self.out_ch, self.in_ch, k, k), "bias": (self.out_ch,)},
            rng,
        )

    def __repr__(self) -> str:
        extra = ""
        if self.stride != 1:
            extra += f", stride={self.stride}"
        if self.padding != 0:
            extra += f", padding={self.padding}"
        return f"Conv2d({self.in_ch}->{self.out_ch}, kernel={self.kernel}{extra})"

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """Output spatial size: ⌊(H + 2p − k)/s⌋ + 1."""
        k, s, p = self.kernel, self.stride, self.padding
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def forward(self, x: Any) -> np.ndarray:
        x = self._input(x)
        if x.ndim != 4 or x.shape[1] != self.in_ch:
            raise ShapeError(f"{self!r}: expected input (N, {self.in_ch}, H, W), got {_shape(x.shape)}")
        n, _, h, w = x.shape
        k, s, p = self.kernel, self.stride, self.padding
        if h + 2 * p < k or w + 2 * p < k:
            raise ShapeError(
                f"{self!r}: input {_shape(x.shape)} is smaller than the kernel {k}x{k} (after padding {p})"
            )
        oh, ow = self.out_size(h, w)
        # work in a [C, H, W, N] copy: every window row then spans OW·N contiguous numbers
        xt = x.transpose(1, 2, 3, 0)
        xp = np.pad(xt, ((0, 0), (p, p), (p, p), (0, 0))) if p else np.ascontiguousarray(xt)
        # win[c, i, j, n, p, q] = x_pad[n, c, s·i+p, s·j+q]  (a strided view, no copy)
        win = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::s, ::s][:, :oh, :ow]
        # im2col: X[(c,p,q), (i,j,n)] = window (n,i,j) entry (c,p,q)
        cols = win.transpose(0, 4, 5, 1, 2, 3).reshape(self.in_ch * k * k, oh * ow * n)
        wmat = self.params["weight"].reshape(self.out_ch, -1)
        y = wmat @ cols + self.params["bias"][:, None]  # y = W X + b   ([out, OH·OW·N])
        self._cache = {"cols": cols, "xp_shape": xp.shape, "x_shape": x.shape, "oh": oh, "ow": ow}
        return y.reshape(self.out_ch, oh, ow, n).transpose(3, 0, 1, 2)

    def backward(self, grad_out: Any, input_grad: bool = True) -> np.ndarray | None:
        """∂E/∂input (None if ``input_grad`` is False, e.g. for the first layer)."""
        c = self._cached()
        n, oh, ow, k, s, p = c["x_shape"][0], c["oh"], c["ow"], self.kernel, self.stride, self.padding
        g = self._grad_out(grad_out, (n, self.out_ch, oh, ow), self.dtype)
        g2 = g.transpose(1, 2, 3, 0).reshape(self.out_ch, -1)  # columns match the columns of X
        # ∂E/∂W = g Xᵀ (summed over every output position i,j,n) ; ∂E/∂b = Σ_{i,j,n} g
        self.grads["weight"] += (c["cols"] @ g2.T).T.reshape(self.params["weight"].shape)
        self.grads["bias"] += g2.sum(axis=1)
        if not input_grad:
            return None
        # ∂E/∂X = Wᵀ g, then col2im: each window entry adds back onto the pixel it came from
        wmat = self.params["weight"].reshape(self.out_ch, -1)
        dcols = (wmat.T @ g2).reshape(self.in_ch, k, k, oh, ow, n)
        dxp = np.zeros(c["xp_shape"], dtype=self.dtype)  # [C, H+2p, W+2p, N] like X's source
        for a in range(k):  # loop over the k·k kernel offsets only; pixels are vectorised
            for b in range(k):
                dxp[:, a : a + s * oh : s, b : b + s * ow : s, :] += dcols[:, a, b]
        h, w = c["x_shape"][2:]
        return dxp[:, p : p + h, p : p + w, :].transpose(3, 0, 1, 2)


class MaxPool2d(Layer):
    """Max pooling over k×k windows with stride s (default s = k), no padding,
    floor mode, as ``torch.nn.MaxPool2d``.

    y[n,c,i,j] = max_{p,q} x[n, c, s·i+p, s·j+q]
    """

    def __init__(self, kernel: int, stride: int | None = None) -> None:
        super().__init__()
        self.kernel = _pair(kernel, "kernel")
        self.stride = self.kernel if stride is None else _pair(stride, "stride")
        if self.kernel < 1 or self.stride < 1:
            raise ValueError("MaxPool2d: kernel and stride must be >= 1")

    def __repr__(self) -> str:
        extra = "" if self.stride == self.kernel else f", stride={self.stride}"
        return f"MaxPool2d(kernel={self.kernel}{extra})"

    def _offsets(self, x: np.ndarray, oh: int, ow: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(a, b, x[:, :, s·i+a, s·j+b] over all i, j) for each window offset in row-major order."""
        k, s = self.kernel, self.stride
        for a in range(k):
            for b in range(k):
                yield a, b, x[:, :, a : a + s * oh : s, b : b + s * ow : s]

    def forward(self, x: Any) -> np.ndarray:
        x = self._input(x)
        if x.ndim != 4:
            raise ShapeError(f"{self!r}: expected input (N, C, H, W), got {_shape(x.shape)}")
        _, _, h, w = x.shape
        k, s = self.kernel, self.stride
        if h < k or w < k:
            raise ShapeError(f"{self!r}: input {_shape(x.shape)} is smaller than the {k}x{k} window")
        oh, ow = (h - k) // s + 1, (w - k) // s + 1
        # running max over the k·k window offsets (ufuncs keep x's memory order: no transposes)
        parts = [part for _, _, part in self._offsets(x, oh, ow)]
        y = parts[0].copy(order="K") if len(parts) == 1 else np.maximum(parts[0], parts[1])
        for part in parts[2:]:
            np.maximum(y, part, out=y)
        self._cache = {"x": x, "y": y}
        return y

    def backward(self, grad_out: Any) -> np.ndarray:
        c = self._cached()
        x, y = c["x"], c["y"]
        g = self._grad_out(grad_out, y.shape, x.dtype)
        oh, ow = y.shape[2:]
        s = self.stride
        # ∂E/∂x[s·i+a, s·j+b] = Σ_windows g[i,j] · [(a,b) is the window's first arg-max (row-major, as torch)]
        dx = np.zeros_like(x)
        taken = np.zeros_like(y, dtype=bool)
        for a, b, part in self._offsets(x, oh, ow):
            win = np.equal(part, y)
            win &= ~taken
            taken |= win
            dst = dx[:, :, a : a + s * oh : s, b : b + s * ow : s]
            dst += g * win  # overlapping windows add up
        return dx


class ReLU(Layer):
    """y = max(x, 0)."""

    def __repr__(self) -> str:
        return "ReLU()"

    def forward(self, x: Any) -> np.ndarray:
        x = self._input(x)
        mask = x > 0
        self._cache = {"mask": mask, "dtype": x.dtype}
        return np.maximum(x, 0, dtype=x.dtype)

    def backward(self, grad_out: Any) -> np.ndarray:
        c = self._cached()
        g = self._grad_out(grad_out, c["mask"].shape, c["dtype"])
        return g * c["mask"]  # ∂E/∂x = g · [x > 0]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1/(1+e^{−x}), computed without overflow as exp(−softplus(−x))."""
    return np.exp(-np.logaddexp(0, -x)).astype(x.dtype, copy=False)


class Sigmoid(Layer):
    """y = σ(x) = 1 / (1 + e^{−x})."""

    def __repr__(self) -> str:
        return "Sigmoid()"

    def forward(self, x: Any) -> np.ndarray:
        x = self._input(x)
        y = sigmoid(x)
        self._cache = {"y": y}
        return y

    def backward(self, grad_out: Any) -> np.ndarray:
        y = self._cached()["y"]
        g = self._grad_out(grad_out, y.shape, y.dtype)
        return g * y * (1 - y)  # ∂E/∂x = g · σ(x)(1 − σ(x))


class Linear(Layer):
    """Fully connected layer: y = x Wᵀ + b with W of shape [out, in]."""

    def __init__(self, in_features: int, out_features: int, *, dtype: Any = np.float64, rng: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError("Linear: in and out features must be >= 1")
        self.dtype = _check_dtype(dtype)
        self._init_params(
            self.in_features,
            {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)},
            rng,
        )

    def __repr__(self) -> str:
        return f"Linear({self.in_features}->{self.out_features})"

    def forward(self, x: Any) -> np.ndarray:
        x = self._input(x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(f"{self!r}: expected input (N, {self.in_features}), got {_shape(x.shape)}")
        self._cache = {"x": x}
        return x @ self.params["weight"].T + self.params["bias"]

    def backward(self, grad_out: Any, input_grad: bool = True) -> np.ndarray | None:
        """∂E/∂input (None if ``input_grad`` is False, e.g. for the first layer)."""
        x = self._cached()["x"]
        g = self._grad_out(grad_out, (x.shape[0], self.out_features), self.dtype)
        self.grads["weight"] += g.T @ x  # ∂E/∂W = Σ_n g_n x_nᵀ
        self.grads["bias"] += g.sum(axis=0)  # ∂E/∂b = Σ_n g_n
        return g @ self.params["weight"] if input_grad else None  # ∂E/∂x = g W


class Flatten(Layer):
    """[N, d1, d2, ...] -> [N, d1·d2·...] (torch.nn.Flatten with its defaults)."""

    def __repr__(self) -> str:
        return "Flatten()"

    def forward(self, x: Any) -> np.ndarray:
        x = self._input(x)
        if x.ndim < 2:
            raise ShapeError(f"{self!r}: expected input (N, d1, ...), got {_shape(x.shape)}")
        self._cache = {"shape": x.shape, "dtype": x.dtype}
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: Any) -> np.ndarray:
        c = self._cached()
        shape = c["shape"]
        g = self._grad_out(grad_out, (shape[0], math.prod(shape[1:])), c["dtype"])
        return g.reshape(shape)  # a reshape only moves entries: ∂E/∂x = reshape(g)


class LogSoftmax(Layer):
    """y_i = z_i − log Σ_j e^{z_j} along ``dim`` (default 1, the class axis)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = int(dim)

    def __repr__(self) -> str:
        return f"LogSoftmax(dim={self.dim})"

    def forward(self, x: Any) -> np.ndarray:
        x = self._input(x)
        if not -x.ndim <= self.dim < x.ndim or x.ndim < 2:
            raise ShapeError(f"{self!r}: expected input (N, C, ...) with a dim {self.dim}, got {_shape(x.shape)}")
        m = x.max(axis=self.dim, keepdims=True)
        y = x - (m + np.log(np.exp(x - m).sum(axis=self.dim, keepdims=True)))
        self._cache = {"y": y}
        return y

    def backward(self, grad_out: Any) -> np.ndarray:
        y = self._cached()["y"]
        g = self._grad_out(grad_out, y.shape, y.dtype)
        # ∂E/∂z_i = g_i − softmax(z)_i · Σ_j g_j
        return g - np.exp(y) * g.sum(axis=self.dim, keepdims=True)
