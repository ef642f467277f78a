"""Reader for the IDX format of MNIST-family datasets (``train-images-idx3-ubyte[.gz]`` ...).

The header is validated against the file's real length before anything is allocated, so a corrupt
or hostile file raises :class:`~cnnlab.errors.UserError` naming the file instead of crashing or
asking for terabytes of memory.

Layout: 2 zero bytes, a type code (0x08 = unsigned byte), the number of dimensions D, then D
big-endian uint32 sizes, then the data in C order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cnnlab.errors import UserError

UBYTE = 0x08
MAX_BYTES = 2**31  # no MNIST-family file is anywhere near 2 GiB


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a uint8 array of its declared shape."""
    path = Path(path)
    raw = _read_bytes(path)
    return parse_idx(raw, name=str(path))


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes; every inconsistency is a UserError naming ``name``."""
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
    count = 1
    for size in shape:
        count *= size
    if count > MAX_BYTES:
        raise UserError(f"{name}: IDX header declares an implausible shape {shape}")
    if len(raw) - header != count:
        raise UserError(
            f"{name}: IDX header declares shape {shape} ({count} bytes) "
            f"but the file holds {len(raw) - header} bytes of data (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(shape).copy()


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            return _gunzip_bounded(path)
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _gunzip_bounded(path: Path) -> bytes:
    """Decompress a gzip file, refusing more than MAX_BYTES of output (a gzip bomb)."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"{path}: corrupt or truncated gzip file ({exc})") from None
    if len(data) > MAX_BYTES:
        raise UserError(f"{path}: decompresses to more than {MAX_BYTES} bytes")
    return data


def find_idx_file(folders: list[Path], stem: str) -> Path | None:
    """First of ``folder/stem`` or ``folder/stem.gz`` that exists, over ``folders`` in order."""
    for folder in folders:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None
