"""Hostile data beyond images' pixels (issue 27): non-regular files and deep folders in a dataset, an ICO
hiding a big PNG in a ``folder:`` dataset, terminal escapes in names, deeply nested or malformed run
files, pretrained weights that are not a table of tensors, and CIFAR archives that reach outside."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import cnnlab
from cnnlab.cli import main
from cnnlab.data.folder import guess_channels, load_image_dataset
from cnnlab.data.images import open_image
from cnnlab.errors import UserError

HOSTILE_NAME = "cat\x1b]0;PWNED\x07\x1b[31m"


def grey_folder(root: Path, per_class: int = 3) -> Path:
    """``root/a`` and ``root/b``, each with ``per_class`` small grey PNGs."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def finishes(action, seconds: float = 60.0, unblock: Path | None = None):
    """``action()``'s result (or its exception), run in a thread; fails (and opens the FIFO ``unblock`` for
    writing, so that the thread ends) if it has not finished within ``seconds``: it hangs."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, action()))
        except BaseException as exc:  # handed to the test's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if unblock is not None:
            os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"still running after {seconds:.0f} s: it hangs")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


# ---- item 4: non-regular files, links, deep folders ------------------------------------------------


def test_fifos_dangling_and_looping_links_are_skipped_with_one_warning(tmp_path: Path, capsys):
    root = grey_folder(tmp_path / "data")
    os.mkfifo(root / "a" / "x.png")
    (root / "a" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (root / "b" / "loop.png").symlink_to(root / "b" / "loop.png")
    (root / "b" / "linked.png").symlink_to(root / "a" / "0.png")  # a link to a regular file is an image
    data = finishes(lambda: load_image_dataset(f"folder:{root}", val_fraction=0.3), unblock=root / "a" / "x.png")
    assert data.spec.channels == 1 and sum(len(s) for s in data.splits.values()) == 7
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipped 3 " in err
    assert "a pipe" in err and "to nothing" in err and "loops" in err


def test_opening_a_fifo_is_refused_at_once(tmp_path: Path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        finishes(lambda: open_image(fifo), unblock=fifo)


def test_a_folder_1100_levels_deep_is_walked(tmp_path: Path):
    root = grey_folder(tmp_path / "data")
    chain = [root / "a" / "d"]
    for _ in range(1099):
        chain.append(chain[-1] / "d")
    try:
        for folder in chain:
            folder.mkdir()
        Image.new("L", (12, 12), 50).save(chain[-1] / "deep.png")
        data = load_image_dataset(f"folder:{root}", val_fraction=0.3)
        assert sum(len(s) for s in data.splits.values()) == 7
    finally:  # removed here, bottom up: pytest's own clean-up (shutil.rmtree) recurses and would fail on it
        (chain[-1] / "deep.png").unlink(missing_ok=True)
        for folder in reversed(chain):
            if folder.is_dir():
                folder.rmdir()


# ---- item 3: the channel guess goes through the one reader ----------------------------------------


def test_the_channel_guess_refuses_an_ico_named_png(tmp_path: Path):
    """An ICO (colour) named ``.png`` among grey PNGs is not opened by the channel guess: the guess stays
    grey. Before, it was opened with every Pillow loader and counted as colour."""
    from test_fault_serve import ico_hiding, png

    from cnnlab.data.images import image_mode

    root = grey_folder(tmp_path / "data")
    icon = root / "a" / "icon.png"
    icon.write_bytes(ico_hiding(png(Image.new("RGBA", (16, 16), (200, 30, 30, 255)))))
    with pytest.raises(UserError, match="not a readable image"):
        image_mode(icon)
    assert guess_channels(sorted(root.rglob("*.png"))) == 1


# ---- item 5: terminal escapes -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_checkpoint(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint (the shared ``tiny_run``: digits, three steps) whose class names hold terminal
    escapes, as one from someone else might."""
    ckpt = torch.load(tiny_run / "best.pt", weights_only=True)
    hostile = [f"{HOSTILE_NAME}{i}" for i in range(len(ckpt["data"]["classes"]))]
    ckpt["data"]["classes"] = ckpt["spec"]["classes"] = hostile  # the spec, and its copy for older readers
    path = tmp_path_factory.mktemp("esc") / "hostile.pt"
    torch.save(ckpt, path)
    return path


