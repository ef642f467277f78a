"""The ``cnnlab doctor`` sub-command: parse → :func:`cnnlab.doctor.doctor` → print."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="find likely label errors, duplicates (train/test leakage first) and odd images")
    p.add_argument("dataset", metavar="DATASET", help="mnist5k, digits, mnist, ..., folder:PATH or csv:FILE")
    p.add_argument("--data-dir", default="./data", help="where a built-in dataset's files are (default ./data)")
    p.add_argument("--folds", type=int, default=5, help="K of the K-fold training for label errors (default 5)")
    p.add_argument("--recipe", default="fast", choices=("fast", "tutorial"), help="how each fold trains (default fast)")
    p.add_argument("--epochs", type=int, help="epochs per fold (default: the recipe's)")
    p.add_argument("--out", help="folder for gallery.png (default doctor-<dataset>/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--seed", type=int, default=1, help="the seed of the folds and the training (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help='print {"label_issues", "duplicates", "odd", ...} as JSON')
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from cnnlab.doctor import doctor, format_findings

    result = doctor(
        args.dataset, args.data_dir, args.folds, args.recipe, args.epochs, args.out, args.device, args.seed,
        progress=not args.quiet and not args.json,
    )  # fmt: skip
    if args.json:
        keys = ("label_issues", "duplicates", "odd", "duplicate_details", "gallery_png")
        print(json.dumps({k: result[k] for k in keys}, indent=2))
    else:
        print(format_findings(result))
    return 0
