"""``cnnlab serve`` facing others: bounded image decoding (format allowlist, pixel bounds), a server
that answers only its own host names, a bearer token, malformed JSON, a busy port or bad host refused
before "serving" is printed, and a bound on predictions running at once."""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from conftest import ROOT
from fastapi.testclient import TestClient
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.serve.app import LOOPBACK_HOSTS, create_app

PEAK_BOUND_MB = 40  # what refusing the ICO may add to the process's peak memory (decoding it adds ~144 MB)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def big_rgba_png(side: int) -> bytes:
    """A valid ``side``×``side`` transparent RGBA PNG (compresses to a few hundred KB), written row by row."""
    compressor = zlib.compressobj(9)
    row = b"\0" + bytes(4 * side)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def ico_hiding(png: bytes) -> bytes:
    """An ICO whose directory says 16×16 and whose one entry is ``png`` (Pillow decodes it on open)."""
    directory = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22)
    return directory + png


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n%%EndComments\n"
    b"newpath 4 4 moveto 24 24 lineto stroke\nshowpage\n%%EOF\n"
)


@pytest.fixture(scope="module")
def ico_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ico") / "icon.ico"
    path.write_bytes(ico_hiding(big_rgba_png(6000)))  # 6000² RGBA: 144 MB once decoded
    return path


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    """The shared ``tiny_run`` (digits, three steps); serving only reads it."""
    return tiny_run


@pytest.fixture(scope="module")
def client(run: Path) -> TestClient:
    with TestClient(create_app(run)) as c:
        yield c


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


# ---- bounded decoding ---------------------------------------------------------------------------

