"""Regenerate every picture in docs/images/ and print every number the README quotes from a run.

    python benchmarks/figures.py [--run runs/demo] [--reuse] [--only demo,test,backprop,onnx,datapath,preprocess,serve]
    make figures                 # the same, everything

Sections (each prints the commands it runs and their output, so every figure has its command beside it):

- ``demo``: ``cnnlab train --out runs/demo`` (the README's epoch lines), ``cnnlab predict`` on
  examples/images/digit-*.png; copies the run's curves.png and confusion.png to docs/images/.
- ``test``: ``cnnlab eval runs/demo --dataset mnist --split test --data-dir $CNNLAB_MNIST_TEST_DIR`` on the
  official 10,000 MNIST test digits (only when that variable names a folder with the two t10k IDX files).
- ``backprop``: ``cnnlab backprop check`` for the four losses (largest relative error against autograd),
  ``cnnlab backprop train`` (the tutorial's 9 epochs) and ``benchmarks/backprop_speed.py``.
- ``onnx``: ``cnnlab export runs/demo --format onnx``, then onnxruntime against cnnlab on the 1,000
  mnist5k validation digits: the largest difference in any probability and both accuracies.
- ``datapath``: milliseconds per batch of 64 of the tutorial's data path alone (per-sample PIL →
  ToTensor → Normalize, DataLoader collate; :class:`cnnlab.bench.reference.TutorialDataset`), 1 thread.
- ``preprocess``: the 1,000 mnist5k validation digits redrawn 6× larger, dark ink on a white 280×280 page,
  off-centre, read by the run's own preprocessing (``Predictor.prepare``, what predict and serve use),
  against the digits as they are and a plain resize and invert.
- ``serve``: ``cnnlab serve runs/demo`` in headless Chromium (Playwright, as tests/test_browser.py does),
  a 7 drawn with two strokes, the page saved as docs/images/serve.png (skipped, saying so, without Chromium).

``--reuse`` keeps a finished run already in ``--run`` instead of training it again (cheap re-runs of
the other sections). Timings depend on the machine and its load; accuracies do not (same seed, same numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
SECTIONS = ("demo", "test", "backprop", "onnx", "datapath", "preprocess", "serve")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def run_cnnlab(*args: str, show: bool = True) -> str:
    """Run ``cnnlab ARGS`` in the repository as a user would; echo the command (and its output if ``show``)."""
    print(f"$ cnnlab {' '.join(args)}", flush=True)
    return shell([sys.executable, "-m", "cnnlab", *args], show)


def shell(command: list[str], show: bool = True) -> str:
    """Run ``command`` in the repository and return its stdout (printed if ``show``); stop if it fails."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if show:
        print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        sys.exit(f"failed (exit {result.returncode}): {' '.join(command)}\n{result.stderr}")
    return result.stdout


def section(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


def finished(run: Path) -> bool:
    try:
        return json.loads((run / "config.json").read_text())["status"] == "finished"
    except (OSError, ValueError, KeyError):
        return False


def demo(run: Path, reuse: bool) -> None:
    section("demo run: README 'Two commands on a fresh machine', docs/images/curves.png and confusion.png")
    if reuse and finished(run):
        print(f"(--reuse: keeping the finished run in {run}; its metrics.csv)")
        print((run / "metrics.csv").read_text())
    else:
        run_cnnlab("train", "--out", str(run), "--overwrite")
    run_cnnlab(
        "predict",
        str(run),
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples" / "images").glob("digit-*.png")),
    )
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name in ("curves.png", "confusion.png"):
        shutil.copy(run / name, IMAGES / name)
        print(f"wrote {(IMAGES / name).relative_to(ROOT)} (from {run / name})")


def official_test(run: Path) -> None:
    section("official MNIST test set: README 'cnnlab eval runs/demo --dataset mnist --split test'")
    folder = os.environ.get("CNNLAB_MNIST_TEST_DIR")
    if not folder:
        print(
            "skipped: set CNNLAB_MNIST_TEST_DIR to a folder holding t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte"
        )
        print("(or run `cnnlab eval runs/demo --dataset mnist --split test`, which downloads them)")
        return
    run_cnnlab("eval", str(run), "--dataset", "mnist", "--split", "test", "--data-dir", folder)


def backprop() -> None:
    section("backpropagation from scratch: README 'Backpropagation from scratch'")
    for loss in ("nll", "ce", "mse", "logistic"):
        payload = json.loads(run_cnnlab("backprop", "check", "--loss", loss, "--json", show=False))
        print(f"  {loss:9s} max relative error vs autograd {payload['max_rel_error']:.1e}  passed {payload['passed']}")
    out = ROOT / "runs" / "figures-backprop"
    run_cnnlab("backprop", "train", "--out", str(out.relative_to(ROOT)), "--overwrite", "--quiet")
    print("$ python benchmarks/backprop_speed.py", flush=True)
    shell([sys.executable, "benchmarks/backprop_speed.py"])


def onnx_agreement(run: Path) -> None:
    section("ONNX agreement: README 'Export: cnnlab export'")
    import numpy as np
    import onnx
    import onnxruntime

    import cnnlab
    from cnnlab.data import load_data

    path = run / "model.onnx"
    run_cnnlab("export", str(run), "--format", "onnx", "--out", str(path))
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["cnnlab"])
    val = load_data("mnist5k", splits=("val",)).splits["val"]
    pixels = val.images.numpy().astype(np.float64)
    mean, std = np.array(meta["mean"])[:, None, None], np.array(meta["std"])[:, None, None]
    x = ((pixels / 255 - mean) / std).astype(np.float32)
    theirs = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    ours = cnnlab.load(run).probabilities(val.images).numpy()
    labels = val.labels.numpy()
    print(f"largest difference in any probability, onnxruntime vs cnnlab: {np.abs(theirs - ours).max():.1e}")
    print(
        f"accuracy: onnxruntime {100 * (theirs.argmax(1) == labels).mean():.1f}%, "
        f"cnnlab {100 * (ours.argmax(1) == labels).mean():.1f}% ({len(labels)} mnist5k validation digits)"
    )


