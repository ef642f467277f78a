"""Training throughput with 1 and 2 processes (DDP through torchrun) on this machine.

    python benchmarks/ddp_scaling.py [--models seednet,fastnet] [--dataset mnist5k] [--epochs 3] [--device cpu]

Each configuration is a real ``cnnlab train`` run in a fresh temporary run directory:

* ``1 proc``: one process with torch's default threads (``--batch-size B``);
* ``1 proc, 1 thread``: one process limited to one thread (what each DDP process gets on the CPU);
* ``2 proc``: ``cnnlab train --nproc 2 --batch-size B/2`` — the same global batch, the same updates;
* ``2 proc, 2x batch``: ``--nproc 2 --batch-size B`` — twice the global batch (fewer all-reduces).

Throughput is training images per second of the fastest epoch among 2..N (epoch 1 warms up; the
fastest is the one least disturbed by other work on a shared machine), from the ``seconds`` column
of ``metrics.csv`` (rank 0's wall time per epoch, validation included); the mean over epochs 2..N
is shown beside it. Process start-up is not counted there (``wall s``: the whole command).
torchrun gives every process one thread (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(run_dir: Path, nproc: int | None, batch_size: int, args: argparse.Namespace, model: str, extra: list[str]):
    """One ``cnnlab train`` run → (best and mean images/s over epochs 2.., validation accuracy, wall seconds)."""
    command = [sys.executable, "-m", "cnnlab", "train", "--model", model, "--dataset", args.dataset]
    command += ["--epochs", str(args.epochs), "--batch-size", str(batch_size), "--device", args.device]
    command += ["--out", str(run_dir), "--quiet", *extra]
    if nproc is not None:
        command += ["--nproc", str(nproc)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    with open(run_dir / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    seconds = [float(row["seconds"]) for row in rows[1:] or rows]
    best, mean = args.train_images / min(seconds), args.train_images * len(seconds) / sum(seconds)
    return best, mean, float(rows[-1]["val_acc"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="seednet,fastnet")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--train-images", type=int, default=4000, help="training split size (mnist5k: 4000)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch B of the 1-process run")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    configs = [
        ("1 proc", None, args.batch_size, []),
        ("1 proc, 1 thread", None, args.batch_size, ["--threads", "1"]),
        ("2 proc", 2, args.batch_size // 2, []),
        ("2 proc, 2x batch", 2, args.batch_size, []),
    ]
    print(f"{os.cpu_count()} CPU cores; {args.dataset}, {args.epochs} epochs, device {args.device}\n")
    print(
        "| model | processes | global batch | images/s (best epoch) | speed-up | images/s (mean) | val acc | wall s |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            base = None
            for name, nproc, batch, extra in configs:
                run_dir = Path(tmp) / f"{model}-{name.replace(' ', '_').replace(',', '')}"
                rate, mean, acc, wall = train(run_dir, nproc, batch, args, model, extra)
                base = base or rate
                global_batch = batch * (nproc or 1)
                print(
                    f"| {model} | {name} | {global_batch} | {rate:,.0f} | {rate / base:.2f}x | {mean:,.0f} | "
                    f"{100 * acc:.2f}% | {wall:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
