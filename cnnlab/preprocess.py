"""The one way an image (a file, uploaded bytes or a PIL image) becomes a model's input.

A trained model's :class:`~cnnlab.spec.ImageSpec` names its recipe (decided once from what it was trained
on, :func:`cnnlab.spec.image_spec`) and makes its :class:`Preprocessing` (``ImageSpec.preprocessing``,
``Predictor.preprocessing``); ``predict``, the Python API, ``serve`` and the export metadata all use it:

* **digit** — grey models trained on light ink on a dark background (the training mean is below 0.5:
  MNIST and its relatives). The image is prepared the way MNIST's digits were made: the background
  is estimated (the median of the border), the ink is what differs from it (so dark ink on white or
  yellow paper is inverted, light ink on black is kept), a noise floor estimated from the border is
  removed (a grey, noisy scan ends on a clean black background), the ink is cropped to its bounding
  box, scaled (aspect kept) to fit a box of 20/28 of the image, and centred by its centre of mass.
* **resize** — any other data: the image is converted to the model's grey or RGB and resized, exactly
  as the folder dataset loader decoded the training images (:func:`cnnlab.data.images.fit_image`).
* **crop** — ``folder:``/``csv:`` images of a model fine-tuned from pretrained weights (``--pretrained``):
  converted likewise, the shorter side scaled to ``box`` (the weights' resize, e.g. 256), then the central
  ``size``×``size`` (their crop, e.g. 224) cut out, as torchvision's weights expect and as training decoded.

``invert=True`` overrides the detection: the image is taken as dark ink on a light background. A colour
model refuses it (:meth:`Preprocessing.check_invert`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cnnlab.data.images import (
    MAX_PIXELS,
    WORK_SIDE,
    _convert,
    _to_8bit,
    fit_image,
    open_image,
    shrink,
    work_side,
)  # fmt: skip
from cnnlab.errors import UserError

# How the resize and crop recipes scale (cnnlab.data.images.fit_image), in words exact enough to match.
RESIZE_FILTER = (
    "bilinear interpolation with antialias on the uint8 pixels: torch.nn.functional.interpolate(x, size, "
    "mode='bilinear', antialias=True, align_corners=False) on uint8 [1, C, H, W], as "
    "torchvision.transforms.v2.functional.resize(antialias=True) does (a float implementation differs by up to "
    "one grey level)"
)
NOISE_SIGMAS = 3.0  # ink must differ from the background by this many noise standard deviations
MIN_CONTRAST = 0.05  # below this (in grey levels 0..1) nothing on the image counts as ink


@dataclass(frozen=True)
class Preprocessing:
    """How images become uint8 model input ``[channels, size, size]``: ``recipe`` is ``digit``, ``resize`` or
    ``crop``."""

    recipe: str
    channels: int
    size: int
    box: int  # digit: the ink's longer side after scaling; crop: the shorter side before the crop (pixels)

    def check_invert(self, invert: bool) -> None:
        """Refuse ``invert`` for a colour model: inverting is for grey ink on paper; a colour photo inverted
        is another photo (predict, explain and serve all refuse it the same way)."""
        if invert and self.channels != 1:
            raise UserError(
                "--invert is for grey models; this model takes colour (RGB) images as they are: drop --invert"
            )

    def prepare(self, img: Image.Image, invert: bool = False) -> torch.Tensor:
        """A decoded PIL image → uint8 [channels, size, size]."""
        self.check_invert(invert)
        if self.recipe == "digit":
            return prepare_digit(img, self.size, self.box, invert)
        return fit_image(img, self.channels, self.size, invert, self.box if self.recipe == "crop" else None)

    def read(self, path: str | Path, invert: bool = False) -> torch.Tensor:
        """An image file → uint8 [channels, size, size]."""
        self.check_invert(invert)
        img = open_image(path, draft_side=self.work_side)
        try:
            return self.prepare(img, invert)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None

    def decode(self, data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> Image.Image:
        """Uploaded bytes → a decoded PIL image (same formats and bounds as files)."""
        if not data:
            raise UserError(f"{name}: empty; send a PNG or JPEG image")
        return open_image(_Upload(data, name), max_pixels=max_pixels, draft_side=self.work_side)

    @property
    def work_side(self) -> int:
        """Images are shrunk (integer box reduction) to at most this longer side before any float maths."""
        return work_side(max(self.size, self.box))

    def describe(self) -> dict[str, Any]:
        """What this preprocessing does, for export metadata and the serve page."""
        if self.recipe == "digit":
            text = (
                "grey; background = median of the border; ink = |grey - background| above a noise floor "
                "(3 sigma of the border), so dark-on-light images are inverted to light ink on black; "
                "cropped to the ink, scaled (aspect kept) by PIL's Image.resize(Image.Resampling.LANCZOS) on the "
                f"float32 ink to fit a {self.box}x{self.box} box, "
                f"centred by its centre of mass in {self.size}x{self.size}"
            )
        elif self.recipe == "crop":
            mode = "grey" if self.channels == 1 else "RGB"
            text = (
                f"converted to {mode} (transparency on white); {self._shrunk()}; shorter side resized to {self.box} "
                f"(aspect kept) by {RESIZE_FILTER}; central {self.size}x{self.size} cropped"
            )
        else:
            mode = "grey" if self.channels == 1 else "RGB"
            text = (
                f"converted to {mode} (transparency on white); {self._shrunk()}; resized to {self.size}x{self.size} "
                f"by {RESIZE_FILTER}"
            )
        if self.recipe != "digit":
            filters = {"filter": "bilinear", "antialias": True, "align_corners": False, "work_side": self.work_side}
            return {"recipe": self.recipe, "channels": self.channels, "size": self.size, "box": self.box,
                    "steps": text, **filters}  # fmt: skip
        return {"recipe": self.recipe, "channels": self.channels, "size": self.size, "box": self.box, "steps": text}

    def _shrunk(self) -> str:
        return (
            f"an image longer than {self.work_side} pixels is first reduced by the smallest integer factor that "
            f"brings it to at most {self.work_side} (JPEG: the decoder's draft scaling; else PIL Image.reduce, "
            "the mean of each factor x factor block)"
        )

    def summary(self) -> str:
        """One sentence for people (the serve page's footer)."""
        if self.recipe == "digit":
            return (
                "Images are prepared like MNIST's digits: the background is detected and the ink kept as light "
                f"on black, cropped to the ink, scaled to a {self.box}×{self.box} box and centred by its centre "
                "of mass."
            )
        mode = "grey" if self.channels == 1 else "colour"
        if self.recipe == "crop":
            return (
                f"Images are converted to {mode}, their shorter side resized to {self.box} and the central "
                f"{self.size}×{self.size} cut out, as the training images were."
            )
        return f"Images are converted to {mode} and resized to {self.size}×{self.size}, as the training images were."


def require_content(image: torch.Tensor, name: str) -> torch.Tensor:
    """Refuse a prepared input with nothing on it (every pixel the same): the model would only guess."""
    if image.numel() and bool(image.max() == image.min()):
        raise UserError(f"{name}: the image is empty (nothing drawn or written on it)")
    return image


class _Upload(io.BytesIO):
    """Bytes that :func:`open_image` can open and that name themselves in its error messages."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name


# ---- the digit recipe ----------------------------------------------------------------------------


def grey_levels(img: Image.Image, side: int = WORK_SIDE) -> np.ndarray:
    """A PIL image → float32 grey levels in [0, 1] (shrunk first to at most ``side`` pixels);
    transparent pixels count as white paper."""
    img = shrink(img, side)
    if img.mode in ("RGBA", "RGBa", "LA", "La", "P", "PA") or "transparency" in img.info:
        paper = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, img.convert("RGBA"))
    return np.asarray(_convert(_to_8bit(img), "L"), dtype=np.float32) / 255.0


def mean3x3(a: np.ndarray) -> np.ndarray:
    """Each pixel's mean over its 3×3 neighbourhood (zeros beyond the edges)."""
    padded = np.pad(a, 1)
    h, w = a.shape
    return sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def border(grey: np.ndarray) -> np.ndarray:
    return np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])


