"""The ``cnnlab`` command: parse flags, call the Python API, print. No logic of its own.

Exit codes: 0 success, 1 a check failed, 2 a user error (one line, no traceback), 3 training
diverged, 130 interrupted (a checkpoint was saved first).
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from cnnlab.config import COMPILE_MODES
from cnnlab.errors import UserError

TRAIN_HELP = {
    "model": "network to train (see `cnnlab models`; default seednet, the tutorial's CNN)",
    "dataset": "mnist5k (default, embedded), digits, mnist, fashion-mnist, kmnist, cifar10 or folder:PATH",
    "data_dir": "where downloaded / IDX files live (default ./data)",
    "loss": "nll (default), ce, mse or logistic",
    "optimizer": "sgd (default), adam, adamw or adadelta",
    "lr": "learning rate α (default 0.01)",
    "momentum": "SGD momentum μ (default 0.5; 0 gives plain Δw = −α ∂E/∂w)",
    "weight_decay": "L2 weight decay (default 0)",
    "schedule": "learning-rate schedule: none (default), step, cosine or onecycle",
    "gamma": "factor per epoch for --schedule step (default 0.7)",
    "label_smoothing": "label smoothing for --loss ce (default 0)",
    "augment": "random translation of up to N pixels while training, plus a random mirror for cifar10 (default 0)",
    "batch_size": "images per optimiser step (default 64)",
    "epochs": "passes over the training split (default 9)",
    "seed": "the one seed for weights, order and augmentation (default 1)",
    "max_steps": "stop after N optimiser steps (smoke runs)",
    "device": "auto (default), cpu, cuda or mps",
    "threads": "CPU threads for torch",
    "out": "run directory (default runs/<time>-<model>-<dataset>)",
    "checkpoint_every": "also write last.pt every N optimiser steps",
    "image_size": "image side for folder: datasets (default 28 grey, 32 colour)",
}


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # only flags the user gives override the config file / stored run
    p.add_argument(
        "--config", default=None, metavar="FILE.toml", help="read options from a TOML file; flags override it"
    )
    p.add_argument(
        "--recipe",
        choices=("tutorial", "fast"),
        default=S,
        help="tutorial (default: the tutorial's settings) or fast (fastnet, one-cycle, label smoothing, augmentation)",
    )
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run from its last.pt")
    p.add_argument("--overwrite", action="store_true", help="reuse an --out folder that already holds a run")
    for name, kind in [("model", str), ("dataset", str), ("data_dir", str), ("loss", str), ("optimizer", str),
                       ("lr", float), ("momentum", float), ("weight_decay", float), ("schedule", str),
                       ("gamma", float), ("label_smoothing", float), ("augment", int), ("batch_size", int),
                       ("epochs", int), ("seed", int), ("max_steps", int), ("device", str), ("threads", int),
                       ("out", str), ("checkpoint_every", int), ("image_size", int)]:  # fmt: skip
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=S, help=TRAIN_HELP[name])
    p.add_argument(
        "--classes",
        dest="classes",
        default=S,
        type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
        help="keep only these classes, relabelled in order (e.g. 3,8; needed by --loss logistic)",
    )
    for name, text in [("nesterov", "Nesterov momentum"), ("deterministic", "deterministic kernels only (bit-exact reruns)"),
                       ("amp", "bfloat16 autocast (mixed precision)"), ("channels_last", "channels-last memory format"),
                       ("compile", "torch.compile the model"), ("tensorboard", "also log to RUN_DIR/tensorboard")]:  # fmt: skip
        p.add_argument("--" + name.replace("_", "-"), dest=name, action="store_true", default=S, help=text)
    p.add_argument("--dtype", choices=("float32", "float64"), default=S, help="parameter precision (default float32)")
    p.add_argument(
        "--compile-mode", dest="compile_mode", choices=COMPILE_MODES, default=S,
        help="torch.compile mode (implies --compile); reduce-overhead replays CUDA graphs, for small models on a GPU",
    )  # fmt: skip
    p.add_argument("--quiet", dest="progress", action="store_false", default=S, help="no progress bars or epoch lines")
    p.add_argument(
        "--dry-run", action="store_true", help="one optimiser step and one validation pass (like --max-steps 1)"
    )
    p.add_argument(
        "--save-model", action="store_true", help="accepted for pytorch/examples habits: checkpoints are always saved"
    )
    p.add_argument(
        "--nproc", type=int, default=None, metavar="N",
        help="train with N processes on this machine (DDP through torchrun; --batch-size is per process)",
    )  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    from cnnlab import api
    from cnnlab.config import FAST_RECIPE, TrainConfig, load_toml

    options = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    if args.dry_run:
        options["max_steps"] = 1
    if args.nproc is not None:  # start torchrun, which runs this same command once per process
        from cnnlab.distributed import launch, without_nproc

        return launch(args.nproc, without_nproc(args.argv), options.get("device", "auto"))
    if args.resume:
        result = api.train(resume=args.resume, **options)
    else:
        base: dict[str, Any] = {}
        if getattr(args, "recipe", "tutorial") == "fast":
            base.update(FAST_RECIPE)
        if args.config:
            base.update(load_toml(args.config))
        result = api.train(TrainConfig(**base), overwrite=args.overwrite, **options)
    from cnnlab.distributed import is_main

    if not is_main():  # under torchrun only rank 0 reports
        return 0
    last = result.history[-1]
    print(f"run saved to {result.run_dir}")
    print(f"validation accuracy {100 * last['val_acc']:.2f}% (best {100 * result.best_val_acc:.2f}%)")
    return 0


def cmd_hello(args: argparse.Namespace) -> int:
    from cnnlab.env import format_hello, hello

    info = hello()
    print(json.dumps(info, indent=2) if args.json else format_hello(info))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from cnnlab.data.registry import DATASETS, probe_available

    print(f"{'name':<14} {'shape':<9} {'classes':>7}  {'offline now':<11}  description")
    for name, info in DATASETS.items():
        shape = f"{info.in_channels}x{info.image_size}x{info.image_size}"
        available = "yes" if probe_available(name, args.data_dir) else "no"
        print(f"{name:<14} {shape:<9} {len(info.classes):>7}  {available:<11}  {info.description}")
    print(f"{'folder:PATH':<14} {'any':<9} {'any':>7}  {'yes':<11}  your own images, one sub-folder per class")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from cnnlab.models import MODELS, build_model, count_parameters, describe

    print(f"{'name':<12} {'params (MNIST)':>14}  description")
    for name in MODELS:
        print(f"{name:<12} {count_parameters(build_model(name, 1, 28, 10)):>14,}  {describe(name)}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnlab import api

    print(api.summary(args.model, args.dataset, args.data_dir, plot=args.plot))
    if args.plot:
        print(f"diagram saved to {args.plot}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from cnnlab import api

    result = api.evaluate(args.run, args.dataset, args.data_dir, args.split, args.out, args.device)
    if args.json:
        keys = (
            "dataset",
            "split",
            "n",
            "loss",
            "accuracy",
            "per_class",
            "confusion_matrix",
            "confusion_png",
            "mistakes_png",
        )
        print(json.dumps({k: result[k] for k in keys}, indent=2))
        return 0
    print(f"{result['dataset']} {result['split']}: {result['n']} images")
    print(f"loss {result['loss']:.4f}  accuracy {100 * result['accuracy']:.2f}%")
    print(result["report"])
    print(f"confusion matrix: {result['confusion_png']}")
    print(f"most confident mistakes: {result['mistakes_png']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnlab import api

    results = api.predict(args.run, args.images, topk=args.topk, invert=args.invert, device=args.device)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        ranked = ", ".join(f"{name} {100 * p:.1f}%" for name, p in r["topk"])
        print(f"{r['image']}: {r['label']} ({100 * r['probability']:.1f}%)  [{ranked}]")
    return 0


DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class OneLineErrors(argparse.ArgumentParser):
    """argparse with cnnlab's error style: one line, exit code 2, no usage block (sub-commands too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from cnnlab import __version__

    parser = OneLineErrors(
        prog="cnnlab", description="Learn, train and ship convolutional neural networks with PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("hello", help="versions and the device a run would use (Hello PyTorch)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_hello)

    p = sub.add_parser("datasets", help="list datasets and whether each is available offline now")
    p.add_argument("--data-dir", default="./data")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", help="list models with their parameter counts")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="layer table of a model (torchinfo), optionally a diagram")
    p.add_argument("--model", default="seednet")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the classic CNN diagram")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train a model and write a run directory (defaults: the tutorial recipe)")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="loss, accuracy, per-class report and pictures of a trained model")
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    p.add_argument("--dataset", help="evaluate on another dataset (default: the run's)")
    p.add_argument("--data-dir", help="where that dataset's files are")
    p.add_argument(
        "--split", choices=("train", "val", "test"), help="default: test where the dataset has one, else val"
    )
    p.add_argument("--out", help="folder for the pictures (default: beside the checkpoint)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes for image files")
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument(
        "--invert", action="store_true", help="invert dark-on-light drawings (MNIST digits are light on dark)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    p.set_defaults(func=cmd_predict)

    for module in _feature_modules():
        module.register(sub)
    return parser


FEATURE_MODULES = ("cnnlab.backprop.cli", "cnnlab.bench", "cnnlab.serve", "cnnlab.export")


def _feature_modules() -> list[Any]:
    """Sub-command groups that live beside their feature; each has ``register(subparsers)``."""
    import importlib

    modules = []
    for name in FEATURE_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):  # a real missing dependency: a bug
                raise
    return modules


def main(argv: list[str] | None = None) -> int:
    import torch

    from cnnlab.engine import Diverged, Interrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Diverged as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return 3
    except Interrupted as exc:
        resume = getattr(exc, "run_dir", None) or getattr(args, "resume", None) or "RUN_DIR"
        print(f"\ninterrupted ({exc}); checkpoint saved. Resume with: cnnlab train --resume {resume}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except torch.OutOfMemoryError:
        print("error: out of GPU memory: try a smaller --batch-size (or --amp, or --device cpu)", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk or a read-only folder while writing results: one line too
        if exc.errno not in DISK_ERRORS:
            raise
        print(f"error: {exc.filename or 'a file'}: {exc.strerror} (free some space or fix the folder)", file=sys.stderr)
        return 2
