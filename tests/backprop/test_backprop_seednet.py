"""The full tutorial network on real mnist5k data: gradients, conversion, optimiser, trajectory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.backprop.compare import check, format_table
from cnnlab.backprop.convert import UnsupportedModule, build_torch_model, from_torch, to_torch
from cnnlab.backprop.layers import Linear
from cnnlab.backprop.net import SGD, Sequential


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["nll", "ce", "mse", "logistic"])
def test_seednet_gradients_equal_autograd_on_real_data(loss: str) -> None:
    result = check(model="seednet", loss=loss, batch_size=16, seed=0, fd_samples=4)
    assert result["passed"], format_table(result)
    assert result["max_rel_error"] <= 1e-6
    assert result["fd_passed"]
    names = [r["name"] for r in result["rows"]]
    n_layers = 8 if loss == "logistic" else 9  # no LogSoftmax after the single logit
    assert sum("input[" in n for n in names) == n_layers  # every layer input
    for p in ("0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"):  # every parameter
        assert f"∂E/∂{p}" in names
    assert all(r["n"] > 0 for r in result["fd_rows"])
    assert result["loss_numpy"] == pytest.approx(result["loss_torch"], rel=1e-12)
    table = format_table(result)
    assert "PASSED" in table and "∂E/∂7.weight" in table


def test_check_reports_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is not vacuous: a ReLU backward that is 0.1% off shows up as failed rows."""
    from cnnlab.backprop import layers

    original = layers.ReLU.backward

    def wrong_backward(self: layers.ReLU, grad_out: np.ndarray) -> np.ndarray:
        return original(self, grad_out) * 1.001

    monkeypatch.setattr(layers.ReLU, "backward", wrong_backward)
    result = check(loss="nll", batch_size=8, fd_samples=2)
    assert not result["passed"]
    assert result["max_rel_error"] > 1e-4
    failed = [r["name"] for r in result["rows"] if not r["passed"]]
    assert "∂E/∂0.weight" in failed and "∂E/∂7.weight" not in failed


def test_from_torch_and_back_round_trip() -> None:
    torch.manual_seed(3)
    model = build_torch_model("seednet", 1, 28, 10)
    net = from_torch(model, np.float32)
    assert isinstance(net, Sequential) and len(net) == len(model)
    assert [type(layer).__name__ for layer in net] == [
        "Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU", "Flatten", "Linear", "LogSoftmax",
    ]  # fmt: skip
    for (name, w), (t_name, t_w) in zip(net.named_params(), model.state_dict().items(), strict=True):
        assert name == t_name and w.dtype == np.float32
        np.testing.assert_array_equal(w, t_w.numpy())
    for _, w in net.named_params():
        w += 1.0
    to_torch(net, model)
    for (_, w), t_w in zip(net.named_params(), model.state_dict().values(), strict=True):
        np.testing.assert_array_equal(w, t_w.numpy())


def test_from_torch_refuses_unknown_layers() -> None:
    with pytest.raises(UnsupportedModule, match=r"layer 1 \(Dropout\)"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5)))


@pytest.mark.slow
@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_sgd_matches_torch_optim_sgd(momentum: float) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)).double()
    net = from_torch(model, np.float64)
    t_opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    opt = SGD(0.1, momentum)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((8, 6))
        g_out = rng.standard_normal((8, 3))
        t_opt.zero_grad()
        model(torch.from_numpy(x)).backward(torch.from_numpy(g_out))
        t_opt.step()
        net.zero_grad()
        net.forward(x)
        net.backward(g_out)
        opt.step(net)
    for (_, w), t_w in zip(net.named_params(), model.state_dict().values(), strict=True):
        np.testing.assert_allclose(w, t_w.numpy(), rtol=1e-12, atol=1e-14)


def test_sgd_without_momentum_is_plain_gradient_step() -> None:
    net = Sequential(Linear(2, 1, rng=0))
    w0 = net[0].params["weight"].copy()
    net[0].grads["weight"][:] = [[1.0, -2.0]]
    SGD(0.5).step(net)
    np.testing.assert_allclose(net[0].params["weight"], w0 - 0.5 * np.array([[1.0, -2.0]]))
