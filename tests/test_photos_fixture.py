"""tests/fixtures/photos: a small real colour folder (crops of scikit-image's CC0 photos) that cnnlab reads.

It is a slice of the ``crops`` folder that ``benchmarks/photo_folders.py`` makes; the folder's README says
where each photo comes from and its licence.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from cnnlab.data import load_data

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "photos"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CLASSES = ["cat", "coffee", "rocket"]


def files(split: str, name: str) -> list[Path]:
    return sorted(p for p in (FIXTURE / split / name).iterdir() if p.suffix in {".png", ".jpg"})


def benchmark_module(name: str):
    if str(BENCHMARKS) not in sys.path:  # a script imports its neighbours (pages.py) as `python benchmarks/X.py` does
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fixture_is_a_colour_folder_dataset_with_every_class_in_every_split() -> None:
    data = load_data(f"folder:{FIXTURE}", splits=("train", "val", "test"), image_size=32)
    assert list(data.spec.classes) == CLASSES
    assert data.spec.channels == 3
    for split in ("train", "val", "test"):
        labels = data.splits[split].labels
        assert len(labels) == sum(len(files(split, c)) for c in CLASSES)
        assert torch.bincount(labels, minlength=3).tolist() == [len(files(split, c)) for c in CLASSES]
    images = data.splits["train"].images
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
    channel_means = images.float().mean(dim=(2, 3))
    assert (channel_means.max(1).values - channel_means.min(1).values).mean() > 5  # colour, not grey
    assert images.float().std(dim=(1, 2, 3)).min() > 2  # every image shows something


def test_fixture_is_unbalanced_and_its_licences_are_written_down() -> None:
    counts = [len(files("train", c)) for c in CLASSES]
    assert max(counts) >= 2 * min(counts)
    readme = (FIXTURE / "README.md").read_text()
    assert all(f"`{c}`" in readme for c in CLASSES) and "CC0" in readme


def test_photos_benchmark_classical_rows_on_the_fixture() -> None:
    photos = benchmark_module("photos")
    rows = photos.classical_rows(FIXTURE, ["majority", "colour", "forest"], trees=20)
    test_counts = [len(files("test", c)) for c in CLASSES]
    majority = max(CLASSES, key=lambda c: len(files("train", c)))
    assert rows["majority"].accuracy == pytest.approx(test_counts[CLASSES.index(majority)] / sum(test_counts))
    assert rows["majority"].note == f"`{majority}`"
    for row in rows.values():
        assert 0 <= row.accuracy <= 1
    table = photos.table(FIXTURE, list(rows.values()))
    assert table.count("\n| ") == 5 and "RandomForest(20)" in table  # header, rule and three rows
