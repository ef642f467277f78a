"""Hostile data: IDX files whose headers lie, gzip bombs, image bombs, corrupt and odd images.
Each is refused with a UserError naming the file (or skipped with a warning), never a crash, and
never a large allocation."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_idx
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.data import load_data
from cnnlab.data.idx import parse_idx, read_idx
from cnnlab.errors import UserError


def peak_bytes(action: Callable[[], object]) -> int:
    """Largest Python/NumPy allocation while ``action`` runs (it must raise a UserError)."""
    tracemalloc.start()
    try:
        with pytest.raises(UserError):
            action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def idx_header(*shape: int) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)


def test_a_header_claiming_a_trillion_images_is_refused_without_allocating(tmp_path: Path):
    header = idx_header(4_000_000_000, 28, 28)  # 3 * 10^12 bytes
    raw = tmp_path / "train-images-idx3-ubyte"
    raw.write_bytes(header + bytes(784))
    packed = tmp_path / "t10k-images-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(header + bytes(784)))
    for action in (lambda: parse_idx(header + bytes(784), "x"), lambda: read_idx(raw), lambda: read_idx(packed)):
        assert peak_bytes(action) < 1_000_000
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte.gz: IDX header declares an implausible shape"):
        read_idx(packed)


def test_a_huge_file_behind_a_small_header_is_refused_before_reading(tmp_path: Path):
    path = tmp_path / "train-labels-idx1-ubyte"
    with open(path, "wb") as f:
        f.write(idx_header(1000))
        f.truncate(3 * 2**30)  # 3 GiB, sparse: costs no disk
    assert peak_bytes(lambda: read_idx(path)) < 1_000_000
    with pytest.raises(UserError, match=r"declares shape \(1000,\) \(1000 bytes\) but the file holds 3221225464 bytes"):
        read_idx(path)


def test_a_gzip_bomb_is_read_only_as_far_as_its_header_declares(tmp_path: Path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    body = compressor.compress(idx_header(100, 28, 28))
    zeros = bytes(2**20)
    body += b"".join(compressor.compress(zeros) for _ in range(64))  # 64 MiB of zeros, ~64 KiB packed
    path.write_bytes(body + compressor.flush())
    assert path.stat().st_size < 200_000
    assert peak_bytes(lambda: read_idx(path)) < 4_000_000
    with pytest.raises(UserError, match="more data than its IDX header declares"):
        read_idx(path)


def test_a_truncated_gzip_names_the_file(tmp_path: Path):
    good = write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(200, dtype=np.uint8) % 10, compress=True)
    good.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip file"):
        read_idx(good)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (valid chunks and CRCs)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def ico_bytes() -> bytes:
    """A real 16×16 ICO file (Pillow would open it; cnnlab opens only its allowlist of formats)."""
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 200).save(buffer, format="ICO")
    return buffer.getvalue()


ICO = ico_bytes()
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 4 4 moveto 24 24 lineto stroke\n%%EOF\n"


def odd_images(folder: Path) -> dict[str, str]:
    """Files that are not usable images, and what a user is told about each."""
    real = folder / "real.png"
    Image.new("L", (20, 20), 128).save(real)
    junk = {
        "notes.txt": ("text", "not an image file name"),
        "empty.png": (b"", "not a readable image"),
        "random.jpg": (bytes(range(256)) * 4, "not a readable image"),
        "truncated.png": (real.read_bytes()[:40], "not a readable image"),
        "bomb.png": (png_claiming(30_000, 30_000), "image is too large"),
        "bomb-just-over.png": (png_claiming(10_000, 10_000), "image is too large"),
        "icon.png": (ICO, "not a readable image (PNG, JPEG, GIF, BMP, WebP or TIFF)"),  # an ICO named .png
        "drawing.tif": (EPS, "not a readable image (PNG, JPEG, GIF, BMP, WebP or TIFF)"),  # an EPS named .tif
    }
    real.unlink()
    reasons = {}
    for name, (content, reason) in junk.items():
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        reasons[name] = reason
    return reasons


def good_images(folder: Path, digits: torch.Tensor) -> int:
    """Real digits saved in many sizes, modes and formats."""
    for i, image in enumerate(digits):
        pixels = image[0].numpy()
        img = Image.fromarray(pixels).resize((8 + 5 * (i % 4), 8 + 3 * (i % 3)))
        kind = i % 7
        if kind == 0:
            img.save(folder / f"{i}.png")
        elif kind == 1:
            img.convert("RGBA").save(folder / f"{i}.png")
        elif kind == 2:
            img.convert("CMYK").save(folder / f"{i}.jpg")
        elif kind == 3:
            img.convert("P").save(folder / f"{i}.gif")
        elif kind == 4:
            Image.fromarray(pixels.astype(np.uint16) * 257).save(folder / f"{i}.png")  # 16-bit grey
        elif kind == 5:
            img.convert("LA").save(folder / f"{i}.webp")
        else:
            img.convert("RGB").convert("LAB").save(folder / f"{i}.tif")  # CIELab colour
    return len(digits)


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], int]:
    root = tmp_path_factory.mktemp("folder") / "imgs"
    train = load_data("digits").splits["train"]
    good = 0
    for label in (3, 8):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        good += good_images(folder, train.images[train.labels == label][:12])
    reasons = odd_images(root / "class3")
    return root, reasons, good


def test_image_folders_skip_every_bad_file_with_a_warning_and_train(
    hostile_folder, tmp_path: Path, capsys: pytest.CaptureFixture
):
    root, reasons, good = hostile_folder
    data = load_data(f"folder:{root}")
    err = capsys.readouterr().err
    assert f"warning: skipped {len(reasons)} unreadable or non-image file(s), e.g. {root}/class3/" in err
    assert len(data.splits["train"]) + len(data.splits["val"]) == good
    assert data.spec.channels == 3  # colour images among them
    result = cnnlab.train(
        dataset=f"folder:{root}", epochs=1, max_steps=2, batch_size=8, out=str(tmp_path / "r"), progress=False
    )
    assert result.history and np.isfinite(result.history[0]["train_loss"])


@pytest.fixture(scope="module")
def digits_run(tiny_run: Path) -> Path:
    """The shared ``tiny_run`` (digits, three steps); these tests only read it."""
    return tiny_run


@pytest.mark.slow
def test_predict_refuses_each_bad_file_with_its_reason(hostile_folder, digits_run: Path, capsys):
    root, reasons, _ = hostile_folder
    for name, reason in reasons.items():
        if name.endswith(".txt"):
            reason = "not a readable image"  # predict tries any file it is given
        path = root / "class3" / name
        assert main(["predict", str(digits_run), str(path)]) == 2, name
        lines = capsys.readouterr().err.splitlines()  # the file's warning with its reason, then the verdict
        assert len(lines) == 2 and lines[0].startswith(f"warning: {path}: ") and reason in lines[0], lines
        assert lines[1] == "error: no image could be answered (see the warnings above)"
    assert main(["predict", str(digits_run), str(root / "missing.png")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_predict_reads_every_good_mode(hostile_folder, digits_run: Path, capsys):
    root, _, good = hostile_folder
    images = sorted(str(p) for p in (root / "class8").iterdir())
    assert main(["predict", str(digits_run), *images, "--json"]) == 0
    assert capsys.readouterr().out.count('"label"') == len(images) == good // 2


def test_the_python_api_says_what_is_wrong_in_its_own_terms(digits_run: Path, mnist5k):
    with pytest.raises(UserError, match="no images given"):
        cnnlab.predict(digits_run, [])
    with pytest.raises(UserError, match="^topk must be ≥ 1"):
        cnnlab.predict(digits_run, ["x.png"], topk=0)
    predictor = cnnlab.load(digits_run)
    images = load_data("digits").splits["val"].images[:5]
    from_numpy = predictor.probabilities(images.numpy())
    assert torch.equal(from_numpy, predictor.probabilities(images)) and from_numpy.shape == (5, 10)
    with pytest.raises(UserError, match=r"images must have shape \[N, 1, 8, 8\]"):
        predictor.probabilities(np.zeros((5, 8, 8), dtype=np.uint8))
