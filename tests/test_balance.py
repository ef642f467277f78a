"""--balance weights|sampler on unbalanced classes: the loss weights, the weighted draw of each epoch,
exact resume with the sampler, and the minority class's recall rising over --balance none."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_image_folder
from PIL import Image

import cnnlab
from cnnlab.assembly import class_weights, make_loss
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.data import Data, TensorSplit, epoch_order, load_data, make_batches
from cnnlab.data.loaders import balanced_sample_weights
from cnnlab.engine import fit
from cnnlab.errors import UserError
from cnnlab.models import build_model, head_parameters
from cnnlab.spec import to_model_input

CPU = torch.device("cpu")
MAJORITY, MINORITY = 4, 9  # confusable digits: class 9 is the 1-in-11 minority


def _digits(split: TensorSplit, digit: int, start: int, count: int) -> torch.Tensor:
    return split.images[torch.nonzero(split.labels == digit).squeeze(1)[start : start + count]]


def _unbalanced_data(mnist5k, majority: int = 200, minority: int = 20) -> Data:
    """mnist5k's 4s and 9s as classes 0 and 1: ``majority``:``minority`` for training, 100:100 for val."""
    train, val = mnist5k.splits["train"], mnist5k.splits["val"]

    def two_classes(split: TensorSplit, counts: tuple[int, int]) -> TensorSplit:
        images = [_digits(split, d, 0, k) for d, k in zip((MAJORITY, MINORITY), counts)]
        return TensorSplit(torch.cat(images), torch.tensor([0] * counts[0] + [1] * counts[1]))

    splits = {"train": two_classes(train, (majority, minority)), "val": two_classes(val, (100, 100))}
    return Data("mnist5k", dataclasses.replace(mnist5k.spec, classes=(str(MAJORITY), str(MINORITY))), splits)


@pytest.fixture(scope="module")
def unbalanced_folder(tmp_path_factory: pytest.TempPathFactory, mnist5k) -> Path:
    """PNG digits 4 and 9: train/ 300:30 (10:1), val/ 50:50 and test/ 100:100 (balanced, from mnist5k's val)."""
    root = tmp_path_factory.mktemp("unbalanced")
    layout = {  # split → (source split, first index per digit, count per digit)
        "train": ("train", 0, {MAJORITY: 300, MINORITY: 30}),
        "val": ("train", 350, {MAJORITY: 50, MINORITY: 50}),
        "test": ("val", 0, {MAJORITY: 100, MINORITY: 100}),
    }
    for split, (source, start, counts) in layout.items():
        for digit, count in counts.items():
            folder = root / split / str(digit)
            folder.mkdir(parents=True)
            for k, image in enumerate(_digits(mnist5k.splits[source], digit, start, count)):
                Image.fromarray(image[0].numpy()).save(folder / f"{k}.png")
    for budget in (None, 0.0):  # decoded (or checked, to stream) into the cache before runs that compare weights
        load_data(f"folder:{root}", memory_budget=budget)
    return root


def test_class_weights_are_n_over_k_times_the_class_count():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])  # N = 6, K = 4, counts 3, 1, 2, 0
    weights = class_weights(labels, 4)
    assert torch.allclose(weights, torch.tensor([6 / 12, 6 / 4, 6 / 8, 0.0], dtype=torch.float64))
    assert weights[labels].mean() == pytest.approx(3 / 4)  # average 1 over the classes present: 3 of 4 here
    assert class_weights(torch.tensor([0, 1, 1, 1]), 2)[0] == 3 * class_weights(torch.tensor([0, 1, 1, 1]), 2)[1]


def test_weighted_nll_and_ce_are_the_weighted_means_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(7, 3, dtype=torch.float64)
    log_probs = logits.log_softmax(1)
    target = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    weights = class_weights(target, 3).to(torch.float64)
    w = weights[target]
    by_hand = float((w * -log_probs[torch.arange(7), target]).sum() / w.sum())
    nll = make_loss(TrainConfig(balance="weights", loss="nll"), weights)
    ce = make_loss(TrainConfig(balance="weights", loss="ce"), weights)
    assert float(nll(log_probs, target)) == pytest.approx(by_hand, rel=1e-12)
    assert float(ce(logits, target)) == pytest.approx(by_hand, rel=1e-12)
    assert float(nll(log_probs, target)) != pytest.approx(float(F.nll_loss(log_probs, target)), rel=1e-3)
    with pytest.raises(UserError, match="--balance weights works with --loss nll or ce"):
        make_loss(TrainConfig(balance="weights", loss="mse"), weights)