def test_class_and_file_names_reach_the_terminal_escaped(hostile_checkpoint: Path, tmp_path: Path, capsys):
    image = tmp_path / "seven\x1b[2J\nerror: forged.png"
    drawing = Image.new("L", (28, 28), 255)
    ImageDraw.Draw(drawing).line([(8, 6), (20, 6), (12, 22)], fill=0, width=3)
    drawing.save(image, format="PNG")
    assert main(["predict", str(hostile_checkpoint), str(image)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and out.count("\n") == 1
    assert "cat\\x1b]0;PWNED\\x07" in out and "seven\\x1b[2J\\x0aerror" in out
    broken = tmp_path / "broken\x1b[2J\n.png"
    broken.write_bytes(b"not an image")
    assert main(["predict", str(hostile_checkpoint), str(broken)]) == 2
    err = capsys.readouterr().err  # the file's warning, then the one-line verdict: no forged line between
    lines = err.splitlines()
    assert (
        "\x1b" not in err
        and len(lines) == 2
        and lines[0].startswith("warning: ")
        and "broken\\x1b[2J\\x0a.png" in lines[0]
    )
    assert lines[1].startswith("error: ")


def test_skipped_file_names_in_a_dataset_warning_are_escaped(tmp_path: Path, capsys):
    root = grey_folder(tmp_path / "data")
    (root / "a" / "bad\x1b[2J\nforged.png").write_bytes(b"not an image")
    load_image_dataset(f"folder:{root}", val_fraction=0.3)
    err = capsys.readouterr().err
    assert "\x1b" not in err and err.count("\n") == 1 and "bad\\x1b[2J\\x0aforged.png" in err


def test_sweep_values_from_a_database_are_escaped():
    from cnnlab.tune.sweep import format_summary

    trial = {"number": 0, "state": "COMPLETE", "value": 0.5, "epochs": 1, "params": {"opt\x1b[2J": "\x1b]0;x\x07"}}
    trial["run_dir"] = "r\x1b[31m"
    text = format_summary({"study": "s", "trials": [trial], "best": trial})
    assert "\x1b" not in text.replace("\n", "") and "\\x1b" in text


# ---- item 6: one line where a traceback was --------------------------------------------------------


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def test_runs_and_serve_survive_a_deeply_nested_config_json(tmp_path: Path, capsys):
    from cnnlab.serve.service import _read_run_config
    from cnnlab.tune.compare import list_runs

    run = tmp_path / "runs" / "deep"
    run.mkdir(parents=True)
    (run / "config.json").write_text(deep_json())
    [row] = list_runs(tmp_path / "runs")
    assert row["status"] == "unreadable"
    assert _read_run_config(run) == {}
    with pytest.raises(UserError, match="nested too deeply"):
        cnnlab.runs.read_config(run)


def test_one_malformed_metrics_csv_skips_that_run_with_a_warning(tmp_path: Path, capsys):
    from cnnlab.runs import write_config, write_metrics
    from cnnlab.tune.compare import list_runs

    for name in ("good", "bad"):
        (tmp_path / name).mkdir()
        write_config(tmp_path / name, {}, "finished")
        write_metrics(tmp_path / name, [{"epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "seconds": 1.0}])
    (tmp_path / "bad" / "metrics.csv").write_text("epoch,val_acc\n1,0.5,extra,fields\nx\n")
    rows = list_runs(tmp_path)
    assert [r["name"] for r in rows] == ["good"]
    err = capsys.readouterr().err
    assert err.startswith("warning: skipped") and "bad" in err and err.count("\n") == 1


def test_pretrained_weights_holding_a_list_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from cnnlab.models import build_model, load_pretrained, weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = weights_file("tv:resnet18")
    path.parent.mkdir(parents=True)
    torch.save([torch.zeros(3), 1, 2], path)
    model = build_model("tv:resnet18", 3, 32, 10)
    with pytest.raises(UserError, match="not a table of tensors"):
        load_pretrained(model, "tv:resnet18", progress=False)


# ---- item 9: CIFAR archives are extracted with tarfile's data filter --------------------------------


def tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
    return info, data


@pytest.mark.parametrize(
    "bad",
    [member("../escaped.bin"), member("cifar-10-batches-bin/out", kind=tarfile.SYMTYPE, link="../../escaped.bin"),
     member("cifar-10-batches-bin/dev", kind=tarfile.CHRTYPE)],
    ids=["dot-dot", "link-out", "device"],
)  # fmt: skip
def test_a_cifar_archive_reaching_outside_is_refused(tmp_path: Path, bad: tuple):
    from cnnlab.data.cifar import extract_archive

    into = tmp_path / "data"
    into.mkdir()
    archive = tar_gz(tmp_path / "a.tar.gz", [member("cifar-10-batches-bin/readme.html", b"ok"), bad])
    with pytest.raises(UserError, match="refused"):
        extract_archive(archive, into)
    assert not (tmp_path / "escaped.bin").exists()


def test_a_plain_cifar_archive_is_extracted_and_absolute_names_stay_inside(tmp_path: Path):
    from cnnlab.data.cifar import extract_archive

    into = tmp_path / "data"
    into.mkdir()
    absolute = str(tmp_path / "absolute.bin")
    archive = tar_gz(
        tmp_path / "a.tar.gz", [member("cifar-10-batches-bin/test_batch.bin", bytes(3073)), member(absolute)]
    )
    extract_archive(archive, into)
    assert (into / "cifar-10-batches-bin" / "test_batch.bin").read_bytes() == bytes(3073)
    assert not Path(absolute).exists() and (into / absolute.lstrip("/")).is_file()
