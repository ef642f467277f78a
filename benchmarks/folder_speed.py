"""A folder of PNG files against the same images as IDX files: first decode, epoch times, peak memory.

    python benchmarks/folder_speed.py                      # 60,000 + 10,000 28x28 PNGs, 2 epochs
    python benchmarks/folder_speed.py --train 20000 --test 3000 --repeat 3
    python benchmarks/folder_speed.py --decode-only --repeat 3

Writes ``DIR/png/train/<class>/*.png`` and ``DIR/png/test/<class>/*.png`` (mnist5k's 5,000 digits
repeated, each repeat shifted by a different small offset so no two files are equal) and the same
images as ``DIR/idx/{train,t10k}-*-ubyte``. Then, each in a fresh process:

* ``decode``: the first decode of the whole folder (train, val and test) with an empty cache, in
  images per second of wall time (``--repeat N``: N times, each with a new empty cache), and the CPU
  seconds it used (the process and its decoding workers): on a machine shared with other work the
  wall time depends on the load, the CPU time less so;
* ``folder cold``: ``cnnlab.train`` (the tutorial's defaults: seednet, batch 64; ``--fast``: the fast
  recipe) on ``folder:DIR/png`` with an empty cache;
* ``folder warm``: the same again, the decoded images now in the cache;
* ``idx``: ``cnnlab.train`` on ``mnist`` read from ``DIR/idx`` (its cache warm, like the folder's),
  before the folder runs and again after them (``idx again``); each folder epoch is compared with the
  faster of the two IDX runs' same epoch, so a burst of load during one IDX run cannot flatter the folder.

Imports are not timed (torchvision and scikit-learn, which any training run loads). Both datasets hold
out 5,000 training images for val, so every epoch sees the same 55,000 images. Peak memory: that of
the measuring process and its decoding or loading workers together (see :class:`PeakMemory`). Next
to each figure: the 1-minute load average when it started and when it ended. Targets (issue 14): first decode at least
5,000 images/s on 2 cores; folder epochs within 1.3x of IDX from the second epoch on (from the
first on a warm cache); peak memory at most 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIFTS = [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1), (2, 0), (0, 2), (-2, 0)]


def digits(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 digits and labels: mnist5k's 5,000 repeated, each repeat shifted differently."""
    from cnnlab.data import load_data

    data = load_data("mnist5k")
    images = np.concatenate([data.splits[s].images[:, 0].numpy() for s in ("train", "val")])
    labels = np.concatenate([data.splits[s].labels.numpy() for s in ("train", "val")])
    order = np.random.default_rng(0).permutation(len(images))  # mixed classes in any slice
    images, labels = images[order], labels[order]
    index = (np.arange(n) + offset) % len(images)
    shift = (np.arange(n) + offset) // len(images)
    out = images[index].copy()
    for k in np.unique(shift):
        dy, dx = SHIFTS[k % len(SHIFTS)]
        rows = shift == k
        out[rows] = np.roll(out[rows], (dy, dx), axis=(1, 2))
    return out, labels[index].astype(np.uint8)


def write_png_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for label in np.unique(labels):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(folder / str(label) / f"{i:06d}.png")


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file: 2 zero bytes, type 0x08, the number of dimensions, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_datasets(root: Path, n_train: int, n_test: int) -> float:
    """Write both forms of the images under ``root``; seconds spent (0 if they were already there)."""
    marker = root / f"written-{n_train}-{n_test}"
    if marker.exists():
        return 0.0
    started = time.perf_counter()
    train_x, train_y = digits(n_train)
    test_x, test_y = digits(n_test, offset=n_train)
    write_png_folder(root / "png" / "train", train_x, train_y)
    write_png_folder(root / "png" / "test", test_x, test_y)
    (root / "idx").mkdir(parents=True, exist_ok=True)
    write_idx(root / "idx" / "train-images-idx3-ubyte", train_x)
    write_idx(root / "idx" / "train-labels-idx1-ubyte", train_y)
    write_idx(root / "idx" / "t10k-images-idx3-ubyte", test_x)
    write_idx(root / "idx" / "t10k-labels-idx1-ubyte", test_y)
    marker.touch()
    return time.perf_counter() - started


