"""Same start, same batches, same hyperparameters: the NumPy engine follows the core trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.backprop.convert import build_torch_model, from_torch
from cnnlab.backprop.data import load_arrays
from cnnlab.backprop.train import train_numpy_net

STEPS = 50


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread: the numbers do not change, but the test stays fast on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize(("loss", "classes"), [("nll", None), ("mse", None), ("logistic", ["3", "8"])])
def test_first_50_sgd_steps_match_core_trainer(loss: str, classes: list[str] | None) -> None:
    from cnnlab.config import TrainConfig
    from cnnlab.data import load_data
    from cnnlab.engine import fit

    cfg = TrainConfig(
        model="seednet", dataset="mnist5k", loss=loss, classes=classes or [], optimizer="sgd",
        lr=0.01, momentum=0.5, batch_size=64, epochs=9, seed=1, max_steps=STEPS,
        device="cpu", dtype="float64", progress=False,
    )  # fmt: skip
    data = load_data(cfg.dataset, classes=classes)
    num_classes = 1 if loss == "logistic" else len(data.spec.classes)
    torch.manual_seed(cfg.seed)
    model = build_torch_model("seednet", data.spec.channels, data.spec.size, num_classes).double()
    net = from_torch(model, np.float64)  # identical float64 weights, copied before training

    core: list[float] = []
    fit(model, data, cfg, on_step=lambda step, value: core.append(float(value)))

    ours: list[float] = []
    _, trained = train_numpy_net(
        epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum, batch_size=cfg.batch_size, seed=cfg.seed,
        progress=False, loss=loss, classes=classes, net=net, max_steps=STEPS,
        data=load_arrays(cfg.dataset, classes=classes), on_step=lambda step, value: ours.append(value),
    )  # fmt: skip

    assert len(core) == len(ours) == STEPS
    np.testing.assert_allclose(ours, core, rtol=0, atol=1e-4)
    assert ours[-1] < ours[0]  # and it is learning
    for (_, w), t_w in zip(trained.named_params(), model.state_dict().values(), strict=True):
        np.testing.assert_allclose(w, t_w.numpy(), rtol=1e-6, atol=1e-8)
