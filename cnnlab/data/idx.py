"""Reader for the IDX format of MNIST-family datasets (``train-images-idx3-ubyte[.gz]`` ...).

The header is validated against the file's real length before the data is read, so a corrupt or
hostile file raises :class:`~cnnlab.errors.UserError` naming the file instead of crashing or
asking for terabytes of memory: a header that claims 10^12 images is refused after reading its
16 bytes, and a gzip file is decompressed in small chunks up to the declared size only (a gzip
bomb stops there).

Layout: 2 zero bytes, a type code (0x08 = unsigned byte), the number of dimensions D, then D
big-endian uint32 sizes, then the data in C order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cnnlab.errors import UserError

UBYTE = 0x08
MAX_BYTES = 2**31  # no MNIST-family file is anywhere near 2 GiB
CHUNK = 1 << 20


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a uint8 array of its declared shape."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return _read_stream(f, str(path), size=None)
        with open(path, "rb") as f:
            return _read_stream(f, str(path), size=path.stat().st_size)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"{path}: corrupt or truncated gzip file ({exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes; every inconsistency is a UserError naming ``name``."""
    shape, header = parse_header(raw, name)
    count = _check_size(shape, len(raw) - header, name)
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(shape).copy()


def parse_header(raw: bytes, name: str = "<bytes>") -> tuple[tuple[int, ...], int]:
    """The shape an IDX header declares and the header's length in bytes (``raw`` may hold more)."""
    if len(raw) < 4:
        raise UserError(f"{name}: not an IDX file (only {len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise UserError(f"{name}: not an IDX file (bad magic number)")
    if raw[2] != UBYTE:
        raise UserError(f"{name}: unsupported IDX data type 0x{raw[2]:02x} (expected unsigned bytes)")
    ndim = raw[3]
    if not 1 <= ndim <= 4:
        raise UserError(f"{name}: IDX file declares {ndim} dimensions (expected 1 to 4)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return shape, header


def _check_size(shape: tuple[int, ...], available: int, name: str) -> int:
    """The number of data bytes ``shape`` needs, if plausible and exactly ``available``."""
    count = 1
    for size in shape:
        count *= size
    if count > MAX_BYTES or count == 0:
        raise UserError(f"{name}: IDX header declares an implausible shape {shape} ({count} bytes)")
    if available != count:
        raise UserError(
            f"{name}: IDX header declares shape {shape} ({count} bytes) "
            f"but the file holds {available} bytes of data (truncated or corrupt)"
        )
    return count


def _read_stream(f: BinaryIO, name: str, size: int | None) -> np.ndarray:
    """Read the header, check the declared size (against ``size``, the file's length, if known),
    then read exactly that much data in chunks."""
    head = f.read(4)
    if len(head) == 4 and head[3] <= 4:
        head += f.read(4 * head[3])
    shape, header = parse_header(head, name)
    count = 1
    for dim in shape:
        count *= dim
    if count > MAX_BYTES:
        _check_size(shape, -1, name)  # raises: implausible shape
    if size is not None:
        _check_size(shape, size - header, name)
    data = bytearray()
    while len(data) <= count:
        chunk = f.read(min(CHUNK, count + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) > count:
        raise UserError(f"{name}: more data than its IDX header declares ({shape}, {count} bytes): corrupt file")
    _check_size(shape, len(data), name)
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def find_idx_file(folders: list[Path], stem: str) -> Path | None:
    """First of ``folder/stem`` or ``folder/stem.gz`` that exists, over ``folders`` in order."""
    for folder in folders:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None
