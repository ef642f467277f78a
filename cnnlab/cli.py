"""The ``cnnlab`` command: build the parser from every command module, run the command, and turn what
it raises into one line and an exit code. No logic of its own.

Exit codes: 0 success, 1 a check failed, 2 a user error (one line, no traceback), 3 training
diverged, 130 interrupted (a checkpoint was saved first).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import shlex
import sys
from collections.abc import Callable
from typing import NoReturn

from cnnlab.errors import Diverged, Interrupted, UserError, WrongFileKind
from cnnlab.text import safe

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

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    for subparser in sub.choices.values():
        subparser.set_defaults(subparser=subparser)
    return parser


# Every command lives in a module of its own feature with ``register(subparsers)``, which adds its
# sub-commands, each with ``func=cmd_NAME``; none imports anything heavy (torch) until its command runs.
COMMAND_MODULES = (
    "cnnlab.commands", "cnnlab.backprop.cli", "cnnlab.bench.cli", "cnnlab.serve.cli", "cnnlab.explain.cli",
    "cnnlab.tune.cli", "cnnlab.doctor.cli",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # a mistyped flag: point to the sub-command's own --help
        args.subparser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except WrongFileKind as exc:
        usage = " ".join(args.subparser.format_usage().split())  # one line
        print(f"error: {safe(exc)} ({usage})", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"error: {safe(exc)}", file=sys.stderr)
        return 2
    except Diverged as exc:
        print(f"error: training diverged: {safe(exc)}", file=sys.stderr)
        return 3
    except Interrupted as exc:
        run_dir = exc.run_dir or getattr(args, "resume", None)
        resume = shlex.quote(str(run_dir)) if run_dir else "RUN_DIR"
        print(f"\ninterrupted ({exc}); checkpoint saved. Resume with: cnnlab train --resume {resume}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (cnnlab models | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 1
    except Exception as exc:
        message = _known_failure(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def _known_failure(exc: Exception) -> str | None:
    """One line for failures that are the machine's, not cnnlab's: GPU memory, a full or read-only disk."""
    torch = sys.modules.get("torch")  # an out-of-memory error can only come from torch once it is loaded
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return "out of GPU memory: try a smaller --batch-size (or --amp, or --device cpu)"
    if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
        return f"{exc.filename or 'a file'}: {exc.strerror} (free some space or fix the folder)"
    return None
