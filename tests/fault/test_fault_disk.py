"""Where runs are written: an unwritable ``--out`` is refused before training, and a disk that fills
up mid-run (simulated with /dev/full, which answers every write with ENOSPC) stops the run with one
line while the previous checkpoint stays intact and resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from faultkit import assert_same_state

import cnnlab
from cnnlab.checkpoint import save_atomic
from cnnlab.cli import main
from cnnlab.errors import UserError

RUN = dict(dataset="digits", epochs=1, checkpoint_every=3, deterministic=True, progress=False)


@pytest.mark.parametrize("where", ["/proc/cnnlab-fault-test/run", "a-file/run"])
def test_an_unwritable_out_is_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture, where: str):
    (tmp_path / "a-file").write_text("a file, not a folder")
    out = where if where.startswith("/") else str(tmp_path / where)
    assert main(["train", "--dataset", "digits", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}: cannot write there") and err.count("\n") == 1, err
    assert not Path(out).exists()


def full_disk_trap(folder: Path, name: str) -> Path:
    """Make this process's next ``save_atomic`` of ``folder/name`` write into /dev/full."""
    trap = folder / f".{name}.tmp{os.getpid()}"
    trap.symlink_to("/dev/full")
    return trap


def test_a_full_disk_keeps_the_old_checkpoint_byte_for_byte(tmp_path: Path):
    path = tmp_path / "last.pt"
    save_atomic({"weights": torch.arange(10.0)}, path)
    before = path.read_bytes()
    trap = full_disk_trap(tmp_path, "last.pt")
    with pytest.raises(
        UserError, match=r"cannot write checkpoint .*No space left on device.*previous one is unchanged"
    ):
        save_atomic({"weights": torch.zeros(100_000)}, path)
    assert path.read_bytes() == before and not trap.is_symlink()


def test_a_vanished_run_directory_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="cannot write checkpoint .*No such file or directory"):
        save_atomic({"x": 1}, tmp_path / "gone" / "last.pt")
    assert not (tmp_path / "gone").exists()


def test_disk_full_mid_run_stops_cleanly_and_the_run_resumes_to_the_same_result(tmp_path: Path):
    out, reference = tmp_path / "run", tmp_path / "reference"
    cnnlab.train(out=str(reference), **RUN)

    def fill_disk(step: int, loss: torch.Tensor) -> None:
        if step == 4:  # the checkpoint due at step 6 will hit a full disk
            full_disk_trap(out, "last.pt")

    with pytest.raises(UserError) as info:
        cnnlab.train(out=str(out), on_step=fill_disk, **RUN)
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message and "--resume" in message
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "failed" and "No space left on device" in config["error"]
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3  # the one before is intact
    assert not any(p.name.startswith(".last.pt.tmp") for p in out.iterdir())

    cnnlab.train(resume=str(out))  # space is back: continue from step 3
    assert json.loads((out / "config.json").read_text())["status"] == "finished"
    ours, theirs = (torch.load(p / "last.pt", weights_only=True) for p in (out, reference))
    for key in ("model", "optimizer", "step", "history"):
        assert_same_state(ours[key], theirs[key], key)


def test_a_full_disk_while_writing_run_files_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    """Not only checkpoints: ``config.json`` (written before training) hits the full disk here."""
    out = tmp_path / "run"
    out.mkdir()
    full_disk_trap(out, "config.json")
    assert main(["train", "--dataset", "digits", "--max-steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "No space left on device" in err and err.count("\n") == 1, err
    assert not (out / "last.pt").exists()


def test_eval_into_an_unwritable_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    run = tmp_path / "run"
    cnnlab.train(dataset="digits", epochs=1, max_steps=1, out=str(run), progress=False)
    capsys.readouterr()
    assert main(["eval", str(run), "--out", "/proc/cnnlab-fault-test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out /proc/cnnlab-fault-test: cannot write there") and err.count("\n") == 1, err
