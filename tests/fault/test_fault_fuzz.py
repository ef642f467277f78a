"""Property tests on hostile bytes: the IDX reader and the image loader return data of the declared
shape or raise UserError, nothing else. Derandomised, so every run tries the same examples."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnlab.data.idx import parse_header, parse_idx, read_idx
from cnnlab.data.images import fit_image, open_image
from cnnlab.errors import UserError

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None)


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    """``data`` with bytes overwritten at ``edits`` (position, value) and cut to ``cut`` bytes."""
    buffer = bytearray(data)
    for position, value in edits:
        if buffer:
            buffer[position % len(buffer)] = value
    return bytes(buffer if cut is None else buffer[: cut % (len(buffer) + 1)])


edits = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=6)
cuts = st.none() | st.integers(0, 2**16)


def idx_bytes(shape: tuple[int, ...], seed: int) -> bytes:
    data = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    return bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape) + data.tobytes()


def assert_declared_shape_or_user_error(raw: bytes, read) -> None:
    try:
        array = read()
    except UserError:
        return
    assert array.dtype == np.uint8 and array.shape == parse_header(raw)[0]


@FUZZ
@given(st.binary(max_size=80))
def test_idx_parser_on_random_bytes(raw: bytes):
    assert_declared_shape_or_user_error(raw, lambda: parse_idx(raw, "fuzz"))


@FUZZ
@given(st.lists(st.integers(0, 6), min_size=1, max_size=4), st.integers(0, 2**32 - 1), edits, cuts)
def test_idx_parser_on_mutated_valid_files(shape, seed, changes, cut):
    raw = mutate(idx_bytes(tuple(shape), seed), changes, cut)
    assert_declared_shape_or_user_error(raw, lambda: parse_idx(raw, "fuzz"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(st.lists(st.integers(0, 6), min_size=1, max_size=3), st.integers(0, 2**32 - 1), edits, cuts, st.booleans())
def test_idx_reader_on_mutated_gzip_files(scratch: Path, shape, seed, changes, cut, mutate_inside):
    raw = idx_bytes(tuple(shape), seed)
    if mutate_inside:  # damage the IDX content, compress it properly
        raw = mutate(raw, changes, cut)
        packed = gzip.compress(raw, mtime=0)
    else:  # damage the gzip stream itself
        packed = mutate(gzip.compress(raw, mtime=0), changes, cut)
    path = scratch / "images-idx3-ubyte.gz"
    path.write_bytes(packed)
    try:
        array = read_idx(path)
    except UserError as exc:
        assert str(path) in str(exc)  # every refusal names the file
        return
    assert array.dtype == np.uint8 and array.shape == parse_header(gzip.decompress(packed))[0]


def valid_image(fmt: str, mode: str, size: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(size[0] * 31 + size[1]).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


SAMPLES = [
    valid_image(fmt, mode, (w, h))
    for fmt, mode in [
        ("PNG", "L"),
        ("PNG", "RGBA"),
        ("PNG", "P"),
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
        ("WEBP", "RGB"),
    ]  # fmt: skip
    for w, h in [(5, 7), (33, 20)]
]


def assert_model_input_or_user_error(data: bytes, channels: int, size: int) -> None:
    try:
        tensor = fit_image(open_image(io.BytesIO(data)), channels, size)
    except UserError:
        return
    assert tensor.dtype == torch.uint8 and tensor.shape == (channels, size, size)


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([1, 3]), st.integers(4, 40))
def test_image_loader_on_random_bytes(data: bytes, channels: int, size: int):
    assert_model_input_or_user_error(data, channels, size)


@FUZZ
@given(st.sampled_from(range(len(SAMPLES))), edits, cuts, st.sampled_from([1, 3]), st.integers(4, 40))
def test_image_loader_on_mutated_real_images(index: int, changes, cut, channels: int, size: int):
    assert_model_input_or_user_error(mutate(SAMPLES[index], changes, cut), channels, size)


def test_the_samples_are_valid_images():
    for data in SAMPLES:
        assert fit_image(open_image(io.BytesIO(data)), 3, 28).shape == (3, 28, 28)


# Success paths: a reader that refused everything would pass the tests above; these need it to decode
# valid files, and files changed in ways that keep them valid, to exactly the right values.

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4)


def expected_array(shape: list[int], seed: int) -> np.ndarray:
    """The array :func:`idx_bytes` writes, drawn again from the same generator."""
    return np.random.default_rng(seed).integers(0, 256, size=tuple(shape), dtype=np.uint8)


@FUZZ
@given(shapes, st.integers(0, 2**32 - 1))
def test_valid_idx_files_decode_to_their_values(scratch: Path, shape, seed):
    raw, expected = idx_bytes(tuple(shape), seed), expected_array(shape, seed)
    assert np.array_equal(parse_idx(raw, "valid"), expected)
    for name, data in (("plain-idx3-ubyte", raw), ("packed-idx3-ubyte.gz", gzip.compress(raw, mtime=0))):
        path = scratch / name
        path.write_bytes(data)
        array = read_idx(path)
        assert array.dtype == np.uint8 and array.shape == tuple(shape) and np.array_equal(array, expected)


@FUZZ
@given(shapes, st.integers(0, 2**32 - 1), st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=8))
def test_idx_files_with_changed_data_bytes_decode_to_the_changed_values(shape, seed, changes):
    """Overwriting data bytes (never the header) keeps a file valid: exactly those values change."""
    raw, expected = bytearray(idx_bytes(tuple(shape), seed)), expected_array(shape, seed).reshape(-1)
    header = 4 + 4 * len(shape)
    for position, value in changes:
        index = position % expected.size
        raw[header + index] = value
        expected[index] = value
    assert np.array_equal(parse_idx(bytes(raw), "edited").reshape(-1), expected)


@FUZZ
@given(shapes, st.integers(0, 2**32 - 1), st.randoms(use_true_random=False))
def test_idx_header_declaring_another_shape_of_the_same_size_reshapes_the_data(shape, seed, rng):
    """A header rewritten to another shape with the same number of values (a permutation of the sizes,
    or one flat dimension) is still valid: the same bytes, read in that shape."""
    data = expected_array(shape, seed)
    other = rng.sample(shape, len(shape)) if rng.random() < 0.5 else [data.size]
    raw = bytes([0, 0, 0x08, len(other)]) + b"".join(d.to_bytes(4, "big") for d in other) + data.tobytes()
    assert np.array_equal(parse_idx(raw, "reshaped"), data.reshape(other))


def lossless_image(fmt: str, mode: str, size: tuple[int, int], seed: int) -> tuple[bytes, np.ndarray]:
    """A random image saved losslessly as ``fmt`` in ``mode``, and its pixels as RGBA."""
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}.get(mode, 3)
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, {1: "L", 3: "RGB", 4: "RGBA"}[channels])
    if mode == "P":
        img = img.quantize(colors=16)  # a palette image: its colours are what must come back
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue(), np.asarray(img.convert("RGBA"))


LOSSLESS = [("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB")]


@FUZZ
@given(st.sampled_from(LOSSLESS), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_valid_lossless_images_decode_to_their_pixels(kind, width, height, seed):
    data, expected = lossless_image(*kind, (width, height), seed)
    img = open_image(io.BytesIO(data))
    assert img.size == (width, height)
    assert np.array_equal(np.asarray(img.convert("RGBA")), expected)


def test_a_grey_png_of_the_model_size_becomes_exactly_its_pixels():
    data, expected = lossless_image("PNG", "L", (28, 28), seed=5)
    tensor = fit_image(open_image(io.BytesIO(data)), 1, 28)
    assert torch.equal(tensor, torch.from_numpy(expected[..., 0].copy()).unsqueeze(0))


@FUZZ
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1), edits)
def test_bmp_with_changed_pixel_bytes_decodes_to_the_changed_pixels(width, height, seed, changes):
    """An uncompressed 24-bit BMP stays valid whatever its pixel bytes are: rows bottom-up, each pixel
    blue, green, red, each row padded to 4 bytes. Overwritten bytes change exactly those channels."""
    data, expected = lossless_image("BMP", "RGB", (width, height), seed)
    raw, expected = bytearray(data), expected.copy()
    start, stride = int.from_bytes(raw[10:14], "little"), (3 * width + 3) // 4 * 4
    for position, value in changes:
        y, x, c = (position // 3 // width) % height, (position // 3) % width, position % 3
        raw[start + (height - 1 - y) * stride + 3 * x + (2 - c)] = value
        expected[y, x, c] = value
    assert np.array_equal(np.asarray(open_image(io.BytesIO(bytes(raw))).convert("RGBA")), expected)
