"""Time to 98 % on the official MNIST test set, training ``--recipe fast`` on the 4,000 mnist5k digits.

    python benchmarks/time_to_98.py [--test-dir DIR] [--seeds 1,2,3]
                                    [--epochs 8] [--threads N] [--option key=value ...]

``DIR`` (default: the environment variable ``CNNLAB_MNIST_TEST_DIR``) holds the official MNIST test
files ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``, as
``cnnlab eval RUN --dataset mnist --split test`` downloads them into ``./data/MNIST/raw``.

For each seed the fast recipe trains from scratch (``engine.fit``, the same path as ``cnnlab train
--recipe fast``); after every epoch the model is scored on the official 10,000 test digits with the
clock stopped, so the reported seconds are training (with its per-epoch validation pass) only. The
test set is used here, never for training, choosing or stopping. Printed per seed: the test accuracy
after each epoch with the cumulative training seconds, and the first epoch at or above 98 %.
``--option`` overrides recipe fields (``--option batch_size=64 --option lr=0.05``) for tuning.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

from cnnlab.assembly import make_loss, model_for, seed_everything
from cnnlab.config import TrainConfig, validate
from cnnlab.data import load_data, make_batches
from cnnlab.engine import evaluate, fit
from cnnlab.models import count_parameters
from cnnlab.recipes import FAST as FAST_RECIPE

TARGET = 0.98


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` → (key, value as int, float, bool or str)."""
    key, _, raw = text.partition("=")
    for kind in (int, float):
        try:
            return key, kind(raw)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(raw.lower(), raw)


def run_seed(cfg: TrainConfig, train_data, test_data) -> list[dict[str, float]]:
    """Train one seed; after each epoch: cumulative training seconds and test accuracy."""
    seed_everything(cfg.seed)
    model = model_for(cfg, train_data)
    device = next(model.parameters()).device
    test_batches = make_batches(test_data.splits["test"], test_data, 1000, device, channels_last=cfg.channels_last)
    plain_loss = make_loss(cfg.replace(label_smoothing=0.0))
    rows: list[dict[str, float]] = []
    clock = {"start": time.perf_counter(), "paused": 0.0}

    def on_epoch(state: Any) -> None:
        stopped = time.perf_counter()
        seconds = stopped - clock["start"] - clock["paused"]
        test = evaluate(model, test_batches, plain_loss)
        rows.append({"epoch": state.epoch - 1, "seconds": seconds, "test_acc": test["accuracy"]})
        model.train()
        clock["paused"] += time.perf_counter() - stopped

    fit(model, train_data, cfg, on_epoch=on_epoch)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--test-dir",
        default=os.environ.get("CNNLAB_MNIST_TEST_DIR"),
        help="folder with MNIST's two t10k files (default: $CNNLAB_MNIST_TEST_DIR)",
    )
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if not args.test_dir:
        parser.error(
            "no MNIST test files: pass --test-dir DIR or set CNNLAB_MNIST_TEST_DIR to a folder holding "
            "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] (`cnnlab eval RUN --dataset mnist "
            "--split test` downloads them into ./data/MNIST/raw when online)"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {**FAST_RECIPE, "progress": False, **dict(parse_option(o) for o in args.option)}
    if args.epochs:
        options["epochs"] = args.epochs
    base = validate(TrainConfig(**options))
    train_data = load_data("mnist5k")
    test_data = load_data("mnist", args.test_dir, ("test",), download=False)
    params = count_parameters(model_for(base, train_data))
    print(
        f"{base.model} ({params:,} params), batch {base.batch_size}, lr {base.lr}, {base.epochs} epochs, "
        f"augment {base.augment}, channels_last {base.channels_last}, {torch.get_num_threads()} threads"
    )
    finals, times_to_target = [], []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows = run_seed(base.replace(seed=seed), train_data, test_data)
        curve = "  ".join(f"{r['epoch']}:{100 * r['test_acc']:.2f}%/{r['seconds']:.1f}s" for r in rows)
        reached = next((r for r in rows if r["test_acc"] >= TARGET), None)
        finals.append(rows[-1])
        if reached:
            times_to_target.append(reached["seconds"])
        print(f"seed {seed}: {curve}")
        print(
            f"  final test accuracy {100 * rows[-1]['test_acc']:.2f}% after {rows[-1]['seconds']:.1f} s; "
            + (f"98% first at epoch {reached['epoch']} ({reached['seconds']:.1f} s)" if reached else "98% not reached")
        )
    accuracies = [r["test_acc"] for r in finals]
    seconds = [r["seconds"] for r in finals]
    print(
        f"median over {len(finals)} seeds: final test accuracy {100 * statistics.median(accuracies):.2f}% "
        f"(min {100 * min(accuracies):.2f}%), training {statistics.median(seconds):.1f} s; "
        f"{len(times_to_target)}/{len(finals)} seeds reached 98%"
    )


if __name__ == "__main__":
    main()
