"""The ``cnnlab bench`` command (see :mod:`cnnlab.bench`); torch loads only when it runs."""

from __future__ import annotations

import argparse
import json
from typing import Any

# The TrainConfig options bench passes to both loops (defaults: those of `cnnlab train`).
BENCH_OPTIONS = (
    "model", "epochs", "batch_size", "lr", "momentum", "seed", "device", "threads",
    "channels_last", "compile", "compile_mode", "amp",
)  # fmt: skip


def register(subparsers: Any) -> None:
    """Add ``cnnlab bench`` to the CLI."""
    from cnnlab.flags import add_option_flags

    p = subparsers.add_parser(
        "bench",
        help="the tutorial's training loop vs cnnlab train with the same options: s/epoch, time to accuracy, "
        "GFLOP/s, memory, and the convolution kernels' own time",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--dataset", default=None, help="an in-memory dataset (default mnist5k)")
    source.add_argument(
        "--synthetic", type=int, metavar="N", help="N random MNIST-shaped images whose label is in the pixels"
    )
    p.add_argument("--data-dir", default="./data", help="where that dataset's files are (default ./data)")
    add_option_flags(p, BENCH_OPTIONS)
    p.add_argument(
        "--fast-recipe", action=argparse.BooleanOptionalAction, default=True,
        help="also train --recipe fast on the same data and time its whole run (default: on)",
    )  # fmt: skip
    p.add_argument(
        "--mnist-test", metavar="DIR",
        help="folder with the official MNIST t10k IDX files: also train --recipe fast on mnist5k and score it there",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from cnnlab.bench.measure import bench
    from cnnlab.bench.report import format_bench

    options = {k: v for k, v in vars(args).items() if k in BENCH_OPTIONS}
    result = bench(
        dataset=args.dataset, synthetic=args.synthetic, data_dir=args.data_dir, fast_recipe=args.fast_recipe,
        mnist_test_dir=args.mnist_test, **options,
    )  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else format_bench(result))
    return 0
