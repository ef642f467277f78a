"""Shared fixtures: small real data written to disk, real runs trained once per session in this process,
and ``cli``, which runs the ``cnnlab`` command in this process (``run_cli`` starts a real one)."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
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
    """Run ``python -m cnnlab ARGS`` in a subprocess, capturing its output (for what only a real process
    shows: its exit status, no traceback at exit, the torch-free start). Most tests use :func:`cli`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


@contextlib.contextmanager
def process_state_kept() -> Iterator[None]:
    """Put back what an in-process command or run may change for the rest of the session: the working
    directory, environment, SIGINT handler, torch's thread count, deterministic mode and the python, numpy
    and torch RNGs."""
    cwd, env, handler, threads = os.getcwd(), dict(os.environ), signal.getsignal(signal.SIGINT), torch.get_num_threads()
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    deterministic, benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        if handler is not None and signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)
        torch.set_num_threads(threads)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = benchmark


def cli(*args: str | Path, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run ``cnnlab ARGS`` in this process through :func:`cnnlab.cli.main`: ``(exit code, stdout, stderr)``.

    An argparse error (``SystemExit``) gives its code, as the real command would; ``cwd`` is the working
    directory for the command only. Process state is put back afterwards (:func:`process_state_kept`).
    """
    from cnnlab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with process_state_kept(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if cwd is not None:
            os.chdir(cwd)
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


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
    """The tutorial's run, trained once in this process through the command line: ``cnnlab train --epochs 1
    --batch-size 16`` (seednet, one epoch of mnist5k, the tutorial's lr and momentum; about 90 % val
    accuracy). Shared: a test that changes a run copies it first (:func:`copy_run`)."""
    out = tmp_path_factory.mktemp("runs") / "e2e"
    code, _, err = cli("train", "--epochs", "1", "--batch-size", "16", "--out", out, "--quiet")
    assert code == 0, err
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run in about a second: seednet, three steps on the embedded ``digits`` (checkpoints, config,
    metrics; its accuracy means nothing). Shared: a test that changes a run copies it first."""
    import cnnlab

    out = tmp_path_factory.mktemp("tiny") / "run"
    with process_state_kept():
        cnnlab.train(dataset="digits", epochs=1, max_steps=3, out=str(out), progress=False)
    return out


@pytest.fixture(scope="session")
def colour_run(tmp_path_factory: pytest.TempPathFactory, mnist5k) -> Path:
    """seednet trained one epoch on a ``folder:`` of real digits saved as grey and RGB PNG and JPEG files of
    mixed sizes (so a 3x32x32 colour model, the ``resize`` recipe; classes ``class0``, ``class1``, ``class7``)."""
    import cnnlab

    root = tmp_path_factory.mktemp("colour")
    folder = make_image_folder(root / "imgs", mnist5k, per_class=12)
    out = root / "run"
    with process_state_kept():
        cnnlab.train(
            dataset=f"folder:{folder}", recipe="tutorial", epochs=1, batch_size=8, out=str(out), progress=False
        )
    return out


def copy_run(run: Path, to: Path) -> Path:
    """A copy of the run directory ``run`` at ``to``, for a test that changes it."""
    shutil.copytree(run, to)
    return to


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
