"""The docs site: it builds with --strict, its generated references follow the code, and every
`cnnlab` command and Python block written in the README or the docs is checked against the real thing."""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from cnnlab.cli import build_parser
from cnnlab.config import TrainConfig

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def code_blocks(language: str) -> list[tuple[Path, str]]:
    return [(page, body) for page in PAGES for lang, body in FENCE.findall(page.read_text()) if lang == language]


def command_lines() -> list[tuple[Path, str]]:
    """Every `cnnlab ...` line of the bash blocks, and every `$ cnnlab ...` prompt line of the text
    blocks (the rest of a text block is output), comments and pipes dropped."""
    found = []
    for language in ("bash", "text", "console"):
        for page, body in code_blocks(language):
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip()
                if language != "bash" and not line.startswith("$ "):
                    continue
                line = line.removeprefix("$ ")
                if line.startswith("cnnlab ") and "..." not in line:
                    found.append((page, line.split(" #")[0].split(" | ")[0].strip()))
    return found


def test_every_documented_command_parses():
    lines = command_lines()
    assert len(lines) > 20  # the README alone shows dozens
    parser = build_parser()
    for page, line in lines:
        argv = shlex.split(line)[1:]
        try:
            args, unknown = parser.parse_known_args(argv)
        except SystemExit as exc:  # argparse refused it (or printed --help/--version)
            assert exc.code == 0, f"{page.name}: `{line}` does not parse"
            continue
        assert not unknown, f"{page.name}: `{line}`: unknown {unknown}"


def test_every_python_block_compiles():
    blocks = code_blocks("python")
    assert blocks
    for page, body in blocks:
        compile(body, f"{page.name} python block", "exec")


def test_the_generated_references_follow_the_code():
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    try:
        import reference
    finally:
        sys.path.pop(0)
    options = reference.options_page()
    for f in dataclasses.fields(TrainConfig):
        assert f"`{f.name}`" in options and f.metadata["help"].split("|")[0] in options.replace("\\|", "|")
    cli = reference.cli_page()
    for command in ("train", "eval", "predict", "export", "serve", "explain", "sweep", "backprop"):
        assert f"## cnnlab {command}" in cli
    assert build_parser().format_help().splitlines()[0] in cli


@pytest.mark.slow
def test_the_site_builds_strict(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "options" / "index.html").is_file()
    assert (tmp_path / "site" / "notebooks" / "01_cnn_mnist" / "index.html").is_file()
