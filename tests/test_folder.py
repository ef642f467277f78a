"""folder: datasets: decoded once into the cache, tensor-resident or streamed, the layouts, hidden files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import cli, make_image_folder
from PIL import Image

from cnnlab.data import FileSplit, TensorSplit, load_data, make_batches
from cnnlab.data.folder import load_image_dataset
from cnnlab.data.images import read_image
from cnnlab.data.registry import canonical_dataset, describe, display_dataset
from cnnlab.errors import UserError


def write_digits(folder: Path, mnist5k, per_class: int, classes=(0, 1, 7), start: int = 0) -> list[Path]:
    """``per_class`` real digits of each class saved as ``folder/<class>/<k>.png``."""
    train = mnist5k.splits["train"]
    written = []
    for c in classes:
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
        index = torch.nonzero(train.labels == c).squeeze(1)[start : start + per_class]
        for k, i in enumerate(index.tolist()):
            path = folder / str(c) / f"{start + k}.png"
            Image.fromarray(train.images[i, 0].numpy()).save(path)
            written.append(path)
    return written


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of this test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(folder))
    return folder


def decoded_one_by_one(split: FileSplit, channels: int, size: int) -> torch.Tensor:
    return torch.stack([read_image(p, channels, size) for p in split.paths])


@pytest.mark.parametrize("workers", [0, 2])
def test_cached_tensors_equal_each_file_decoded_alone(tmp_path: Path, mnist5k, cache: Path, workers: int):
    root = make_image_folder(tmp_path / "imgs", mnist5k)  # PNG and JPEG, grey and RGB, 28 and 40 px
    name = f"folder:{root}"
    memory = load_image_dataset(name, ("train", "val"), workers=workers)
    files = load_image_dataset(name, ("train", "val"), memory_budget=0, workers=workers)
    assert list(cache.glob("folder-v*-3x32-*.pt")) and list(cache.glob("folder-check-v*-3x32-*.pt"))
    for split in ("train", "val"):
        assert isinstance(memory.splits[split], TensorSplit) and isinstance(files.splits[split], FileSplit)
        expected = decoded_one_by_one(files.splits[split], 3, 32)
        assert torch.equal(memory.splits[split].images, expected)
        assert torch.equal(memory.splits[split].labels, files.splits[split].labels)
    assert (memory.spec.mean, memory.spec.std) == (files.spec.mean, files.spec.std)
    again = load_image_dataset(name, ("train", "val"), workers=workers)  # from the cache
    assert torch.equal(again.splits["train"].images, memory.splits["train"].images)


def replace_pixels_keeping_size_and_mtime(path: Path, image: Image.Image) -> None:
    """Write ``image`` over ``path``: same byte count (padded with a PNG-ignored tail), same mtime."""
    stat = path.stat()
    image.save(path)
    data = path.read_bytes()
    assert len(data) <= stat.st_size, "the new image must not be larger than the old"
    path.write_bytes(data + bytes(stat.st_size - len(data)))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_the_cache_is_used_and_notices_changed_added_and_removed_files(tmp_path: Path, mnist5k, cache: Path):
    root = tmp_path / "d"
    paths = write_digits(root / "train", mnist5k, 6)
    write_digits(root / "val", mnist5k, 2, start=6)
    name = f"folder:{root}"
    first = load_data(name).splits["train"]
    target = paths[0]  # class 0's first file: row 0 of train
    assert torch.equal(first.images[0], read_image(target, 1, 28))

    blank = Image.new("L", (28, 28), 0)
    replace_pixels_keeping_size_and_mtime(target, blank)
    assert torch.equal(load_data(name).splits["train"].images[0], first.images[0])  # same key: the cache answers

    os.utime(target)  # a new modification time: decoded again
    changed = load_data(name).splits["train"]
    assert int(changed.images[0].sum()) == 0 and torch.equal(changed.images[1:], first.images[1:])

    Image.fromarray(first.images[3, 0].numpy()).save(root / "train" / "7" / "extra.png")
    added = load_data(name).splits["train"]
    assert len(added) == len(first) + 1 and int(added.labels[-1]) == 2  # class 7 is label 2

    paths[1].unlink()
    removed = load_data(name).splits["train"]
    assert len(removed) == len(first) and torch.equal(removed.images[1:5], first.images[2:6])


def test_a_tiny_memory_budget_streams_the_same_batches(tmp_path: Path, mnist5k, cache: Path):
    root = make_image_folder(tmp_path / "imgs", mnist5k, per_class=10)
    name = f"folder:{root}"
    memory = load_data(name, memory_budget=1.0)
    files = load_data(name, memory_budget=1e-6)  # 1 KiB: far less than the images need
    assert isinstance(files.splits["train"], FileSplit) and isinstance(memory.splits["train"], TensorSplit)
    assert "streamed from the files" in describe(files) and "in memory" in describe(memory)
    cpu = torch.device("cpu")
    options = dict(shuffle=True, seed=5, augment=2)
    for epoch in (1, 2):
        streamed = list(make_batches(files.splits["train"], files, 7, cpu, **options).batches(epoch))
        resident = list(make_batches(memory.splits["train"], memory, 7, cpu, **options).batches(epoch))
        assert len(streamed) == len(resident) == 4
        for (xs, ys), (xm, ym) in zip(streamed, resident):
            assert torch.equal(xs, xm) and torch.equal(ys, ym)


def test_unreadable_files_are_skipped_with_one_warning(tmp_path: Path, mnist5k, cache: Path, capsys):
    root = tmp_path / "d"
    write_digits(root, mnist5k, 5, classes=(3, 8))
    for k in range(4):
        (root / "3" / f"bad{k}.png").write_bytes(b"\x89PNG not really")
    (root / "8" / "readme.txt").write_text("hello")
    for budget in (None, 0.0):
        data = load_data(f"folder:{root}", memory_budget=budget)
        err = capsys.readouterr().err
        assert err.count("warning:") == 1 and err.count("\n") == 1
        assert "skipped 5 unreadable or non-image file(s)" in err
        assert f"{root}/3/bad0.png: not a readable image" in err and f"{root}/3/bad1.png" in err
        assert "and 2 more" in err and "bad3" not in err
        assert len(data.splits["train"]) + len(data.splits["val"]) == 10


def test_hidden_files_and_folders_are_skipped_silently(tmp_path: Path, mnist5k, cache: Path, capsys):
    root = tmp_path / "d"
    write_digits(root, mnist5k, 4, classes=(2, 5))
    junk = [root / ".DS_Store", root / "2" / ".DS_Store", root / "2" / "._0.png", root / "5" / "._1.png"]
    for path in junk:
        path.write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    for hidden in (root / ".ipynb_checkpoints", root / "5" / ".ipynb_checkpoints", root / "2" / "sub" / ".cache"):
        hidden.mkdir(parents=True)
        Image.new("L", (28, 28), 255).save(hidden / "0-checkpoint.png")
    data = load_data(f"folder:{root}")
    assert capsys.readouterr().err == ""
    assert data.spec.classes == ("2", "5")
    assert len(data.splits["train"]) + len(data.splits["val"]) == 8


@pytest.mark.parametrize("val_name", ["val", "valid", "validation", "Validation"])
def test_each_name_of_the_validation_folder_is_accepted(tmp_path: Path, mnist5k, cache: Path, val_name: str):
    root = tmp_path / "d"
    write_digits(root / "train", mnist5k, 6)
    write_digits(root / val_name, mnist5k, 2, start=6)
    data = load_data(f"folder:{root}")
    assert (len(data.splits["train"]), len(data.splits["val"])) == (18, 6)


def test_split_folders_train_val_test_and_their_errors(tmp_path: Path, mnist5k, cache: Path):
    root = tmp_path / "d"
    write_digits(root / "train", mnist5k, 6)
    write_digits(root / "test", mnist5k, 3, start=6)
    data = load_data(f"folder:{root}", splits=("train", "val", "test"), val_fraction=0.5)
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [9, 9, 9]
    assert torch.equal(torch.bincount(data.splits["val"].labels), torch.tensor([3, 3, 3]))
    only_test = load_data(f"folder:{root}", splits=("test",))
    assert list(only_test.splits) == ["test"] and (only_test.spec.mean, only_test.spec.std) == (
        data.spec.mean,
        data.spec.std,
    )
    assert "9 test images" in describe(only_test) and "grey 28x28" in describe(only_test)

    saved = {path: path.read_bytes() for path in (root / "test").rglob("*.png")}
    for path in saved:
        path.write_bytes(b"not an image")
    with pytest.raises(UserError, match="no readable images in its test split"):
        load_data(f"folder:{root}", splits=("test",))
    for path, data in saved.items():
        path.write_bytes(data)
    write_digits(root / "test", mnist5k, 1, classes=(4,))
    with pytest.raises(UserError, match=r"the test split's classes differ from training's \(extra 4\)"):
        load_data(f"folder:{root}", splits=("test",))
    shutil.rmtree(root / "test" / "4")
    write_digits(root / "valid", mnist5k, 1, classes=(0, 1))
    with pytest.raises(UserError, match=r"the val split's classes differ from training's \(missing 7\)"):
        load_data(f"folder:{root}")
    write_digits(root / "val", mnist5k, 1, classes=(0, 1, 7))
    with pytest.raises(UserError, match="both val/ and valid/"):
        load_data(f"folder:{root}")


def test_folder_errors_are_one_line(tmp_path: Path, mnist5k, cache: Path):
    flat = tmp_path / "flat"
    write_digits(flat, mnist5k, 3)
    with pytest.raises(UserError, match="no 'test' split"):
        load_data(f"folder:{flat}", splits=("test",))
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(UserError, match="--val-fraction must be between 0 and 1"):
            load_data(f"folder:{flat}", val_fraction=bad)
    with pytest.raises(UserError, match="--memory-budget"):
        load_data(f"folder:{flat}", memory_budget=-1)
    no_train = tmp_path / "no_train"
    write_digits(no_train / "test", mnist5k, 1)
    with pytest.raises(UserError, match="has test/ but no train/"):
        load_data(f"folder:{no_train}")
    (tmp_path / "labels.csv").write_text("image,label\n")
    with pytest.raises(
        UserError, match=f"is a file, not a folder; for a table .* use --dataset csv:{tmp_path}/labels.csv"
    ):
        load_data(f"folder:{tmp_path / 'labels.csv'}")
    for empty in ("folder:", "folder:  ", "csv:"):
        with pytest.raises(UserError, match="needs a path after the colon"):
            load_data(empty)
        with pytest.raises(UserError, match="needs a path after the colon"):
            canonical_dataset(empty)


def test_classes_named_by_numbers_are_in_numeric_order(tmp_path: Path, mnist5k, cache: Path):
    root = tmp_path / "d"
    write_digits(root, mnist5k, 2, classes=(2, 9))
    (root / "2").rename(root / "10")
    assert load_data(f"folder:{root}").spec.classes == ("9", "10")


def test_canonical_and_display_forms_of_a_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert canonical_dataset("folder:ds/flat") == f"folder:{tmp_path}/ds/flat"
    assert canonical_dataset("csv:./a/../labels.csv") == f"csv:{tmp_path}/labels.csv"
    assert canonical_dataset("folder:~/pics") == f"folder:{Path.home()}/pics"
    assert canonical_dataset("mnist5k") == "mnist5k"
    assert canonical_dataset(f"folder:{tmp_path}/x") == f"folder:{tmp_path}/x"
    assert display_dataset(f"folder:{tmp_path}/ds/flat") == "folder:ds/flat"
    assert display_dataset("folder:/elsewhere/pics") == "folder:/elsewhere/pics"
    assert display_dataset(f"csv:{tmp_path}/l.csv", cwd=tmp_path / "sub") == f"csv:{tmp_path}/l.csv"
    assert display_dataset("cifar10") == "cifar10"


def test_cli_refuses_an_empty_folder_path(tmp_path: Path):
    code, _, err = cli("train", "--dataset", "folder:", "--epochs", "1", cwd=tmp_path)
    assert code == 2, err
    assert err.startswith("error: --dataset folder: needs a path") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
