"""End to end in a real browser: ``cnnlab serve`` in a subprocess, Debian's Chromium driven by Playwright.

The test checks the page's behaviour, not the model's skill: before anything is drawn there is no
broken image and the bars line up; after a stroke is drawn with the mouse, the page shows exactly what
the API answers for the image the page sent (label, confidence, the top bar), the 28×28 input and the
feature maps; a real digit uploaded through the file input shows the API's answer for that file.
A screenshot is kept under the test's tmp dir (and copied to ``$CNNLAB_ARTIFACTS`` when that is set).
Skipped, with the reason, where Chromium or Playwright is missing (CI installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def api_answer(url: str, body: bytes, content_type: str) -> dict:
    """What ``POST /api/predict`` answers for ``body``, asked outside the browser."""
    request = urllib.request.Request(f"{url}/api/predict", data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextmanager
def browser_page() -> Iterator[tuple[Any, list[str]]]:
    """A headless Chromium page (1280x900) and the list its JavaScript errors are collected in."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, errors
        finally:
            browser.close()


@pytest.mark.slow
@needs_path(CHROMIUM, "Debian's Chromium: apt-get install -y chromium")
@needs_module("playwright", "pip install playwright")
def test_draw_a_stroke_and_see_the_prediction(server: str, tmp_path: Path, digit_png: tuple[Path, str]):
    with browser_page() as (page, errors):
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.post_data) if r.url.endswith("/api/predict") else None)
        page.goto(server)
        page.wait_for_selector("body[data-ready='true']")
        assert page.locator("#bars .bar").count() == 10
        # before anything is drawn: no broken-image icon, the footer describes this model's preprocessing
        assert page.locator("#input-image").evaluate("img => getComputedStyle(img).visibility") == "hidden"
        assert "20×20 box" in page.text_content("#preprocessing-note")
        tracks = page.locator("#bars .track")
        assert len({round(tracks.nth(i).bounding_box()["x"]) for i in range(tracks.count())}) == 1

        box = page.locator("#pad").bounding_box()
        x = box["x"] + box["width"] / 2
        drag(page, [(x, box["y"] + box["height"] * (0.15 + 0.07 * i)) for i in range(11)])  # a vertical stroke
        page.click("#predict")
        page.wait_for_selector("#result[data-state='done']")

        # the page shows what the API answers for the very image the page sent
        expected = api_answer(server, sent[-1].encode(), "application/json")
        label = page.text_content("#label")
        assert label == expected["label"]
        assert page.text_content("#confidence") == f"{100 * expected['probability']:.1f}%"
        widths = {
            name: page.locator(f"#bars .bar[data-class='{name}'] .fill").evaluate(
                "el => el.getBoundingClientRect().width"
            )
            for name in expected["probabilities"]
        }
        assert max(widths, key=widths.get) == label and widths[label] > 0
        assert page.locator(f"#bars .bar[data-class='{label}']").get_attribute("class") == "bar top"
        assert page.locator("#input-image").evaluate("img => img.complete && img.naturalWidth") == 28
        assert page.locator("#input-image").evaluate("img => getComputedStyle(img).visibility") == "visible"
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

        path, _ = digit_png  # a real validation digit, uploaded as a file
        page.set_input_files("#upload", str(path))
        page.wait_for_selector("#result[data-state='done']")
        assert page.text_content("#label") == api_answer(server, path.read_bytes(), "image/png")["label"]

        page.click("#clear")
        page.click("#predict")  # nothing drawn: the page says so and asks nothing
        assert page.text_content("#message") == "Draw something first."
        assert page.locator("#result").get_attribute("data-state") == "empty"
        assert errors == []


