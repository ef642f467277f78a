"""The ``lr-find``, ``sweep`` and ``runs`` sub-commands. Nothing heavy is imported until one runs."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from cnnlab.errors import UserError
from cnnlab.text import safe, safe_lines
from cnnlab.tune.sweep import DEFAULT_OUT, DEFAULT_STUDY


def register(subparsers: Any) -> None:
    """Add ``lr-find``, ``sweep`` and ``runs`` to the ``cnnlab`` command."""
    from cnnlab.flags import add_train_arguments

    # "resolve": these commands' own --out replaces the train flag --out (a run directory)
    p = subparsers.add_parser(
        "lr-find", conflict_handler="resolve", help="learning-rate range test: loss against a growing rate, suggestions"
    )
    add_train_arguments(p)
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--steps", type=int, default=100, help="at most this many batches (default 100)")
    p.add_argument("--out", dest="plot", metavar="FILE.png", default=None, help="draw the curve with the suggestions")
    p.add_argument("--json", action="store_true", help="print suggestion, steepest, valley, lrs and losses as JSON")
    p.set_defaults(func=cmd_lr_find)

    p = subparsers.add_parser(
        "sweep", conflict_handler="resolve", help="hyperparameter search on Optuna (TPE, median pruning), or --show"
    )
    add_train_arguments(p)
    p.add_argument("--trials", type=int, default=None, metavar="N", help="run N more trials of the study")
    p.add_argument("--study", default=DEFAULT_STUDY, metavar="NAME", help=f"study name (default {DEFAULT_STUDY})")
    p.add_argument(
        "--storage", default=None, metavar="URL",
        help="any database URL Optuna accepts (default: sqlite OUT/optuna.db); share one to sweep from many machines",
    )  # fmt: skip
    p.add_argument("--space", default=None, metavar="FILE.toml", help="search space (default: lr, momentum, "
                   "batch size, weight decay, augment); one table per option with low/high/log/step or choices")  # fmt: skip
    p.add_argument(
        "--out", dest="sweep_dir", default=DEFAULT_OUT, metavar="DIR",
        help=f"sweep folder: the database and OUT/STUDY/trial-NNNN run directories (default {DEFAULT_OUT})",
    )  # fmt: skip
    p.add_argument("--show", action="store_true", help="print the study's trials and best, write its plots")
    p.add_argument("--json", action="store_true", help="with --show: print the trials as JSON")
    p.set_defaults(func=cmd_sweep)

    p = subparsers.add_parser("runs", help="one row per run directory: model, dataset, epochs, accuracy, status")
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="folder searched for runs (default runs/)")
    p.add_argument("names", nargs="*", metavar="RUN", help="only these runs (paths, or names under DIR)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per run")
    p.add_argument("--plot", metavar="FILE.png", help="overlay the runs' validation curves in one picture")
    p.set_defaults(func=cmd_runs)


def train_config(args: argparse.Namespace, command: str) -> Any:
    """The :class:`~cnnlab.config.TrainConfig` the train flags describe, as ``cnnlab train`` builds it."""
    from cnnlab.flags import config_options
    from cnnlab.recipes import resolve

    if args.resume:
        raise UserError(f"{command} starts from fresh models; --resume does not apply")
    if args.nproc is not None:
        raise UserError(f"{command} runs in one process; --nproc does not apply")
    options = config_options(args)
    if not isinstance(options.get("lr", 0.0), float):
        raise UserError(f"{command}: --lr must be a number here (got {options['lr']!r})")
    return resolve(None, options)[0]


def cmd_lr_find(args: argparse.Namespace) -> int:
    from cnnlab.tune.lr_find import SUGGESTION, lr_find, plot_lr_find

    cfg = train_config(args, "lr-find")
    if args.plot:
        _check_output_file(args.plot)
    result = lr_find(cfg, start=args.start, end=args.end, steps=args.steps)
    plot = None
    if args.plot:
        plot = plot_lr_find(result, args.plot, title=f"lr-find: {cfg.model} on {cfg.dataset}, {cfg.optimizer}")
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"lr-find: {cfg.model} on {cfg.dataset}, {cfg.optimizer}, batch {cfg.batch_size}: {result['steps']} steps "
        f"from {result['start']:g} to {result['lrs'][-1]:.3g} (stopped: {result['stopped']})"
    )
    print(f"suggested learning rate: {result['suggestion']:.3g} ({SUGGESTION})")
    print(f"steepest descent: {result['steepest']:.3g}   valley: {result['valley']:.3g}")
    if plot is not None:
        print(f"plot saved to {plot}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from cnnlab.tune import sweep

    if args.show:
        result = sweep.show_sweep(args.study, args.storage, args.sweep_dir)
        if args.json:
            print(json.dumps(result, indent=2))
            return 0
        print(sweep.format_summary(result))
        for name, path in result["plots"].items():
            print(f"{name}: {path or '(needs two finished trials with different values)'}")
        return 0
    if args.trials is None:
        raise UserError("sweep needs --trials N (or --show to see a study)")
    cfg = train_config(args, "sweep")
    space = sweep.load_space(args.space, cfg) if args.space else sweep.DEFAULT_SPACE
    from cnnlab.errors import Interrupted

    try:
        result = sweep.run_sweep(cfg, args.trials, args.study, args.storage, space, args.sweep_dir, _echo)
    except (Interrupted, KeyboardInterrupt):
        print(
            "\ninterrupted: the running trial saved its checkpoint and counts as failed; "
            "run the same command again to continue the study",
            file=sys.stderr,
        )
        return 130
    best = result["best"]
    if best is not None:
        print(f"best so far: trial {best['number']}, val acc {100 * best['value']:.2f}%, run {safe(best['run_dir'])}")
    show = ["cnnlab", "sweep", "--show", "--study", args.study, "--out", str(args.sweep_dir)]
    show += ["--storage", args.storage] if args.storage else []
    print(f"all trials and plots: {safe(shlex.join(show))}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from cnnlab.tune.compare import format_runs, list_runs

    if args.plot:
        _check_output_file(args.plot)
    rows = list_runs(args.dir, args.names)
    plot = None
    if args.plot:
        from cnnlab.tune.compare import plot_runs

        plot = plot_runs(rows, args.plot)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(safe_lines(format_runs(rows)) if rows else f"no runs under {safe(args.dir)}")
    if plot is not None:
        print(f"validation curves saved to {safe(plot)}")
    return 0


def _echo(text: str) -> None:
    print(text, flush=True)


def _check_output_file(path: str) -> None:
    """Refuse a picture path whose folder does not exist before any work is done."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise UserError(f"{path}: the folder {folder} does not exist")