def data_path(batches: int = 60, rounds: int = 5) -> None:
    section("the tutorial's data path alone: README 'Speed' table, first row")
    import statistics

    import torch
    from torch.utils.data import DataLoader

    from cnnlab.bench.reference import TutorialDataset
    from cnnlab.data import load_data

    torch.set_num_threads(1)
    data = load_data("mnist5k", splits=("train",))
    loader = DataLoader(
        TutorialDataset(data.splits["train"], data.spec.mean, data.spec.std), batch_size=64, shuffle=True
    )
    times = []
    for _ in range(rounds):
        started, n = time.perf_counter(), 0
        for _batch in loader:
            n += 1
            if n == batches:
                break
        times.append((time.perf_counter() - started) / n)
    print(
        f"per-sample PIL -> ToTensor -> Normalize, DataLoader collate, batch 64, 1 thread: "
        f"{1e3 * statistics.median(times):.1f} ms per batch (median of {rounds} rounds of {batches} batches)"
    )


def redrawn(digit: Any, canvas: int = 280, scale: int = 6, offset: tuple[int, int] = (30, 90)) -> Any:
    """An MNIST digit (light on black, 28×28) redrawn ``scale``× larger in near-black ink on a white
    ``canvas``×``canvas`` page at ``offset`` (x, y): how a person draws or photographs a digit."""
    import numpy as np
    from PIL import Image

    side = 28 * scale
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR), np.float32) / 255
    page = np.full((canvas, canvas), 255.0, np.float32)
    x, y = offset
    page[y : y + side, x : x + side] = 255 * (1 - ink) + 20 * ink
    return Image.fromarray(page.round().astype(np.uint8))


def preprocessing(run: Path) -> None:
    section("preprocessing of drawn digits: README 'Draw a digit: cnnlab serve'")
    import torch

    import cnnlab
    from cnnlab.data import load_data
    from cnnlab.data.images import fit_image

    predictor = cnnlab.load(run)
    val = load_data("mnist5k", splits=("val",)).splits["val"]
    pages = [redrawn(image[0].numpy()) for image in val.images]

    def accuracy(images: torch.Tensor) -> float:
        return 100 * float((predictor.probabilities(images).argmax(1) == val.labels).float().mean())

    prepared = torch.stack([predictor.prepare(page) for page in pages])
    naive = torch.stack([fit_image(page, predictor.spec.channels, predictor.spec.size, invert=True) for page in pages])
    print(f"{len(pages)} mnist5k validation digits, model {run}:")
    print(f"  as they are (light on dark, centred):                 {accuracy(val.images):.1f}%")
    print(f"  redrawn 6x, dark on white, off-centre, prepared by the model's preprocessing: {accuracy(prepared):.1f}%")
    print(f"  the same pages, plain resize to 28x28 and invert:     {accuracy(naive):.1f}%")


def serve_screenshot(run: Path) -> None:
    section("serve page: docs/images/serve.png")
    if not CHROMIUM.exists():
        print(f"skipped: {CHROMIUM} is missing (apt-get install -y chromium); docs/images/serve.png left as it is")
        return
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: playwright is missing (pip install playwright); docs/images/serve.png left as it is")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"$ cnnlab serve {run} --port {port}   (then a 7 drawn with two strokes in headless Chromium)", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "cnnlab", "serve", str(run), "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/healthz", server)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url)
                page.wait_for_selector("body[data-ready='true']")
                draw_seven(page)
                page.click("#predict")
                page.wait_for_selector("#result[data-state='done']")
                print(f"the page reads: {page.text_content('#label')} {page.text_content('#confidence')}")
                IMAGES.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(IMAGES / "serve.png"), full_page=True)
                print(f"wrote {(IMAGES / 'serve.png').relative_to(ROOT)}")
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            sys.exit(f"cnnlab serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"cnnlab serve did not answer {url} within {timeout:.0f} s")
            time.sleep(0.2)


def draw_seven(page: Any) -> None:
    """Two mouse strokes on the canvas: the bar of a 7, then its stem."""
    box = page.locator("#pad").bounding_box()

    def at(fx: float, fy: float) -> tuple[float, float]:
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    for stroke in ([at(0.28, 0.22), at(0.72, 0.22)], [at(0.72, 0.22), at(0.58, 0.5), at(0.46, 0.8)]):
        page.mouse.move(*stroke[0])
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*point, steps=8)
        page.mouse.up()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/demo", help="the demo run directory (default runs/demo)")
    parser.add_argument("--reuse", action="store_true", help="keep a finished run in --run instead of training again")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections ({', '.join(SECTIONS)})")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    run = Path(args.run)
    if "demo" not in chosen and not finished(ROOT / run):
        sys.exit(f"{run} holds no finished run: run the demo section first (python benchmarks/figures.py --only demo)")
    os.chdir(ROOT)
    steps = {
        "demo": lambda: demo(run, args.reuse),
        "test": lambda: official_test(run),
        "backprop": backprop,
        "onnx": lambda: onnx_agreement(run),
        "datapath": data_path,
        "preprocess": lambda: preprocessing(run),
        "serve": lambda: serve_screenshot(run),
    }
    for name in SECTIONS:
        if name in chosen:
            steps[name]()


if __name__ == "__main__":
    main()
