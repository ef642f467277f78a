"""Reading one image file into the uint8 tensor a model expects (any size, any mode).

Every failure on a file's content (not an image, truncated, corrupt, a decompression bomb whose
header declares more than Pillow's ``MAX_IMAGE_PIXELS``, a mode that has no grey or RGB form) is a
:class:`~cnnlab.errors.UserError` naming the file: image files come from users and are not trusted.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps

from cnnlab.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ALPHA_MODES = {"RGBA", "LA", "P", "PA", "RGBa", "La"}


def open_image(path: str | Path | IO[bytes]) -> Image.Image:
    """Open and fully decode an image; any failure (missing, not an image, corrupt, decompression
    bomb) is a UserError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on odd metadata are not the user's problem
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return img.copy()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{path}: image is too large (over Pillow's decompression-bomb limit)") from None
    except Exception as exc:  # a decoder fed hostile bytes may raise anything: all mean "unreadable"
        raise UserError(f"{path}: not a readable image ({type(exc).__name__})") from None


def to_model_input(img: Image.Image, channels: int, size: int, invert: bool = False) -> torch.Tensor:
    """PIL image → uint8 tensor [channels, size, size]: mode converted, resized with antialiasing,
    optionally inverted (for dark-on-light drawings given to a light-on-dark model like MNIST's)."""
    from torchvision.transforms.v2 import functional as TF  # imported here: it takes a second to load

    if img.width < 1 or img.height < 1:
        raise UserError(f"image has no pixels ({img.width}x{img.height})")
    try:
        img = _to_8bit(img)
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
    tensor = TF.pil_to_tensor(img)
    if tensor.shape[-2:] != (size, size):
        tensor = TF.resize(tensor, [size, size], antialias=True)
    return tensor


def _convert(img: Image.Image, mode: str) -> Image.Image:
    """``img.convert(mode)``, through RGB for modes Pillow cannot convert directly (LAB → grey)."""
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


def read_image(path: str | Path, channels: int, size: int, invert: bool = False) -> torch.Tensor:
    """Read ``path`` as a uint8 tensor [channels, size, size] (see :func:`to_model_input`)."""
    img = open_image(path)
    try:
        return to_model_input(img, channels, size, invert)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
