"""Every NumPy layer against torch.autograd (float64, rel ≤ 1e-6) and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.backprop import layers as L
from cnnlab.backprop.convert import from_torch
from cnnlab.backprop.gradcheck import check_layer

TOL = 1e-6


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / max(‖a‖, ‖b‖)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


# (torch module, input shape): every layer type, convolutions with and without stride/padding
CASES = {
    "conv": (lambda: nn.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    "conv-stride2-pad1": (lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1), (2, 3, 9, 8)),
    "conv-pad2-k5": (lambda: nn.Conv2d(2, 3, 5, padding=2), (3, 2, 6, 6)),
    "conv-stride3": (lambda: nn.Conv2d(1, 2, 2, stride=3), (2, 1, 8, 7)),
    "maxpool": (lambda: nn.MaxPool2d(2), (2, 3, 8, 6)),
    "maxpool-odd": (lambda: nn.MaxPool2d(2), (2, 2, 7, 5)),
    "maxpool-overlap": (lambda: nn.MaxPool2d(3, stride=2), (2, 2, 9, 7)),
    "relu": (lambda: nn.ReLU(), (4, 3, 5, 5)),
    "sigmoid": (lambda: nn.Sigmoid(), (4, 7)),
    "linear": (lambda: nn.Linear(7, 5), (6, 7)),
    "flatten": (lambda: nn.Flatten(), (3, 2, 4, 5)),
    "logsoftmax": (lambda: nn.LogSoftmax(dim=1), (5, 6)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_layer_matches_autograd(case: str) -> None:
    make, shape = CASES[case]
    torch.manual_seed(0)
    module = make().double()
    layer = from_torch(nn.Sequential(module), np.float64)[0]
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    y = module(x)
    r = torch.randn_like(y)
    (y * r).sum().backward()  # E = Σ r ⊙ y, so ∂E/∂y = r

    out = layer.forward(x.detach().numpy())
    assert out.shape == tuple(y.shape)
    assert rel_error(out, y.detach().numpy()) <= TOL
    dx = layer.backward(r.numpy())
    assert dx.shape == tuple(x.shape)
    assert rel_error(dx, x.grad.numpy()) <= TOL
    for name, p in module.named_parameters():
        assert rel_error(layer.grads[name], p.grad.numpy()) <= TOL, name


@pytest.mark.parametrize("case", list(CASES))
def test_layer_matches_finite_differences(case: str) -> None:
    make, shape = CASES[case]
    torch.manual_seed(1)
    layer = from_torch(nn.Sequential(make()), np.float64)[0]
    x = np.random.default_rng(1).standard_normal(shape)
    rows = check_layer(layer, x, n_samples=8, seed=1)
    assert len(rows) == 1 + len(layer.params)
    for row in rows:
        assert row["n"] > 0 and row["passed"], row


def test_maxpool_ties_route_to_first_max_like_torch() -> None:
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)  # every window is a tie
    nn.MaxPool2d(2)(x).sum().backward()
    pool = L.MaxPool2d(2)
    pool.forward(x.detach().numpy())
    dx = pool.backward(np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(dx, x.grad.numpy())


def test_gradients_accumulate_until_zero_grad() -> None:
    lin = L.Linear(3, 2, rng=0)
    x = np.ones((4, 3))
    lin.forward(x)
    lin.backward(np.ones((4, 2)))
    once = lin.grads["weight"].copy()
    lin.forward(x)
    lin.backward(np.ones((4, 2)))
    np.testing.assert_allclose(lin.grads["weight"], 2 * once)
    lin.zero_grad()
    assert not lin.grads["weight"].any()


def test_default_init_has_torch_layout_and_bounds() -> None:
    conv = L.Conv2d(3, 8, 5, rng=0)
    lin = L.Linear(320, 10, rng=0)
    assert conv.params["weight"].shape == (8, 3, 5, 5) and conv.params["bias"].shape == (8,)
    assert lin.params["weight"].shape == (10, 320) and lin.params["bias"].shape == (10,)
    bound = 1 / np.sqrt(3 * 25)  # U(−1/√fan_in, 1/√fan_in), as torch's default
    assert np.abs(conv.params["weight"]).max() <= bound


# --- dtypes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_follows_parameters(dtype: type) -> None:
    conv = L.Conv2d(1, 2, 3, dtype=dtype, rng=0)
    lin = L.Linear(4, 3, dtype=dtype, rng=0)
    for x in (np.ones((2, 1, 5, 5), np.float32), np.ones((2, 1, 5, 5), np.float64)):
        y = conv.forward(x)
        assert y.dtype == dtype
        assert conv.backward(np.ones_like(y)).dtype == dtype
        assert conv.grads["weight"].dtype == dtype
    assert lin.forward(np.ones((2, 4), np.float64)).dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parameter_free_layers_keep_float_dtype(dtype: type) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(dtype)
    for layer in (L.ReLU(), L.Sigmoid(), L.MaxPool2d(2), L.Flatten()):
        y = layer.forward(x)
        assert y.dtype == dtype
        assert layer.backward(np.ones_like(y)).dtype == dtype
    assert L.LogSoftmax().forward(x[:, :, 0, 0]).dtype == dtype


def test_int_input_is_converted_to_layer_dtype() -> None:
    lin = L.Linear(3, 2, dtype=np.float32, rng=0)
    y = lin.forward(np.arange(6).reshape(2, 3))
    assert y.dtype == np.float32
    np.testing.assert_allclose(
        y, np.arange(6).reshape(2, 3).astype(np.float32) @ lin.params["weight"].T + lin.params["bias"], rtol=1e-6
    )
    assert L.ReLU().forward(np.array([[-1, 2]])).dtype == np.float64
    assert L.Flatten().forward(np.ones((2, 2, 2), dtype=bool)).dtype == np.float64


def test_float32_matches_float64_closely() -> None:
    conv64 = L.Conv2d(2, 3, 3, padding=1, rng=0)
    conv32 = L.Conv2d(2, 3, 3, padding=1, rng=0).astype(np.float32)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    np.testing.assert_allclose(conv32.forward(x), conv64.forward(x), rtol=1e-4, atol=1e-5)
    g = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    np.testing.assert_allclose(conv32.backward(g), conv64.backward(g), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "bad", ["abc", np.array(["a", "b"]), np.array([object(), object()]), np.ones(3, dtype=complex)]
)
def test_non_numeric_input_is_refused(bad: object) -> None:
    for layer in (L.Linear(2, 2, rng=0), L.ReLU(), L.Flatten()):
        with pytest.raises(TypeError, match=r"numeric"):
            layer.forward(bad)


# --- shape errors -------------------------------------------------------------------------------


def test_linear_shape_error_names_layer_and_shapes() -> None:
    with pytest.raises(ValueError) as info:
        L.Linear(320, 10, rng=0).forward(np.zeros((64, 500)))
    assert isinstance(info.value, L.ShapeError)
    assert str(info.value) == "Linear(320->10): expected input (N, 320), got (64, 500)"


def test_conv_shape_error_names_layer_and_shapes() -> None:
    with pytest.raises(
        L.ShapeError, match=r"Conv2d\(1->10, kernel=5\): expected input \(N, 1, H, W\), got \(8, 3, 28, 28\)"
    ):
        L.Conv2d(1, 10, 5, rng=0).forward(np.zeros((8, 3, 28, 28)))
    with pytest.raises(L.ShapeError, match=r"Conv2d\(1->10, kernel=5\).*\(2, 1, 3, 3\).*smaller than the kernel"):
        L.Conv2d(1, 10, 5, rng=0).forward(np.zeros((2, 1, 3, 3)))
    with pytest.raises(L.ShapeError, match=r"MaxPool2d\(kernel=2\): expected input \(N, C, H, W\), got \(4, 4\)"):
        L.MaxPool2d(2).forward(np.zeros((4, 4)))


def test_network_shape_error_from_wrong_image_size() -> None:
    from cnnlab.backprop.train import initial_net

    net = initial_net("seednet", 1, 28, 10, seed=0, dtype=np.float64)
    with pytest.raises(L.ShapeError, match=r"Linear\(320->10\): expected input \(N, 320\), got \(2, 500\)"):
        net.forward(np.zeros((2, 1, 32, 32)))


def test_backward_checks_grad_shape_and_order() -> None:
    lin = L.Linear(3, 2, rng=0)
    with pytest.raises(RuntimeError, match="before forward"):
        lin.backward(np.zeros((4, 2)))
    lin.forward(np.zeros((4, 3)))
    with pytest.raises(L.ShapeError, match=r"Linear\(3->2\): expected grad_out \(4, 2\).*got \(4, 3\)"):
        lin.backward(np.zeros((4, 3)))