class PeakMemory:
    """Peak memory (MB) of this process and its worker processes together.

    This process alone: its exact peak resident size (``ru_maxrss``). While it has worker processes
    (``multiprocessing.active_children``: DataLoader's decoding or loading workers), a thread samples
    every ``every`` seconds the proportional set size (PSS: each shared page split between the
    processes sharing it, so forked workers are not counted twice) of the process and its workers,
    from ``/proc/PID/smaps_rollup`` (about 25 ms a process, hence the sparse sampling)."""

    def __init__(self, every: float = 2.0):
        self.every, self.sampled, self._stop = every, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> float:
        return max(self.sampled, peak_rss_mb())

    def _run(self) -> None:
        import multiprocessing

        while not self._stop.wait(self.every):
            workers = [p.pid for p in multiprocessing.active_children()]
            if workers:
                sizes = [pss_mb(pid) for pid in [os.getpid(), *workers]]
                self.sampled = max(self.sampled, sum(size for size in sizes if size is not None))


def pss_mb(pid: int) -> float | None:
    """Proportional set size of process ``pid`` (MB); None where ``/proc`` does not say."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration, ValueError):
        return None


def peak_rss_mb() -> float:
    """Largest resident size so far of this process alone (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User and system CPU time of this process and its finished children (the decoding workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> float:
    """The 1-minute load average (runnable processes; above the core count the cores are shared)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def child(kind: str, root: Path, epochs: int, n_train: int, fast: bool) -> dict:
    """One measurement in this (fresh) process."""
    import sklearn.model_selection  # noqa: F401  loaded by any training run (its val hold-out); not timed
    import torch
    import torchvision.transforms.v2.functional  # noqa: F401  likewise

    import cnnlab
    from cnnlab.data import load_data
    from cnnlab.recipes import FAST as FAST_RECIPE

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    folder = f"folder:{root / 'png'}"
    val_fraction = 5000 / n_train
    if kind == "idx-cache":
        load_data("mnist", root / "idx", download=False)
        return {}
    load, cpu = load_average(), cpu_seconds()
    if kind == "decode":
        with PeakMemory() as memory:
            started = time.perf_counter()
            data = load_data(folder, splits=("train", "val", "test"), val_fraction=val_fraction)
            seconds = time.perf_counter() - started
        n = sum(len(s) for s in data.splits.values())
        return {
            "images": n,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds() - cpu,
            "load": (load, load_average()),
            "peak_mb": memory.peak,
        }
    recipe = FAST_RECIPE if fast else {}
    options = {
        "recipe": "fast" if fast else "tutorial",
        **recipe,
        "epochs": epochs,
        "progress": False,
        "out": str(root / "runs" / kind),
    }
    if kind == "idx":
        options |= {"dataset": "mnist", "data_dir": str(root / "idx")}
    else:
        options |= {"dataset": folder, "val_fraction": val_fraction}
    with PeakMemory() as memory:
        started = time.perf_counter()
        result = cnnlab.train(overwrite=True, **options)
        total = time.perf_counter() - started
    epoch_seconds = [row["seconds"] for row in result.history]
    return {
        "epochs": epoch_seconds,
        "setup": total - sum(epoch_seconds),
        "val_acc": result.history[-1]["val_acc"],
        "load": (load, load_average()),
        "peak_mb": memory.peak,
    }


def run_child(kind: str, root: Path, args: argparse.Namespace, cache: Path) -> dict:
    env = {**os.environ, "CNNLAB_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--child", kind, "--dir", str(root), "--epochs", str(args.epochs)]
    cmd += ["--train", str(args.train), *(["--fast"] if args.fast else [])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    import torch

    cores = len(os.sched_getaffinity(0))
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {cores} cores, Python {platform.python_version()}, torch {torch.__version__}"


def loads(result: dict) -> str:
    """The load averages at the start and the end of a measurement."""
    return f"{result['load'][0]:.1f}-{result['load'][1]:.1f}"


def report(results: dict, write_seconds: float, n_images: int) -> None:
    """Print the figures the targets name and whether each target is met (the decode's: by the median run)."""
    print(f"machine: {machine()}")
    if write_seconds:
        print(f"wrote {n_images:,} PNG files and the IDX files in {write_seconds:.1f} s")
    runs = results["decode"]
    rates = [r["images"] / r["seconds"] for r in runs]
    for r, rate in zip(runs, rates):
        print(
            f"first decode: {r['images']:,} images in {r['seconds']:.2f} s = {rate:,.0f} images/s "
            f"(load {loads(r)}); {r['cpu_seconds']:.1f} CPU-s = {r['images'] / r['cpu_seconds']:,.0f} "
            f"images per CPU-second; peak {r['peak_mb']:,.0f} MB"
        )
    spread = f"{min(rates):,.0f}-{max(rates):,.0f}" if len(rates) > 1 else f"{rates[0]:,.0f}"
    median = statistics.median(rates)
    checks = {f"first decode >= 5,000 images/s (median {median:,.0f})": median >= 5000}
    if "idx" in results:
        idx = [min(a, b) for a, b in zip(results["idx"]["epochs"], results["idx again"]["epochs"])]
        print(f"{'seconds':<12} {'setup':>7} " + " ".join(f"{'epoch ' + str(i + 1):>8}" for i in range(len(idx))))
        for kind in ("idx", "idx again", "folder cold", "folder warm"):
            r = results[kind]
            ratios = " ".join(f"{e / i:.2f}x" for e, i in zip(r["epochs"], idx)) if kind.startswith("folder") else ""
            epochs = " ".join(f"{e:8.2f}" for e in r["epochs"])
            print(f"{kind:<12} {r['setup']:7.2f} {epochs}  {ratios} (load {loads(r)}; peak {r['peak_mb']:,.0f} MB)")
        cold, warm = results["folder cold"]["epochs"], results["folder warm"]["epochs"]
        worst = max([c / i for c, i in zip(cold[1:], idx[1:])] + [w / i for w, i in zip(warm, idx)])
        checks[f"epochs within 1.3x of IDX (worst {worst:.2f}x)"] = worst <= 1.3
    most = max(r["peak_mb"] for r in [*runs, *(results[k] for k in results if k != "decode")])
    checks[f"peak memory <= 1,500 MB ({most:,.0f} MB)"] = most <= 1500
    print(f"first decode: {spread} images/s over {len(rates)} run(s)")
    print("targets: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=60_000, help="training images")
    parser.add_argument("--test", type=int, default=10_000, help="test images")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training run")
    parser.add_argument("--fast", action="store_true", help="train with the fast recipe (default: the tutorial's)")
    parser.add_argument("--repeat", type=int, default=1, help="measure the first decode this many times")
    parser.add_argument("--decode-only", action="store_true", help="measure the first decode only, no training")
    parser.add_argument("--dir", type=Path, default=None, help="where the images go (default: a new temporary folder)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dir, args.epochs, args.train, args.fast)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp) / "data"
        root.mkdir(parents=True, exist_ok=True)
        write_seconds = write_datasets(root, args.train, args.test)
        cache = Path(tmp) / "cache"
        results: dict = {"decode": []}
        for i in range(args.repeat):
            results["decode"].append(run_child("decode", root, args, Path(tmp) / f"cache-decode-{i}"))
        if not args.decode_only:
            run_child("idx-cache", root, args, cache)  # IDX files decoded into the cache
            results["idx"] = run_child("idx", root, args, cache)
            results["folder cold"] = run_child("folder cold", root, args, cache)
            results["folder warm"] = run_child("folder warm", root, args, cache)
            results["idx again"] = run_child("idx", root, args, cache)
        report(results, write_seconds, args.train + args.test)


if __name__ == "__main__":
    main()
