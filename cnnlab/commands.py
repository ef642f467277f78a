"""The core commands: ``hello``, ``datasets``, ``models``, ``summary``, ``train``, ``eval``, ``predict`` and
``export``. Like every command module (see :data:`cnnlab.cli.COMMAND_MODULES`) it has ``register(subparsers)``
and one ``cmd_NAME(args) -> exit code`` per command that parses nothing, calls the Python API and prints;
torch loads only when a command runs."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from cnnlab.config import DEVICES
from cnnlab.errors import UserError
from cnnlab.flags import TTA_HELP, add_backend_flags, add_train_arguments, config_options, train_options
from cnnlab.text import answer_text, safe, safe_lines


def register(sub: argparse._SubParsersAction) -> None:
    """Add the core commands: hello, datasets, models, summary, train, eval, predict and export."""
    p = sub.add_parser("hello", help="versions and the device a run would use (Hello PyTorch)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_hello)

    p = sub.add_parser("datasets", help="list datasets and whether each is available offline now")
    p.add_argument("--data-dir", default="./data", help="where downloaded / IDX files are looked for (default ./data)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", help="list the models (cnnlab's own and torchvision's) with their parameter counts")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="layer table of a model (torchinfo), optionally a diagram")
    p.add_argument("--model", default="seednet", help="model name (see cnnlab models; default seednet)")
    p.add_argument("--dataset", default="mnist5k", help="dataset that sizes the model (default mnist5k)")
    p.add_argument("--data-dir", default="./data", help="where that dataset's files are (default ./data)")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the classic CNN diagram")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train a model and write a run directory (defaults: the tutorial recipe)")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="loss, accuracy, per-class report and pictures of a trained model")
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT", help="a run directory (its best.pt) or a checkpoint file")
    p.add_argument("--dataset", help="evaluate on another dataset (default: the run's)")
    p.add_argument("--data-dir", help="where that dataset's files are")
    p.add_argument(
        "--split", choices=("train", "val", "test"), help="default: test where the dataset has one, else val"
    )
    p.add_argument("--out", help="folder for the pictures (default: beside the checkpoint)")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where to run the model (default cpu)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument("--tta", action="store_true", help=TTA_HELP)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "predict", help="top-k classes for image files and folders (to a CSV or JSON Lines file with --csv/--jsonl)",
        description="Answer image files and folders (walked recursively in sorted order; hidden files skipped). "
        "A file that cannot be read gets a warning on stderr and the others are answered; the exit status is 0 "
        "when at least one image was. --csv/--jsonl stream one row per file (columns image, label, probability, "
        "class_K and probability_K for the top k, error) into a file written atomically, or - for stdout.",
    )  # fmt: skip
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT", help="a run directory (its best.pt) or a checkpoint file")
    p.add_argument(
        "images", nargs="+", metavar="IMAGE|FOLDER",
        help="PNG, JPEG, GIF, BMP, WebP or TIFF files of any size, or folders of them",
    )  # fmt: skip
    p.add_argument("--topk", type=int, default=3, help="how many classes to list per image (default 3)")
    p.add_argument(
        "--invert", action="store_true",
        help="force inverting the image's grey levels (normally the background is detected)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where to run the model (default cpu)")
    add_backend_flags(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    out.add_argument("--csv", metavar="FILE", help="write one CSV row per file to FILE (- for stdout)")
    out.add_argument("--jsonl", metavar="FILE", help="write one JSON object per line and file to FILE (- for stdout)")
    p.add_argument("--batch-size", type=int, default=64, help="images per model call (default 64)")
    p.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="processes decoding images (default: up to 4, none for one batch)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar with --csv/--jsonl")
    p.add_argument("--tta", action="store_true", help=TTA_HELP)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write the model as ONNX or TorchScript, with its preprocessing")
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT", help="a run directory (its best.pt) or a checkpoint file")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="onnx (onnxruntime) or torchscript")
    p.add_argument(
        "--out", metavar="FILE",
        help="output file (default: model.onnx / model.torchscript.pt / model.int8.onnx beside the checkpoint)",
    )  # fmt: skip
    p.add_argument(
        "--int8", action="store_true",
        help="also write an int8 ONNX model (onnxruntime static QDQ quantization; prints both files' sizes and "
        "validation accuracies)",
    )  # fmt: skip
    p.add_argument(
        "--calibration", type=int, default=None, metavar="N",
        help="--int8: validation images that calibrate the activation ranges (default 256)",
    )  # fmt: skip
    p.set_defaults(func=cmd_export)


def cmd_train(args: argparse.Namespace) -> int:
    from cnnlab.training import train

    options = train_options(args)
    if args.nproc is not None:  # start torchrun, which runs this same command once per process
        return launch_torchrun(args.nproc, without_nproc(args.argv), options.get("device", "auto"))
    if args.resume:
        result = train(resume=args.resume, **options)
    else:
        result = train(overwrite=args.overwrite, **config_options(args))
    if not result.is_main:  # under torchrun only rank 0 reports
        return 0
    last = result.history[-1]
    print(f"run saved to {result.run_dir}")
    print(f"validation accuracy {100 * last['val_acc']:.2f}% (best {100 * result.best_val_acc:.2f}%)")
    return 0


def launch_torchrun(nproc: int, argv: list[str], device: str = "auto") -> int:
    """``cnnlab train --nproc N``: run ``torchrun --standalone --nproc-per-node N -m cnnlab ARGV``.

    ``argv`` is the command line without ``--nproc``. torchrun and its children start with
    ``PYTHONSAFEPATH=1`` (``python -P``: the current directory is not on ``sys.path``, so a
    ``torch/`` folder there is never imported). Returns
    torchrun's exit code (1 when any process failed; their ``error:`` lines say why), or 130 after
    Ctrl-C (the processes save ``last.pt`` and stop together).
    """
    import torch

    if nproc < 1:
        raise UserError(f"--nproc must be ≥ 1 (got {nproc})")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda" and not gpus:
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch (use --device cpu or auto)")
    if device in ("auto", "cuda") and gpus and nproc > gpus:
        raise UserError(
            f"--nproc {nproc}: only {gpus} CUDA GPU(s) visible (one process per GPU; use fewer or --device cpu)"
        )
    if device == "mps" and nproc > 1:
        raise UserError("--device mps cannot train with several processes (DDP needs CUDA or the CPU)")
    package_root = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    command = [sys.executable, "-P", "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command += ["-m", "cnnlab", *argv]
    interrupted: list[int] = []  # Ctrl-C reaches torchrun too: it asks the processes to save and stop
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        code = subprocess.call(command, env={**os.environ, "PYTHONPATH": python_path, "PYTHONSAFEPATH": "1"})
    finally:
        signal.signal(signal.SIGINT, previous)
    return 130 if interrupted and code != 0 else code


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` with ``--nproc N`` / ``--nproc=N`` removed."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def cmd_hello(args: argparse.Namespace) -> int:
    from cnnlab.env import format_hello, hello

    info = hello()
    print(json.dumps(info, indent=2) if args.json else format_hello(info))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from cnnlab.data.registry import DATASETS, probe_available

    print(f"{'name':<16} {'shape':<9} {'classes':>7}  {'offline now':<11}  description")
    for name, info in DATASETS.items():
        shape = "x".join(map(str, info.spec.shape))
        available = probe_available(name, args.data_dir)
        print(f"{name:<16} {shape:<9} {info.spec.num_classes:>7}  {available:<11}  {info.description}")
    print(f"{'folder:PATH':<16} {'any':<9} {'any':>7}  {'yes':<11}  your own images, one sub-folder per class")
    print(f"{'csv:FILE.csv':<16} {'any':<9} {'any':>7}  {'yes':<11}  your own images listed with their labels")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from cnnlab.models import MODELS, build_model, count_parameters, describe, torchvision_catalogue

    print(f"{'name':<12} {'params (MNIST)':>14}  description")
    for name in MODELS:
        print(f"{name:<12} {count_parameters(build_model(name, 1, 28, 10)):>14,}  {describe(name)}")
    print(
        "\ntorchvision's classifiers: --model tv:NAME (from scratch), --pretrained to start from their ImageNet weights"
    )
    print(f"{'name':<24} {'params (ImageNet)':>17}  {'ImageNet top-1':>14}  {'weights input':>13}")
    for row in torchvision_catalogue():
        size = f"{row['crop']}x{row['crop']}"
        print(f"{'tv:' + row['name']:<24} {row['params']:>17,}  {row['top1']:>13.1f}%  {size:>13}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnlab.reports import summary

    print(summary(args.model, args.dataset, args.data_dir, plot=args.plot))
    if args.plot:
        print(f"diagram saved to {args.plot}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from cnnlab.reports import evaluate

    result = evaluate(args.run, args.dataset, args.data_dir, args.split, args.out, args.device, tta=args.tta)
    if args.json:
        keys = (
            "dataset",
            "split",
            "n",
            "loss",
            "accuracy",
            "per_class",
            "confusion_matrix",
            "most_confused",
            "confusion_png",
            "mistakes_png",
        )
        calibration = {k: result["calibration"][k] for k in ("temperature", "ece_before", "ece", "reliability_png")}
        print(json.dumps({**{k: result[k] for k in keys}, "calibration": calibration}, indent=2))
        return 0
    from cnnlab.data.registry import display_dataset

    print(f"{display_dataset(result['dataset'])} {result['split']}: {result['n']} images")
    print(f"loss {result['loss']:.4f}  accuracy {100 * result['accuracy']:.2f}%")
    print(safe_lines(result["report"]))
    print(f"confusion matrix: {result['confusion_png']}")
    if result["mistakes_png"]:
        print(f"most confident mistakes: {result['mistakes_png']}")
    else:
        print("no mistakes: no gallery drawn")
    cal = result["calibration"]
    if cal["ece"] is not None:
        print(
            f"calibration: temperature {cal['temperature']:.3f}, expected calibration error "
            f"{100 * cal['ece_before']:.2f}% → {100 * cal['ece']:.2f}% (reliability diagram: {cal['reliability_png']})"
        )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnlab.inference import csv_header, load, predict_files, warn_stderr, write_predictions

    if args.topk < 1:
        raise UserError(f"--topk must be ≥ 1 (got {args.topk})")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be ≥ 1 (got {args.batch_size})")
    predictor = load(args.run, args.device, args.tta, args.backend, args.onnx)
    out, fmt = (args.csv, "csv") if args.csv is not None else (args.jsonl, "jsonl")
    rows = predict_files(
        predictor, args.images, args.topk, args.invert, args.batch_size, args.workers,
        progress=out is not None and not args.quiet, warn=warn_stderr,
    )  # fmt: skip
    if out is not None:
        header = csv_header(predictor.answer_fields(args.topk), args.topk, predictor.spec.num_classes)
        answered, failed = write_predictions(rows, out, fmt, header)
        shown = "stdout" if out == "-" else out
        print(f"{answered} image(s) answered, {failed} failed → {shown}", file=sys.stderr if out == "-" else sys.stdout)
        return 0
    answers, answered = [], 0
    for r in rows:
        if r["error"] is not None:
            continue
        answered += 1
        if args.json:
            answers.append({k: v for k, v in r.items() if k != "error"})
        else:
            ranked = ", ".join(f"{safe(name)} {100 * p:.1f}%" for name, p in r["topk"])
            print(f"{safe(r['image'])}: {answer_text(r)}  [{ranked}]", flush=True)
    if not answered:
        raise UserError("no image could be answered (see the warnings above)")
    if args.json:
        print(json.dumps(answers, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from cnnlab.export import export, export_int8
    from cnnlab.export_format import TORCHSCRIPT_NOTE

    if args.int8:
        if args.format != "onnx":
            raise UserError("--int8 makes an ONNX model: use it with --format onnx")
        report = export_int8(args.run, args.out, *([] if args.calibration is None else [args.calibration]))
        for kind in ("fp32", "int8"):
            r = report[kind]
            print(f"{kind}: {r['path']}  {r['bytes'] / 1024:,.1f} KiB  validation accuracy "
                  f"{100 * r['val_accuracy']:.2f}% ({report['val_images']} images)")  # fmt: skip
        ratio = report["int8"]["bytes"] / report["fp32"]["bytes"]
        print(f"int8 model saved to {report['int8']['path']} ({ratio:.2f}x the size; calibrated on "
              f"{report['calibration_images']} validation images)")  # fmt: skip
    else:
        if args.calibration is not None:
            raise UserError("--calibration sets the images an --int8 model is calibrated on: add --int8")
        target = export(args.run, args.format, args.out)
        print(f"{args.format} model saved to {target}")
        if args.format == "torchscript":
            print(TORCHSCRIPT_NOTE, file=sys.stderr)
    print("input: float32 [batch, C, H, W] = (pixels / 255 - mean) / std; output: probabilities [batch, classes]")
    return 0
