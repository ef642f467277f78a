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
from test_photos_fixture import benchmark_module

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


# ---- benchmark pages written by their scripts ---------------------------------------------------------

WRITTEN_SECTIONS = {  # page -> (section, the script that writes it, how what it writes starts)
    "docs/benchmarks/speed.md": ("bench-report", "speed.py", "```text\n$ cnnlab bench "),
    "docs/benchmarks/photos.md": ("photos-tables", "photos.py", "**folder:"),
}


@pytest.mark.parametrize("page", sorted(WRITTEN_SECTIONS))
def test_each_benchmark_page_has_the_section_its_script_writes(page: str):
    pages = benchmark_module("pages")
    section, script, start = WRITTEN_SECTIONS[page]
    text = pages.read_section(ROOT / page, section)
    assert text.startswith(start), f"{page}: the {section} section holds prose the script would overwrite"
    assert f"written by benchmarks/{script}" in (ROOT / page).read_text()
    assert section == benchmark_module(script.removesuffix(".py")).PAGE_SECTION


def test_writing_a_section_replaces_it_and_keeps_the_prose(tmp_path: Path):
    pages = benchmark_module("pages")
    page = tmp_path / "speed.md"
    original = (ROOT / "docs/benchmarks/speed.md").read_text()
    page.write_text(original)
    pages.write_section(page, "bench-report", "new report\n")
    assert pages.read_section(page, "bench-report") == "new report\n"
    before, _, after = original.partition("<!-- begin bench-report")
    written = page.read_text()
    assert written.startswith(before) and written.endswith(after.partition("<!-- end bench-report -->")[2])
    plain = tmp_path / "plain.md"
    plain.write_text("# no sections here\n")
    assert pages.check_page(page, "bench-report") is None  # what a script checks before it measures
    assert "found 0" in pages.check_page(plain, "bench-report")
    assert "No such file" in pages.check_page(tmp_path / "missing.md", "bench-report")
    with pytest.raises(ValueError, match="bench-report"):
        pages.write_section(plain, "bench-report", "x")
    assert plain.read_text() == "# no sections here\n"  # a refused write changes nothing


def test_the_photos_page_text_has_every_table_and_the_margin_over_the_forest():
    photos = benchmark_module("photos")
    rows = [
        photos.Row("pixel RandomForest(50) on 16x16 RGB", 0.700, 9.0),  # --quick's forest has fewer trees
        photos.Row(photos.ROWS["photos"][0], 0.851, 82.0, "photos resnet9"),
    ]
    text = photos.page_text({Path("data/photos/crops"): rows}, quick=False)
    assert "**folder:data/photos/crops**" in text and "| 85.1 % | 82 s | photos resnet9 |" in text
    assert "+15.1 points on crops" in text and "`python benchmarks/photos.py`" in text
