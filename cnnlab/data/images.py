"""Reading one image file into the uint8 tensor a model expects (any size, any mode)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image; any failure (missing, not an image, corrupt, decompression
    bomb) is a UserError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return img.copy()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{path}: image is too large (over Pillow's decompression-bomb limit)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({type(exc).__name__})") from None


def to_model_input(img: Image.Image, channels: int, size: int, invert: bool = False) -> torch.Tensor:
    """PIL image → uint8 tensor [channels, size, size]: mode converted, resized with antialiasing,
    optionally inverted (for dark-on-light drawings given to a light-on-dark model like MNIST's)."""
    from torchvision.transforms.v2 import functional as TF  # imported here: it takes a second to load

    if img.mode in ("RGBA", "LA", "P") or (img.mode == "PA"):
        # Transparent pixels become white: what a drawing on a web page looks like.
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    img = img.convert("L" if channels == 1 else "RGB")
    if invert:
        img = ImageOps.invert(img)
    tensor = TF.pil_to_tensor(img)
    if tensor.shape[-2:] != (size, size):
        tensor = TF.resize(tensor, [size, size], antialias=True)
    return tensor


def read_image(path: str | Path, channels: int, size: int, invert: bool = False) -> torch.Tensor:
    """Read ``path`` as a uint8 tensor [channels, size, size] (see :func:`to_model_input`)."""
    return to_model_input(open_image(path), channels, size, invert)
