"""End to end in a real browser: ``cnnlab serve`` in a subprocess, Debian's Chromium driven by Playwright.

A stroke is drawn with the mouse on the page's canvas; the page must show a class, a bar per class
and the feature maps. Then a real digit is uploaded through the file input. A screenshot is kept under the test's tmp dir (and copied to
``$CNNLAB_ARTIFACTS`` when that is set).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, needs_module, needs_path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(trained_run: Path) -> Iterator[str]:
    """``cnnlab serve`` on a free 127.0.0.1 port; always stopped afterwards."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "cnnlab", "serve", str(trained_run), "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"cnnlab serve exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("cnnlab serve did not answer /healthz within 120 s")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def drag(page, points: list[tuple[float, float]]) -> None:
    """Press the mouse at the first point, move through the others, release."""
    page.mouse.move(*points[0])
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*p, steps=2)
    page.mouse.up()


@pytest.mark.slow
@needs_path(CHROMIUM, "Debian's Chromium: apt-get install -y chromium")
@needs_module("playwright", "pip install playwright")
def test_draw_a_stroke_and_see_the_prediction(server: str, tmp_path: Path, digit_png: tuple[Path, str]):
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install Debian's Chromium with `apt-get install -y chromium` "
        "(.ci/run does this); the browser test needs it"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server)
            page.wait_for_selector("body[data-ready='true']")
            assert page.locator("#bars .bar").count() == 10

            box = page.locator("#pad").bounding_box()
            x = box["x"] + box["width"] / 2
            drag(page, [(x, box["y"] + box["height"] * (0.15 + 0.07 * i)) for i in range(11)])  # a vertical stroke
            page.click("#predict")
            page.wait_for_selector("#result[data-state='done']")

            label = page.text_content("#label")
            assert label in [str(i) for i in range(10)]
            assert label == "1"  # a vertical stroke, prepared like MNIST, is a one
            top_bar = page.locator(f"#bars .bar[data-class='{label}'] .fill")
            assert top_bar.evaluate("el => el.getBoundingClientRect().width") > 0
            assert "%" in page.text_content("#confidence")
            assert page.locator("#input-image").evaluate("img => img.complete && img.naturalWidth") == 28
            maps = page.locator("#maps img")
            assert maps.count() == 2
            for i in range(maps.count()):
                assert maps.nth(i).evaluate("img => img.complete && img.naturalWidth > 0 && img.width > 0")
            assert "conv1: 10 × 12 × 12" in page.text_content("#maps")

            screenshot = tmp_path / "serve.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000
            if os.environ.get("CNNLAB_ARTIFACTS"):
                folder = Path(os.environ["CNNLAB_ARTIFACTS"])
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy(screenshot, folder / "serve.png")

            page.click("#clear")
            assert page.text_content("#label") == "–"
            assert page.locator("#result").get_attribute("data-state") == "empty"

            path, digit_label = digit_png  # a real validation digit, uploaded as a file
            page.set_input_files("#upload", str(path))
            page.wait_for_selector("#result[data-state='done']")
            assert page.text_content("#label") == digit_label
            assert errors == []
        finally:
            browser.close()
