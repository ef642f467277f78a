"""kill -9 and Ctrl-C at real moments of a real training process, then ``--resume`` until finished:
the result must be bit-identical to one uninterrupted run with the same flags."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import pytest
import torch
from conftest import cli
from faultkit import (
    TRAIN,
    assert_same_training,
    checkpoint_step,
    kill,
    metric_rows,
    reach_step,
    start,
    status,
    temporaries,
    wait_until,
)

from cnnlab.cli import main


def in_process(argv: list[str]) -> int:
    """``cnnlab ARGV`` run in this process (no import cost), leaving torch's thread count as it was."""
    threads = torch.get_num_threads()
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run with the crash tests' flags."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert in_process([*TRAIN, "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_kill_9_and_ctrl_c_at_real_moments_then_resume_gives_the_same_run(tmp_path: Path, reference: Path):
    """One run, interrupted three ways, resumed with no other flag each time, then finished:
    kill -9 right after ``config.json`` (before or at the first checkpoint), kill -9 inside the checkpoint
    write after a step the run reported, Ctrl-C after a step it reported (exit 130, a checkpoint, the
    resume command). Each process is a real ``python -m cnnlab``; each fault waits for a step, never a
    time, so none can land after the run has finished."""
    run, log = tmp_path / "run", tmp_path / "stderr.log"
    rng = random.Random(6)
    faults: list[str] = []

    proc = start(*TRAIN, "--out", str(run), log=log)
    wait_until(lambda: (run / "config.json").exists(), proc)
    code = kill(proc)
    faults.append(f"kill -9 after config.json: exit {code}, last.pt there: {(run / 'last.pt').exists()}")
    assert code == -signal.SIGKILL

    total = 2 * 45  # the run's optimiser steps: every fault lands well before its end, at a step it reports
    for _ in range(3):  # a write takes milliseconds: the kill may land just after it, then try again
        proc = start("train", "--resume", str(run), log=log)
        target = max(checkpoint_step(run), 0) + 3 * rng.randint(1, 3)
        reached = reach_step(run, proc, target)  # it is training, past a checkpoint it wrote
        wait_until(lambda p=proc: bool(temporaries(run, p.pid)), proc)  # the next write begins
        code = kill(proc)
        left = temporaries(run, proc.pid)
        faults.append(f"kill -9 in the write after step {reached}: exit {code}, left {left}")
        if left:
            break
    assert code == -signal.SIGKILL and left  # the kill landed inside save_atomic

    log.write_text("")
    proc = start("train", "--resume", str(run), log=log)
    target = checkpoint_step(run) + 3 * rng.randint(1, 3)
    reached = reach_step(run, proc, target)
    code = kill(proc, signal.SIGINT)
    message = log.read_text()
    faults.append(f"Ctrl-C after step {reached}: exit {code}, {message.strip()!r}")
    assert code == 130, message
    assert f"Resume with: cnnlab train --resume {run}" in message and "Traceback" not in message
    assert status(run) == "interrupted" and (run / "last.pt").is_file()
    assert checkpoint_step(run) < total

    code, _, err = cli("train", "--resume", run)  # the last resume need not be a real process
    assert code == 0, err
    print("\n".join(faults))
    assert status(run) == "finished"
    assert not temporaries(run)  # what the killed writers left was cleaned up
    assert [row["epoch"] for row in metric_rows(run)] == ["1", "2"]  # no duplicate rows
    assert_same_training(run, reference)


@pytest.mark.slow
def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_over(
    tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture
):
    """What a kill between ``config.json`` and the first checkpoint leaves: a running run, no .pt files."""
    run = tmp_path / "run"
    run.mkdir()
    config = json.loads((reference / "config.json").read_text())
    config["status"] = "running"
    (run / "config.json").write_text(json.dumps(config))
    (run / ".last.pt.tmp999999999").write_bytes(b"half a checkpoint")  # a dead writer's leftover
    assert in_process(["train", "--resume", str(run)]) == 0
    assert "stopped before its first checkpoint; starting it over" in capsys.readouterr().err
    assert status(run) == "finished" and not temporaries(run)
    assert_same_training(run, reference)
