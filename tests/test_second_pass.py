"""Issue 23's smaller defects, each on real files and real models: shell-quoted hints, refusing an existing
``--out`` first, hints for a missing prefix, the test count and stray folders of a split layout, the export's
exact resize filter, ``--invert`` on colour models, and ``eval`` on the user's own files."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, make_image_folder
from PIL import Image

import cnnlab
from cnnlab import runs
from cnnlab.cli import main as cli_main
from cnnlab.data import load_data
from cnnlab.data.registry import describe
from cnnlab.errors import UserError

# ---- item 7: every path in a printed command is shell-quoted -----------------------------------------


@pytest.mark.slow
def test_the_resume_hint_after_ctrl_c_survives_a_space_in_the_path(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["train", "--out", "runs/ctrl c", "--epochs", "200", "--classes", "0,1", "--batch-size", "128", "--quiet"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", *args], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    metrics = tmp_path / "runs" / "ctrl c" / "metrics.csv"
    deadline = time.monotonic() + 600
    while not metrics.exists() and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=600)
    assert worker.returncode == 130, err
    hint = err.strip().splitlines()[-1].split("Resume with: ", 1)[1]
    assert hint == "cnnlab train --resume 'runs/ctrl c'"
    assert shlex.split(hint)[-1] == "runs/ctrl c"


def test_the_existing_run_hint_quotes_its_path(tmp_path: Path):
    run = tmp_path / "my run"
    runs.create_run_dir(run)
    runs.write_config(run, {}, "finished")
    with pytest.raises(UserError) as refused:
        runs.create_run_dir(run)
    assert f"--resume {shlex.quote(str(run))};" in str(refused.value)


# ---- item 15: an existing --out is refused before any data is read ------------------------------------


def test_train_refuses_an_existing_out_before_reading_the_data(tmp_path: Path):
    run = tmp_path / "r"
    runs.create_run_dir(run)
    runs.write_config(run, {}, "finished")
    # the dataset does not exist: reading it first would say so instead
    with pytest.raises(UserError, match="already holds a run"):
        cnnlab.train(dataset=f"folder:{tmp_path / 'no such folder'}", out=str(run), progress=False)


# ---- item 14: hints ----------------------------------------------------------------------------------


def test_a_folder_or_csv_path_without_its_prefix_gets_the_hint(tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(UserError, match=f"unknown dataset '{folder}'; did you mean folder:{folder}\\?"):
        cnnlab.train(dataset=str(folder), out=str(tmp_path / "r"), progress=False)
    table = tmp_path / "labels.csv"
    table.write_text("path,label\n")
    with pytest.raises(UserError, match=f"did you mean csv:{table}\\?"):
        load_data(str(table))
    with pytest.raises(UserError) as plain:
        load_data("mnist6k")
    assert "did you mean" not in str(plain.value)
    assert not (tmp_path / "r").exists()


def test_a_torchvision_name_without_tv_gets_the_hint(tmp_path: Path, capsys):
    assert cli_main(["train", "--model", "resnet18", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'resnet18'; did you mean tv:resnet18?") and err.count("\n") == 1
    with pytest.raises(UserError) as plain:
        cnnlab.train(model="nonet", out=str(tmp_path / "r"))
    assert "did you mean" not in str(plain.value)


# ---- items 11 and 14: a train/val/test layout --------------------------------------------------------


@pytest.fixture(scope="module")
def split_layout(tmp_path_factory: pytest.TempPathFactory, mnist5k) -> Path:
    """train/ (12 per class), val/ (4), test/ (5) of real digits, and a stray notes/ folder beside them."""
    root = tmp_path_factory.mktemp("layout")
    for split, n in (("train", 12), ("val", 4), ("test", 5)):
        make_image_folder(root / split, mnist5k, per_class=n)
    (root / "notes" / "a").mkdir(parents=True)
    (root / ".git").mkdir()  # hidden: not worth a word
    return root


def test_the_layout_summary_counts_the_test_split_and_a_stray_folder_is_named(split_layout: Path, capsys):
    data = load_data(f"folder:{split_layout}", splits=("train", "val"), memory_budget=0)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes/ beside train/ val/ test/ is ignored" in err and ".git" not in err
    line = describe(data)
    assert "36 train / 12 val / 15 test images" in line


# ---- item 12: the export names the resize filter exactly ---------------------------------------------


def test_export_metadata_names_the_filter_and_following_it_gives_the_same_pixels(tmp_path: Path):
    from cnnlab.config import TrainConfig
    from cnnlab.export_format import metadata
    from cnnlab.inference import Predictor
    from cnnlab.models import build_model
    from cnnlab.spec import image_spec

    spec = image_spec(f"folder:{tmp_path}", ["a", "b", "c"], 3, 32, (0.5,) * 3, (0.25,) * 3)
    predictor = Predictor(
        build_model("seednet", 3, 32, 3), spec, TrainConfig(dataset=f"folder:{tmp_path}"), tmp_path / "best.pt"
    )
    image = metadata(predictor)["image"]
    assert (image["recipe"], image["filter"], image["antialias"], image["align_corners"]) == (
        "resize", "bilinear", True, False,
    )  # fmt: skip
    assert "bilinear interpolation with antialias" in image["steps"] and "interpolate" in image["steps"]
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray((rng.random((57, 83, 3)) * 255).astype(np.uint8)).save(path)
    pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).unsqueeze(0)
    size = [image["size"], image["size"]]
    followed = torch.nn.functional.interpolate(
        pixels, size=size, mode=image["filter"], antialias=image["antialias"], align_corners=image["align_corners"]
    )
    assert torch.equal(followed[0], predictor.read(path))


# ---- item 8: --invert on a colour model --------------------------------------------------------------


def test_invert_is_refused_for_a_colour_model_by_predict_and_explain(colour_run: Path, tmp_path: Path, capsys):
    from cnnlab.explain import explain

    photo = tmp_path / "photo.png"
    picture = Image.new("RGB", (40, 30), (200, 30, 30))
    picture.paste((10, 200, 30), (5, 5, 25, 20))
    picture.save(photo)
    with pytest.raises(UserError, match="--invert is for grey models"):
        cnnlab.predict(colour_run, photo, invert=True)
    with pytest.raises(UserError, match="--invert is for grey models"):
        explain(colour_run, photo, invert=True, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert cli_main(["predict", str(colour_run), str(photo), "--invert"]) == 2
    assert capsys.readouterr().err.startswith("error: --invert is for grey models")
    assert cnnlab.predict(colour_run, photo)[0]["label"]  # without --invert it answers


# ---- items 9 and 16: eval on the user's own files ------------------------------------------------------


@pytest.fixture(scope="module")
def right_colour_digits(tmp_path_factory: pytest.TempPathFactory, trained_run: Path, mnist5k) -> Path:
    """A train/ + test/ folder of RGB digit files, one per class, each one the suite's grey model gets right."""
    root = tmp_path_factory.mktemp("rgbdigits")
    staging = root / "staging"
    staging.mkdir()
    val = mnist5k.splits["val"]
    index = [i for c in range(10) for i in torch.nonzero(val.labels == c).squeeze(1)[:8].tolist()]
    files = []
    for i in index:
        path = staging / f"{i}.png"
        Image.fromarray(val.images[i, 0].numpy()).convert("RGB").save(path)
        files.append(path)
    chosen: dict[str, Path] = {}
    for path, answer, i in zip(files, cnnlab.predict(trained_run, files), index):
        label = mnist5k.spec.classes[int(val.labels[i])]
        if answer["label"] == label and label not in chosen:
            chosen[label] = path
    assert len(chosen) == 10, sorted(chosen)
    for split in ("train", "test"):
        for label, path in chosen.items():
            (root / "digits" / split / label).mkdir(parents=True)
            (root / "digits" / split / label / "a.png").write_bytes(path.read_bytes())
    return root / "digits"


def test_eval_converts_colour_files_for_a_grey_model_as_predict_does(
    trained_run: Path, right_colour_digits: Path, tmp_path: Path
):
    result = cnnlab.evaluate(trained_run, f"folder:{right_colour_digits}", split="test", out=tmp_path / "e")
    assert result["n"] == 10 and result["accuracy"] == 1.0  # predict answers every one of them right


def test_eval_without_mistakes_draws_no_gallery(trained_run: Path, right_colour_digits: Path, tmp_path: Path, capsys):
    assert (
        cli_main(["eval", str(trained_run), "--dataset", f"folder:{right_colour_digits}", "--out", str(tmp_path)]) == 0
    )
    out = capsys.readouterr().out
    assert "no mistakes" in out and "mistakes.png" not in out
    assert not (tmp_path / "mistakes.png").exists() and (tmp_path / "confusion.png").is_file()
