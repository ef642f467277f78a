"""Latency of ``POST /api/predict`` for one 28×28 PNG on the CPU: p50 and p99.

    python benchmarks/serve_latency.py [RUN_DIR] [--requests 500] [--threads 1] [--uvicorn]

The image is a real mnist5k validation digit. By default requests go through FastAPI's in-process
TestClient; ``--uvicorn`` starts a real uvicorn server on 127.0.0.1 (in a thread) and sends them
over HTTP with a keep-alive client. On a busy machine the wall-clock percentiles include waiting
for a core; the process's CPU time per request, printed too, does not. Each request does the whole job: read the upload, prepare it
like MNIST, run the model twice (probabilities, then feature maps) and encode three PNGs. Not part of
the test suite.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import threading
import time
from collections.abc import Callable

import torch
from PIL import Image

from cnnlab.data import load_data
from cnnlab.serve.app import create_app


def digit_png() -> bytes:
    image = load_data("mnist5k").splits["val"].images[0, 0].numpy()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def timings_ms(post: Callable[[], int], requests: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        assert post() == 200
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        status = post()
        times.append(1e3 * (time.perf_counter() - t0))
        assert status == 200
    return times


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def with_testclient(app, data: bytes, requests: int) -> list[float]:
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        files = {"file": ("digit.png", data, "image/png")}
        return timings_ms(lambda: client.post("/api/predict", files=files).status_code, requests)


def with_uvicorn(app, data: bytes, requests: int) -> list[float]:
    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            files = {"file": ("digit.png", data, "image/png")}
            return timings_ms(lambda: client.post("/api/predict", files=files).status_code, requests)
    finally:
        server.should_exit = True
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/demo", help="run directory or checkpoint (default runs/demo)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (cnnlab serve's default is 1)")
    parser.add_argument("--uvicorn", action="store_true", help="a real server over HTTP instead of the TestClient")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    app = create_app(args.run)
    data = digit_png()
    measure = with_uvicorn if args.uvicorn else with_testclient
    cpu0 = time.process_time()
    times = measure(app, data, args.requests)
    cpu_ms = 1e3 * (time.process_time() - cpu0) / (args.requests + 20)  # the 20 warm-up requests included
    how = "uvicorn on 127.0.0.1" if args.uvicorn else "FastAPI TestClient"
    print(f"POST /api/predict, {len(data)}-byte 28x28 PNG, {args.requests} requests, {how}, {args.threads} thread(s)")
    print(
        f"p50 {percentile(times, 50):.2f} ms  p99 {percentile(times, 99):.2f} ms  mean {statistics.fmean(times):.2f} ms"
    )
    print(f"CPU time per request {cpu_ms:.2f} ms (server and client together)")


if __name__ == "__main__":
    main()
