"""Latency of an ordinary ``POST /api/predict`` while hostile files keep arriving, and the server's memory.

    python benchmarks/serve_hostile.py RUN_DIR [--seconds 30] [--attackers 4] [--with-large]

Starts ``cnnlab serve RUN_DIR --port 0`` (a real process, default limits), then ``--attackers`` threads
post hostile files back to back: a 2048² progressive JPEG repeating one scan 120,000 times (a "scan
bomb", 2 MB), a PNG with 100 zTXt chunks of 1 MB of text each, a PNG whose header claims 100,000²
pixels, and with ``--with-large`` also the largest PNG the default ``--max-pixels`` accepts (4096², a real
decode: not hostile, but it holds a prediction slot longest). Meanwhile one
client posts a 28×28 digit PNG every 0.2 s and records each answer's latency. Prints the ordinary
requests' p50, p99 and maximum, how the hostile requests were answered, and the server's RSS before
and after (from /proc). Not part of the test suite (no timed assertions there).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_images import scan_bomb, text_bomb  # noqa: E402  the tests' own hostile files
from test_serve import png_header_only  # noqa: E402


def hostile_files(folder: Path) -> dict[str, bytes]:
    big = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (4096, 4096), dtype=np.uint8) // 64 * 64).save(big, "PNG", compress_level=1)
    scans = scan_bomb(folder / "bomb.jpg", repeats=120_000, side=2048).read_bytes()
    return {
        "scan bomb": scans,
        "text bomb": text_bomb(folder / "text.png").read_bytes(),
        "header bomb": png_header_only(100_000, 100_000),
        "largest accepted PNG": big.getvalue(),
    }


def ordinary_png() -> bytes:
    canvas = Image.new("L", (280, 280), 255)
    canvas.paste(0, (120, 60, 160, 220))
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--attackers", type=int, default=4)
    parser.add_argument("--only", help="send only this kind of file (e.g. 'scan bomb')")
    parser.add_argument("--with-large", action="store_true", help="also send the largest accepted PNG (not hostile)")
    args = parser.parse_args()
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-hostile-{os.getpid()}"
    folder.mkdir()
    files = hostile_files(folder)
    if not args.with_large:
        del files["largest accepted PNG"]
    if args.only:
        files = {args.only: files[args.only]}
    print(", ".join(f"{name}: {len(data) / 2**20:.2f} MB" for name, data in files.items()))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "serve", args.run, "--port", "0"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = server.stdout.readline()
        url = re.search(r"(http://\S+/)", line).group(1)
        with httpx.Client(base_url=url, timeout=300) as warm:
            assert warm.post("api/predict", content=ordinary_png()).status_code == 200
        before = rss_mb(server.pid)
        stop = time.monotonic() + args.seconds
        answers: Counter[str] = Counter()
        lock = threading.Lock()

        def attack(i: int) -> None:
            names = list(files)
            with httpx.Client(base_url=url, timeout=300) as client:
                k = i
                while time.monotonic() < stop:
                    name = names[k % len(names)]
                    status = client.post("api/predict", content=files[name]).status_code
                    with lock:
                        answers[f"{name}: {status}"] += 1
                    k += 1

        threads = [threading.Thread(target=attack, args=(i,)) for i in range(args.attackers)]
        for t in threads:
            t.start()
        latencies = []
        with httpx.Client(base_url=url, timeout=300) as client:
            while time.monotonic() < stop:
                started = time.perf_counter()
                assert client.post("api/predict", content=ordinary_png()).status_code == 200
                latencies.append(1000 * (time.perf_counter() - started))
                time.sleep(0.2)
        for t in threads:
            t.join()
        after = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(f"ordinary requests: {len(latencies)}, p50 {statistics.median(latencies):.0f} ms, p99 {p99:.0f} ms, "
          f"max {latencies[-1]:.0f} ms")  # fmt: skip
    print("hostile requests:", ", ".join(f"{k} ×{v}" for k, v in sorted(answers.items())))
    print(f"server RSS: {before:.0f} MB before, {after:.0f} MB after")


if __name__ == "__main__":
    main()