@pytest.mark.slow
@needs_path(CHROMIUM, "Debian's Chromium: apt-get install -y chromium")
@needs_module("playwright", "pip install playwright")
def test_show_why_lays_the_apis_explanation_over_the_input(server: str, tmp_path: Path):
    with browser_page() as (page, errors):
        sent: list[tuple[str, str]] = []
        page.on("request", lambda r: sent.append((r.url, r.post_data)) if "/api/" in r.url and r.post_data else None)
        page.goto(server)
        page.wait_for_selector("body[data-ready='true']")
        info = json.loads(urllib.request.urlopen(f"{server}/api/model", timeout=30).read())
        options = page.locator("#explain-method option")
        assert [options.nth(i).text_content() for i in range(options.count())] == info["explain_methods"]
        assert page.input_value("#explain-method") == info["default_explain_method"]

        box = page.locator("#pad").bounding_box()
        x = box["x"] + box["width"] / 2
        drag(page, [(x, box["y"] + box["height"] * (0.15 + 0.07 * i)) for i in range(11)])
        page.wait_for_selector("#result[data-state='done']")
        assert sent[-1][0].endswith("/api/predict")
        assert page.locator("#overlay-image").evaluate("img => getComputedStyle(img).display") == "none"

        page.check("#explain-toggle")  # asks again, for the same drawing, with the explanation
        page.wait_for_function("document.getElementById('overlay-image').naturalWidth > 0")
        url, body = sent[-1]
        assert url.endswith(f"/api/explain?method={info['default_explain_method']}")
        request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
        expected = json.loads(urllib.request.urlopen(request, timeout=30).read())
        overlay = page.locator("#overlay-image")
        assert overlay.get_attribute("src") == expected["overlay"]
        assert overlay.evaluate("img => img.naturalWidth") == 28
        assert overlay.evaluate("img => getComputedStyle(img).display") == "block"
        assert overlay.bounding_box() == page.locator("#input-image").bounding_box()  # exactly on the input
        assert f"evidence for {expected['target']}" in page.text_content("#input-caption")
        assert page.text_content("#label") == expected["label"]

        page.select_option("#explain-method", "gradcam")
        page.wait_for_function("document.getElementById('input-caption').textContent.includes('gradcam')")
        assert sent[-1][0].endswith("/api/explain?method=gradcam")

        page.uncheck("#explain-toggle")
        page.wait_for_function("getComputedStyle(document.getElementById('overlay-image')).display === 'none'")
        page.wait_for_selector("#result[data-state='done']")
        assert sent[-1][0].endswith("/api/predict")
        page.screenshot(path=str(tmp_path / "explain.png"), full_page=True)
        assert errors == []


@pytest.mark.slow
@needs_path(CHROMIUM, "Debian's Chromium: apt-get install -y chromium")
@needs_module("playwright", "pip install playwright")
def test_a_photo_is_shown_as_unknown(server: str, trained_run: Path, tmp_path: Path, digit_png: tuple[Path, str]):
    """The run's "none of these" rule on the page: a photo crop the API calls unknown reads "that doesn't
    look like any digit"; a real digit then shows its label with no verdict."""
    from PIL import Image
    from test_trust import photo_crops

    from cnnlab.inference import load

    photo = tmp_path / "photo.png"
    for crop in photo_crops(load(trained_run)):
        Image.fromarray(crop[0].numpy()).save(photo)
        if api_answer(server, photo.read_bytes(), "image/png")["unknown"]:
            break
    else:
        pytest.fail("no photo crop is unknown to the model")
    with browser_page() as (page, errors):
        page.goto(server)
        page.wait_for_selector("body[data-ready='true']")
        page.set_input_files("#upload", str(photo))
        page.wait_for_selector("#result[data-state='done']")
        assert page.locator("#result").get_attribute("data-unknown") == "true"
        assert page.text_content("#verdict") == "unknown: that doesn't look like any digit"
        assert page.locator("#verdict").is_visible()
        page.screenshot(path=str(tmp_path / "unknown.png"), full_page=True)
        page.set_input_files("#upload", str(digit_png[0]))
        page.wait_for_selector("#result[data-unknown='false']")
        assert page.text_content("#label") == digit_png[1] and page.text_content("#verdict") == ""
        assert not page.locator("#verdict").is_visible()
        assert errors == []
