"""``cnnlab serve``: the JSON API through FastAPI's TestClient, and its agreement with ``cnnlab predict``."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import cnnlab
from cnnlab.cli import main as cli_main
from cnnlab.errors import UserError
from cnnlab.preprocess import Preprocessing
from cnnlab.serve.app import create_app

LIMIT = 200_000


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def drawn_like_the_page(digit: np.ndarray, offset: tuple[int, int] = (30, 90)) -> Image.Image:
    """An MNIST digit as the page would send it: dark ink on a white, transparent-edged 280-pixel canvas."""
    big = Image.fromarray(255 - digit).resize((168, 168), Image.Resampling.BILINEAR)
    canvas = Image.new("RGBA", (280, 280), (255, 255, 255, 0))
    canvas.paste(big.convert("RGBA"), offset)
    return canvas


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` pixels, followed by almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def client(trained_run: Path) -> TestClient:
    with TestClient(create_app(trained_run, max_upload_bytes=LIMIT)) as c:
        yield c


# ---- decoding uploads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [(b"", "empty"), (b"hello, world\n", "not a readable image"), (png_header_only(5000, 5000), "too large"),
     (png_header_only(100_000, 100_000), "too large")],
)  # fmt: skip
def test_decode_refuses_bad_bytes_with_a_user_error(data: bytes, message: str):
    with pytest.raises(UserError, match=message):
        Preprocessing("digit", 1, 28, 20).decode(data, max_pixels=4096 * 4096)


# ---- the JSON API -----------------------------------------------------------------------------


def test_predict_a_real_validation_digit_uploaded_as_png(client: TestClient, digit_png: tuple[Path, str]):
    path, label = digit_png
    response = client.post("/api/predict", files={"file": ("digit.png", path.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["label"] == label
    probs = answer["probabilities"]
    assert list(probs) == [str(i) for i in range(10)] and sum(probs.values()) == pytest.approx(1, abs=1e-5)
    assert answer["probability"] == pytest.approx(max(probs.values()))
    assert [c for c, _ in answer["topk"]][0] == label and len(answer["topk"]) == 3
    seen = Image.open(io.BytesIO(base64.b64decode(answer["input"])))
    assert seen.size == (28, 28) and seen.mode == "L"
    maps = [(m["name"], m["shape"]) for m in answer["feature_maps"]]
    assert maps == [("conv1", [10, 12, 12]), ("conv2", [20, 4, 4])]
    grid = Image.open(io.BytesIO(base64.b64decode(answer["feature_maps"][0]["png"])))
    rows, cols = answer["feature_maps"][0]["rows"], answer["feature_maps"][0]["cols"]
    assert grid.size == (cols * 13 - 1, rows * 13 - 1) and rows * cols >= 10


def test_every_way_of_sending_an_image_gives_the_same_answer(client: TestClient, mnist5k):
    val = mnist5k.splits["val"]
    data = png_bytes(drawn_like_the_page(val.images[42, 0].numpy()))
    encoded = base64.b64encode(data).decode()
    answers = [
        client.post("/api/predict", files={"file": ("d.png", data, "image/png")}),
        client.post("/api/predict", json={"image": encoded}),
        client.post("/api/predict", json={"image": "data:image/png;base64," + encoded}),
        client.post("/api/predict", content=data, headers={"content-type": "image/png"}),
    ]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    first = answers[0].json()
    assert all(a.json()["probabilities"] == first["probabilities"] for a in answers[1:])
    assert first["label"] == mnist5k.spec.classes[int(val.labels[42])]


def test_model_info_comes_from_the_run(client: TestClient, trained_run: Path):
    info = client.get("/api/model").json()
    result = json.loads((trained_run / "config.json").read_text())["result"]
    assert info["model"] == "seednet" and info["dataset"] == "mnist5k"
    assert info["classes"] == [str(i) for i in range(10)] and info["input_shape"] == [1, 28, 28]
    assert info["best_val_acc"] == result["best_val_acc"] and info["light_on_dark"] is True
    assert info["parameters"] == 8490


def test_health_page_static_files_and_favicon(client: TestClient):
    assert client.get("/healthz").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="pad"' in page.text
    for name in ("app.js", "style.css", "favicon.svg"):
        assert client.get(f"/static/{name}").status_code == 200
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/")


def test_the_page_footer_describes_this_models_preprocessing(client: TestClient):
    info = client.get("/api/model").json()
    assert info["preprocessing"]["recipe"] == "digit" and "20×20" in info["preprocessing_summary"]
    assert "preprocessing-note" in client.get("/").text and "preprocessing_summary" in client.get("/static/app.js").text


@pytest.mark.parametrize(
    "body, message",
    [({"img": "abc"}, 'no "image" key'), ([1, 2], "must be an object"), ({"image": 3}, "must be a string")],
)
def test_json_errors_say_what_is_wrong(client: TestClient, body, message: str):
    response = client.post("/api/predict", json=body)
    assert response.status_code == 400 and message in response.json()["detail"]


def test_a_blank_image_is_refused_as_empty(client: TestClient):
    blank = png_bytes(Image.new("RGBA", (280, 280), (255, 255, 255, 0)))
    response = client.post("/api/predict", json={"image": base64.b64encode(blank).decode()})
    assert response.status_code == 400 and "the image is empty" in response.json()["detail"]


def test_uploads_over_the_limit_are_refused_with_413(client: TestClient):
    big = b"\x89PNG" + bytes(LIMIT)
    assert client.post("/api/predict", files={"file": ("big.png", big, "image/png")}).status_code == 413
    assert client.post("/api/predict", json={"image": base64.b64encode(big).decode()}).status_code == 413
    chunked = client.post("/api/predict", content=iter([bytes(50_000)] * 5))  # no Content-Length
    assert chunked.status_code == 413 and "too large" in chunked.json()["detail"]


TRUNCATED = png_bytes(Image.new("L", (64, 64), 128))[:60]
BAD_REQUESTS = {
    "empty body": dict(content=b""),
    "wrong form field": dict(files={"image": ("d.png", png_bytes(Image.new("L", (28, 28))), "image/png")}),
    "text form field": dict(data={"file": "not a file"}, files={"other": ("x.txt", b"x", "text/plain")}),
    "empty file": dict(files={"file": ("d.png", b"", "image/png")}),
    "text file": dict(files={"file": ("notes.txt", b"just some text\n" * 20, "text/plain")}),
    "truncated png": dict(files={"file": ("t.png", TRUNCATED, "image/png")}),
    "huge dimensions": dict(files={"file": ("h.png", png_header_only(60_000, 60_000), "image/png")}),
    "broken multipart": dict(
        content=b"--xyz\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=xyz"}
    ),
    "invalid json": dict(content=b"{image:", headers={"content-type": "application/json"}),
    "json list": dict(json=[1, 2, 3]),
    "json without image": dict(json={"picture": "abc"}),
    "blank image": dict(files={"file": ("b.png", png_bytes(Image.new("RGB", (280, 280), "white")), "image/png")}),
    "blank noisy scan": dict(
        files={
            "file": ("n.png", png_bytes(Image.effect_noise((200, 120), 12).point(lambda v: v // 4 + 120)), "image/png")
        }
    ),
    "json image not text": dict(json={"image": 12}),
    "bad base64": dict(json={"image": "!!! not base64 !!!"}),
    "base64 of text": dict(json={"image": base64.b64encode(b"hello").decode()}),
    "raw garbage": dict(content=b"\x00\x01garbage", headers={"content-type": "application/octet-stream"}),
}


@pytest.mark.parametrize("endpoint", ["/api/predict", "/api/explain"])
@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_is_a_400_with_a_message_never_a_500(client: TestClient, name: str, endpoint: str):
    response = client.post(endpoint, **BAD_REQUESTS[name])
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail


@settings(max_examples=40, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6))
def test_corrupted_pngs_never_cause_a_server_error(client: TestClient, flips: list[tuple[int, int]]):
    data = bytearray(png_bytes(Image.new("L", (40, 30), 200).rotate(20, fillcolor=0)))
    for position, value in flips:
        data[position % len(data)] = value
    response = client.post("/api/predict", files={"file": ("c.png", bytes(data), "image/png")})
    assert response.status_code in (200, 400), response.text


def agreement_images(digit: np.ndarray, folder: Path) -> list[Path]:
    """The same digit as a user might give it: dark on white, in a wide image, on yellow paper; light on black."""
    big = Image.fromarray(255 - digit).resize((140, 140), Image.Resampling.BILINEAR)
    white = Image.new("L", (280, 280), 255)
    white.paste(big, (20, 100))
    wide = Image.new("L", (600, 180), 255)
    wide.paste(big, (420, 20))
    yellow = Image.new("RGB", (300, 260), (250, 235, 150))
    yellow.paste(Image.new("RGB", (140, 140), (30, 30, 90)), (60, 50), Image.fromarray(digit).resize((140, 140)))
    paths = []
    for name, img in [("white", white), ("wide", wide), ("yellow", yellow), ("mnist", Image.fromarray(digit))]:
        paths.append(folder / f"{name}.png")
        img.save(paths[-1])
    jpeg = folder / "yellow.jpg"
    yellow.save(jpeg, quality=90)
    return [*paths, jpeg]


def test_predict_and_serve_give_the_same_answer_on_the_same_file(
    client: TestClient, trained_run: Path, mnist5k, tmp_path: Path
):
    val = mnist5k.splits["val"]
    for i in (5, 42):
        paths = agreement_images(val.images[i, 0].numpy(), tmp_path)
        predicted = cnnlab.predict(trained_run, paths, topk=10)
        for path, answer in zip(paths, predicted):
            served = client.post("/api/predict", files={"file": (path.name, path.read_bytes(), "image/png")}).json()
            assert served["label"] == answer["label"], path.name
            assert served["probabilities"] == pytest.approx(dict(answer["topk"]), abs=1e-6), path.name
        assert {a["label"] for a in predicted} == {mnist5k.spec.classes[int(val.labels[i])]}


def test_serve_refuses_a_missing_run_with_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(UserError, match="no such run directory"):
        create_app(tmp_path / "missing")
    assert cli_main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# ---- /api/explain --------------------------------------------------------------------------------


def test_explain_answers_the_prediction_and_the_same_map_as_cnnlab_explain(
    client: TestClient, trained_run: Path, digit_png: tuple[Path, str], tmp_path: Path
):
    from cnnlab.explain import DEFAULT_METHOD, explain

    path, _ = digit_png
    data = path.read_bytes()
    predicted = client.post("/api/predict", files={"file": ("d.png", data, "image/png")}).json()
    ways = [
        client.post("/api/explain", files={"file": ("d.png", data, "image/png")}),
        client.post("/api/explain", json={"image": base64.b64encode(data).decode(), "method": DEFAULT_METHOD}),
        client.post(f"/api/explain?method={DEFAULT_METHOD}", content=data, headers={"content-type": "image/png"}),
    ]
    assert all(a.status_code == 200 for a in ways), [a.text for a in ways]
    answer = ways[0].json()
    assert all(a.json()["attribution"] == answer["attribution"] for a in ways[1:])
    assert answer["label"] == predicted["label"] and answer["probabilities"] == predicted["probabilities"]
    assert answer["method"] == DEFAULT_METHOD and answer["target"] == answer["label"]
    (cli,) = explain(trained_run, path, out=tmp_path)
    assert np.allclose(answer["attribution"], cli["attribution"], atol=1e-6)
    assert answer["overlay"].startswith("data:image/png;base64,")
    overlay = Image.open(io.BytesIO(base64.b64decode(answer["overlay"].partition(",")[2])))
    assert overlay.size == (28, 28) and overlay.mode == "RGB"


@pytest.mark.parametrize("method", ["gradcam", "integrated-gradients", "occlusion"])
def test_explain_with_each_method_through_form_and_json(client: TestClient, digit_png: tuple[Path, str], method: str):
    path, _ = digit_png
    data = path.read_bytes()
    form = client.post("/api/explain", data={"method": method}, files={"file": ("d.png", data, "image/png")})
    body = client.post("/api/explain", json={"image": base64.b64encode(data).decode(), "method": method})
    assert form.status_code == body.status_code == 200, form.text
    assert form.json()["method"] == method and form.json()["attribution"] == body.json()["attribution"]
    assert np.array(form.json()["attribution"]).shape == (28, 28)


def test_explain_refuses_an_unknown_method_with_400(client: TestClient, digit_png: tuple[Path, str]):
    data = digit_png[0].read_bytes()
    encoded = base64.b64encode(data).decode()
    responses = [
        client.post("/api/explain", json={"image": encoded, "method": "lime"}),
        client.post("/api/explain", json={"image": encoded, "method": ["saliency"]}),
        client.post("/api/explain", data={"method": "nope"}, files={"file": ("d.png", data, "image/png")}),
        client.post("/api/explain?method=guess", content=data, headers={"content-type": "image/png"}),
    ]
    for response in responses:
        assert response.status_code == 400 and "unknown method" in response.json()["detail"], response.text


def test_explain_refuses_uploads_over_the_limit_with_413(client: TestClient):
    big = b"\x89PNG" + bytes(LIMIT)
    assert client.post("/api/explain", files={"file": ("big.png", big, "image/png")}).status_code == 413
    assert client.post("/api/explain", json={"image": base64.b64encode(big).decode()}).status_code == 413


def test_model_info_lists_the_explain_methods(client: TestClient):
    from cnnlab.explain import DEFAULT_METHOD, METHODS

    info = client.get("/api/model").json()
    assert info["explain_methods"] == list(METHODS) and info["default_explain_method"] == DEFAULT_METHOD


# ---- phone photos (issue 23) ----------------------------------------------------------------------


def phone_photo(digit: np.ndarray, path: Path, size: tuple[int, int] = (4000, 3000)) -> Path:
    """A digit written dark on light paper, photographed at ``size`` with a little sensor noise, saved as a
    JPEG of a few MB (over the old 2 MB upload limit, over the old 2048² pixel limit)."""
    rng = np.random.default_rng(1)
    paper = Image.new("L", size, 225)
    side = min(size) * 2 // 3
    ink = Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BILINEAR)
    paper.paste(ink, ((size[0] - side) // 2, (size[1] - side) // 2), Image.fromarray(digit).resize((side, side)))
    noisy = np.clip(np.asarray(paper, np.int16) + rng.normal(0, 6, (size[1], size[0])), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).convert("RGB").save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def default_client(trained_run: Path) -> TestClient:
    """serve with its default limits."""
    with TestClient(create_app(trained_run)) as c:
        yield c


@pytest.mark.slow  # decodes and answers full-size phone photos
def test_a_phone_photo_is_answered_as_predict_answers_it(
    default_client: TestClient, trained_run: Path, mnist5k, tmp_path: Path
):
    """A 4000×3000 JPEG of a few MB is decoded at a reduced scale, not refused, and serve's answer is
    predict's on the same file; so is a 4000×4000 PNG's."""
    val = mnist5k.splits["val"]
    photo = phone_photo(val.images[7, 0].numpy(), tmp_path / "photo.jpg")
    assert photo.stat().st_size > 2 << 20
    square = tmp_path / "square.png"
    Image.open(photo).resize((4000, 4000)).save(square, compress_level=1)
    for path in (photo, square):
        served = default_client.post("/api/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
        assert served.status_code == 200, served.text
        [answer] = cnnlab.predict(trained_run, [path], topk=10)
        assert served.json()["probabilities"] == pytest.approx(dict(answer["topk"]), abs=1e-6), path.name


def test_the_413_and_400_for_size_name_the_options_that_raise_them(client: TestClient, default_client: TestClient):
    too_long = client.post("/api/predict", content=bytes(LIMIT + 1), headers={"content-type": "image/png"})
    assert too_long.status_code == 413 and "--max-upload-mb" in too_long.json()["detail"]
    too_many = default_client.post("/api/predict", content=png_header_only(5000, 4000))  # not a JPEG: no reduction
    assert too_many.status_code == 400 and "--max-pixels" in too_many.json()["detail"]
    bomb = default_client.post("/api/predict", content=png_header_only(100_000, 100_000))
    assert bomb.status_code == 400 and "too large" in bomb.json()["detail"]


def test_a_sideways_phone_jpeg_is_served_upright(default_client: TestClient, mnist5k, tmp_path: Path):
    """A JPEG with EXIF Orientation 6 gives the answer of the same pixels turned upright and saved plainly."""
    from test_images import exif_portrait

    digit = 255 - np.asarray(Image.fromarray(mnist5k.splits["val"].images[7, 0].numpy()).resize((40, 56)))
    path, _ = exif_portrait(tmp_path / "portrait.jpg", np.stack([digit] * 3, axis=-1))
    with Image.open(path) as stored:
        upright = stored.transpose(Image.Transpose.ROTATE_270)  # what Orientation 6 asks for
    plain = png_bytes(upright)
    sideways = default_client.post("/api/predict", files={"file": ("p.jpg", path.read_bytes(), "image/jpeg")})
    turned = default_client.post("/api/predict", files={"file": ("p.png", plain, "image/png")})
    assert sideways.status_code == 200 and turned.status_code == 200
    assert sideways.json()["input"] == turned.json()["input"]
