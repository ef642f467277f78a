"""mkdocs hook: the CLI and options references, generated at build time so nothing is written twice.

- ``reference/cli.md``: every command's ``--help``, read from :func:`cnnlab.cli.build_parser`;
- ``reference/options.md``: every ``cnnlab train`` option, its default and help text, read from
  :class:`cnnlab.config.TrainConfig`'s field metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from mkdocs.structure.files import File, Files

GENERATED = {"reference/cli.md": "cli_page", "reference/options.md": "options_page"}


def on_files(files: Files, config: Any) -> Files:
    for path, maker in GENERATED.items():
        files.append(File.generated(config, path, content=globals()[maker]()))
    return files


def _help(parser: argparse.ArgumentParser) -> str:
    os.environ.setdefault("COLUMNS", "100")  # the same wrapping on every machine
    return parser.format_help()


def cli_page() -> str:
    from cnnlab.cli import build_parser

    parser = build_parser()
    lines = [
        "# Command line reference",
        "",
        "Generated from `cnnlab`'s own parser when the site is built: this is exactly what `--help` prints.",
        "",
        "```text",
        _help(parser).rstrip(),
        "```",
    ]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in sub.choices.items():
        lines += ["", f"## cnnlab {name}", "", "```text", _help(subparser).rstrip(), "```"]
        nested = [a for a in subparser._actions if isinstance(a, argparse._SubParsersAction)]
        for group in nested:
            for inner, inner_parser in group.choices.items():
                lines += ["", f"### cnnlab {name} {inner}", "", "```text", _help(inner_parser).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def options_page() -> str:
    from cnnlab.config import TrainConfig

    lines = [
        "# Training options",
        "",
        "Every option of `cnnlab train` (and of `cnnlab.TrainConfig` in Python), generated from the one place",
        "each is defined: its field in `cnnlab/config.py`, with its default and help text. A flag is the",
        "field's name with `-` for `_`; a `--config FILE.toml` file uses the field names.",
        "",
        "| flag | Python field | default | what it does |",
        "| --- | --- | --- | --- |",
    ]
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--quiet" if f.name == "progress" else "--" + f.name.replace("_", "-")
        lines.append(f"| `{flag}` | `{f.name}` | `{_cell(default)}` | {_cell(f.metadata.get('help', ''))} |")
    return "\n".join(lines) + "\n"
