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


@contextmanager
def serving(run: Path) -> Iterator[str]:
    """``cnnlab serve RUN`` on a free 127.0.0.1 port; always stopped afterwards."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "cnnlab", "serve", str(run), "--port", str(port)]
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


@pytest.fixture
def server(trained_run: Path) -> Iterator[str]:
    with serving(trained_run) as url:
        yield url


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seednet trained for a few steps on a small colour folder: red, green and blue blobs on grey."""
    import numpy as np
    from PIL import Image

    import cnnlab

    root = tmp_path_factory.mktemp("colour") / "blobs"
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for c, name in enumerate(("red", "green", "blue")):
            (root / split / name).mkdir(parents=True)
            for k in range(n):
                pixels = rng.integers(90, 140, size=(40, 40, 3)).astype(np.uint8)
                y, x = rng.integers(4, 20, size=2)
                pixels[y : y + 16, x : x + 16, c] = 250
                Image.fromarray(pixels).save(root / split / name / f"{k}.png")
    out = root.parent / "run"
    cnnlab.train(dataset=f"folder:{root}", epochs=2, batch_size=8, out=str(out), progress=False)
    return out


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
            # a first answer loads the model's helpers (Captum for the overlay) in the server: on a busy
            # 2-core machine that can take longer than Playwright's 30 s default; this waits, it times nothing
            page.set_default_timeout(120_000)
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
        assert page.title() == "cnnlab — draw a digit · mnist5k"  # a grey digit model: the canvas first
        assert page.locator("#pad").is_visible() and not page.locator("#drop").is_visible()
        examples = page.locator("#examples .example")
        labels = [examples.nth(i).get_attribute("data-label") for i in range(examples.count())]
        assert labels == [*"0123456789", "0", "1"]  # a validation digit of each class in turn, 12 in all
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


def predict_file(run: Path, path: Path) -> dict:
    """What ``cnnlab predict RUN FILE --json`` answers."""
    from conftest import run_cli

    result = run_cli("predict", str(run), str(path), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


DROP = """([b64, name]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type: "image/png" }));
    document.getElementById("drop").dispatchEvent(
        new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
}"""


@pytest.mark.slow
@needs_path(CHROMIUM, "Debian's Chromium: apt-get install -y chromium")
@needs_module("playwright", "pip install playwright")
def test_a_colour_model_takes_a_dropped_file_and_a_clicked_example(colour_run: Path, tmp_path: Path):
    import base64

    from PIL import Image

    photo = tmp_path / "blue-thing.png"
    pixels = Image.new("RGB", (64, 48), (120, 120, 120))
    pixels.paste((20, 40, 250), (10, 10, 40, 36))
    pixels.save(photo)
    with serving(colour_run) as url, browser_page() as (page, errors):
        page.goto(url)
        page.wait_for_selector("body[data-ready='true']")
        assert page.title() == "cnnlab — what is in this image? · blobs"  # the model's data, not "draw a digit"
        assert page.text_content("#source-title") == "Your image"
        assert page.locator("#drop").is_visible() and not page.locator("#pad").is_visible()
        assert page.locator("#webcam").is_visible()
        assert page.locator("#bars .bar").count() == 3

        with page.expect_response("**/api/predict"):
            page.evaluate(DROP, [base64.b64encode(photo.read_bytes()).decode(), photo.name])
        page.wait_for_selector("#result[data-state='done']")
        expected = predict_file(colour_run, photo)
        assert page.text_content("#label") == expected["label"]
        assert page.text_content("#confidence") == f"{100 * expected['probability']:.1f}%"
        assert page.locator("#picture").evaluate("img => img.complete && img.naturalWidth") == 64
        assert page.locator("#input-image").evaluate("img => img.complete && img.naturalWidth") == 32

        examples = page.locator("#examples .example")
        assert examples.count() == 12  # the 3 classes' 4 validation images each, in turn
        assert [examples.nth(i).get_attribute("data-label") for i in range(3)] == ["blue", "green", "red"]
        src = examples.nth(1).locator("img").get_attribute("src")
        with page.expect_response("**/api/predict"):
            examples.nth(1).click()
        page.wait_for_selector("#result[data-state='done']")
        clicked = tmp_path / "example.png"
        clicked.write_bytes(base64.b64decode(src.partition(",")[2]))
        expected = predict_file(colour_run, clicked)
        assert page.text_content("#label") == expected["label"]
        assert page.text_content("#confidence") == f"{100 * expected['probability']:.1f}%"
        assert page.locator("#picture").get_attribute("src") == src
        page.screenshot(path=str(tmp_path / "colour.png"), full_page=True)
        assert errors == []
