"""Finite-difference checks of the engine's gradients on sampled coordinates.

For a scalar function E of an array θ, the central difference

    ∂E/∂θ_i ≈ (E(θ + ε e_i) − E(θ − ε e_i)) / (2ε)

has truncation error O(ε²) and rounding error ≈ u·|E|/ε (u = machine epsilon), so
run these checks in float64 (ε = 1e-6 gives errors around 1e-10).

Coordinates where E is not differentiable (a max-pool tie, a ReLU input at exactly 0:
common on real images, whose flat backgrounds give equal conv outputs) have no derivative
to compare with; they are detected (:func:`is_kink`), left out and counted in ``kinks``.

A coordinate passes when |analytic − numeric| ≤ atol + rtol · max(|analytic|, |numeric|).
The reported relative difference is |a − n| / max(|a|, |n|, atol/rtol): the floor keeps
coordinates whose true gradient is ~0 from producing meaningless huge ratios.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cnnlab.backprop.layers import Layer
from cnnlab.backprop.losses import Loss
from cnnlab.backprop.net import Sequential

__all__ = [
    "central_difference",
    "sample_coordinates",
    "compare_coordinates",
    "check_layer",
    "check_network",
    "network_gradients",
]

RTOL = 1e-4
ATOL = 1e-8


def central_difference(f: Callable[[], float], arr: np.ndarray, idx: tuple[int, ...], eps: float) -> float:
    """(f(θ + ε e_idx) − f(θ − ε e_idx)) / 2ε, perturbing ``arr`` in place and restoring it."""
    return _differences(f, arr, idx, eps)[0]


def _differences(
    f: Callable[[], float], arr: np.ndarray, idx: tuple[int, ...], eps: float
) -> tuple[float, float, float, float]:
    """(central, forward, backward difference, f(θ)) at ``idx`` with step ``eps``."""
    old = arr[idx].copy()
    arr[idx] = old + eps
    plus = f()
    arr[idx] = old - eps
    minus = f()
    arr[idx] = old
    mid = f()
    return (plus - minus) / (2 * eps), (plus - mid) / eps, (mid - minus) / eps, mid


def is_kink(f: Callable[[], float], arr: np.ndarray, idx: tuple[int, ...], eps: float) -> bool:
    """Whether E is not differentiable at θ along ``idx`` (e.g. a max-pool tie or a ReLU at 0).

    At a smooth point the forward and backward differences differ by ≈ ε·|E''|, a gap that
    shrinks in proportion to ε; at a kink they differ by the jump in slope, whatever ε is.
    So: a kink is a gap far above rounding noise (≈ 2u|E|/ε) that does not shrink when ε is
    divided by 16.
    """
    _, fwd, bwd, mid = _differences(f, arr, idx, eps)
    gap = abs(fwd - bwd)
    noise = 2 * np.finfo(np.float64).eps * max(abs(mid), 1e-30) / eps
    if gap <= 100 * noise:
        return False
    _, fwd2, bwd2, _ = _differences(f, arr, idx, eps / 16)
    return abs(fwd2 - bwd2) >= 0.5 * gap


def sample_coordinates(grad: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Up to ``n`` distinct coordinates: half uniformly at random, half among those with a
    non-zero analytic gradient (so ReLU/max-pool zeros don't make the check vacuous)."""
    size = grad.size
    if n >= size:
        return [tuple(int(j) for j in np.unravel_index(i, grad.shape)) for i in range(size)]
    picks = set(rng.choice(size, size=min(size, (n + 1) // 2), replace=False).tolist())
    nz = np.flatnonzero(grad)
    if nz.size:
        picks |= set(rng.choice(nz, size=min(nz.size, n // 2), replace=False).tolist())
    return [tuple(int(j) for j in np.unravel_index(i, grad.shape)) for i in sorted(picks)]


def _candidates(analytic: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Sampled coordinates to try: ``n`` first, then up to ``4n`` spares (used in place of kinks)."""
    out = sample_coordinates(analytic, n, rng)
    seen = set(out)
    for _ in range(4):
        for c in sample_coordinates(analytic, n, rng):
            if c not in seen:
                seen.add(c)
                out.append(c)
    return out


def compare_coordinates(
    name: str,
    f: Callable[[], float],
    arr: np.ndarray,
    analytic: np.ndarray,
    n_samples: int,
    rng: np.random.Generator,
    eps: float = 1e-6,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> dict[str, Any]:
    """One result row comparing ``analytic`` with central differences of ``f`` w.r.t. ``arr``."""
    if arr.dtype != np.float64:
        raise TypeError(f"finite differences need float64 arrays, {name} is {arr.dtype}")
    a_list: list[float] = []
    n_list: list[float] = []
    kinks = 0
    for c in _candidates(analytic, n_samples, rng):
        if len(a_list) == n_samples:
            break
        num = central_difference(f, arr, c, eps)
        a = float(analytic[c])
        if abs(a - num) > atol + rtol * max(abs(a), abs(num)) and is_kink(f, arr, c, eps):
            kinks += 1  # not differentiable here: no derivative to compare with
            continue
        a_list.append(a)
        n_list.append(num)
    a_arr, n_arr = np.array(a_list), np.array(n_list)
    diff = np.abs(a_arr - n_arr)
    scale = np.maximum(np.abs(a_arr), np.abs(n_arr))
    rel = diff / np.maximum(scale, atol / rtol)
    return {
        "name": name,
        "n": len(a_list),
        "kinks": kinks,
        "max_abs_diff": float(diff.max(initial=0.0)),
        "max_rel_diff": float(rel.max(initial=0.0)),
        "passed": bool(len(a_list) > 0 and np.all(diff <= atol + rtol * scale)),
    }


def check_layer(
    layer: Layer, x: np.ndarray, n_samples: int = 10, eps: float = 1e-6, seed: int = 0
) -> list[dict[str, Any]]:
    """Finite-difference check of one layer with E = Σ r ⊙ layer(x), r fixed random.

    Checks ∂E/∂x and every parameter gradient; returns one row per array.
    """
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    layer.zero_grad()
    y = layer.forward(x)
    r = rng.standard_normal(y.shape)
    dx = layer.backward(r)
    grads = {k: v.copy() for k, v in layer.grads.items()}

    def f() -> float:
        return float((layer.forward(x) * r).sum())

    rows = [compare_coordinates(f"{layer!r} input", f, x, dx, n_samples, rng, eps)]
    for k in layer.params:
        rows.append(compare_coordinates(f"{layer!r}.{k}", f, layer.params[k], grads[k], n_samples, rng, eps))
    return rows


def network_gradients(
    net: Sequential, loss: Loss, x: np.ndarray, target: np.ndarray
) -> tuple[float, list[np.ndarray], list[np.ndarray], dict[str, np.ndarray]]:
    """Forward + backward keeping every layer's input and the gradient arriving at it.

    Returns (loss value, inputs[i], input_grads[i], {param name: grad copy}).
    """
    net.zero_grad()
    inputs: list[np.ndarray] = []
    h = x
    for layer in net:
        inputs.append(h)
        h = layer.forward(h)
    value = loss.forward(h, target)
    g = loss.backward()
    input_grads: list[np.ndarray] = [np.empty(0)] * len(net)
    for i in range(len(net) - 1, -1, -1):
        g = net[i].backward(g)
        input_grads[i] = g
    grads = {k: v.copy() for k, v in net.named_grads()}
    return value, inputs, input_grads, grads


def check_network(
    net: Sequential,
    loss: Loss,
    x: np.ndarray,
    target: np.ndarray,
    n_samples: int = 6,
    eps: float = 1e-6,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Finite-difference check of every parameter and every layer input of ``net``
    under ``loss`` on one batch (float64). Returns one row per array."""
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    _, inputs, input_grads, grads = network_gradients(net, loss, x, target)
    inputs = [np.array(a, dtype=np.float64) for a in inputs]

    def tail(i: int) -> Callable[[], float]:
        def f() -> float:
            h = inputs[i]
            for layer in net.layers[i:]:
                h = layer.forward(h)
            return loss.forward(h, target)

        return f

    rows = []
    for i, layer in enumerate(net):
        rows.append(
            compare_coordinates(f"input[{i}] {layer!r}", tail(i), inputs[i], input_grads[i], n_samples, rng, eps)
        )
        for k in layer.params:
            rows.append(
                compare_coordinates(f"{i}.{k}", tail(i), layer.params[k], grads[f"{i}.{k}"], n_samples, rng, eps)
            )  # noqa: E501
    return rows
