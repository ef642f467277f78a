"""``--balance`` on a 10:1 unbalanced set: the minority class's recall with none, weights and sampler.

    python benchmarks/balance_recall.py                 # seeds 1 to 10
    python benchmarks/balance_recall.py --seeds 3       # seeds 1 to 3

Writes a folder of mnist5k's 4s and 9s as PNG files: ``train/`` 300 fours and 30 nines (10:1),
``val/`` 50 + 50 and ``test/`` 100 + 100 (balanced; the test digits come from mnist5k's val split, so
no test digit was trained on). For each seed and each ``--balance``, it trains
``cnnlab.train(dataset="folder:DIR", recipe="tutorial", balance=B, epochs=4, lr=0.05, seed=S)`` (the tutorial's seednet
and SGD otherwise) and evaluates ``best.pt`` on ``test/`` (``cnnlab.evaluate(run, split="test")``),
then prints the nines' recall and the test accuracy per run, and their means.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from PIL import Image

import cnnlab
from cnnlab.data import load_data

MAJORITY, MINORITY = 4, 9  # confusable digits; 9 is the 1-in-11 minority of the training split
LAYOUT = {  # split → (mnist5k split the digits come from, first index per digit, count per digit)
    "train": ("train", 0, {MAJORITY: 300, MINORITY: 30}),
    "val": ("train", 350, {MAJORITY: 50, MINORITY: 50}),
    "test": ("val", 0, {MAJORITY: 100, MINORITY: 100}),
}
BALANCES = ("none", "weights", "sampler")


def write_folder(root: Path) -> Path:
    mnist5k = load_data("mnist5k")
    for split, (source, start, counts) in LAYOUT.items():
        images, labels = mnist5k.splits[source].images, mnist5k.splits[source].labels
        for digit, count in counts.items():
            folder = root / split / str(digit)
            folder.mkdir(parents=True)
            index = torch.nonzero(labels == digit).squeeze(1)[start : start + count]
            for k, i in enumerate(index.tolist()):
                Image.fromarray(images[i, 0].numpy()).save(folder / f"{k}.png")
    return root


def measure(folder: Path, work: Path, balance: str, seed: int) -> tuple[float, float]:
    """(recall of the minority class, accuracy) on test/ of one training run."""
    run = work / f"{balance}-{seed}"
    cnnlab.train(
        dataset=f"folder:{folder}",
        recipe="tutorial",
        balance=balance,
        epochs=4,
        lr=0.05,
        seed=seed,
        out=str(run),
        progress=False,
    )
    result = cnnlab.evaluate(run, split="test")
    recall = next(row["recall"] for row in result["per_class"] if row["class"] == str(MINORITY))
    return recall, result["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 1 to N (default 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp) / "fours-and-nines")
        results: dict[str, list[tuple[float, float]]] = {b: [] for b in BALANCES}
        print(f"{'seed':>4}  " + "  ".join(f"{b + ' recall/acc':>20}" for b in BALANCES))
        for seed in range(1, args.seeds + 1):
            for balance in BALANCES:
                results[balance].append(measure(folder, Path(tmp), balance, seed))
            cells = [f"{100 * r:9.1f}% /{100 * a:6.1f}%" for r, a in (results[b][-1] for b in BALANCES)]
            print(f"{seed:>4}  " + "  ".join(f"{c:>20}" for c in cells), flush=True)
        means = [
            f"{100 * statistics.mean(r for r, _ in results[b]):9.1f}% /{100 * statistics.mean(a for _, a in results[b]):6.1f}%"
            for b in BALANCES
        ]
        print(f"{'mean':>4}  " + "  ".join(f"{c:>20}" for c in means))
        print(f"recall of the {MINORITY}s (the minority, 30 of 330 training images) / accuracy on the balanced test/")


if __name__ == "__main__":
    main()
