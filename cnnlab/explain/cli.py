"""The ``cnnlab explain`` and ``cnnlab viz`` commands (see :mod:`cnnlab.explain`); registering them loads
neither torch nor Captum."""

from __future__ import annotations

import argparse
import json

from cnnlab.config import DEVICES
from cnnlab.explain.methods import DEFAULT_METHOD, METHODS
from cnnlab.text import answer_text, safe


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explain`` and ``viz`` sub-commands."""
    p = subparsers.add_parser(
        "explain",
        help="why the model answers what it answers: an attribution map per image (Captum)",
        description=(
            "For each image: the predicted class (or --target) and an attribution map at the model's input "
            "resolution (positive = evidence for the target), saved as a PNG of the input, the map and both "
            f"overlaid. Methods: {', '.join(METHODS)}. Default: {DEFAULT_METHOD}, the only one that passes both "
            "sanity checks (model randomisation, localisation on the digit's ink) on some draws for the "
            "tutorial's seednet, without a margin; --sanity (--repeats K) measures them for any run and says "
            "when no method passes."
        ),
    )
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT", help="a run directory (its best.pt) or a checkpoint file")
    p.add_argument(
        "images", nargs="*", metavar="IMAGE|FOLDER",
        help="PNG, JPEG, GIF, BMP, WebP or TIFF files of any size, or folders of them (a file that cannot be read "
        "is skipped with a warning)",
    )  # fmt: skip
    p.add_argument(
        "--method", default=None, metavar="METHOD",
        help=f"one of {', '.join(METHODS)} (default: {DEFAULT_METHOD}; see --sanity for how far to trust it)",
    )  # fmt: skip
    p.add_argument(
        "--target", default=None, metavar="CLASS", help="explain this class (name or index) instead of the prediction"
    )
    p.add_argument(
        "--out", default=None, metavar="DIR", help="folder for the PNGs (default: explain/ beside the checkpoint)"
    )
    p.add_argument(
        "--invert", action="store_true",
        help="force inverting the image's grey levels (normally the background is detected)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where to run the model (default cpu)")
    p.add_argument(
        "--sanity", action="store_true",
        help="instead of explaining images: run the sanity checks of every method (or --method) on the run's "
        "validation images and print the table",
    )  # fmt: skip
    p.add_argument(
        "-n", "--num-images", type=int, default=64, metavar="N", help="--sanity: validation images used (default 64)"
    )
    p.add_argument(
        "--repeats", type=int, default=1, metavar="K",
        help="--sanity: run the checks K times, each on the next N images and with a random model from another "
        "seed, and report the mean and the spread [min, max]; a method passes only if it passes every time",
    )  # fmt: skip
    p.add_argument("--dataset", default=None, help="--sanity: take the images from this dataset (default: the run's)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="--sanity: where that dataset's files are")
    p.add_argument(
        "--split", default="val", choices=("train", "val", "test"), help="--sanity: the split used (default val)"
    )
    p.add_argument("--json", action="store_true", help="print JSON (a list, one object per image or per method)")
    p.set_defaults(func=cmd_explain)

    p = subparsers.add_parser("viz", help="first-layer filters and every convolution's feature maps, as PNGs")
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT", help="a run directory (its best.pt) or a checkpoint file")
    p.add_argument(
        "--image",
        default=None,
        metavar="FILE",
        help="the image whose feature maps are drawn (default: a validation image)",
    )
    p.add_argument(
        "--out", default=None, metavar="DIR", help="folder for the PNGs (default: viz/ beside the checkpoint)"
    )
    p.add_argument("--json", action="store_true", help="print the PNG paths as JSON")
    p.set_defaults(func=cmd_viz)


def cmd_explain(args: argparse.Namespace) -> int:
    from cnnlab.errors import UserError

    if args.sanity:
        from cnnlab.explain.sanity import format_sanity, sanity_checks

        if args.images:
            raise UserError("--sanity uses the run's validation images: give no IMAGE files with it")
        methods = [args.method] if args.method else list(METHODS)
        rows = sanity_checks(
            args.run, methods, n=args.num_images, device=args.device, repeats=args.repeats,
            dataset=args.dataset, data_dir=args.data_dir, split=args.split,
        )  # fmt: skip
        print(json.dumps(rows, indent=2) if args.json else format_sanity(rows))
        return 0
    if not args.images:
        raise UserError("no images given: cnnlab explain RUN IMAGE... (or --sanity to check the methods)")
    from cnnlab.explain.attribution import explain
    from cnnlab.inference import warn_stderr

    results = explain(
        args.run, args.images, args.method, args.target, args.out, args.invert, args.device, warn=warn_stderr
    )
    if args.json:
        print(json.dumps(results))
        return 0
    for r in results:
        print(f"{safe(r['image'])}: {answer_text(r)}  {r['method']} for {safe(r['target'])} → {safe(r['png'])}")
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    from cnnlab.explain.viz import visualize

    result = visualize(args.run, args.image, args.out)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"first-layer filters: {result['filters_png']}")
    print(f"feature maps of {safe(result['image'])}: {safe(result['feature_maps_png'])}")
    return 0