MEASURE = """
import resource, sys
from cnnlab.data.images import open_image
from cnnlab.errors import UserError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    try:
        open_image(path)
        print("decoded", path)
    except UserError as exc:
        print("refused", exc)
print("peak_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.slow
def test_ico_and_eps_are_refused_without_decoding_and_memory_stays_bounded(ico_file: Path, tmp_path: Path):
    eps = tmp_path / "drawing.eps"
    eps.write_bytes(EPS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(ico_file), str(eps)], capture_output=True, text=True, env=env, timeout=120
    ).stdout.splitlines()
    assert out[0] == f"refused {ico_file}: not a readable image (PNG, JPEG, GIF, BMP, WebP or TIFF)", out
    assert out[1] == f"refused {eps}: not a readable image (PNG, JPEG, GIF, BMP, WebP or TIFF)", out
    peak_mb = int(out[2].split()[1]) / 1024
    assert peak_mb < PEAK_BOUND_MB, f"refusing them raised the peak memory by {peak_mb:.0f} MB"


@pytest.mark.slow
def test_ico_and_eps_uploads_get_400_and_predict_refuses_them_in_one_line(
    client: TestClient, ico_file: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    for name, data in [("icon.ico", ico_file.read_bytes()), ("d.eps", EPS)]:
        response = client.post("/api/predict", files={"file": (name, data, "application/octet-stream")})
        assert response.status_code == 400 and "PNG, JPEG, GIF, BMP, WebP or TIFF" in response.json()["detail"]
    eps = tmp_path / "d.eps"
    eps.write_bytes(EPS)
    assert main(["predict", str(run), str(eps)]) == 2
    lines = capsys.readouterr().err.splitlines()  # the file's warning, then the verdict
    assert len(lines) == 2 and "not a readable image" in lines[0] and lines[1].startswith("error: ")


def test_uploads_over_the_pixel_limit_are_refused_from_the_header(run: Path):
    with TestClient(create_app(run, max_pixels=300 * 300)) as small:
        ok = small.post("/api/predict", content=png(Image.new("L", (280, 280), 255).rotate(30, fillcolor=0)))
        too_big = small.post("/api/predict", content=png(Image.new("L", (400, 300), 255)))
    assert ok.status_code == 200
    assert too_big.status_code == 400 and "too large" in too_big.json()["detail"]


def test_at_most_max_concurrent_predictions_run_at_once(run: Path):
    app = create_app(run, max_concurrent=2)
    service = app.state.service
    real_predict, running, most = service.predict, [0], [0]
    lock = threading.Lock()

    def counting_predict(data: bytes):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.05)  # hold the slot long enough for the others to pile up
            return real_predict(data)
        finally:
            with lock:
                running[0] -= 1

    service.predict = counting_predict
    data = png(Image.new("L", (28, 28), 0).rotate(45, fillcolor=255))
    with TestClient(app) as c:
        threads = [threading.Thread(target=lambda: c.post("/api/predict", content=data)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert most[0] == 2


# ---- malformed JSON, hosts, tokens, docs ------------------------------------------------------------


def test_deeply_nested_json_is_a_400(client: TestClient):
    body = b"[" * 100_000 + b"]" * 100_000
    response = client.post("/api/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "nested too deeply" in response.json()["detail"]


def test_a_loopback_server_answers_only_loopback_host_names(run: Path):
    with TestClient(create_app(run, allowed_hosts=LOOPBACK_HOSTS), base_url="http://127.0.0.1:8000") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/api/model", headers={"host": "evil.example"}).status_code == 400
        assert c.post("/api/predict", content=b"x", headers={"host": "rebind.attacker.test:8000"}).status_code == 400


def test_with_a_token_the_api_needs_it(run: Path):
    with TestClient(create_app(run, token="s3cret")) as c:
        assert c.get("/api/model").status_code == 401
        assert c.get("/api/model", headers={"authorization": "Bearer wrong"}).status_code == 401
        data = png(Image.new("L", (28, 28), 0).rotate(45, fillcolor=255))
        assert c.post("/api/predict", content=data).status_code == 401
        good = {"authorization": "Bearer s3cret"}
        assert c.get("/api/model", headers=good).status_code == 200
        assert c.post("/api/predict", content=data, headers=good).status_code == 200
        assert c.get("/").status_code == 200 and c.get("/healthz").status_code == 200


def test_api_docs_only_when_asked_for(client: TestClient, run: Path):
    assert client.get("/api/docs").status_code == 404 and client.get("/openapi.json").status_code == 404
    with TestClient(create_app(run, api_docs=True)) as c:
        assert c.get("/api/docs").status_code == 200 and c.get("/openapi.json").status_code == 200


# ---- the command: port, host, warnings ------------------------------------------------------------


def test_a_busy_port_or_a_bad_host_is_one_line_before_serving(run: Path, capsys: pytest.CaptureFixture):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", str(run), "--port", str(port)]) == 2
        captured = capsys.readouterr()
        assert "serving" not in captured.out and captured.err.count("\n") == 1
        assert captured.err.startswith(f"error: cannot listen on 127.0.0.1:{port}: in use")
    assert main(["serve", str(run), "--host", "999.1.1.1", "--port", "0"]) == 2
    captured = capsys.readouterr()
    assert "serving" not in captured.out and captured.err.startswith("error: --host 999.1.1.1: not an address")


@pytest.mark.slow
def test_serve_on_all_interfaces_without_a_token_warns(run: Path, tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CNNLAB_TOKEN", None)
    command = [sys.executable, "-m", "cnnlab", "serve", str(run), "--host", "0.0.0.0", "--port", "0"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert first.startswith("warning: listening on 0.0.0.0 without --token") and "reverse proxy" in first
    assert second.startswith("serving ")


# ---- hostile files that decode slowly or leave garbage (issue 27) ---------------------------------


def test_a_jpeg_scan_bomb_is_a_400_naming_the_scans(client: TestClient, tmp_path: Path):
    from test_images import scan_bomb

    bomb = scan_bomb(tmp_path / "bomb.jpg", repeats=500).read_bytes()
    response = client.post("/api/predict", files={"file": ("bomb.jpg", bomb, "image/jpeg")})
    assert response.status_code == 400 and "scans" in response.json()["detail"]


def test_refused_uploads_leave_no_memory_behind(client: TestClient, tmp_path: Path):
    """A PNG with 100 MB of compressed text, and a 1.9 MB scan bomb, get 400 each time, and the refusals
    keep nothing: what Python holds after 4 of each (no collection asked for by the test) stays within a
    few MB of where it began. Before, each text refusal left up to 64 MB, and each refused upload its
    whole body, in cyclic garbage until a full collection."""
    import gc
    import tracemalloc

    from test_images import scan_bomb, text_bomb

    bombs = [text_bomb(tmp_path / "text.png").read_bytes(), scan_bomb(tmp_path / "s.jpg", 120_000, 2048).read_bytes()]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(4):
            for bomb in bombs:
                response = client.post("/api/predict", content=bomb, headers={"content-type": "image/png"})
                assert response.status_code == 400
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 4 << 20, f"{grown / 2**20:.0f} MB kept after 8 refusals"


def test_api_docs_with_a_token_is_refused_in_one_line(run: Path, capsys: pytest.CaptureFixture):
    """The docs page would load a CDN's script on the origin where the page keeps the token."""
    with pytest.raises(cnnlab.UserError, match="--api-docs"):
        create_app(run, token="s3cret", api_docs=True)
    assert main(["serve", str(run), "--port", "0", "--token", "s3cret", "--api-docs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --api-docs") and err.count("\n") == 1
