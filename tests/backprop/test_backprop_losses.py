"""The four losses against cnnlab.losses (torch) and finite differences, plus the worked example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnnlab.backprop.derivation import closed_form_fc_grad
from cnnlab.backprop.gradcheck import compare_coordinates
from cnnlab.backprop.layers import ShapeError
from cnnlab.backprop.losses import LOSSES, CrossEntropyLoss, LogisticLoss, make_loss
from cnnlab.losses import LOSSES as TORCH_LOSSES

TOL = 1e-6


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def batch(loss: str, n: int = 7, c: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(output, target) of the kind each loss expects: log-probabilities, or one logit."""
    rng = np.random.default_rng(seed)
    if loss == "logistic":
        return rng.standard_normal((n, 1)) * 3, rng.integers(0, 2, n)
    z = rng.standard_normal((n, c)) * 2
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return (z if loss == "ce" else logp), rng.integers(0, c, n)


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_matches_torch_value_and_gradient(name: str) -> None:
    out, y = batch(name)
    t_out = torch.from_numpy(out).requires_grad_(True)
    t_loss = TORCH_LOSSES[name](t_out, torch.from_numpy(y))
    t_loss.backward()
    loss = make_loss(name)
    value = loss.forward(out, y)
    assert isinstance(value, float)
    assert abs(value - t_loss.item()) <= TOL * abs(t_loss.item())
    grad = loss.backward()
    assert grad.shape == out.shape
    assert rel_error(grad, t_out.grad.numpy()) <= TOL


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_gradient_matches_finite_differences(name: str) -> None:
    out, y = batch(name, seed=3)
    loss = make_loss(name)
    loss.forward(out, y)
    grad = loss.backward()
    row = compare_coordinates(name, lambda: loss.forward(out, y), out, grad, out.size, np.random.default_rng(0))
    assert row["n"] == out.size and row["passed"], row


def test_ce_gives_bits_and_accepts_log_probabilities() -> None:
    z, y = batch("ce")
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = CrossEntropyLoss()
    nats = loss.forward(z, y)
    assert loss.bits == pytest.approx(nats / math.log(2), rel=1e-12)
    assert loss.forward(logp, y) == pytest.approx(nats, rel=1e-12)
    assert make_loss("nll").forward(logp, y) == pytest.approx(nats, rel=1e-12)


def test_logistic_is_stable_for_huge_logits() -> None:
    z = np.array([[1000.0], [-1000.0], [800.0], [-800.0]])
    y = np.array([0, 1, 1, 0])
    loss = LogisticLoss()
    value = loss.forward(z, y)
    t = TORCH_LOSSES["logistic"](torch.from_numpy(z), torch.from_numpy(y))
    assert math.isfinite(value) and value == pytest.approx(t.item(), rel=1e-12)
    assert np.all(np.isfinite(loss.backward()))


def test_loss_input_errors() -> None:
    with pytest.raises(ShapeError, match=r"expected target \(3,\)"):
        make_loss("nll").forward(np.zeros((3, 4)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match=r"target classes must lie in \[0, 4\)"):
        make_loss("ce").forward(np.zeros((3, 4)), np.array([0, 1, 4]))
    with pytest.raises(TypeError, match="integer class indices"):
        make_loss("mse").forward(np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        make_loss("logistic").forward(np.zeros((3, 1)), np.array([0, 1, 2]))
    with pytest.raises(ShapeError, match=r"expected output \(N, 1\)"):
        make_loss("logistic").forward(np.zeros((3, 2)), np.array([0, 1, 1]))
    with pytest.raises(RuntimeError, match="before forward"):
        make_loss("nll").backward()
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge")


@pytest.mark.slow
def test_closed_form_fc_gradient_equals_engine_and_autograd() -> None:
    """The tutorial's derivation: ∂E/∂W = (1/N) Σ_n δ_n h_nᵀ, δ_n = J_softmaxᵀ(ŷ_n − y_n)."""
    from cnnlab.backprop.data import load_arrays
    from cnnlab.backprop.gradcheck import network_gradients
    from cnnlab.backprop.train import initial_net
    from cnnlab.models import build_model

    data = load_arrays("mnist5k", splits=("train",))
    x, y = data.x["train"][:24].astype(np.float64), data.y["train"][:24]
    torch.manual_seed(5)
    model = build_model("seednet", 1, 28, 10).double()
    net = initial_net("seednet", 1, 28, 10, seed=5, dtype=np.float64)  # same seed: same weights

    # engine: the FC layer is net[7]; its input h is what Flatten produced
    _, inputs, _, grads = network_gradients(net, make_loss("mse"), x, y)
    fc = net[7]
    dw, db = closed_form_fc_grad(inputs[7], fc.params["weight"], fc.params["bias"], y)
    assert rel_error(dw, grads["7.weight"]) <= TOL
    assert rel_error(db, grads["7.bias"]) <= TOL

    # autograd on the torch twin
    TORCH_LOSSES["mse"](model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    assert rel_error(dw, model[7].weight.grad.numpy()) <= TOL
    assert rel_error(db, model[7].bias.grad.numpy()) <= TOL