def test_class_weights_with_label_smoothing_weight_each_sample_by_its_own_class():
    """torch's cross_entropy(weight=, label_smoothing=) weights every sample's smoothing term by all the
    classes' weights, which pulled predictions to the rarest class (the 21 % collapse of
    --recipe fast --balance weights); the loss is the weighted mean of per-sample smoothed losses."""
    logits = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 0, 0, 1])
    weights = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)  # class 2 has no sample in the batch
    loss = make_loss(TrainConfig(balance="weights", loss="ce", label_smoothing=0.3), weights)(logits, target)
    assert loss.item() == pytest.approx(math.log(3), rel=1e-12)  # every sample's smoothed loss is log 3 here
    loss.backward()
    plain = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    F.cross_entropy(plain, target, label_smoothing=0.3, reduction="none")[0].backward()
    assert torch.allclose(logits.grad[0] / logits.grad[0].abs().sum(), plain.grad[0] / plain.grad[0].abs().sum())
    assert float(logits.grad[:, 2].sum()) > 0  # the absent class is pushed down, not up


def test_sampler_order_is_a_pure_function_of_seed_and_epoch():
    labels = torch.tensor([0] * 90 + [1] * 9)
    weights = balanced_sample_weights(labels)
    assert torch.allclose(weights, torch.tensor([1 / 90] * 90 + [1 / 9] * 9, dtype=torch.float64))
    first = epoch_order(len(labels), 5, 1, weights)
    assert torch.equal(first, epoch_order(len(labels), 5, 1, weights.clone()))
    assert not torch.equal(first, epoch_order(len(labels), 5, 2, weights))
    assert not torch.equal(first, epoch_order(len(labels), 6, 1, weights))
    assert len(first) == len(labels) and int(first.min()) >= 0 and int(first.max()) < len(labels)
    assert len(set(first.tolist())) < len(labels)  # with replacement: some samples repeat, some are left out


def test_sampler_draws_a_ten_to_one_set_about_evenly():
    labels = torch.tensor([0] * 2000 + [1] * 200)
    weights = balanced_sample_weights(labels)
    for epoch in (1, 2, 3):
        share = float(labels[epoch_order(len(labels), 1, epoch, weights)].float().mean())
        assert 0.45 < share < 0.55, share  # 1 in 11 without the sampler; std of the share ≈ 0.011
    assert float(labels[epoch_order(len(labels), 1, 1)].float().mean()) == pytest.approx(1 / 11)


def test_batches_with_sample_weights_follow_the_weighted_order_on_every_rank(mnist5k):
    data = _unbalanced_data(mnist5k, 90, 9)
    split = data.splits["train"]
    weights = balanced_sample_weights(split.labels)
    whole = make_batches(split, data, 16, CPU, shuffle=True, seed=2, sample_weights=weights)
    ys = torch.cat([y for _, y in whole.batches(3)])
    assert torch.equal(ys, split.labels[epoch_order(len(split), 2, 3, weights)])
    assert torch.equal(torch.cat([y for _, y in whole.batches(3, start=2)]), ys[32:])  # resumed mid-epoch
    ranks = [
        make_batches(split, data, 16, CPU, shuffle=True, seed=2, sample_weights=weights, rank=r, world_size=2)
        for r in (0, 1)
    ]
    for b, (y0, y1) in enumerate(zip(*[[y for _, y in r.batches(3)] for r in ranks])):
        assert torch.equal(torch.cat([y0, y1]).sort().values, ys[16 * b : 16 * (b + 1)].sort().values)
    in_order = make_batches(split, data, 16, CPU, seed=2, sample_weights=weights)  # evaluation: no draw
    assert torch.equal(torch.cat([y for _, y in in_order.batches(3)]), split.labels)


def test_streamed_folder_batches_take_the_same_weighted_draw(tmp_path: Path, mnist5k):
    folder = make_image_folder(tmp_path / "imgs", mnist5k, per_class=10)
    data = load_data(f"folder:{folder}", memory_budget=0)  # no memory: the files stream
    split = data.splits["train"]
    weights = balanced_sample_weights(split.labels)
    batches = make_batches(split, data, 5, CPU, shuffle=True, seed=3, sample_weights=weights)
    batches.workers = 0
    torch.manual_seed(0)
    ys = torch.cat([y for _, y in batches.batches(2)])
    assert torch.equal(ys, split.labels[epoch_order(len(split), 3, 2, weights)])
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))  # the global RNG (dropout's) is untouched: resume stays exact


