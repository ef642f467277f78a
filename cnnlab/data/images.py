"""Reading one image file into the uint8 tensor a model expects (any size, any mode).

Image files come from users and are not trusted. :func:`open_image` opens only the formats in
``FORMATS`` (PNG, JPEG, GIF, BMP, WebP, TIFF: no ICO, EPS or other loaders that decode or run
something on open), refuses an image whose header declares more than ``MAX_PIXELS`` pixels before
decoding any of them, treats Pillow's decompression-bomb warning as an error, and decodes JPEGs at
a reduced scale when that is enough. Big images are shrunk (:func:`shrink`) before any float
maths. Every failure on a file's content is a :class:`~cnnlab.errors.UserError` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ALPHA_MODES = {"RGBA", "LA", "P", "PA", "RGBa", "La"}
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # Pillow's names; the only loaders ever used
MAX_PIXELS = 8192 * 8192  # 67 MP: any camera photo; its decoded RGBA copy is at most 256 MiB
WORK_SIDE = 1024  # images are shrunk to at most this longer side (or 4x the model's size) before float maths


def open_image(
    path: str | Path | IO[bytes], max_pixels: int = MAX_PIXELS, draft_side: int | None = None
) -> Image.Image:
    """Open and fully decode an image of an allowed format and at most ``max_pixels`` pixels (checked on
    the header, before decoding); a JPEG is decoded at the smallest scale that keeps its longer side at
    least ``draft_side``. Any failure (missing, not an allowed image, corrupt, too large) is a UserError
    naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on odd metadata are not the user's problem
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise UserError(
                        f"{path}: image is too large: {width}x{height} pixels (at most {max_pixels:,}); scale it down"
                    )
                if draft_side and img.format == "JPEG" and max(width, height) > draft_side:
                    scale = max(width, height) / draft_side
                    img.draft(img.mode, (int(width / scale) + 1, int(height / scale) + 1))
                img.load()
                return img  # loaded: its pixels outlive the file, which leaving the with-block closes
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{path}: image is too large (over Pillow's decompression-bomb limit)") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not a readable image (PNG, JPEG, GIF, BMP, WebP or TIFF)") from None
    except Exception as exc:  # a decoder fed hostile bytes may raise anything: all mean "unreadable"
        raise UserError(f"{path}: not a readable image ({type(exc).__name__})") from None


def work_side(side: int) -> int:
    """The longest side an image is shrunk to before float maths, for a model input of ``side`` pixels
    (the larger of :data:`WORK_SIDE` and 4 × ``side``: enough for any antialiased resize to it)."""
    return max(WORK_SIDE, 4 * side)


def shrink(img: Image.Image, side: int) -> Image.Image:
    """``img`` reduced by the smallest integer factor that brings its longer side to at most ``side``
    (each output pixel the mean of a factor×factor block: antialiased, no float copy of the original)."""
    factor = -(-max(img.size) // side)
    if factor <= 1:
        return img
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode == "P":
        img = img.convert("RGBA")
    elif img.mode.startswith("I;16"):
        img = img.convert("I")
    return img.reduce(factor)


def to_model_input(
    img: Image.Image, channels: int, size: int, invert: bool = False, resize: int | None = None
) -> torch.Tensor:
    """PIL image → uint8 tensor [channels, size, size]: mode converted, resized with antialiasing,
    optionally inverted (for dark-on-light drawings given to a light-on-dark model like MNIST's).

    ``resize=None`` squeezes the whole image into the square; ``resize=R`` (pretrained weights' way)
    scales its shorter side to R, aspect kept, then crops the central ``size``×``size``."""
    if img.width < 1 or img.height < 1:
        raise UserError(f"image has no pixels ({img.width}x{img.height})")
    try:
        img = _to_8bit(shrink(img, work_side(resize or size)))
        if img.mode in ALPHA_MODES:
            # Transparent pixels become white: what a drawing on a web page looks like.
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img.convert("RGBA"))
        img = _convert(img, "L" if channels == 1 else "RGB")
    except (ValueError, OSError) as exc:
        target = "grey" if channels == 1 else "RGB"
        raise UserError(f"cannot convert an image of mode {img.mode} to {target} ({exc})") from None
    if invert:
        img = ImageOps.invert(img)
    tensor = pixels(img)
    if resize is None and tensor.shape[-2:] == (size, size):
        return tensor
    from torchvision.transforms.v2 import functional as TF  # imported here: it takes a second to load

    if resize is None:
        return TF.resize(tensor, [size, size], antialias=True)
    if min(tensor.shape[-2:]) != resize:
        tensor = TF.resize(tensor, [resize], antialias=True)
    return TF.center_crop(tensor, [size, size])


def pixels(img: Image.Image) -> torch.Tensor:
    """An ``L`` or ``RGB`` image → its own copy of the pixels as uint8 [channels, height, width] (the values
    and layout of torchvision's ``pil_to_tensor``, without its per-call overhead)."""
    data = np.frombuffer(bytearray(img.tobytes()), dtype=np.uint8)  # numpy: a tenth of torch's per-call cost
    return torch.from_numpy(data.reshape(img.height, img.width, len(img.getbands())).transpose(2, 0, 1))


def _convert(img: Image.Image, mode: str) -> Image.Image:
    """``img.convert(mode)``, through RGB for modes Pillow cannot convert directly (LAB → grey); ``img``
    itself when it is already in ``mode``."""
    if img.mode == mode:
        return img
    try:
        return img.convert(mode)
    except ValueError:
        return img.convert("RGB").convert(mode)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grey images → 8-bit grey, scaled rather than clipped."""
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    values = np.asarray(img, dtype=np.float64)
    peak = float(np.nanmax(values)) if values.size else 0.0
    if img.mode.startswith("I;16") or (img.mode == "I" and peak > 255):
        values = values / (257.0 if peak <= 65535 else peak / 255.0)
    elif img.mode == "F" and peak <= 1.0:
        values = values * 255.0
    grey = np.clip(np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0), 0, 255).round().astype(np.uint8)
    return Image.fromarray(grey)


def read_image(
    path: str | Path, channels: int, size: int, invert: bool = False, resize: int | None = None
) -> torch.Tensor:
    """Read ``path`` as a uint8 tensor [channels, size, size] (see :func:`to_model_input`)."""
    img = open_image(path, draft_side=work_side(resize or size))
    try:
        return to_model_input(img, channels, size, invert, resize)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