def ink_of(grey: np.ndarray, invert: bool = False) -> np.ndarray:
    """Grey levels → ink in [0, 1] on a clean 0 background.

    background b = median of the border; ink = grey − b where the background is dark (b < 0.5),
    b − grey where it is light (or ``invert``); noise σ = 1.4826 · median |border − b|; ink below
    max(3σ, 0.05) is background; what remains is stretched so the strongest ink (3×3 mean) is 1.
    """
    edge = border(grey)
    background = float(np.median(edge))
    light_ink = background < 0.5 and not invert
    ink = grey - background if light_ink else background - grey
    sigma = 1.4826 * float(np.median(np.abs(edge - background)))
    floor = max(NOISE_SIGMAS * sigma, MIN_CONTRAST)
    smooth = mean3x3(np.clip(ink, 0, 1))
    peak = max(float(smooth.max()), float(np.percentile(ink, 99.9)))
    if peak <= floor:
        return np.zeros_like(grey)
    return np.clip((ink - floor) / (peak - floor), 0.0, 1.0).astype(np.float32)


def ink_box(ink: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of the ink, ignoring isolated specks (a pixel counts when at least 3 of its
    3×3 neighbourhood are ink); None when there is none."""
    mask = (ink > 0.1).astype(np.float32)
    neighbours = mean3x3(mask)
    solid = (mask > 0) & (neighbours >= 3 / 9 - 1e-4)
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    if not len(rows):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(rows):
            return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def center_like_mnist(ink: np.ndarray, size: int = 28, box: int = 20) -> np.ndarray:
    """Ink (bright on 0) of any size → ``size``×``size``: cropped to the ink's bounding box, scaled
    (aspect kept, antialiased) so its longer side is ``box``, and shifted so its centre of mass
    (in pixel indices) is at ``size / 2``, where MNIST's digits have theirs. A blank image stays blank."""
    out = np.zeros((size, size), dtype=np.float32)
    found = ink_box(ink)
    if found is None:
        return out
    crop = np.ascontiguousarray(ink[found])
    scale = box / max(crop.shape)
    height, width = (max(1, min(size, round(n * scale))) for n in crop.shape)
    patch = np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.LANCZOS))
    patch = np.clip(patch, 0.0, 1.0)
    total = float(patch.sum())
    if total <= 0:
        return out
    cy = float((patch.sum(axis=1) * np.arange(height)).sum()) / total
    cx = float((patch.sum(axis=0) * np.arange(width)).sum()) / total
    top = min(max(round(size / 2 - cy), 0), size - height)
    left = min(max(round(size / 2 - cx), 0), size - width)
    out[top : top + height, left : left + width] = patch
    return out


def prepare_digit(img: Image.Image, size: int = 28, box: int = 20, invert: bool = False) -> torch.Tensor:
    """Any image → uint8 [1, size, size], light ink on black, made the way MNIST's digits were."""
    if img.width < 1 or img.height < 1:
        raise UserError(f"image has no pixels ({img.width}x{img.height})")
    try:
        grey = grey_levels(img, work_side(size))
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot convert an image of mode {img.mode} to grey ({exc})") from None
    digit = center_like_mnist(ink_of(grey, invert), size, box)
    return torch.from_numpy(np.round(digit * 255).astype(np.uint8)).unsqueeze(0)
