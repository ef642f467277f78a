"""Shipping a model: ``predict --csv`` throughput and memory, batch-1 latency, serve requests per second
and accuracy, for the torch backend, the onnx backend and the int8 ONNX model; checks issue 25's targets.

    python benchmarks/ship.py [--run RUN] [--mnist-test DIR] [--files 10000] [--out DIR]

``--mnist-test`` (or ``$CNNLAB_MNIST_TEST``): a folder holding MNIST's official ``t10k-*`` files; its
10,000 test digits become the PNG files that are predicted (without it: mnist5k's 1,000 validation
digits, repeated). Without ``--run`` the tutorial's model is trained first (``cnnlab train``: seednet on
mnist5k, the tutorial's 9 epochs). The colour folder is made of crops of scikit-learn's two sample photos (classes
``china`` and ``flower``); a seednet is trained on it for ``--colour-epochs``.

Measured, each in a fresh ``cnnlab predict RUN FOLDER --csv OUT --quiet`` process (wall time from start
to exit, so model loading and worker start-up count; peak memory: the summed RSS of the process and its
decoding workers, sampled every 50 ms):
- images/s over ``--files`` PNGs with each backend, against today's one-call-per-file use,
  ``for f in files: cnnlab.predict(RUN, f)`` (timed on ``--baseline-files`` of them);
- peak memory with ``--files`` and twice as many files (torch backend);
- the accuracy of each backend's CSV answers against the digits' labels, and on the colour folder's test
  split;
- batch-1 latency: ``Predictor.probabilities`` on one prepared image, median and p99 of ``--repeats``
  calls, one thread for torch and onnxruntime alike;
- serve: ``POST /api/predict`` of a 28x28 PNG through FastAPI's TestClient, requests per second.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cnnlab", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def run_measured(command: list[str]) -> tuple[float, int]:
    """Run ``command``; (wall seconds, peak summed RSS in bytes of it and its children)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{err}")
    return seconds, peak


