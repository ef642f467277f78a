from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cnnlab
from cnnlab.assembly import make_optimizer, make_scheduler
from cnnlab.config import TrainConfig
from cnnlab.data import epoch_order
from cnnlab.engine import fit
from cnnlab.errors import UserError
from cnnlab.models import build_model
from cnnlab.spec import to_model_input


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.slow
def test_plain_sgd_is_exactly_the_gradient_descent_update(mnist5k):
    """With momentum 0, one engine step is w ← w − α ∂E/∂w on the first batch of the epoch order."""
    cfg = TrainConfig(momentum=0.0, lr=0.05, max_steps=1, progress=False, dtype="float64")
    torch.manual_seed(0)
    model = build_model("seednet", 1, 28, 10).double()
    reference = build_model("seednet", 1, 28, 10).double()
    reference.load_state_dict(model.state_dict())
    fit(model, mnist5k, cfg)
    index = epoch_order(4000, cfg.seed, 1)[: cfg.batch_size]
    x = to_model_input(mnist5k.spec, mnist5k.splits["train"].images[index]).double()
    loss = torch.nn.functional.nll_loss(reference(x), mnist5k.splits["train"].labels[index])
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    for (name, w_before), g, w_after in zip(reference.named_parameters(), grads, model.parameters()):
        assert torch.allclose(w_after, w_before - 0.05 * g, atol=1e-12), name


@pytest.mark.slow
def test_training_learns_and_is_reproducible(tmp_path: Path):
    a = cnnlab.train(epochs=2, out=str(tmp_path / "a"), progress=False)
    cnnlab.train(epochs=2, out=str(tmp_path / "b"), progress=False)
    assert a.history[1]["train_loss"] < a.history[0]["train_loss"]
    assert a.history[-1]["val_acc"] > 0.8
    for key, value in _weights(tmp_path / "a" / "last.pt").items():
        assert torch.equal(value, _weights(tmp_path / "b" / "last.pt")[key]), key


@pytest.mark.slow
def test_resume_mid_epoch_gives_the_same_weights(tmp_path: Path):
    """Stop after 30 steps (inside epoch 2), resume, finish: same weights as one uninterrupted run."""
    common = dict(dataset="digits", epochs=2, deterministic=True, progress=False, augment=1, model="examplenet")
    cnnlab.train(out=str(tmp_path / "full"), **common)
    cnnlab.train(out=str(tmp_path / "cut"), max_steps=30, **common)
    ckpt = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (2, 7, 30)  # 23 batches per epoch
    resumed = cnnlab.train(resume=str(tmp_path / "cut"), max_steps=None)
    full = _weights(tmp_path / "full" / "last.pt")
    for key, value in _weights(tmp_path / "cut" / "last.pt").items():
        assert torch.equal(value, full[key]), key
    assert resumed.history[-1]["epoch"] == 2


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "adadelta"])
@pytest.mark.parametrize("schedule", ["none", "step", "cosine", "onecycle"])
def test_optimizers_and_schedules(mnist5k, optimizer: str, schedule: str):
    """Every optimiser lowers the loss of a real batch by real steps; every schedule shapes the rate."""
    torch.manual_seed(0)
    model = build_model("seednet", 1, 28, 10)
    cfg = TrainConfig(optimizer=optimizer, schedule=schedule, epochs=2, lr=1.0 if optimizer == "adadelta" else 0.01)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, steps_per_epoch=5)
    train = mnist5k.splits["train"]
    x = to_model_input(mnist5k.spec, train.images[:64])
    y = train.labels[:64]
    start = [p.detach().clone() for p in model.parameters()]
    losses, lrs = [], []
    for _ in range(10):
        opt.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        lrs.append(sched.get_last_lr()[0])
    assert all(not torch.equal(a, b) for a, b in zip(start, model.parameters()))  # every tensor was updated
    with torch.no_grad():
        assert float(F.nll_loss(model(x), y)) < losses[0]
    if schedule == "none":
        assert len(set(lrs)) == 1
    elif schedule == "step":
        assert lrs[4] == pytest.approx(cfg.lr * cfg.gamma) and lrs[3] == pytest.approx(cfg.lr)
    elif schedule == "cosine":
        assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    else:  # one-cycle: up to the peak lr in the first quarter, then down
        peak = lrs.index(max(lrs))
        assert 0.9 * cfg.lr < max(lrs) <= cfg.lr and 0 < peak < 5 and lrs[-1] < lrs[0]


@pytest.mark.slow
def test_logistic_regression_on_two_classes(tmp_path: Path):
    result = cnnlab.train(loss="logistic", classes=["3", "8"], epochs=2, out=str(tmp_path / "r"), progress=False)
    assert result.best_val_acc > 0.9
    predictor = cnnlab.load(tmp_path / "r")
    assert predictor.spec.classes == ("3", "8") and predictor.model[-1].out_features == 1


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(lr=0), "--lr must be > 0"),
        (dict(batch_size=0), "--batch-size must be > 0"),
        (dict(epochs=0), "--epochs must be 1 to"),
        (dict(loss="logistic"), "needs a two-class task"),
        (dict(loss="hinge"), "unknown loss"),
        (dict(optimizer="lbfgs"), "unknown optimizer"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path: Path, options: dict, message: str):
    with pytest.raises(UserError, match=message):
        cnnlab.train(out=str(tmp_path / "r"), **options)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_an_existing_run_is_not_overwritten_by_accident(tmp_path: Path):
    cnnlab.train(max_steps=2, epochs=1, out=str(tmp_path / "r"), progress=False)
    with pytest.raises(UserError, match="already holds a run"):
        cnnlab.train(max_steps=2, epochs=1, out=str(tmp_path / "r"), progress=False)
    cnnlab.train(max_steps=2, epochs=1, out=str(tmp_path / "r"), progress=False, overwrite=True)
