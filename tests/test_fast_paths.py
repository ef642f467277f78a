"""The fast data paths: every sample once per epoch in the seeded order, augmentation that only moves
(and, for photos, mirrors) pixels, the fast trainer learning as well as the tutorial's loop, and the
compiled trainer computing what the eager one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_image_folder

from cnnlab.data import Data, TensorSplit, epoch_order, load_data, make_batches
from cnnlab.data.images import read_image
from cnnlab.data.loaders import MIRROR_DATASETS
from cnnlab.spec import ImageSpec, to_model_input

CPU = torch.device("cpu")


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` [C, H, W] moved by (dy, dx) pixels, black where nothing moved in."""
    out = torch.zeros_like(image)
    h, w = image.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _candidates(image: torch.Tensor, max_shift: int, mirrored: bool) -> list[torch.Tensor]:
    """Every image the augmentation may produce from ``image``."""
    sources = [image, image.flip(2)] if mirrored else [image]
    shifts = range(-max_shift, max_shift + 1)
    return [_shifted(src, dy, dx) for src in sources for dy in shifts for dx in shifts]


def test_folder_batches_visit_every_file_once_in_the_seeded_order(tmp_path: Path, mnist5k):
    folder = make_image_folder(tmp_path / "imgs", mnist5k, per_class=10)
    data = load_data(f"folder:{folder}", memory_budget=0)  # no memory: the files stream
    split = data.splits["train"]
    batches = make_batches(split, data, 5, CPU, shuffle=True, seed=3)
    for epoch in (1, 2):
        xs, ys = zip(*batches.batches(epoch))
        order = epoch_order(len(split), 3, epoch)
        assert torch.equal(torch.cat(ys), split.labels[order])
        expected = torch.stack([read_image(split.paths[i], data.spec.channels, data.spec.size) for i in order.tolist()])
        assert torch.allclose(torch.cat(xs), to_model_input(data.spec, expected))
    assert [len(y) for y in ys] == [5] * (len(split) // 5) + ([len(split) % 5] if len(split) % 5 else [])


def test_resumed_folder_epoch_continues_where_it_stopped(tmp_path: Path, mnist5k):
    data = load_data(f"folder:{make_image_folder(tmp_path / 'imgs', mnist5k, per_class=6)}")
    batches = make_batches(data.splits["train"], data, 4, CPU, shuffle=True, seed=8)
    whole = torch.cat([y for _, y in batches.batches(2)])
    rest = torch.cat([y for _, y in batches.batches(2, start=2)])
    assert torch.equal(rest, whole[8:])


@pytest.mark.parametrize("name", ["mnist5k", "cifar10"])
def test_augmented_batches_visit_every_sample_once_and_only_move_pixels(name: str, mnist5k):
    """Each augmented image is its source shifted by ≤ 2 pixels (black fill), mirrored only for photos."""
    source = mnist5k.splits["val"].subset(torch.arange(200))
    images = source.images.repeat(1, 3, 1, 1) if name == "cifar10" else source.images
    c = images.shape[1]
    data = Data(name, ImageSpec(mnist5k.spec.classes, c, 28, (0.2,) * c, (0.3,) * c))
    split = TensorSplit(images, source.labels)
    batches = make_batches(split, data, 32, CPU, shuffle=True, seed=4, augment=2)
    xs, ys = zip(*batches.batches(epoch=2))
    order = epoch_order(len(split), 4, 2)
    assert torch.equal(torch.cat(ys), split.labels[order])
    mirrored = name in MIRROR_DATASETS
    flips = moved = 0
    for x, i in zip(torch.cat(xs), order.tolist()):
        options = [to_model_input(data.spec, c.unsqueeze(0))[0] for c in _candidates(images[i], 2, mirrored)]
        match = [k for k, c in enumerate(options) if torch.equal(x, c)]
        assert match, f"sample {i} is not a shift{' or mirror' if mirrored else ''} of its source"
        flips += match[0] >= 25
        moved += not torch.equal(x, options[12])  # index 12: no shift, no mirror
    assert moved > 150  # 24 of 25 shifts move the image
    if mirrored:
        assert 50 < flips < 150  # about half mirrored
    else:
        assert flips == 0


def test_the_same_seed_gives_the_same_augmented_batches(mnist5k):
    def first_batch() -> torch.Tensor:
        batches = make_batches(mnist5k.splits["train"], mnist5k, 64, CPU, shuffle=True, seed=2, augment=3)
        return next(batches.batches(epoch=1))[0]

    assert torch.equal(first_batch(), first_batch())


def test_channels_last_batches_hold_the_same_numbers(mnist5k):
    plain = make_batches(mnist5k.splits["val"], mnist5k, 100, CPU)
    fast = make_batches(mnist5k.splits["val"], mnist5k, 100, CPU, channels_last=True)
    x, x_cl = next(plain.batches())[0], next(fast.batches())[0]
    assert x_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, x_cl)


@pytest.mark.slow
def test_fast_trainer_and_tutorial_loop_reach_the_same_accuracy(mnist5k):
    """Two epochs of the tutorial recipe on mnist5k from the same weights in the same batch order:
    the tutorial's per-sample PIL → ToTensor → Normalize loop, and cnnlab's trainer.

    The loops differ only in how a batch is made and how often the host reads the loss, so every
    step computes the same numbers up to float rounding (channels-last or fused kernels sum in
    another order). At most a few of the 1,000 validation digits may flip: 0.5 points, the
    tolerance of the issue. (With each loop shuffling on its own, two-epoch accuracies spread over
    83-90 %: ordering noise would hide a real difference.)
    """
    from cnnlab.bench.measure import bench

    result = bench(dataset="mnist5k", model="seednet", epochs=2, matmul_size=256, fast_recipe=False)
    ref, fast = result["reference"], result["cnnlab"]
    assert ref["val_accuracy"] > 0.8
    assert abs(fast["val_accuracy"] - ref["val_accuracy"]) <= 0.005
    assert fast["val_loss"] == pytest.approx(ref["val_loss"], rel=0.02)
    assert result["accuracy_difference"] == pytest.approx(fast["val_accuracy"] - ref["val_accuracy"])


@pytest.mark.slow
def test_compiled_trainer_computes_what_the_eager_one_does(mnist5k):
    """``--compile`` (torch.compile, inductor's C++ kernels on the CPU) takes the same 30 steps as
    eager PyTorch from the same weights: the same losses and weights up to float rounding."""
    from cnnlab.assembly import model_for, seed_everything
    from cnnlab.config import TrainConfig, validate
    from cnnlab.engine import fit

    small = Data(
        "mnist5k", mnist5k.spec,
        {"train": mnist5k.splits["train"].subset(torch.arange(960)), "val": mnist5k.splits["val"].subset(torch.arange(200))},
    )  # fmt: skip
    from torch._dynamo.utils import counters

    counters.clear()
    runs = {}
    for compiled in (False, True):
        cfg = validate(TrainConfig(epochs=2, batch_size=32, max_steps=30, compile=compiled, progress=False))
        seed_everything(cfg.seed)
        model = model_for(cfg, small)
        state = fit(model, small, cfg)
        runs[compiled] = (state.rows()[-1], model.state_dict())
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled run really went through torch.compile
    (eager_row, eager_weights), (compiled_row, compiled_weights) = runs[False], runs[True]
    assert compiled_row["steps"] == eager_row["steps"] == 30
    assert compiled_row["train_loss"] == pytest.approx(eager_row["train_loss"], rel=1e-4)
    for name, weight in eager_weights.items():
        assert torch.allclose(compiled_weights[name], weight, atol=1e-5, rtol=1e-4), name
