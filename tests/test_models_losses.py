from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UserError
from cnnlab.losses import LOSSES, ce, logistic, mse, nats_to_bits, nll, predictions, probabilities
from cnnlab.models import MODELS, build_model, count_parameters


def test_seednet_is_exactly_the_tutorial_network():
    model = build_model("seednet", 1, 28, 10)
    kinds = [type(layer) for layer in model]
    assert kinds == [
        nn.Conv2d,
        nn.MaxPool2d,
        nn.ReLU,
        nn.Conv2d,
        nn.MaxPool2d,
        nn.ReLU,
        nn.Flatten,
        nn.Linear,
        nn.LogSoftmax,
    ]
    assert (model[0].in_channels, model[0].out_channels, model[0].kernel_size) == (1, 10, (5, 5))
    assert (model[3].in_channels, model[3].out_channels) == (10, 20)
    assert (model[7].in_features, model[7].out_features) == (320, 10)
    assert count_parameters(model) == 8490


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("channels, size, classes", [(1, 28, 10), (1, 8, 10), (3, 32, 10), (1, 28, 1), (3, 20, 4)])
def test_every_model_adapts_to_the_data(name: str, channels: int, size: int, classes: int):
    model = build_model(name, channels, size, classes).eval()
    out = model(torch.randn(3, channels, size, size))
    assert out.shape == (3, classes)
    if classes > 1:  # log-probabilities
        assert torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)
    else:
        assert not isinstance(model[-1], nn.LogSoftmax)


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model 'resnet'"):
        build_model("resnet", 1, 28, 10)


def _batch(seed: int = 0, n: int = 6, k: int = 4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64)
    return logits, torch.randint(0, k, (n,), generator=g)


def test_nll_is_the_mean_negative_log_probability_of_the_target():
    logits, y = _batch()
    logp = logits.log_softmax(1)
    assert torch.isclose(nll(logp, y), -logp[torch.arange(len(y)), y].mean())


def test_ce_on_logits_equals_ce_on_log_probabilities_and_bits_use_log2():
    logits, y = _batch(1)
    assert torch.isclose(ce(logits, y), ce(logits.log_softmax(1), y))
    p = logits.softmax(1)[torch.arange(len(y)), y]
    assert math.isclose(nats_to_bits(float(ce(logits, y))), float(-torch.log2(p).mean()), rel_tol=1e-9)


def test_mse_is_the_tutorials_half_mean_squared_error():
    logits, y = _batch(2)
    probs = logits.softmax(1)
    onehot = F.one_hot(y, 4).double()
    expected = sum(((probs[n] - onehot[n]) ** 2).sum() for n in range(len(y))) / (2 * len(y))
    assert torch.isclose(mse(logits.log_softmax(1), y), expected)


def test_logistic_is_binary_cross_entropy_of_the_sigmoid():
    z = torch.tensor([[2.0], [-1.0], [0.5]], dtype=torch.float64)
    y = torch.tensor([1, 0, 0])
    s = torch.sigmoid(z.squeeze(1))
    expected = -(y * s.log() + (1 - y) * (1 - s).log()).mean()
    assert torch.isclose(logistic(z, y), expected)
    assert predictions(z).tolist() == [1, 0, 1]
    assert torch.allclose(probabilities(z).sum(1), torch.ones(3, dtype=torch.float64))


def test_every_loss_gives_gradients():
    for name, fn in LOSSES.items():
        k = 1 if name == "logistic" else 4
        out = torch.randn(5, k, requires_grad=True)
        target = torch.randint(0, 2 if k == 1 else k, (5,))
        fn(out.log_softmax(1) if k > 1 else out, target).backward()
        assert out.grad is not None and torch.isfinite(out.grad).all()
