"""Reading one image file into the uint8 tensor a model expects (any size, any mode).

Image files come from users and are not trusted. :func:`open_image` opens only regular files
(links followed; a FIFO is refused without blocking) and only the formats in ``FORMATS`` (PNG,
JPEG, GIF, BMP, WebP, TIFF: no ICO, EPS or other loaders that decode or run something on open),
refuses an image whose header declares more than ``MAX_PIXELS`` pixels before decoding any of
them, a JPEG with more than ``MAX_JPEG_SCANS`` scans, and a PNG with more than ``MAX_TEXT_MEMORY``
of text; treats Pillow's decompression-bomb warning as an error; decodes JPEGs at a reduced scale
when that is enough (or needed to fit a pixel bound); and turns the image upright by its EXIF
orientation. Big images are shrunk (:func:`shrink`) before any float
maths. Every failure on a file's content is a :class:`~cnnlab.errors.UserError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import stat
import warnings
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from cnnlab.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ALPHA_MODES = {"RGBA", "LA", "P", "PA", "RGBa", "La"}
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # Pillow's names; the only loaders ever used
MAX_PIXELS = 8192 * 8192  # 67 MP: any camera photo; its decoded RGBA copy is at most 256 MiB
MAX_JPEG_SCANS = 100  # an ordinary progressive JPEG has about 10; each scan is a pass over the whole image
MAX_TEXT_CHUNK = 1 << 20  # bytes of one decompressed PNG text chunk (Pillow's default); the model reads none
MAX_TEXT_MEMORY = 4 << 20  # bytes of all of a PNG's text chunks (Pillow's default: 64 MiB); more is refused
READER_VERSION = 2  # part of every cache key of decoded image files: 2 applies the EXIF orientation
WORK_SIDE = 1024  # images are shrunk to at most this longer side (or 4x the model's size) before float maths


class TooLarge(UserError):
    """An image over a pixel bound (the caller may name the option that sets it)."""


# Pillow's text-chunk limits are module settings: set once, here, where every image is opened.
PngImagePlugin.MAX_TEXT_CHUNK = min(PngImagePlugin.MAX_TEXT_CHUNK, MAX_TEXT_CHUNK)
PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, MAX_TEXT_MEMORY)


def open_image(
    path: str | Path | IO[bytes], max_pixels: int = MAX_PIXELS, draft_side: int | None = None
) -> Image.Image:
    """Open and fully decode a regular file (or bytes) of an allowed format, upright (its EXIF orientation
    applied); a JPEG is decoded at the smallest scale (1, 1/2, 1/4 or 1/8) that keeps its longer side at
    least ``draft_side`` and its pixels at most ``max_pixels``; any other image must have at most
    ``max_pixels`` pixels (checked on the header, before decoding), and no image more than
    :data:`MAX_PIXELS`. Any failure (missing, not a regular file, not an allowed image, corrupt, too
    large, too many JPEG scans) is a UserError naming the file (:class:`TooLarge` for a size limit)."""
    try:
        return _decode(path, max_pixels, draft_side)
    except Exception as exc:  # a decoder fed hostile bytes may raise anything: all mean "unreadable"
        problem = refusal(path, exc)
    # Raised outside the except block: the refusal carries no traceback of the decoder's frames, so the
    # half-read image (up to MAX_TEXT_MEMORY of text chunks) is freed now, not by a rare full collection.
    gc.collect(1)
    raise problem


def image_mode(path: str | Path, max_pixels: int = MAX_PIXELS) -> str:
    """The mode of the image in ``path`` (``L``, ``RGB``, ...) from its header, without decoding its
    pixels: the same file checks, format allowlist and pixel bounds as :func:`open_image`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_regular(path) as fp, Image.open(fp, formats=FORMATS) as img:
                _fit(img, path, max_pixels, None)
                return img.mode
    except Exception as exc:
        problem = refusal(path, exc)
    raise problem


def refusal(path: object, exc: Exception) -> UserError:
    """The one-line UserError naming ``path`` for a failure ``exc`` to open or decode it, with no
    traceback or context (nothing of the decoder's frames stays alive through it)."""
    if isinstance(exc, UserError):
        problem = exc
    elif isinstance(exc, FileNotFoundError):
        problem = UserError(f"{path}: no such file")
    elif isinstance(exc, IsADirectoryError):
        problem = UserError(f"{path}: is a folder, not an image file")
    elif isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        problem = TooLarge(f"{path}: image is too large (over Pillow's decompression-bomb limit)")
    elif isinstance(exc, UnidentifiedImageError):
        problem = UserError(f"{path}: not a readable image (PNG, JPEG, GIF, BMP, WebP or TIFF)")
    elif isinstance(exc, OSError) and exc.errno:  # the system's errors have a number; Pillow's have none
        problem = UserError(f"{path}: cannot read it ({exc.strerror})")
    elif isinstance(exc, ValueError) and "MAX_TEXT" in str(exc):
        problem = UserError(f"{path}: a PNG with more text metadata than cnnlab reads ({MAX_TEXT_MEMORY >> 20} MiB)")
    else:
        problem = UserError(f"{path}: not a readable image ({type(exc).__name__})")
    problem.__context__ = problem.__cause__ = None
    problem.__suppress_context__ = True
    return problem.with_traceback(None)


