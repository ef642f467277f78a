"""Where runs are written: an unwritable ``--out`` is refused before training, and a disk that fills
up mid-run (simulated by pointing the writer's temporary file at /dev/full, which answers every
write with ENOSPC) stops the run with one line while the previous checkpoint stays intact and
resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import needs_path
from faultkit import assert_same_state

import cnnlab
from cnnlab import atomic
from cnnlab.checkpoint import save_atomic
from cnnlab.cli import main
from cnnlab.errors import UserError

RUN = dict(dataset="digits", epochs=1, checkpoint_every=3, deterministic=True, progress=False)


@pytest.mark.parametrize(
    "where", [pytest.param("/proc/cnnlab-fault-test/run", marks=needs_path("/proc", "Linux's procfs")), "a-file/run"]
)
def test_an_unwritable_out_is_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture, where: str):
    (tmp_path / "a-file").write_text("a file, not a folder")
    out = where if where.startswith("/") else str(tmp_path / where)
    assert main(["train", "--dataset", "digits", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}: cannot write there") and err.count("\n") == 1, err
    assert not Path(out).exists()


def full_disk_trap(monkeypatch: pytest.MonkeyPatch, folder: Path, name: str) -> list[Path]:
    """Make this process's atomic writes of ``folder/name`` write into /dev/full (which answers every
    write with ENOSPC): the temporary file is made as always, then its descriptor is pointed at
    /dev/full. Returns the list the temporary files' paths are appended to."""
    create = atomic.create_temporary
    made: list[Path] = []

    def create_on_full_disk(path: Path) -> tuple[int, str]:
        fd, tmp = create(path)
        if path == folder / name:
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, fd)
            os.close(full)
            made.append(Path(tmp))
        return fd, tmp

    monkeypatch.setattr(atomic, "create_temporary", create_on_full_disk)
    return made


@needs_path("/dev/full", "a device whose every write fails with ENOSPC")
def test_a_full_disk_keeps_the_old_checkpoint_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "last.pt"
    save_atomic({"weights": torch.arange(10.0)}, path)
    before = path.read_bytes()
    made = full_disk_trap(monkeypatch, tmp_path, "last.pt")
    with pytest.raises(
        UserError, match=r"cannot write checkpoint .*No space left on device.*previous one is unchanged"
    ):
        save_atomic({"weights": torch.zeros(100_000)}, path)
    assert path.read_bytes() == before
    assert len(made) == 1 and not made[0].exists()  # the temporary file was removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_vanished_run_directory_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="cannot write checkpoint .*No such file or directory"):
        save_atomic({"x": 1}, tmp_path / "gone" / "last.pt")
    assert not (tmp_path / "gone").exists()


@pytest.mark.slow
@needs_path("/dev/full", "a device whose every write fails with ENOSPC")
def test_disk_full_mid_run_stops_cleanly_and_the_run_resumes_to_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out, reference = tmp_path / "run", tmp_path / "reference"
    cnnlab.train(out=str(reference), **RUN)

    def fill_disk(step: int, loss: torch.Tensor) -> None:
        if step == 4:  # the checkpoint due at step 6 will hit a full disk
            full_disk_trap(monkeypatch, out, "last.pt")

    with pytest.raises(UserError) as info:
        cnnlab.train(out=str(out), on_step=fill_disk, **RUN)
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message and "--resume" in message
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "failed" and "No space left on device" in config["error"]
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3  # the one before is intact
    assert not any(".last.pt.tmp" in p.name for p in out.iterdir())

    monkeypatch.undo()  # space is back: continue from step 3
    cnnlab.train(resume=str(out))
    assert json.loads((out / "config.json").read_text())["status"] == "finished"
    ours, theirs = (torch.load(p / "last.pt", weights_only=True) for p in (out, reference))
    for key in ("model", "optimizer", "step", "history"):
        assert_same_state(ours[key], theirs[key], key)


@needs_path("/dev/full", "a device whose every write fails with ENOSPC")
def test_a_full_disk_while_writing_run_files_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    """Not only checkpoints: ``config.json`` (written before training) hits the full disk here."""
    out = tmp_path / "run"
    out.mkdir()
    full_disk_trap(monkeypatch, out, "config.json")
    assert main(["train", "--dataset", "digits", "--max-steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "No space left on device" in err and err.count("\n") == 1, err
    assert not (out / "last.pt").exists()


@needs_path("/proc", "Linux's procfs")
def test_eval_into_an_unwritable_folder_is_one_line(tiny_run: Path, capsys: pytest.CaptureFixture):
    capsys.readouterr()
    assert main(["eval", str(tiny_run), "--out", "/proc/cnnlab-fault-test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out /proc/cnnlab-fault-test: cannot write there") and err.count("\n") == 1, err
