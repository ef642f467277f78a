"""csv: datasets: a table of image files, labels and optional splits; its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import cli
from test_folder import write_digits

from cnnlab.data import FileSplit, load_data
from cnnlab.data.images import read_image
from cnnlab.data.registry import describe
from cnnlab.errors import UserError


@pytest.fixture
def images(tmp_path: Path, mnist5k, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """12 digits of each of the classes 0, 1 and 7 under tmp_path/pics/<class>/."""
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    return write_digits(tmp_path / "pics", mnist5k, 12)


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def rows_for(paths: list[Path], relative_to: Path, splits: list[str] | None = None) -> list[str]:
    """``image,label[,split]`` rows naming each file relative to the CSV, its class from its folder."""
    rows = []
    for k, path in enumerate(paths):
        row = f"{path.relative_to(relative_to)},digit{path.parent.name}"
        rows.append(row + (f",{splits[k]}" if splits else ""))
    return rows


def test_csv_with_a_split_column_loads_each_split_in_its_order(tmp_path: Path, images: list[Path]):
    splits = ["train", "Train", "val", "test"] * 9
    csv = write_csv(tmp_path / "labels.csv", "image,label,split", rows_for(images, tmp_path, splits))
    data = load_data(f"csv:{csv}", splits=("train", "val", "test"))
    assert data.spec.classes == ("digit0", "digit1", "digit7") and data.spec.channels == 1
    for split, wanted in (("train", ("train", "Train")), ("val", ("val",)), ("test", ("test",))):
        chosen = [(p, int(p.parent.name)) for p, s in zip(images, splits) if s in wanted]
        expected = torch.stack([read_image(p, 1, 28) for p, _ in chosen])
        labels = torch.tensor([{0: 0, 1: 1, 7: 2}[c] for _, c in chosen])
        assert torch.equal(data.splits[split].images, expected)
        assert torch.equal(data.splits[split].labels, labels)
    line = describe(data)
    assert "3 classes (digit0, digit1, digit7), 18 train / 9 val / 9 test images, grey 28x28, in memory" in line


def test_csv_without_a_split_column_holds_out_val_and_can_stream(tmp_path: Path, images: list[Path]):
    (tmp_path / "sub").mkdir()
    rows = [f"digit{p.parent.name},../{p.relative_to(tmp_path)}" for p in images]  # columns in another order
    csv = write_csv(tmp_path / "sub" / "l.csv", "Label,Image", rows)
    data = load_data(f"csv:{csv}", val_fraction=0.25, memory_budget=0)
    assert isinstance(data.splits["train"], FileSplit)
    assert (len(data.splits["train"]), len(data.splits["val"])) == (27, 9)
    assert torch.equal(torch.bincount(data.splits["val"].labels), torch.tensor([3, 3, 3]))
    with pytest.raises(UserError, match="no 'test' split"):
        load_data(f"csv:{csv}", splits=("test",))


def test_csv_errors_are_one_clear_line(tmp_path: Path, images: list[Path]):
    rows = rows_for(images, tmp_path)

    def refused(header: str, body: list[str], match: str) -> None:
        csv = write_csv(tmp_path / "bad.csv", header, body)
        with pytest.raises(UserError, match=match) as info:
            load_data(f"csv:{csv}")
        assert "\n" not in str(info.value)

    missing = [*rows[:5], "pics/0/gone.png,digit0", *rows[5:], "nowhere/x.png,digit1"]
    refused("image,label", missing, r"2 image file\(s\) it names do not exist, the first: pics/0/gone.png \(line 7\)")
    refused(
        "image,label,weight", [r + ",1" for r in rows], r"unknown column\(s\) 'weight'; expected image,label\[,split\]"
    )
    refused("image", [r.split(",")[0] for r in rows], "no label column")
    refused("image,label", [*rows, "pics/0/0.png"], r"line 38 has 1 values but the header names 2 columns")
    refused("image,label,split", [r + ",holdout" for r in rows], r"line 2 has split 'holdout'; use train, val or test")
    test_rows = [r + (",test" if r.endswith("digit7") else ",train") for r in rows]
    refused(
        "image,label,split",
        test_rows,
        r"the test split's classes differ from training's \(missing digit0, digit1; extra digit7\)",
    )
    with pytest.raises(UserError, match="no such file"):
        load_data(f"csv:{tmp_path / 'absent.csv'}")


@pytest.mark.slow  # trains and evaluates a run
def test_cli_trains_on_a_csv_file_and_evaluates_its_test_split(tmp_path: Path, images: list[Path]):
    splits = ["train", "train", "val", "test"] * 9
    csv = write_csv(tmp_path / "labels.csv", "image,label,split", rows_for(images, tmp_path, splits))
    run = tmp_path / "run"
    code, _, err = cli("train", "--dataset", f"csv:{csv}", "--epochs", "1", "--batch-size", "8", "--out", run)
    assert code == 0, err
    code, out, err = cli("eval", run, "--split", "test")
    assert code == 0, err
    assert "test" in out
