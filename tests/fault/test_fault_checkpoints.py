"""Checkpoints that would run code, and checkpoints that are damaged: every command that reads one
refuses it with one line (exit 2), and nothing in the file is ever executed."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main
from cnnlab.errors import UserError
from cnnlab.models import build_model


class TouchFile:
    """Unpickling this object calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class RunShell:
    """Unpickling this object runs ``touch marker`` in a shell."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    """A real (tiny) run directory whose checkpoints the malicious ones imitate: the shared ``tiny_run``
    (digits, three steps), only read here."""
    return tiny_run


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "digit.png"
    Image.new("L", (8, 8), 0).save(path)
    return path


def malicious(run: Path, folder: Path, payload: type, where: str, legacy: bool = False) -> tuple[Path, Path]:
    """A copy of ``run/last.pt`` with a code-running object at ``where``; returns (file, marker)."""
    marker = folder / f"pwned-{payload.__name__}-{where}-{legacy}"
    ckpt = torch.load(run / "last.pt", weights_only=True)
    if where == "top":
        ckpt["arch"] = payload(marker)
    else:  # hidden deep inside the weights
        ckpt["model"] = {**ckpt["model"], "extra": [payload(marker)]}
    path = folder / f"evil-{payload.__name__}-{where}-{legacy}.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path, marker


COMMANDS = ["eval", "predict", "train --resume", "export", "serve"]


def read_with(command: str, path: Path, image: Path, tmp: Path, capsys: pytest.CaptureFixture) -> str:
    """Make ``command`` read the checkpoint ``path``; return the one error line it gave."""
    if command == "serve":  # the app factory loads the model; no server is started
        from cnnlab.serve.app import create_app

        with pytest.raises(UserError) as info:
            create_app(path)
        return f"error: {info.value}"
    if command == "train --resume":
        run_dir = tmp / f"resume-{path.stem}"
        run_dir.mkdir()
        shutil.copy(path, run_dir / "last.pt")
        argv = ["train", "--resume", str(run_dir), "--max-steps", "6"]  # 3 steps more than the run took
    elif command == "predict":
        argv = ["predict", str(path), str(image)]
    elif command == "export":
        argv = ["export", str(path), "--format", "torchscript", "--out", str(tmp / "model.pt")]
    else:
        argv = ["eval", str(path), "--out", str(tmp / "eval")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1, captured.err
    return captured.err.strip()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "payload, where, legacy", [(TouchFile, "top", False), (RunShell, "deep", False), (TouchFile, "deep", True)]
)
def test_a_checkpoint_that_would_run_code_is_refused(
    run: Path, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture, command: str, payload, where, legacy
):
    path, marker = malicious(run, tmp_path, payload, where, legacy)
    line = read_with(command, path, image, tmp_path, capsys)
    assert line.startswith("error: ") and ": refused to load: the file contains Python objects" in line, line
    assert not marker.exists()


def test_the_malicious_checkpoints_are_real(run: Path, tmp_path: Path):
    """The attack works on a plain ``torch.load``: the refusal above is what prevents it."""
    for payload, where in [(TouchFile, "top"), (RunShell, "deep")]:
        path, marker = malicious(run, tmp_path, payload, where)
        torch.load(path, weights_only=False)
        assert marker.exists()


def damaged(run: Path, folder: Path, kind: str) -> Path:
    """A file named like a checkpoint that is not a usable one."""
    path = folder / f"{kind}.pt"
    good = (run / "last.pt").read_bytes()
    ckpt = torch.load(run / "last.pt", weights_only=True)
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "zip-not-torch":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", "a zip file, but not one torch.save wrote")
    elif kind == "plain-tensor":
        torch.save(torch.zeros(3, 3), path)
    elif kind == "no-arch":
        torch.save({"model": ckpt["model"]}, path)
    elif kind == "weights-not-tensors":
        torch.save({**ckpt, "model": {"0.weight": [1.0, 2.0]}}, path)
    elif kind == "huge-arch":  # would allocate a gigantic layer if believed
        torch.save({**ckpt, "arch": {**ckpt["arch"], "image_size": 10**6}}, path)
    elif kind == "weights-of-another-model":
        torch.save({**ckpt, "model": build_model("lenet5", 1, 8, 10).state_dict()}, path)
    elif kind == "bad-config":
        torch.save({**ckpt, "config": {**ckpt["config"], "lr": "fast"}}, path)
    elif kind == "flipped-bytes":  # inside the largest entry's data (the weights), not a zip header
        with zipfile.ZipFile(io.BytesIO(good)) as archive:
            entry = max(archive.infolist(), key=lambda info: info.compress_size)
        name_and_extra = int.from_bytes(good[entry.header_offset + 26 : entry.header_offset + 28], "little")
        name_and_extra += int.from_bytes(good[entry.header_offset + 28 : entry.header_offset + 30], "little")
        middle = entry.header_offset + 30 + name_and_extra + entry.compress_size // 2 - 32
        path.write_bytes(good[:middle] + bytes(b ^ 0xFF for b in good[middle : middle + 64]) + good[middle + 64 :])
    return path


DAMAGE = {  # kind: what `predict` says, what `train --resume` says
    "truncated": ("not a readable checkpoint", "not a readable checkpoint"),
    "empty": ("not a readable checkpoint", "not a readable checkpoint"),
    "text": ("is a text file, not a cnnlab run directory", "is a text file, not a cnnlab run directory"),
    "zip-not-torch": ("not a readable checkpoint", "not a readable checkpoint"),
    "flipped-bytes": ("fails its checksum", "fails its checksum"),
    "plain-tensor": ("not a cnnlab checkpoint", "not a cnnlab checkpoint"),
    "no-arch": ("not a cnnlab checkpoint", "not a cnnlab checkpoint"),
    "weights-not-tensors": ("'model' is not a state dict", "'model' is not a state dict"),
    "huge-arch": ("'arch' does not describe a cnnlab model", "'arch' does not describe a cnnlab model"),
    "weights-of-another-model": ("the weights do not fit a seednet", "training state does not fit this run"),
    "bad-config": ("stored training options are damaged", "stored training options are damaged"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_checkpoint_is_a_one_line_error(
    run: Path, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture, kind: str
):
    path = damaged(run, tmp_path, kind)
    for command, expected in zip(("predict", "train --resume"), DAMAGE[kind]):
        line = read_with(command, path, image, tmp_path, capsys)
        assert line.startswith("error: ") and expected in line, (command, line)


def test_the_library_loader_gives_the_same_errors(run: Path, tmp_path: Path):
    with pytest.raises(UserError, match="refused to load"):
        load_checkpoint(malicious(run, tmp_path, TouchFile, "top")[0])
    with pytest.raises(UserError, match="no best.pt or last.pt"):
        load_checkpoint(tmp_path)
    assert load_checkpoint(run)["arch"]["model"] == "seednet"
