"""Shared fixtures: small real data written to disk, and one real trained run reused by many tests."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or write the user's ~/.cache/cnnlab."""
    os.environ["CNNLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m cnnlab ARGS`` in a subprocess, capturing its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzip-compressed if ``compress``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


@pytest.fixture(scope="session")
def mnist5k():
    from cnnlab.data import load_data

    return load_data("mnist5k")


@pytest.fixture(scope="session")
def idx_test_dir(tmp_path_factory: pytest.TempPathFactory, mnist5k) -> Path:
    """A folder holding only t10k IDX files (the mnist5k validation digits in MNIST's format)."""
    folder = tmp_path_factory.mktemp("idx")
    val = mnist5k.splits["val"]
    write_idx(folder / "t10k-images-idx3-ubyte", val.images[:, 0].numpy(), compress=True)
    write_idx(folder / "t10k-labels-idx1-ubyte", val.labels.numpy().astype(np.uint8), compress=True)
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The end-to-end CLI run: seednet, one epoch on mnist5k (batch 16, the tutorial's lr and momentum)."""
    out = tmp_path_factory.mktemp("runs") / "e2e"
    result = run_cli("train", "--epochs", "1", "--batch-size", "16", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def digit_png(tmp_path: Path, mnist5k) -> tuple[Path, str]:
    """A validation digit saved as PNG, and its label."""
    from PIL import Image

    val = mnist5k.splits["val"]
    i = 123
    path = tmp_path / "digit.png"
    Image.fromarray(val.images[i, 0].numpy()).save(path)
    return path, mnist5k.spec.classes[int(val.labels[i])]


def make_image_folder(root: Path, mnist5k, per_class: int = 12, classes: tuple[int, ...] = (0, 1, 7)) -> Path:
    """An image folder (one sub-folder per class) made of real mnist5k digits, mixed sizes and modes."""
    from PIL import Image

    train = mnist5k.splits["train"]
    for c in classes:
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        index = torch.nonzero(train.labels == c).squeeze(1)[:per_class]
        for k, i in enumerate(index.tolist()):
            img = Image.fromarray(train.images[i, 0].numpy())
            if k % 3 == 1:
                img = img.resize((40, 40)).convert("RGB")  # bigger, colour mode
            img.save(folder / f"{k}.{'jpg' if k % 3 == 2 else 'png'}")
    return root


def needs_path(path: str | Path, what: str) -> pytest.MarkDecorator:
    """Skip the test, saying why, where ``path`` (something outside Python: a browser, /dev/full, /proc)
    is missing on this machine (CI has them all, so nothing is skipped there)."""
    return pytest.mark.skipif(not Path(path).exists(), reason=f"needs {path} ({what}), which this machine lacks")


def needs_module(name: str, install: str) -> pytest.MarkDecorator:
    """Skip the test, saying how to install it, where the optional package ``name`` is missing."""
    import importlib.util

    return pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"needs {name}: {install}")


# Fixtures that make any test using them slow: trained_run trains in a `cnnlab train` subprocess.
SLOW_FIXTURES = frozenset({"trained_run"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that needs one of :data:`SLOW_FIXTURES`, directly or through another
    fixture, so that ``make test-fast`` (``-m "not slow"``) never builds them."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
