"""``cnnlab backprop``: prove the NumPy engine against autograd, or train with it.

    cnnlab backprop check [--model seednet] [--loss nll|ce|mse|logistic] [--json]
    cnnlab backprop train [--epochs N] [--lr A] [--momentum M] [--batch-size B] [--seed S] [--out DIR]

``backprop train`` takes its defaults from :class:`cnnlab.config.TrainConfig` (the tutorial's recipe) and
writes a run directory that ``cnnlab eval``, ``predict``, ``export`` and ``serve`` read like any other.

Exit codes: 0 success, 1 the check failed; user errors raise :class:`cnnlab.errors.UserError`.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cnnlab.errors import UserError

LOSS_NAMES = ("nll", "ce", "mse", "logistic")
# The TrainConfig options ``backprop train`` takes; the rest of its run is fixed (seednet, mnist5k, SGD, float32).
TRAIN_OPTIONS = ("epochs", "lr", "momentum", "batch_size", "seed", "loss", "classes", "out", "progress")


def register(subparsers: Any) -> None:
    """Add the ``backprop`` command (with ``check`` and ``train``) to the main parser."""
    from cnnlab.flags import add_option_flags  # train's defaults and help text come from cnnlab.config.TrainConfig

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
    add_option_flags(t, TRAIN_OPTIONS)
    t.add_argument("--overwrite", action="store_true", help="reuse an --out folder that already holds a run")
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


def train_config(args: argparse.Namespace) -> Any:
    """The :class:`~cnnlab.config.TrainConfig` of a ``backprop train`` run: the flags given, the
    fields' defaults for the rest, and the engine's fixed choices (seednet on mnist5k, SGD, float32)."""
    from cnnlab.config import TrainConfig

    given = {name: getattr(args, name) for name in TRAIN_OPTIONS if hasattr(args, name)}
    return TrainConfig(model="seednet", dataset="mnist5k", optimizer="sgd", dtype="float32", **given)


def _validate_train(cfg: Any) -> None:
    """``cnnlab train``'s own checks (:func:`cnnlab.config.validate`), so that best.pt loads like any
    run's, plus the one this engine adds: a loss it implements."""
    from cnnlab.config import validate

    validate(cfg)
    if cfg.loss not in LOSS_NAMES:
        raise UserError(f"the NumPy engine has no --loss {cfg.loss}; choose one of: {', '.join(LOSS_NAMES)}")


def cmd_train(args: argparse.Namespace) -> int:
    """Train with the NumPy engine and write a run directory like ``cnnlab train`` does: config.json
    (options + status), metrics.csv, curves.png, weights.npz (the NumPy weights) and best.pt (the
    same weights in a torch checkpoint, so eval, predict, export and serve work on the run).

    What the run is made of comes from :mod:`cnnlab.assembly`, as for ``cnnlab train``: the data the
    options choose (:func:`~cnnlab.assembly.training_data`) and the seeded initial model
    (:func:`~cnnlab.assembly.initial_model`, copied into NumPy), so both engines start from the same
    weights. :mod:`cnnlab.runs` writes its status (running, then finished, failed or interrupted). The
    optimiser, loss and batches are the engine's own NumPy ones: torch's cannot update NumPy arrays."""
    import numpy as np

    from cnnlab import runs
    from cnnlab.assembly import initial_model, training_data
    from cnnlab.backprop.convert import from_torch
    from cnnlab.backprop.data import arrays_from
    from cnnlab.backprop.train import train_numpy_net
    from cnnlab.engine import format_epoch

    cfg = train_config(args)
    _validate_train(cfg)
    if cfg.out:  # before any data is read
        runs.refuse_existing_run(cfg.out, args.overwrite)
    data = training_data(cfg)
    model = initial_model(cfg, data)  # the torch model best.pt will hold; its initial weights start the NumPy net
    run_dir = runs.create_run_dir(cfg.out or runs.default_run_dir("seednet-numpy", cfg.dataset), args.overwrite)
    cfg = cfg.replace(out=str(run_dir))
    runs.start_run(run_dir, {**cfg.to_dict(), "engine": "numpy"}, classes=list(data.spec.classes))
    history: list[dict[str, Any]] = []

    def on_epoch(row: dict[str, Any]) -> None:
        history.append(row)
        runs.write_metrics(run_dir, history)
        if cfg.progress:
            print(format_epoch(row, cfg.epochs), flush=True)

    started = time.perf_counter()
    try:
        _, net = train_numpy_net(
            epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum, batch_size=cfg.batch_size, seed=cfg.seed,
            on_epoch=on_epoch, progress=cfg.progress, loss=cfg.loss, classes=cfg.classes or None,
            data=arrays_from(data), net=from_torch(model, np.float32),
        )  # fmt: skip
        _save_run(run_dir, net, model, cfg, data, history)
    except BaseException as exc:
        runs.fail_run(run_dir, exc)  # interrupted (Ctrl-C) or failed, with the error
        raise
    last = history[-1]
    result = {
        "final_val_acc": last["val_acc"],
        "best_val_acc": max(r["val_acc"] for r in history),
        "epochs_done": len(history),
        "seconds": time.perf_counter() - started,
    }
    runs.finish_run(run_dir, result)
    print(f"run saved to {run_dir}")
    print(f"validation accuracy {100 * last['val_acc']:.2f}% ({result['seconds']:.1f}s)")
    return 0


def _save_run(run_dir: Any, net: Any, model: Any, cfg: Any, data: Any, history: list[dict[str, Any]]) -> None:
    """weights.npz, best.pt (the final weights, copied into the torch ``model`` by
    :func:`cnnlab.backprop.convert.to_torch`, with the header every cnnlab checkpoint carries) and curves.png."""
    import numpy as np

    from cnnlab import plots
    from cnnlab.assembly import checkpoint_header
    from cnnlab.backprop.convert import to_torch
    from cnnlab.checkpoint import save_atomic

    np.savez(run_dir / "weights.npz", **dict(net.named_params()))
    model = to_torch(net, model)
    save_atomic({"model": model.state_dict(), **checkpoint_header(cfg, data)}, run_dir / "best.pt")
    plots.plot_curves(history, run_dir / "curves.png", title="seednet on mnist5k (NumPy engine)")
