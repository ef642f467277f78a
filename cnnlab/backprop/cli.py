"""``cnnlab backprop``: prove the NumPy engine against autograd, or train with it.

    cnnlab backprop check [--model seednet] [--loss nll|ce|mse|logistic] [--json]
    cnnlab backprop train [--epochs 9] [--lr 0.01] [--momentum 0.5] [--batch-size 64]
                          [--seed 1] [--out DIR]

Exit codes: 0 success, 1 the check failed; user errors raise :class:`cnnlab.errors.UserError`.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cnnlab.errors import UserError

LOSS_NAMES = ("nll", "ce", "mse", "logistic")


def register(subparsers: Any) -> None:
    """Add the ``backprop`` command (with ``check`` and ``train``) to the main parser."""
    p = subparsers.add_parser(
        "backprop",
        help="backpropagation from scratch in NumPy, checked against autograd",
        description="Backpropagation from scratch in NumPy, proven equal to PyTorch autograd.",
    )
    sub = p.add_subparsers(dest="backprop_command", required=True, metavar="SUBCOMMAND")

    c = sub.add_parser("check", help="compare every NumPy gradient with autograd and finite differences")
    c.add_argument("--model", default="seednet", help="network to check (default seednet)")
    c.add_argument("--loss", default="nll", help="nll (default), ce, mse or logistic")
    c.add_argument("--batch-size", type=int, default=32, help="real mnist5k images in the batch (default 32)")
    c.add_argument("--seed", type=int, default=0, help="seed for the weights and the batch (default 0)")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    c.set_defaults(func=cmd_check)

    t = sub.add_parser("train", help="train seednet on mnist5k with the NumPy engine (float32)")
    t.add_argument("--epochs", type=int, default=9, help="passes over the training split (default 9)")
    t.add_argument("--lr", type=float, default=0.01, help="learning rate α (default 0.01)")
    t.add_argument("--momentum", type=float, default=0.5, help="SGD momentum μ (default 0.5)")
    t.add_argument("--batch-size", type=int, default=64, help="images per SGD step (default 64)")
    t.add_argument("--seed", type=int, default=1, help="seed for the initial weights and batch order (default 1)")
    t.add_argument("--loss", default="nll", help="nll (default), ce, mse or logistic (logistic needs --classes)")
    t.add_argument(
        "--classes",
        type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
        default=None,
        help="keep only these classes, e.g. 3,8",
    )
    t.add_argument("--out", default=None, help="run directory (default runs/<time>-seednet-numpy-mnist5k)")
    t.add_argument("--overwrite", action="store_true", help="reuse an --out folder that already holds a run")
    t.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    t.set_defaults(func=cmd_train)


def cmd_check(args: argparse.Namespace) -> int:
    """Run :func:`cnnlab.backprop.compare.check`; exit 0 only if everything matched."""
    from cnnlab.backprop.compare import check, format_table

    if args.loss not in LOSS_NAMES:
        raise UserError(f"unknown loss {args.loss!r}; choose one of: {', '.join(LOSS_NAMES)}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be > 0 (got {args.batch_size})")
    from cnnlab.backprop.convert import UnsupportedModule

    try:
        result = check(model=args.model, loss=args.loss, batch_size=args.batch_size, seed=args.seed)
    except UnsupportedModule as exc:
        raise UserError(f"--model {args.model}: the NumPy engine cannot run it: {exc}") from None
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0 if result["passed"] else 1


def _validate_train(args: argparse.Namespace) -> None:
    checks = [
        (args.epochs >= 1, f"--epochs must be at least 1 (got {args.epochs})"),
        (args.lr > 0, f"--lr must be > 0 (got {args.lr})"),
        (0 <= args.momentum < 1, f"--momentum must be in [0, 1) (got {args.momentum})"),
        (args.batch_size > 0, f"--batch-size must be > 0 (got {args.batch_size})"),
        (args.loss in LOSS_NAMES, f"unknown loss {args.loss!r}; choose one of: {', '.join(LOSS_NAMES)}"),
        (
            args.loss != "logistic" or (args.classes is not None and len(args.classes) == 2),
            "--loss logistic needs a two-class task: pass --classes A,B",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def cmd_train(args: argparse.Namespace) -> int:
    """Train with the NumPy engine and write a run directory like ``cnnlab train`` does:
    config.json (options + status), metrics.csv, curves.png and weights.npz."""
    import numpy as np

    from cnnlab import plots, runs
    from cnnlab.backprop.train import train_numpy_net

    _validate_train(args)
    dataset = "mnist5k"
    run_dir = runs.create_run_dir(args.out or runs.default_run_dir("seednet-numpy", dataset), args.overwrite)
    config = {
        "engine": "numpy",
        "model": "seednet",
        "dataset": dataset,
        "loss": args.loss,
        "classes": args.classes or [],
        "optimizer": "sgd",
        "lr": args.lr,
        "momentum": args.momentum,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "dtype": "float32",
        "out": str(run_dir),
    }
    runs.write_config(run_dir, config, "running")
    history: list[dict[str, Any]] = []

    def on_epoch(row: dict[str, Any]) -> None:
        history.append(row)
        runs.write_metrics(run_dir, history)
        if not args.quiet:
            print(
                f"epoch {row['epoch']}/{args.epochs}  train loss {row['train_loss']:.4f} "
                f"acc {100 * row['train_acc']:.2f}%  val loss {row['val_loss']:.4f} "
                f"acc {100 * row['val_acc']:.2f}%  {row['seconds']:.1f}s",
                flush=True,
            )

    started = time.perf_counter()
    try:
        _, net = train_numpy_net(
            epochs=args.epochs,
            lr=args.lr,
            momentum=args.momentum,
            batch_size=args.batch_size,
            seed=args.seed,
            on_epoch=on_epoch,
            progress=not args.quiet,
            loss=args.loss,
            classes=args.classes,
        )
    except KeyboardInterrupt:
        runs.set_status(run_dir, "interrupted")
        raise
    except BaseException as exc:
        runs.set_status(run_dir, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    np.savez(run_dir / "weights.npz", **dict(net.named_params()))
    plots.plot_curves(history, run_dir / "curves.png", title="seednet on mnist5k (NumPy engine)")
    last = history[-1]
    result = {
        "final_val_acc": last["val_acc"],
        "best_val_acc": max(r["val_acc"] for r in history),
        "epochs_done": len(history),
        "seconds": time.perf_counter() - started,
    }
    runs.set_status(run_dir, "finished", result=result)
    print(f"run saved to {run_dir}")
    print(f"validation accuracy {100 * last['val_acc']:.2f}% ({result['seconds']:.1f}s)")
    return 0
