"""cnnlab.data.images: the read path gives the pixels of the plain Pillow + torchvision recipe, for every mode."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from cnnlab.data.folder import decode_files
from cnnlab.data.images import fit_image, open_image, read_image
from cnnlab.errors import UserError


def plain_recipe(path: Path, channels: int, size: int, resize: int | None = None) -> torch.Tensor:
    """The preprocessing spelled out with plain library calls: 16-bit grey scaled by 1/257, transparency
    composited on white, converted, ``pil_to_tensor``, then resized (or shorter side resized and cropped)."""
    with Image.open(path) as img:
        img.load()
        img = img.copy()
    if img.mode.startswith("I;16"):
        img = Image.fromarray(np.round(np.asarray(img, dtype=np.float64) / 257).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "P"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    tensor = TF.pil_to_tensor(img.convert("L" if channels == 1 else "RGB"))
    if resize is not None:
        return TF.center_crop(TF.resize(tensor, [resize], antialias=True), [size, size])
    return TF.resize(tensor, [size, size], antialias=True) if tensor.shape[-2:] != (size, size) else tensor


def sample_images(folder: Path) -> list[Path]:
    """Small images of every common kind: grey, RGB, palette (with a transparent entry), RGBA, grey with
    alpha, 16-bit grey PNG; JPEG grey and colour; a two-frame GIF; a multi-page TIFF; two sizes each."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    paths = []
    for width, height in [(28, 28), (45, 31)]:
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        grey = Image.fromarray(rgb[..., 0])
        colour = Image.fromarray(rgb)
        palette = colour.quantize(16)
        kinds = {
            "grey.png": grey,
            "rgb.png": colour,
            "palette.png": palette,
            "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., 1]])),
            "la.png": grey.convert("LA"),
            "grey16.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257 + rgb[..., 1]),
            "grey.jpg": grey,
            "rgb.jpg": colour,
        }
        for name, img in kinds.items():
            path = folder / f"{width}x{height}-{name}"
            img.save(path, transparency=3) if name == "palette.png" else img.save(path)
            paths.append(path)
        path = folder / f"{width}x{height}-frames.gif"
        palette.save(path, save_all=True, append_images=[grey.convert("P")])
        paths.append(path)
        path = folder / f"{width}x{height}-pages.tif"
        colour.save(path, save_all=True, append_images=[grey.convert("RGB")])
        paths.append(path)
    return paths


@pytest.mark.parametrize("channels", [1, 3])
def test_read_image_gives_the_plain_recipes_pixels_for_every_kind_of_image(tmp_path: Path, channels: int):
    paths = sample_images(tmp_path / "images")
    modes = {Image.open(p).mode for p in paths}
    assert {"L", "RGB", "P", "RGBA", "LA", "I;16"} <= modes  # every kind really is there
    for path in paths:
        for size, resize in [(28, None), (20, None), (24, 32)]:
            expected = plain_recipe(path, channels, size, resize)
            got = read_image(path, channels, size, resize=resize)
            assert got.dtype == torch.uint8 and got.shape == (channels, size, size), path.name
            assert torch.equal(got, expected), f"{path.name} {channels}x{size} resize={resize}"


def test_decoding_in_chunks_gives_each_files_own_pixels_and_skips_the_unreadable(tmp_path: Path):
    paths = sample_images(tmp_path / "images")
    broken = tmp_path / "images" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    paths.insert(5, broken)
    decoded = decode_files(paths, 3, 28, workers=0)  # 21 files: chunks of 6 (at least 4 chunks)
    readable = [p for p in paths if p != broken]
    assert decoded["labels"].tolist() == [i for i, p in enumerate(paths) if p != broken]
    assert torch.equal(decoded["images"], torch.stack([read_image(p, 3, 28) for p in readable]))
    checked = decode_files(paths, 3, 28, keep_pixels=False, workers=0)
    assert checked["images"].shape == (len(readable), 0, 0, 0)
    assert torch.equal(checked["labels"], decoded["labels"])


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to count open files")
def test_an_opened_image_keeps_its_pixels_and_leaves_no_file_open(tmp_path: Path):
    paths = sample_images(tmp_path / "images")
    before = len(os.listdir("/proc/self/fd"))
    opened = [open_image(p) for p in paths]
    assert len(os.listdir("/proc/self/fd")) == before  # every file closed, multi-frame GIF and TIFF too
    for path, img in zip(paths, opened):
        expected = read_image(path, 3, 28)
        path.write_bytes(b"not an image any more")
        assert torch.equal(fit_image(img, 3, 28), expected), path.name


# ---- hostile files (issue 27) and sideways photos (issue 23) ------------------------------------------


def scan_bomb(path: Path, repeats: int = 300, side: int = 64) -> Path:
    """A progressive JPEG ``side`` pixels square whose last scan is repeated ``repeats`` times (a 'scan
    bomb': each copy is one more pass of the decoder over the whole image; a flat image's scans are a
    few bytes each)."""
    import io

    rng = np.random.default_rng(0)
    pixels = (
        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) if side == 64 else np.full((side, side, 3), 128, np.uint8)
    )
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    last = data.rindex(b"\xff\xda")
    scan = data[last : data.rindex(b"\xff\xd9")]
    path.write_bytes(data[:last] + scan * repeats + b"\xff\xd9")
    return path


def text_bomb(path: Path, chunks: int = 100, chunk_mb: int = 1) -> Path:
    """A PNG with ``chunks`` zTXt chunks of ``chunk_mb`` MB of text each once decompressed (about a
    kilobyte each in the file)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    text = zlib.compress(b"a" * (chunk_mb << 20), 9)
    header = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + bytes(range(8)) for _ in range(8)))
    body = b"".join(chunk(b"zTXt", b"note%d\x00\x00" % i + text) for i in range(chunks))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + body + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding(tmp_path: Path) -> None:
    """A progressive JPEG repeating its last scan is refused, naming the scans; an ordinary progressive
    JPEG (about 10 scans) is still read."""
    bomb = scan_bomb(tmp_path / "bomb.jpg", repeats=500)
    with pytest.raises(UserError, match="scans"):
        open_image(bomb)
    fine = tmp_path / "fine.jpg"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(fine, progressive=True)
    assert open_image(fine).size == (40, 40)


def exif_portrait(path: Path, upright: np.ndarray | None = None) -> tuple[Path, np.ndarray]:
    """A JPEG stored lying on its side with EXIF Orientation 6, and the ``upright`` pixels (default 20 wide,
    40 high: dark top half, light bottom half)."""
    if upright is None:
        upright = np.zeros((40, 20, 3), np.uint8)
        upright[20:] = 230
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what the camera writes
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    stored.save(path, exif=exif.tobytes(), quality=95)
    return path, upright


def test_exif_orientation_is_applied_by_the_one_reader(tmp_path: Path) -> None:
    """A portrait JPEG with Orientation 6 is read upright by open_image and read_image (dark top, light
    bottom)."""
    path, upright = exif_portrait(tmp_path / "portrait.jpg")
    img = open_image(path)
    assert img.size == (20, 40)
    grey = np.asarray(img.convert("L"), dtype=np.float64)
    assert grey[:15].mean() < 30 and grey[25:].mean() > 200
    tensor = read_image(path, 1, 8)
    assert tensor[0, :3].float().mean() < 40 and tensor[0, 5:].float().mean() > 190