def test_fit_trains_on_the_weighted_loss_and_validates_on_the_plain_mean(mnist5k):
    """One plain SGD step is w ← w − α ∂E_w/∂w with the class-weighted loss; val_loss is the unweighted mean."""
    data = _unbalanced_data(mnist5k)
    cfg = TrainConfig(
        momentum=0.0, lr=0.05, max_steps=1, progress=False, dtype="float64", balance="weights", device="cpu"
    )
    torch.manual_seed(0)
    model = build_model("seednet", 1, 28, 2).double()
    reference = build_model("seednet", 1, 28, 2).double()
    reference.load_state_dict(model.state_dict())
    state = fit(model, data, cfg)
    train = data.splits["train"]
    index = epoch_order(len(train), cfg.seed, 1)[: cfg.batch_size]
    x = to_model_input(data.spec, train.images[index]).double()
    weights = class_weights(train.labels, 2)
    loss = F.nll_loss(reference(x), train.labels[index], weight=weights)
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    for (name, w_before), g, w_after in zip(reference.named_parameters(), grads, model.parameters()):
        assert torch.allclose(w_after, w_before - 0.05 * g, atol=1e-12), name
    val = data.splits["val"]
    model.eval()
    with torch.no_grad():
        plain = F.nll_loss(model(to_model_input(data.spec, val.images).double()), val.labels)
    assert state.partial["val_loss"] == pytest.approx(float(plain), rel=1e-9)


def test_freeze_trains_only_the_head_for_the_first_epochs(mnist5k):
    data = _unbalanced_data(mnist5k, 64, 64)  # one batch per epoch
    torch.manual_seed(0)
    model = build_model("seednet", 1, 28, 2)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    head = {id(p) for p in head_parameters(model)}
    fit(model, data, TrainConfig(freeze=1, epochs=1, progress=False, device="cpu", channels_last=False))
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != (id(p) in head), name  # the head moved, nothing else did
    fit(model, data, TrainConfig(freeze=1, epochs=2, progress=False, device="cpu", channels_last=False))
    assert all(not torch.equal(p, before[name]) for name, p in model.named_parameters())


@pytest.mark.slow
@pytest.mark.parametrize("memory_budget", [None, 0.0], ids=["in-memory", "streamed"])
def test_resume_mid_epoch_with_the_sampler_gives_the_same_weights(
    tmp_path: Path, unbalanced_folder: Path, memory_budget: float | None
):
    """Stop inside epoch 2, resume, finish: the same weights and metrics as one uninterrupted run."""
    common = dict(
        dataset=f"folder:{unbalanced_folder}", recipe="tutorial", balance="sampler", epochs=2, deterministic=True,
        progress=False,
        memory_budget=memory_budget,
    )  # fmt: skip
    full = cnnlab.train(out=tmp_path / "full", **common)
    cnnlab.train(out=tmp_path / "cut", max_steps=8, **common)  # 330 images, batch 64: 6 steps per epoch
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["batch"] == 2
    resumed = cnnlab.train(resume=tmp_path / "cut", max_steps=None)
    whole = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    for key, value in torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"].items():
        assert torch.equal(value, whole[key]), key
    assert resumed.history[-1]["val_loss"] == full.history[-1]["val_loss"]
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-12)


@pytest.mark.slow
def test_weights_and_sampler_raise_the_minority_recall_on_a_ten_to_one_set(
    tmp_path: Path, unbalanced_folder: Path, capsys
):
    """train/ holds 300 fours and 30 nines; on the balanced test/ split `cnnlab eval --json` reports the
    nines' recall, which --balance weights and --balance sampler raise well above --balance none's."""
    recall, accuracy = {}, {}
    for balance in ("none", "weights", "sampler"):
        run = tmp_path / balance
        train = ["train", "--dataset", f"folder:{unbalanced_folder}", "--recipe", "tutorial", "--balance", balance]
        train += ["--epochs", "4"]
        assert main([*train, "--lr", "0.05", "--seed", "1", "--out", str(run), "--quiet"]) == 0
        capsys.readouterr()
        assert main(["eval", str(run), "--split", "test", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        per_class = {row["class"]: row for row in result["per_class"]}
        assert per_class[str(MINORITY)]["support"] == per_class[str(MAJORITY)]["support"] == 100
        recall[balance], accuracy[balance] = per_class[str(MINORITY)]["recall"], result["accuracy"]
    for balance in ("weights", "sampler"):  # over seeds 1-10 the smallest rise was 0.06 (none 0.93 → 0.99)
        assert recall[balance] > recall["none"] + 0.05, recall
        assert accuracy[balance] >= accuracy["none"], accuracy  # test/ is balanced: accuracy is the mean recall
