"""``cnnlab doctor``: label errors (K-fold + cleanlab), duplicates across splits, odd images, on a small
folder of real mnist5k digits with planted problems; and its refusals (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from PIL import Image

from cnnlab.doctor import doctor
from cnnlab.errors import UserError

CLASSES = (0, 1, 7)
FLIPPED = [("train/0/flip1.png", 1), ("train/7/flip2.png", 1), ("train/1/flip3.png", 7)]  # (file, true digit)


@pytest.fixture(scope="module")
def sick_folder(tmp_path_factory: pytest.TempPathFactory, mnist5k) -> Path:
    """train/ (60 digits per class) and test/ (15 per class) of real digits, with planted problems: three
    flipped labels, a test digit copied into train brighter (a near duplicate across splits), an exact
    duplicate inside train, a blank image, a tiny one and a very long one."""
    root = tmp_path_factory.mktemp("sick")
    images, labels = mnist5k.splits["train"].images[:, 0].numpy(), mnist5k.splits["train"].labels.numpy()
    by_class = {c: np.flatnonzero(labels == c) for c in CLASSES}
    for split, (start, count) in {"train": (0, 60), "test": (60, 15)}.items():
        for c in CLASSES:
            (root / split / str(c)).mkdir(parents=True)
            for k, i in enumerate(by_class[c][start : start + count]):
                Image.fromarray(images[i]).save(root / split / str(c) / f"{k}.png")
    for k, (name, digit) in enumerate(FLIPPED):
        Image.fromarray(images[by_class[digit][100 + k]]).save(root / name)
    test_digit = np.asarray(Image.open(root / "test/7/3.png"))
    Image.fromarray((test_digit * 0.9 + 12).astype(np.uint8)).save(root / "train/7/leak.png")
    Image.fromarray(images[by_class[0][5]]).save(root / "train/0/copy.png")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / "train/1/blank.png")
    Image.fromarray(images[by_class[1][120]]).resize((10, 10)).save(root / "train/1/tiny.png")
    Image.fromarray(np.tile(images[by_class[7][121]], (1, 5))).save(root / "train/7/long.png")
    return root


@pytest.fixture(scope="module")
def findings(sick_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("doctor")
    return doctor(f"folder:{sick_folder}", folds=3, epochs=8, out=out, progress=False, device="cpu")


@pytest.mark.slow  # K-fold training
def test_flipped_labels_are_found_with_the_right_suggestion(findings: dict, sick_folder: Path):
    issues = {Path(f["image"]).relative_to(sick_folder).as_posix(): f for f in findings["label_issues"]}
    found = [name for name, _ in FLIPPED if name in issues]
    assert len(found) >= 2  # at least two of the three flipped labels
    for name, digit in FLIPPED:
        if name in issues:
            assert issues[name]["suggested"] == str(digit) and issues[name]["label"] == name.split("/")[1]
    assert len(issues) <= 15  # and not every image


@pytest.mark.slow  # K-fold training
def test_the_leak_across_splits_comes_first_then_the_exact_copy(findings: dict, sick_folder: Path):
    pairs = [{Path(p).relative_to(sick_folder).as_posix() for p in pair} for pair in findings["duplicates"]]
    assert pairs[0] == {"train/7/leak.png", "test/7/3.png"}
    assert findings["duplicate_details"][0]["cross_split"] and findings["duplicate_details"][0]["kind"] == "near"
    assert {"train/0/copy.png", "train/0/5.png"} in pairs
    assert len(pairs) <= 4


@pytest.mark.slow  # K-fold training
def test_odd_images_are_named_with_their_issue(findings: dict, sick_folder: Path):
    odd = {(Path(f["image"]).name, f["issue"]) for f in findings["odd"]}
    assert {("blank.png", "blank"), ("tiny.png", "tiny"), ("long.png", "extreme aspect ratio")} <= odd
    assert all(f["label"] in ("0", "1", "7") for f in findings["odd"])


@pytest.mark.slow  # K-fold training
def test_the_gallery_is_written(findings: dict):
    assert Image.open(findings["gallery_png"]).size[0] > 500


@pytest.mark.slow  # K-fold training
def test_cli_json_on_a_built_in_dataset_has_the_documented_fields(tmp_path: Path):
    code, out, err = cli("doctor", "digits", "--folds", "2", "--epochs", "1", "--json", "--out", tmp_path / "d")
    assert code == 0, err
    report = json.loads(out)
    assert {"label_issues", "duplicates", "odd"} <= set(report)
    for f in report["label_issues"]:
        assert set(f) == {"image", "label", "suggested", "score"} and f["image"].startswith(("train[", "val[", "test["))
    assert all(len(pair) == 2 for pair in report["duplicates"])
    assert (tmp_path / "d" / "gallery.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--folds", "1"], "--folds must be 2 to 20"),
        (["--recipe", "slow"], "invalid choice"),
        (["--epochs", "0"], "--epochs must be"),
        (["--folds", "21"], "--folds must be 2 to 20"),
    ],
)
def test_bad_options_are_refused_in_one_line_and_nothing_is_written(
    sick_folder: Path, tmp_path: Path, args: list[str], message: str
):
    code, _, err = cli("doctor", f"folder:{sick_folder}", *args, cwd=tmp_path)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and os.listdir(tmp_path) == []


def test_bad_datasets_and_outputs_are_refused(tmp_path: Path, sick_folder: Path):
    for dataset in ("nosuchset", f"folder:{tmp_path / 'missing'}"):
        code, _, err = cli("doctor", dataset, cwd=tmp_path)
        assert code == 2 and err.startswith("error:"), err
        assert len(err.strip().splitlines()) == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        doctor(f"folder:{sick_folder}", out=tmp_path / "file")
    assert sorted(os.listdir(tmp_path)) == ["file"]
