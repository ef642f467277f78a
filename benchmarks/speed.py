"""The speed page's measurement: ``cnnlab bench`` at full size, written into docs/benchmarks/speed.md.

    python benchmarks/speed.py [--synthetic 60000] [--mnist-test DIR] [--page docs/benchmarks/speed.md]

Runs :func:`cnnlab.bench.measure.bench` (what ``cnnlab bench --synthetic N --mnist-test DIR`` runs: the
tutorial's loop and ``cnnlab train`` side by side, 9 epochs each, then ``--recipe fast``), prints its
report, and with ``--page`` replaces that page's ``bench-report`` section with the report and a line
saying when and where it ran. ``DIR`` (default: ``$CNNLAB_MNIST_TEST_DIR``) holds the official MNIST
test files; without it the report has no official-test line. About 9 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pages import check_page, machine_line, write_section

PAGE_SECTION = "bench-report"


def command_line(synthetic: int, mnist_test: str | None, epochs: int | None = None) -> str:
    """The ``cnnlab bench`` command that prints the same report."""
    flags = [
        f"--synthetic {synthetic}",
        *([f"--epochs {epochs}"] if epochs else []),
        *(["--mnist-test DIR"] if mnist_test else []),
    ]
    return "cnnlab bench " + " ".join(flags)


def page_text(report: str, synthetic: int, mnist_test: str | None, epochs: int | None = None) -> str:
    """The page section: the report as the command prints it, then when and where it ran."""
    return f"```text\n$ {command_line(synthetic, mnist_test, epochs)}\n{report}\n```\n\n{machine_line()}"


def main(argv: list[str] | None = None) -> None:
    from cnnlab.bench.measure import bench
    from cnnlab.bench.report import format_bench

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=int, default=60000, help="training images (default 60000)")
    parser.add_argument(
        "--mnist-test", default=os.environ.get("CNNLAB_MNIST_TEST_DIR"),
        help="folder with the official MNIST t10k IDX files (default $CNNLAB_MNIST_TEST_DIR)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each loop (default: cnnlab train's)")
    parser.add_argument("--page", type=Path, help="also write the report into this page's bench-report section")
    args = parser.parse_args(argv)
    if problem := check_page(args.page, PAGE_SECTION):
        parser.error(problem)
    options = {} if args.epochs is None else {"epochs": args.epochs}
    report = format_bench(bench(synthetic=args.synthetic, mnist_test_dir=args.mnist_test, **options))
    print(report)
    if args.page:
        write_section(args.page, PAGE_SECTION, page_text(report, args.synthetic, args.mnist_test, args.epochs))
        print(f"wrote the report into {args.page}")


if __name__ == "__main__":
    main()
