"""How far a newcomer travels reading ``cnnlab train``: the cnnlab functions it calls, in first-call order.

    python benchmarks/trace_train.py [--json] [-- TRAIN FLAGS]

Runs ``cnnlab train --epochs 1 --max-steps 2 --quiet`` (plus your flags) in this process under
``sys.setprofile`` and counts, from ``main`` to the written ``best.pt``: the distinct cnnlab
functions called, the files they live in, the changes of file in first-call order, and how many of
those changes go back to a file already opened. Fewer is easier to follow. Class bodies, module
bodies and comprehensions are not counted (importing a module is not reading a call).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import sys
import tempfile
from pathlib import Path

import cnnlab
from cnnlab.cli import main as cnnlab_main

PACKAGE = Path(cnnlab.__file__).resolve().parent


def trace(flags: list[str]) -> dict:
    seen: dict[tuple[str, str], None] = {}

    def profile(frame, event, arg):  # noqa: ANN001
        if event != "call":
            return
        code = frame.f_code
        path = Path(code.co_filename)
        is_function = code.co_flags & inspect.CO_NEWLOCALS  # not a module or class body being run
        if path.is_relative_to(PACKAGE) and is_function and not code.co_name.startswith("<"):  # nor a comprehension
            seen.setdefault((str(path.relative_to(PACKAGE.parent)), code.co_qualname), None)

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["train", "--epochs", "1", "--max-steps", "2", "--quiet", "--out", f"{tmp}/run", *flags]
        sys.setprofile(profile)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the run's own lines are not the report
                code = cnnlab_main(argv)
        finally:
            sys.setprofile(None)
        assert code == 0 and Path(tmp, "run", "best.pt").is_file()
    order = [file for file, _ in seen]
    changes = [b for a, b in zip(order, order[1:]) if a != b]
    opened, back = {order[0]}, 0
    for file in changes:
        back += file in opened
        opened.add(file)
    return {
        "functions": len(seen),
        "files": len(set(order)),
        "file_changes": len(changes),
        "back_to_an_open_file": back,
        "calls": [f"{file}:{name}" for file, name in seen],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print every function too, as JSON")
    parser.add_argument("flags", nargs="*", help="extra cnnlab train flags (after --)")
    args = parser.parse_args()
    result = trace(args.flags)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"cnnlab train, main → best.pt: {result['functions']} cnnlab functions in {result['files']} files, "
            f"{result['file_changes']} changes of file in first-call order, "
            f"{result['back_to_an_open_file']} of them back to a file already opened"
        )
