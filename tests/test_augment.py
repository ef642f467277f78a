"""Photo augmentation (cnnlab.data.augment): per image, a pure function of (seed, epoch, step), on batches."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data import Data
from cnnlab.data.augment import LEVELS, augment, batch_generator, parse_level, shift
from cnnlab.data.loaders import flips_allowed, make_batches
from cnnlab.data.splits import TensorSplit
from cnnlab.spec import ImageSpec, image_spec

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def photos(mnist5k) -> torch.Tensor:
    """48 real digits as colour images of 16x16 (each channel a different digit, so colour varies)."""
    grey = mnist5k.splits["val"].images[:144, :, 6:22, 6:22]
    return torch.cat([grey[0:48], grey[48:96], grey[96:144]], dim=1)


@pytest.mark.parametrize("level", [*LEVELS[1:], 2])
def test_augmentation_is_a_pure_function_of_seed_epoch_and_step(photos: torch.Tensor, level: str | int):
    before = torch.get_rng_state()
    first = augment(photos, level, batch_generator(1, 2, 3), flips=True)
    again = augment(photos, level, batch_generator(1, 2, 3), flips=True)
    other = augment(photos, level, batch_generator(1, 2, 4), flips=True)
    assert torch.equal(torch.get_rng_state(), before), "the global RNG (dropout's) must not move"
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.shape == photos.shape


@pytest.mark.parametrize("level", LEVELS[1:])
def test_each_image_draws_its_own_parameters(photos: torch.Tensor, level: str):
    same = photos[:1].expand(32, -1, -1, -1).contiguous()
    out = augment(same, level, batch_generator(0, 1, 0), flips=True)
    distinct = {out[i].float().numpy().tobytes() for i in range(len(out))}
    assert len(distinct) > 16


def test_shift_moves_each_image_by_at_most_the_pad_and_fills_black():
    x = torch.zeros(64, 1, 9, 9, dtype=torch.uint8)
    x[:, :, 4, 4] = 255
    out = shift(x, 2, torch.Generator().manual_seed(0))
    moves = set()
    for img in out:
        r, c = torch.nonzero(img[0])[0].tolist()
        assert abs(r - 4) <= 2 and abs(c - 4) <= 2 and int(img.sum()) == 255
        moves.add((r, c))
    assert len(moves) > 10


def test_levels_and_pixel_shifts_are_one_flag():
    assert [parse_level(v) for v in ("none", "light", "strong", "trivial", 0, "0", 3, "3")] == [
        "none", "light", "strong", "trivial", "none", "none", 3, 3,
    ]  # fmt: skip
    for bad in ("heavy", 9, -1, True, 1.5):
        with pytest.raises(ValueError):
            parse_level(bad)


def test_flips_are_refused_on_digits_unless_forced():
    assert not flips_allowed("mnist5k", "strong")
    assert not flips_allowed("digits", "light")
    assert flips_allowed("digits", "light", hflip="on")
    assert flips_allowed("folder:/x", "light") and flips_allowed("cifar10", 2)
    assert not flips_allowed("folder:/x", 2) and not flips_allowed("cifar10", "light", hflip="off")
    # a grey folder may hold digits, letters or documents: auto leaves it unmirrored
    assert not flips_allowed("folder:/x", "light", channels=1) and flips_allowed("folder:/x", "light", "on", 1)


def test_a_batch_is_augmented_the_same_when_an_epoch_is_resumed_in_the_middle(photos: torch.Tensor, mnist5k):
    data = Data("folder:/x", ImageSpec(mnist5k.spec.classes, 3, 16, (0.5,) * 3, (0.25,) * 3))
    split = TensorSplit(photos, mnist5k.splits["val"].labels[:48])
    batches = make_batches(split, data, 8, CPU, shuffle=True, seed=3, augment="strong")
    whole = list(batches.batches(epoch=2))
    resumed = list(batches.batches(epoch=2, start=4))
    for (x, y), (rx, ry) in zip(whole[4:], resumed):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert not torch.equal(whole[0][0], list(batches.batches(epoch=3))[0][0])


def test_tta_averages_over_flips_only_for_models_trained_with_them(tmp_path, mnist5k):
    """--tta: p = ½ (p(x) + p(mirror x)) for a model whose training flipped images; refused otherwise."""
    import cnnlab
    from cnnlab.assembly import checkpoint_header
    from cnnlab.checkpoint import save_atomic
    from cnnlab.config import TrainConfig
    from cnnlab.errors import UserError
    from cnnlab.models import build_model

    torch.manual_seed(0)
    model = build_model("fastnet", 3, 16, 4).eval()
    data = Data("folder:/photos", image_spec("folder:/photos", ["a", "b", "c", "d"], 3, 16, (0.5,) * 3, (0.25,) * 3))
    for name, level in (("flipped", "light"), ("plain", "none")):
        cfg = TrainConfig(model="fastnet", dataset="folder:/photos", augment=level)
        save_atomic({**checkpoint_header(cfg, data), "model": model.state_dict()}, tmp_path / f"{name}.pt")
    grey = mnist5k.splits["val"].images[:6, :, 6:22, 6:22]
    images = torch.cat([grey[:2], grey[2:4], grey[4:]], dim=1)
    plain = cnnlab.load(tmp_path / "flipped.pt")
    averaged = cnnlab.load(tmp_path / "flipped.pt", tta=True).probabilities(images)
    by_hand = (plain.probabilities(images) + plain.probabilities(images.flip(3))) / 2
    assert torch.allclose(averaged, by_hand, atol=1e-6) and not torch.allclose(averaged, plain.probabilities(images))
    with pytest.raises(UserError, match="--tta.*not trained with left-right flips"):
        cnnlab.load(tmp_path / "plain.pt", tta=True)
    # serve --tta answers a file as predict --tta does
    from fastapi.testclient import TestClient
    from PIL import Image

    from cnnlab.serve.app import create_app

    photo = tmp_path / "photo.png"
    Image.fromarray(images[0].permute(1, 2, 0).numpy()).save(photo)
    expected = cnnlab.predict(tmp_path / "flipped.pt", [photo], topk=4, tta=True)[0]
    with TestClient(create_app(tmp_path / "flipped.pt", tta=True)) as client:
        answer = client.post("/api/predict", files={"file": ("photo.png", photo.read_bytes(), "image/png")}).json()
    assert answer["label"] == expected["label"]
    assert answer["probability"] == pytest.approx(expected["probability"], abs=1e-6)
