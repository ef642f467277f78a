"""Benchmark pages written by their scripts: a script replaces its own section of a docs page.

A section sits between two HTML comments (invisible in the rendered site)::

    <!-- begin NAME: written by benchmarks/SCRIPT.py -->
    ...
    <!-- end NAME -->

:func:`write_section` replaces what is between them, leaving the rest of the page (its prose) as it
is, and writes the page atomically (cnnlab's one writer), so a failed run never leaves half a page.
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

from cnnlab.atomic import write_atomic


def section_pattern(name: str) -> re.Pattern[str]:
    """The begin marker, the section's text, and the end marker of section ``name``."""
    n = re.escape(name)
    return re.compile(rf"(<!-- begin {n}: written by [^>]*-->\n)(.*?)(<!-- end {n} -->)", re.DOTALL)


def write_section(page: str | Path, name: str, text: str) -> Path:
    """Replace section ``name`` of ``page`` by ``text``; refuse (ValueError) a page without that section."""
    page = Path(page)
    old = page.read_text(encoding="utf-8")
    found = section_pattern(name).findall(old)
    if len(found) != 1:
        raise ValueError(f"{page}: expected one section '{name}' between its begin and end markers, found {len(found)}")
    new = section_pattern(name).sub(lambda m: m.group(1) + text.rstrip("\n") + "\n" + m.group(3), old)
    write_atomic(page, new.encode("utf-8"))
    return page


def read_section(page: str | Path, name: str) -> str:
    """The text of section ``name`` of ``page`` (ValueError when it has none)."""
    found = section_pattern(name).findall(Path(page).read_text(encoding="utf-8"))
    if len(found) != 1:
        raise ValueError(f"{page}: expected one section '{name}', found {len(found)}")
    return found[0][1]


def check_page(page: Path | None, name: str) -> str | None:
    """Why section ``name`` of ``page`` cannot be written (a missing file, no such section), or None: for a
    script to say before it measures for minutes, not after."""
    if page is None:
        return None
    try:
        read_section(page, name)
    except OSError as exc:
        return f"--page {page}: {exc.strerror or exc}"
    except ValueError as exc:  # its message starts with the page
        return f"--page {exc}"
    return None


def machine_line() -> str:
    """When and where a measurement ran: date, CPU count, platform, torch, load average."""
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores ({platform.machine()}, "
        f"{platform.system()}), torch {torch.__version__}, load average {load} when it finished."
    )
