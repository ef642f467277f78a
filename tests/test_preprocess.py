"""The one preprocessing of an image into model input (:mod:`cnnlab.preprocess`), on real MNIST digits
drawn the ways people give them: dark on white, on yellow paper, on a grey noisy scan, in a wide image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.data.images import fit_image
from cnnlab.errors import UserError
from cnnlab.preprocess import Preprocessing, center_like_mnist, prepare_digit, require_content
from cnnlab.spec import image_spec


def drawn(
    digit: np.ndarray,
    paper: tuple[int, int, int] = (255, 255, 255),
    noise: float = 0.0,
    canvas: tuple[int, int] = (280, 280),
    offset: tuple[int, int] = (30, 90),
    seed: int = 0,
) -> Image.Image:
    """An MNIST digit (light on black) redrawn 6x larger in near-black ink (20) on ``paper`` of size
    ``canvas`` (width, height) at ``offset``, with Gaussian noise of ``noise`` grey levels."""
    ink = np.asarray(Image.fromarray(digit).resize((168, 168), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    page = np.ones((canvas[1], canvas[0], 3), np.float32) * np.array(paper, np.float32)
    x, y = offset
    page[y : y + 168, x : x + 168] = page[y : y + 168, x : x + 168] * (1 - ink[..., None]) + 20 * ink[..., None]
    page += np.random.default_rng(seed).normal(0, noise, page.shape)
    return Image.fromarray(np.clip(page, 0, 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def val_digits(mnist5k) -> tuple[torch.Tensor, torch.Tensor]:
    val = mnist5k.splits["val"]
    return val.images[:120], val.labels[:120]


def mass_centre(image: np.ndarray) -> tuple[float, float]:
    total = image.sum()
    return (
        float((image.sum(axis=1) * np.arange(image.shape[0])).sum() / total),
        float((image.sum(axis=0) * np.arange(image.shape[1])).sum() / total),
    )


def test_center_like_mnist_fits_the_ink_in_a_20_pixel_box_centred_by_mass():
    ink = np.zeros((90, 140), dtype=np.float32)
    ink[10:70, 100:130] = 1.0  # a 60×30 bar far from the centre
    out = center_like_mnist(ink, size=28, box=20)
    rows = np.flatnonzero((out > 0.1).any(axis=1))
    cols = np.flatnonzero((out > 0.1).any(axis=0))
    assert out.shape == (28, 28) and rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 == 10
    cy, cx = mass_centre(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_center_like_mnist_ignores_isolated_specks_when_cropping():
    ink = np.zeros((200, 200), dtype=np.float32)
    ink[80:140, 90:110] = 1.0
    ink[3, 3] = ink[190, 195] = 1.0  # two specks of noise far away
    rows = np.flatnonzero((center_like_mnist(ink) > 0.1).any(axis=1))
    assert rows[-1] - rows[0] + 1 == 20  # the bar fills the box: the specks did not widen the crop


def test_a_blank_image_stays_blank_and_is_refused_as_empty():
    assert not center_like_mnist(np.zeros((50, 50), dtype=np.float32)).any()
    blank = prepare_digit(Image.new("RGB", (300, 200), (250, 235, 150)))
    assert not blank.any()
    with pytest.raises(UserError, match="the image is empty"):
        require_content(blank, "x.png")


def test_dark_ink_on_white_becomes_light_ink_on_black_and_mnist_digits_stay_as_they_are(mnist5k):
    digit = mnist5k.splits["val"].images[7, 0].numpy()
    from_drawing = prepare_digit(drawn(digit))
    from_digit = prepare_digit(Image.fromarray(digit))
    assert from_drawing.shape == (1, 28, 28) and from_drawing.dtype == torch.uint8
    assert from_drawing[0, 0, 0] == 0 and from_drawing.max() > 200  # light ink on black, like MNIST
    # the digit as MNIST gives it comes back nearly unchanged (it was made by this recipe)
    assert (from_digit.float() - torch.from_numpy(digit).float()).abs().mean() < 12
    assert torch.corrcoef(torch.stack([from_drawing.flatten(), from_digit.flatten()]).float())[0, 1] > 0.9


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("yellow paper", dict(paper=(250, 235, 150))),
        ("grey noisy scan", dict(paper=(150, 150, 150), noise=20)),
        ("wide image, digit at the right", dict(canvas=(500, 200), offset=(300, 20))),
    ],
)
def test_coloured_noisy_and_wide_images_end_like_the_clean_drawing(mnist5k, name: str, kwargs: dict):
    digit = mnist5k.splits["val"].images[3, 0].numpy()
    clean = prepare_digit(drawn(digit))[0].float()
    other = prepare_digit(drawn(digit, **kwargs))[0].float()
    far_from_ink = torch.nn.functional.max_pool2d(clean[None, None], 5, 1, 2)[0, 0] == 0
    assert other[far_from_ink].max() == 0, f"{name}: the background is not clean black"
    assert torch.corrcoef(torch.stack([other.flatten(), clean.flatten()]))[0, 1] > 0.9, name


@pytest.mark.slow
def test_digits_drawn_on_paper_scans_and_wide_images_are_read_as_well_as_the_digits(trained_run: Path, val_digits):
    predictor = cnnlab.load(trained_run)
    images, labels = val_digits
    direct = (predictor.probabilities(images).argmax(1) == labels).float().mean()
    for kwargs in (
        {},
        dict(paper=(250, 235, 150)),
        dict(paper=(150, 150, 150), noise=20),
        dict(canvas=(500, 200), offset=(300, 20)),
    ):
        batch = torch.stack([predictor.prepare(drawn(im[0].numpy(), seed=i, **kwargs)) for i, im in enumerate(images)])
        accuracy = (predictor.probabilities(batch).argmax(1) == labels).float().mean()
        assert accuracy >= direct - 0.05, kwargs
    naive = torch.stack([fit_image(drawn(im[0].numpy()), 1, 28, invert=True) for im in images])
    assert (predictor.probabilities(naive).argmax(1) == labels).float().mean() < direct - 0.2


def test_invert_forces_dark_ink_on_light(mnist5k):
    digit = mnist5k.splits["val"].images[7, 0].numpy()
    assert torch.equal(prepare_digit(drawn(digit), invert=True), prepare_digit(drawn(digit)))
    assert not prepare_digit(Image.fromarray(digit), invert=True).any()  # light ink taken as the paper


def recipe(channels: int, size: int, mean: tuple[float, ...], dataset: str, resize: int | None = None) -> Preprocessing:
    """The preprocessing a spec decides for a model trained on ``dataset`` with this shape and mean."""
    return image_spec(dataset, ("a", "b"), channels, size, mean, (0.3,) * channels, resize).preprocessing


def test_the_recipe_follows_the_training_data():
    assert recipe(1, 28, (0.1307,), "mnist5k").recipe == "digit"
    assert recipe(1, 28, (0.1307,), "mnist5k").box == 20
    assert recipe(1, 28, (0.286,), "fashion-mnist").box == 28  # items fill the frame
    assert recipe(1, 32, (0.8,), "folder:drawings").recipe == "resize"  # dark on light training data
    assert recipe(1, 28, (0.1,), "folder:digits").recipe == "resize"  # your own files: decoded by resizing
    assert (recipe(3, 32, (0.5,) * 3, "folder:photos", resize=37).recipe, recipe(3, 32, (0.5,) * 3, "x", 37).box) == (
        "crop", 37,
    )  # fmt: skip
    colour = recipe(3, 32, (0.49, 0.48, 0.45), "cifar10")
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    assert colour.recipe == "resize" and torch.equal(colour.prepare(img), fit_image(img, 3, 32))


def test_big_images_are_shrunk_before_any_float_copy(mnist5k):
    digit = mnist5k.splits["val"].images[7, 0].numpy()
    big = drawn(digit).resize((4000, 4000), Image.Resampling.NEAREST)
    small = prepare_digit(drawn(digit))
    assert (prepare_digit(big).float() - small.float()).abs().mean() < 6
