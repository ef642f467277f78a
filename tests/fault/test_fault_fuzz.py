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
from cnnlab.data.images import open_image, to_model_input
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
        tensor = to_model_input(open_image(io.BytesIO(data)), channels, size)
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
        assert to_model_input(open_image(io.BytesIO(data)), 3, 28).shape == (3, 28, 28)
