"""Prove the NumPy engine's gradients equal PyTorch autograd's, on real data.

:func:`check` builds the same network twice (PyTorch and NumPy, identical float64
weights), runs one batch of real images through both, and compares

* the forward output and the loss value,
* ∂E/∂θ for every parameter θ,
* ∂E/∂x for the input x of every layer (torch keeps them with ``retain_grad``),

and then checks the NumPy gradients once more against central finite differences on
sampled coordinates (:mod:`cnnlab.backprop.gradcheck`).

Error measure: for arrays a (NumPy) and b (torch) the row's ``rel_error`` is the
norm-based relative error ‖a − b‖₂ / max(‖a‖₂, ‖b‖₂, 1e-300); ``max_abs_diff`` is
max |a − b| over elements. The check passes when every ``rel_error`` ≤ 1e-6 and every
finite-difference coordinate is within the gradcheck tolerance.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.backprop.convert import build_torch_model, from_torch
from cnnlab.backprop.gradcheck import check_network, network_gradients
from cnnlab.backprop.losses import LOSSES, make_loss
from cnnlab.backprop.threads import blas_threads

__all__ = ["check", "format_table", "torch_loss", "LOGISTIC_CLASSES", "TOLERANCE"]

TOLERANCE = 1e-6


LOGISTIC_CLASSES = ("3", "8")


def _reference_losses() -> dict[str, Any]:
    """The four losses as PyTorch defines them (used when :mod:`cnnlab.losses` is absent)."""

    def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(y, out.shape[1]).to(out.dtype)
        return 0.5 * ((out.exp() - one_hot).pow(2).sum(1)).mean()

    return {
        "nll": lambda out, y: F.nll_loss(out, y),
        "ce": lambda out, y: F.cross_entropy(out, y),
        "mse": mse,
        "logistic": lambda out, y: F.binary_cross_entropy_with_logits(out.squeeze(1), y.to(out.dtype)),
    }


def torch_loss(name: str) -> Any:
    """``(output, target) -> scalar tensor``: the core's ``cnnlab.losses.LOSSES[name]`` when the
    core provides it, else the reference definition."""
    import importlib.util

    if importlib.util.find_spec("cnnlab.losses") is not None:
        from cnnlab.losses import LOSSES as CORE_LOSSES

        if name in CORE_LOSSES:
            return CORE_LOSSES[name]
    return _reference_losses()[name]


def _row(name: str, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{name}: NumPy shape {a.shape} != torch shape {b.shape}")
    diff = a - b
    denom = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)), 1e-300)
    rel = float(np.linalg.norm(diff)) / denom
    return {
        "name": name,
        "shape": list(a.shape),
        "max_abs_diff": float(np.abs(diff).max(initial=0.0)),
        "rel_error": rel,
        "passed": rel <= TOLERANCE,
    }


def check(
    model: str = "seednet",
    loss: str = "nll",
    batch_size: int = 32,
    seed: int = 0,
    fd_samples: int = 6,
    dataset: str = "mnist5k",
    data_dir: str = "./data",
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """Compare NumPy and autograd gradients of ``model`` under ``loss`` on one real batch.

    The weights are PyTorch's default initialisation after ``torch.manual_seed(seed)``,
    copied into NumPy; the batch is ``batch_size`` training images picked with ``seed``.
    ``classes`` keeps only those classes (relabelled 0, 1, ...); the one-logit ``logistic``
    loss needs two, and uses :data:`LOGISTIC_CLASSES` (digits 3 vs 8) unless told otherwise.
    Returns ``{"rows", "max_rel_error", "fd_rows", "fd_max_rel_error", "passed", ...}``.
    """
    with blas_threads(1):
        return _check(model, loss, batch_size, seed, fd_samples, dataset, data_dir, classes)


def _check(
    model: str,
    loss: str,
    batch_size: int,
    seed: int,
    fd_samples: int,
    dataset: str,
    data_dir: str,
    classes: list[str] | None,
) -> dict[str, Any]:
    from cnnlab.backprop.data import load_arrays

    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if loss == "logistic" and not classes:
        classes = list(LOGISTIC_CLASSES)
    if loss == "logistic" and len(classes) != 2:
        raise ValueError("the logistic loss needs exactly two classes")
    data = load_arrays(dataset, data_dir, splits=("train",), classes=classes)
    xs, ys = data.x["train"], data.y["train"]
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ys), size=min(batch_size, len(ys)), replace=False)
    x = xs[idx].astype(np.float64)
    y = ys[idx]
    num_classes = 1 if loss == "logistic" else data.spec.num_classes

    torch.manual_seed(seed)
    tmodel = build_torch_model(model, data.spec.channels, data.spec.size, num_classes).double()
    net = from_torch(tmodel, np.float64)

    # --- PyTorch: forward layer by layer, keeping every layer input's gradient ------------
    h = torch.from_numpy(x.copy()).requires_grad_(True)
    t_inputs: list[torch.Tensor] = []
    for m in tmodel:
        h.retain_grad()
        t_inputs.append(h)
        h = m(h)
    t_out = h
    t_loss = torch_loss(loss)(t_out, torch.from_numpy(y))
    t_loss.backward()

    # --- NumPy ------------------------------------------------------------------------------
    np_loss = make_loss(loss)
    value, inputs, input_grads, grads = network_gradients(net, np_loss, x, y)
    np_out = net.forward(x)

    rows = [
        _row("output (forward)", np_out, t_out.detach().numpy()),
        _row("loss (forward)", np.array(value), t_loss.detach().numpy()),
    ]
    t_params = dict(tmodel.named_parameters())
    for i, layer in enumerate(net):
        for key in layer.params:
            name = f"{i}.{key}"
            rows.append(_row(f"∂E/∂{name}", grads[name], t_params[name].grad.numpy()))
        rows.append(_row(f"∂E/∂input[{i}] {layer!r}", input_grads[i], t_inputs[i].grad.numpy()))
    max_rel = max(r["rel_error"] for r in rows)

    fd_rows = check_network(net, np_loss, x, y, n_samples=fd_samples, seed=seed)
    fd_passed = all(r["passed"] for r in fd_rows)
    return {
        "model": model,
        "loss": loss,
        "dataset": dataset,
        "classes": list(data.spec.classes),
        "batch_size": int(len(y)),
        "seed": seed,
        "dtype": "float64",
        "loss_numpy": value,
        "loss_torch": float(t_loss.item()),
        "loss_bits": value / math.log(2) if loss == "ce" else None,
        "rows": rows,
        "max_rel_error": max_rel,
        "tolerance": TOLERANCE,
        "fd_rows": fd_rows,
        "fd_max_rel_error": max(r["max_rel_diff"] for r in fd_rows),
        "fd_passed": fd_passed,
        "passed": bool(max_rel <= TOLERANCE and fd_passed),
    }


def format_table(result: dict[str, Any]) -> str:
    """The result of :func:`check` as an aligned text table."""
    lines = [
        f"backprop check: model={result['model']} loss={result['loss']} "
        f"dataset={result['dataset']} batch={result['batch_size']} seed={result['seed']} "
        f"({result['dtype']})",
        f"loss: numpy {result['loss_numpy']:.12g}   torch {result['loss_torch']:.12g}",
        "",
        "NumPy vs torch.autograd (rel = ‖a−b‖ / max(‖a‖, ‖b‖))",
    ]
    width = max(len(r["name"]) for r in result["rows"] + result["fd_rows"])
    head = f"{'name':<{width}}  {'shape':<16} {'max |a-b|':>10} {'rel':>10}  ok"
    lines += [head, "-" * len(head)]
    for r in result["rows"]:
        shape = "x".join(str(s) for s in r["shape"]) or "scalar"
        ok = "yes" if r["passed"] else "NO"
        lines.append(f"{r['name']:<{width}}  {shape:<16} {r['max_abs_diff']:>10.2e} {r['rel_error']:>10.2e}  {ok}")
    lines += [
        "",
        "NumPy vs central finite differences (sampled coordinates; kinks = points where E is",
        "not differentiable, e.g. max-pool ties on flat backgrounds, left out)",
    ]
    head = f"{'name':<{width}}  {'coords (kinks)':<16} {'max |a-n|':>10} {'rel':>10}  ok"
    lines += [head, "-" * len(head)]
    for r in result["fd_rows"]:
        ok = "yes" if r["passed"] else "NO"
        coords = f"{r['n']} ({r['kinks']})"
        lines.append(f"{r['name']:<{width}}  {coords:<16} {r['max_abs_diff']:>10.2e} {r['max_rel_diff']:>10.2e}  {ok}")
    verdict = "PASSED" if result["passed"] else "FAILED"
    lines += [
        "",
        f"max rel error vs autograd: {result['max_rel_error']:.2e} (tolerance {result['tolerance']:.0e}); "
        f"finite differences: {'ok' if result['fd_passed'] else 'FAILED'} -> {verdict}",
    ]
    return "\n".join(lines)