def digits(mnist_test: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """uint8 [N, 1, 28, 28] digits and labels: MNIST's official test split, else mnist5k's validation split."""
    from cnnlab.data import load_data

    if mnist_test:
        split = load_data("mnist", mnist_test, ("test",), download=False).splits["test"]
        return split.images, split.labels, f"MNIST official test digits ({mnist_test})"
    split = load_data("mnist5k").splits["val"]
    return split.images, split.labels, "mnist5k validation digits (no --mnist-test given)"


def write_pngs(folder: Path, images: torch.Tensor, n: int) -> list[int]:
    """``n`` PNG files (the images in turn) in ``folder``; returns each file's image index, in name order."""
    folder.mkdir(parents=True, exist_ok=True)
    index = [i % len(images) for i in range(n)]
    for k, i in enumerate(index):
        Image.fromarray(images[i, 0].numpy()).save(folder / f"{k:06d}.png", compress_level=1)
    return index


def csv_accuracy(path: Path, truth: dict[str, str]) -> float:
    """Fraction of the CSV's rows whose label is ``truth[image file name]``."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return sum(row["label"] == truth[Path(row["image"]).name] for row in rows) / len(rows)


def latency_ms(predictor, image: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median and p99 (ms) of ``predictor.probabilities`` on one image."""
    batch = image.unsqueeze(0)
    for _ in range(50):
        predictor.probabilities(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.probabilities(batch)
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), statistics.quantiles(times, n=100, method="inclusive")[98]


def serve_rps(run: Path, png: bytes, requests: int, backend: str, onnx: Path | None) -> float:
    from fastapi.testclient import TestClient

    from cnnlab.serve.app import create_app

    app = create_app(run, backend=backend, onnx=onnx)
    with TestClient(app) as client:
        files = {"file": ("digit.png", png, "image/png")}
        for _ in range(20):
            assert client.post("/api/predict", files=files).status_code == 200
        t0 = time.perf_counter()
        for _ in range(requests):
            assert client.post("/api/predict", files=files).status_code == 200
        return requests / (time.perf_counter() - t0)


def colour_folder(root: Path, seed: int = 0) -> Path:
    """A train/val/test folder of 48x48 crops of scikit-learn's two sample photos (classes: china, flower)."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    rng = np.random.default_rng(seed)
    counts = {"train": 80, "val": 20, "test": 40}
    for name, image in zip(("china", "flower"), photos.images):
        h, w, _ = image.shape
        for split, n in counts.items():
            (root / split / name).mkdir(parents=True)
            for k in range(n):
                side = int(rng.integers(64, 160))
                y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
                crop = Image.fromarray(image[y : y + side, x : x + side]).resize((48, 48))
                crop.save(root / split / name / f"{k:03d}.{'jpg' if k % 2 else 'png'}")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained digit run (default: train the tutorial's model first)")
    parser.add_argument("--mnist-test", default=os.environ.get("CNNLAB_MNIST_TEST"), metavar="DIR")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--baseline-files", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=1000, help="batch-1 calls timed per backend")
    parser.add_argument("--requests", type=int, default=300, help="serve requests per backend")
    parser.add_argument("--colour-epochs", type=int, default=5)
    parser.add_argument("--out", help="working folder (default: a temporary one)")
    args = parser.parse_args()

    import cnnlab
    from cnnlab.export import export_int8
    from cnnlab.inference import load

    work = Path(args.out or tempfile.mkdtemp(prefix="cnnlab-ship-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"working folder {work}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start")
    run = Path(args.run) if args.run else work / "tutorial"
    if not args.run and not (run / "best.pt").exists():
        subprocess.run(cli("train", "--out", str(run), "--quiet"), env=env(), check=True)

    int8 = export_int8(run, work / "model.int8.onnx")
    fp32_path, int8_path = Path(int8["fp32"]["path"]), Path(int8["int8"]["path"])

    images, labels, source = digits(args.mnist_test)
    files = work / "pngs"
    if not (files / f"{args.files - 1:06d}.png").exists():
        write_pngs(files, images, args.files)
    index = [i % len(images) for i in range(args.files)]
    truth = {f"{k:06d}.png": str(int(labels[i])) for k, i in enumerate(index)}

    print(f"\npredict --csv over {args.files:,} PNG files of {source}")
    backends = {"torch": [], "onnx": ["--backend", "onnx"], "int8": ["--backend", "onnx", "--onnx", str(int8_path)]}
    speed, memory, accuracy = {}, {}, {}
    for name, flags in backends.items():
        out = work / f"predictions-{name}.csv"
        seconds, peak = run_measured(cli("predict", str(run), str(files), "--csv", str(out), "--quiet", *flags))
        speed[name], memory[name], accuracy[name] = args.files / seconds, peak, csv_accuracy(out, truth)
        print(f"  {name:<6} {speed[name]:8.1f} images/s  peak memory {peak / 2**20:7.1f} MiB  "
              f"accuracy {100 * accuracy[name]:.2f}%")  # fmt: skip

    sample = sorted(files.iterdir())[: args.baseline_files]
    t0 = time.perf_counter()
    for f in sample:
        cnnlab.predict(run, f)
    baseline = len(sample) / (time.perf_counter() - t0)
    print(f"  one call of cnnlab.predict per file (timed on {len(sample)} files): {baseline:.1f} images/s")

    print(
        f"\npeak memory, torch backend, {args.files:,} vs {2 * args.files:,} files (the first folder twice, hard links)"
    )
    flat = work / "pngs-x2"
    if not flat.exists():
        flat.mkdir()
        for sub in ("a", "b"):
            (flat / sub).mkdir()
            for f in files.iterdir():
                os.link(f, flat / sub / f.name)
    _, peak2 = run_measured(cli("predict", str(run), str(flat), "--csv", str(work / "x2.csv"), "--quiet"))
    print(f"  {memory['torch'] / 2**20:.1f} MiB → {peak2 / 2**20:.1f} MiB")

    torch.set_num_threads(1)  # the OnnxModel sessions take torch's thread count: one thread for both
    predictors = {
        "torch": load(run),
        "onnx": load(run, backend="onnx", onnx=fp32_path),
        "int8": load(run, backend="onnx", onnx=int8_path),
    }
    image = predictors["torch"].read(sample[0])
    print(f"\nbatch-1 latency (Predictor.probabilities, one thread, {args.repeats} calls)")
    latency = {}
    for name, predictor in predictors.items():
        latency[name] = latency_ms(predictor, image, args.repeats)
        print(f"  {name:<6} median {latency[name][0]:.3f} ms  p99 {latency[name][1]:.3f} ms")

    png = io.BytesIO()
    Image.fromarray(images[0, 0].numpy()).save(png, format="PNG")
    print(f"\nserve: POST /api/predict of a 28x28 PNG, {args.requests} requests, TestClient, one thread")
    for name, (backend, onnx) in {
        "torch": ("torch", None),
        "onnx": ("onnx", fp32_path),
        "int8": ("onnx", int8_path),
    }.items():
        print(f"  {name:<6} {serve_rps(run, png.getvalue(), args.requests, backend, onnx):7.1f} requests/s")

    print(f"\nexport --int8: fp32 {int8['fp32']['bytes'] / 1024:.1f} KiB, int8 {int8['int8']['bytes'] / 1024:.1f} KiB; "
          f"validation accuracy {100 * int8['fp32']['val_accuracy']:.2f}% → {100 * int8['int8']['val_accuracy']:.2f}%")  # fmt: skip

    colour = colour_accuracy(work, args.colour_epochs)
    print("\ncolour folder (crops of scikit-learn's sample photos, test split), accuracy")
    for name, value in colour.items():
        print(f"  {name:<6} {100 * value:.2f}%")

    drop = 100 * (accuracy["torch"] - accuracy["int8"])
    targets = [
        (f"predict --csv ≥ 3x one call per file: {speed['torch'] / baseline:.1f}x", speed["torch"] >= 3 * baseline),
        (f"peak memory flat within 10% from {args.files:,} to {2 * args.files:,} files: "
         f"{100 * (peak2 / memory['torch'] - 1):+.1f}%", peak2 <= 1.10 * memory["torch"]),
        (f"onnx batch-1 latency ≤ 0.5x torch: {latency['onnx'][0] / latency['torch'][0]:.2f}x",
         latency["onnx"][0] <= 0.5 * latency["torch"][0]),
        (f"int8 file ≤ 0.5x fp32: {int8['int8']['bytes'] / int8['fp32']['bytes']:.2f}x",
         int8["int8"]["bytes"] <= 0.5 * int8["fp32"]["bytes"]),
        (f"int8 accuracy drop ≤ 1 point on {source.split(' (')[0]}: {drop:.2f}", drop <= 1.0),
    ]  # fmt: skip
    print(f"\ntargets (load average {os.getloadavg()[0]:.1f} at the end)")
    for text, met in targets:
        print(f"  {'met   ' if met else 'MISSED'}  {text}")


def colour_accuracy(work: Path, epochs: int) -> dict[str, float]:
    """Train a seednet on the colour folder; the accuracy of each backend on its test split."""
    from cnnlab.export import export_int8
    from cnnlab.inference import load, predict_files

    folder = work / "colour"
    if not folder.exists():
        colour_folder(folder)
    run = work / "colour-run"
    if not (run / "best.pt").exists():
        command = cli("train", "--dataset", f"folder:{folder}", "--epochs", str(epochs), "--out", str(run), "--quiet")
        subprocess.run(command, env=env(), check=True)
    int8 = export_int8(run, run / "model.int8.onnx")
    test = sorted((folder / "test").rglob("*.*"))
    result = {}
    for name, (backend, onnx) in {
        "torch": ("torch", None),
        "onnx": ("onnx", None),
        "int8": ("onnx", int8["int8"]["path"]),
    }.items():
        rows = list(predict_files(load(run, backend=backend, onnx=onnx), test))
        result[name] = sum(r["label"] == Path(r["image"]).parent.name for r in rows) / len(rows)
    return result


if __name__ == "__main__":
    main()
