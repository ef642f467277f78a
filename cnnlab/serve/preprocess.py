"""From uploaded bytes to the uint8 tensor a model expects, the way MNIST digits were made.

MNIST's digits are light ink on a dark background, size-normalised to fit a 20×20 box and centred
by their centre of mass in a 28×28 image. A digit drawn on a web page is dark ink on white, in a
big canvas, anywhere. :func:`prepare_image` turns the second into the first, so the model sees a
drawing the way it saw its training digits.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from cnnlab.data.images import open_image, to_model_input
from cnnlab.errors import UserError

MAX_PIXELS = 4096 * 4096  # an upload to a drawing page never needs more; far below Pillow's bomb limit
BOX_FRACTION = 20 / 28  # MNIST: digits fit a 20×20 box inside 28×28


class _Upload(io.BytesIO):
    """Bytes that :func:`open_image` can open and that name themselves in its error messages."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name


def decode_image(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Uploaded bytes → a decoded PIL image. Empty, unreadable, truncated or oversized data is a UserError."""
    if not data:
        raise UserError(f"{name}: empty; send a PNG or JPEG image")
    try:  # read only the header first: refuse huge dimensions before decoding a single pixel
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # open_image below reports it with the right message
        width = height = 0
    if width * height > max_pixels:
        raise UserError(f"{name}: {width}x{height} pixels is too large (at most {max_pixels:,} pixels)")
    return open_image(_Upload(data, name))


def grey_array(img: Image.Image) -> np.ndarray:
    """A PIL image → float32 grey levels in [0, 1]; transparent pixels count as white paper."""
    if img.mode in ("RGBA", "RGBa", "LA", "La", "P", "PA") or "transparency" in img.info:
        paper = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, img.convert("RGBA"))
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def background_is_dark(grey: np.ndarray) -> bool:
    """Whether the background (the median of the border pixels) is darker than mid-grey."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return bool(np.median(border) < 0.5)


def center_like_mnist(ink: np.ndarray, size: int = 28, box: int = 20) -> np.ndarray:
    """Ink (bright on 0) of any size → ``size``×``size``: cropped to the ink's bounding box, scaled
    (aspect kept, antialiased) so its longer side is ``box``, and shifted so its centre of mass
    (in pixel indices) is at ``size / 2``, where MNIST's digits have theirs. A blank image stays blank."""
    out = np.zeros((size, size), dtype=np.float32)
    peak = float(ink.max()) if ink.size else 0.0
    if peak <= 0.05:
        return out
    rows = np.flatnonzero((ink > 0.1 * peak).any(axis=1))
    cols = np.flatnonzero((ink > 0.1 * peak).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
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


def prepare_image(img: Image.Image, channels: int, size: int, dark_background: bool) -> torch.Tensor:
    """Any image → uint8 [channels, size, size] prepared like the model's training data.

    Grey models (MNIST and its relatives) get the MNIST recipe: the image is inverted when its
    background (the border's median) and the training data's (``dark_background``: the dataset mean
    is below 0.5) differ — a dark-on-white drawing for a light-on-dark model — then the ink is
    cropped to its bounding box, scaled to fit a box of 20/28 of the image and centred by its
    centre of mass. Colour models get the image resized as it is.
    """
    if channels != 1:
        return to_model_input(img, channels, size)
    grey = grey_array(img)
    ink = grey if background_is_dark(grey) else 1.0 - grey
    digit = center_like_mnist(ink, size, max(1, round(size * BOX_FRACTION)))
    pixels = digit if dark_background else 1.0 - digit
    return torch.from_numpy(np.round(pixels * 255).astype(np.uint8)).unsqueeze(0)