def _decode(source: str | Path | IO[bytes], max_pixels: int, draft_side: int | None) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's notes on odd metadata are not the user's problem
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open_regular(source) as fp, Image.open(fp, formats=FORMATS) as img:
            scans = check_scans(fp, source) if img.format == "JPEG" else 1
            _fit(img, source, max_pixels, draft_side, buffered=scans > 1)
            img.load()
            upright(img)
            return img  # loaded: its pixels outlive the file, which leaving the with-block closes


def upright(img: Image.Image) -> None:
    """Turn a loaded image upright by its EXIF orientation, in place (a phone's portrait photo is stored
    lying on its side with Orientation 6); unreadable EXIF data leaves it as stored."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # damaged or hostile EXIF: the pixels are still the image
        pass


def _open_regular(source: str | Path | IO[bytes]) -> contextlib.AbstractContextManager[IO[bytes]]:
    """``source`` opened for reading if it is a regular file (links followed); opened without blocking, so
    a FIFO, a device or a socket is refused instead of waiting forever. Bytes are returned as they are."""
    if not isinstance(source, (str, Path)):
        return contextlib.nullcontext(source)
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{source}: a symbolic link that loops; remove it") from None
        if exc.errno == errno.ENOENT and os.path.islink(source):
            raise UserError(f"{source}: a symbolic link to nothing (dangling); remove it") from None
        raise
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        if stat.S_ISDIR(kind):
            raise UserError(f"{source}: is a folder, not an image file")
        raise UserError(f"{source}: not a regular file (a pipe, device or socket), not an image file")
    return os.fdopen(fd, "rb")


def _fit(img: Image.Image, source: object, max_pixels: int, draft_side: int | None, buffered: bool = False) -> None:
    """Refuse an image over the pixel bounds, or set a JPEG to decode at a reduced scale (``draft``) that
    keeps its longer side at least ``draft_side`` and fits ``max_pixels``.

    A JPEG of one scan (baseline) is decoded row by row, so reducing it bounds the memory; one of several
    scans (``buffered``: progressive) keeps all its coefficients (2 bytes a pixel and channel) whatever
    the scale, so its full size must fit ``max_pixels`` like any other format's."""
    width, height = img.size
    ceiling = MAX_PIXELS if img.format == "JPEG" and not buffered else min(max_pixels, MAX_PIXELS)
    if width * height > ceiling:
        raise TooLarge(f"{source}: image is too large: {width}x{height} pixels (at most {ceiling:,}{_reducible(img)})")
    if img.format != "JPEG":
        return
    request = None
    if draft_side and max(width, height) > draft_side:
        scale = max(width, height) / draft_side
        request = (int(width / scale) + 1, int(height / scale) + 1)
    if width * height > max_pixels:
        factor = next((f for f in (2, 4, 8) if -(-width // f) * -(-height // f) <= max_pixels), 0)
        if not factor:
            raise TooLarge(
                f"{source}: image is too large: {width}x{height} pixels, over {max_pixels:,} even at 1/8 scale"
            )
        fit = (width // factor, height // factor)
        request = fit if request is None else (min(request[0], fit[0]), min(request[1], fit[1]))
    if request:
        img.draft(img.mode, request)
    if img.size[0] * img.size[1] > max_pixels:  # the decoder could not reduce it that far
        raise TooLarge(f"{source}: image is too large: {width}x{height} pixels (at most {max_pixels:,})")


def _reducible(img: Image.Image) -> str:
    return "" if img.format == "JPEG" and not img.info.get("progressive") else "; a baseline JPEG is reduced instead"


def check_scans(fp: IO[bytes], source: object, limit: int = MAX_JPEG_SCANS) -> int:
    """The number of scans of a JPEG (0 when its markers are malformed: the decoder says so); refuse a JPEG with more than ``limit`` scans (SOS markers) before it is decoded: each scan of a
    progressive JPEG is a pass over the whole image, so a small file repeating one can take minutes.

    The header segments are skipped by their lengths; after the first scan a marker ``FF DA`` can only be
    a scan start (inside entropy-coded data every ``FF`` byte is followed by ``00`` or a restart marker),
    so the rest is counted up to the end-of-image marker, a megabyte at a time."""
    start = fp.tell()
    try:
        fp.seek(0)
        if fp.read(2) != b"\xff\xd8":
            return 0
        while True:  # header segments: FF xx LEN(2, big-endian, itself included) ...
            marker = fp.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return 0  # malformed: the decoder's own error says so
            if marker[1] == 0xFF:
                fp.seek(-1, os.SEEK_CUR)  # fill bytes
                continue
            if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:
                continue
            if marker[1] == 0xD9:
                return 0
            length = fp.read(2)
            if len(length) < 2:
                return 0
            fp.seek(int.from_bytes(length, "big") - 2, os.SEEK_CUR)
            if marker[1] == 0xDA:
                break
        scans, tail = 1, b""
        while chunk := fp.read(1 << 20):
            data = tail + chunk
            end = data.find(b"\xff\xd9")
            scans += data.count(b"\xff\xda", 0, len(data) if end < 0 else end)
            if scans > limit:
                raise UserError(
                    f"{source}: a JPEG with more than {limit} scans (a 'scan bomb': each scan is another pass "
                    "over the whole image); save it again as an ordinary JPEG"
                )
            if end >= 0:
                break
            tail = data[-1:]
        return scans
    finally:
        fp.seek(start)


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


def fit_image(
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
    """Read ``path`` as a uint8 tensor [channels, size, size] (see :func:`fit_image`)."""
    img = open_image(path, draft_side=work_side(resize or size))
    try:
        return fit_image(img, channels, size, invert, resize)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
