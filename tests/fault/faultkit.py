"""Shared pieces of the fault tests: starting and killing real ``cnnlab`` processes, comparing runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from conftest import ROOT

# The run every crash test interrupts: 2 epochs of 45 steps, a checkpoint every 3 steps, dropout
# and the strongest augmentation with flips forced (so every random generator matters), a --time-limit
# (its plan must survive the kill), one thread so runs are bit-reproducible.
TRAIN = [
    "train", "--dataset", "digits", "--model", "examplenet", "--deterministic", "--checkpoint-every", "3",
    "--epochs", "2", "--batch-size", "32", "--augment", "trivial", "--hflip", "on", "--time-limit", "30m",
    "--threads", "1", "--quiet",
]  # fmt: skip


def start(*args: str, log: Path) -> subprocess.Popen:
    """Start ``python -m cnnlab ARGS`` in the background, its stderr going to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "cnnlab", *args], stdout=subprocess.DEVNULL, stderr=err, env=env)


def wait_until(
    condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 300, every: float = 0.01
) -> bool:
    """Check ``condition`` every ``every`` seconds while ``proc`` runs; False if it ended first.

    The poller sleeps between checks so that it does not take a core from the process it watches."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(every)
    raise TimeoutError("the training process neither reached the moment nor ended")


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` (if it still runs) and return its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=300)


def temporaries(run: Path, pid: int | None = None) -> list[str]:
    """The ``.NAME.tmpPID`` files in ``run`` (of process ``pid`` and checkpoints only, if given)."""
    try:
        names = [name for name in os.listdir(run) if name.startswith(".") and ".tmp" in name]
    except FileNotFoundError:
        return []
    if pid is not None:
        names = [n for n in names if n.endswith(f".pt.tmp{pid}")]
    return names


def run_for(proc: subprocess.Popen, seconds: float) -> None:
    """Let ``proc`` run for ``seconds`` more (less if it ends)."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


def checkpoint_step(run: Path) -> int:
    """The optimiser step of the run's ``last.pt`` as it reports it (-1 while there is none); the file is
    replaced atomically, so what is read is always a whole checkpoint."""
    try:
        return int(torch.load(run / "last.pt", weights_only=True)["step"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return -1


def reach_step(run: Path, proc: subprocess.Popen, step: int) -> int:
    """Wait (without a clock) until the run reports reaching optimiser ``step`` in a checkpoint; its step."""
    seen = [-1]

    def reached() -> bool:
        seen[0] = checkpoint_step(run)
        return seen[0] >= step

    assert wait_until(reached, proc, every=0.02), f"the run ended at step {seen[0]} before step {step}"
    return seen[0]


def mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def status(run: Path) -> str:
    return json.loads((run / "config.json").read_text())["status"]


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def assert_same_state(a: Any, b: Any, where: str = "") -> None:
    """Tensors bit-identical, everything else equal, recursively (wall-clock ``seconds`` aside)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        keys = set(a) - {"seconds"}
        assert keys == set(b) - {"seconds"}, where
        for key in keys:
            assert_same_state(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_training(run: Path, reference: Path) -> None:
    """``run`` ended exactly where ``reference`` did: weights, optimiser, schedule, RNG, history."""
    ours, theirs = load(run / "last.pt"), load(reference / "last.pt")
    for key in ("model", "optimizer", "scheduler", "rng", "epoch", "batch", "step", "history", "best_val_acc"):
        assert_same_state(ours[key], theirs[key], key)
    assert_same_state(load(run / "best.pt")["model"], load(reference / "best.pt")["model"], "best.pt")
    assert metric_rows(run) == metric_rows(reference)
