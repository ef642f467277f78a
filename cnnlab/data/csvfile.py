"""``csv:FILE.csv``: a table of image files and their labels.

Columns (a header line is required, in any order, any case): ``image`` (a path, relative to the CSV
file's folder, or absolute), ``label`` (the class name) and optionally ``split`` (``train``, ``val``,
``valid``, ``validation`` or ``test``). Without a split column, or without val rows, val is held out of
train as for folders. Everything else about the images (decoding, caching, skipping unreadable ones)
is :mod:`cnnlab.data.folder`'s.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from cnnlab.data.files import SPLIT_NAMES, Found, check_same_classes, sort_classes
from cnnlab.data.images import IMAGE_SUFFIXES
from cnnlab.data.splits import FileSplit
from cnnlab.errors import UserError

REQUIRED = ("image", "label")
OPTIONAL = ("split",)


def scan_csv(path: Path) -> Found:
    """The rows of ``path`` as files grouped by split, labelled by class (classes from the train rows)."""
    name = f"csv:{path}"
    rows = read_rows(path)
    folder = path.parent
    by_split: dict[str, list[tuple[Path, str]]] = {}
    absent: list[tuple[int, str]] = []
    for line, row in rows:
        image, label = row["image"].strip(), row["label"].strip()
        if not image or not label:
            raise UserError(f"{name}: line {line} has an empty {'image' if not image else 'label'}")
        split = _split_of(name, line, row.get("split", "train") or "")
        file = folder / Path(image).expanduser()
        if not file.is_file():
            absent.append((line, image))
            continue
        by_split.setdefault(split, []).append((file, label))
    if absent:
        line, image = absent[0]
        raise UserError(
            f"{name}: {len(absent)} image file(s) it names do not exist, the first: {image} (line {line}); "
            f"paths are relative to {folder}"
        )
    if "train" not in by_split:
        raise UserError(f"{name}: no training rows (give rows without a split column, or with split train)")
    classes = sort_classes({label for _, label in by_split["train"]})
    if len(classes) < 2:
        raise UserError(f"{name}: needs at least two classes in its training rows, found {len(classes)}")
    found = Found(classes, {})
    for split, items in by_split.items():
        if split != "train":
            check_same_classes(name, split, classes, sort_classes({label for _, label in items}))
        found.groups[split], found.not_images[split] = _group(items, classes)
    return found


def read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row of the CSV file, its header checked."""
    name = f"csv:{path}"
    if not path.is_file():
        raise UserError(f"{name}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            _check_header(name, header)
            return [
                (reader.line_num, dict(zip(header, values)))
                for values in reader
                if any(v.strip() for v in values) and _check_width(name, reader.line_num, values, header)
            ]
    except UnicodeDecodeError:
        raise UserError(f"{name}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise UserError(f"{name}: not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise UserError(f"{name}: cannot read ({exc.strerror or exc})") from None


def _check_header(name: str, header: list[str]) -> None:
    if not header:
        raise UserError(f"{name}: empty file; the first line must name the columns image,label[,split]")
    unknown = [h for h in header if h not in REQUIRED + OPTIONAL]
    if unknown:
        raise UserError(f"{name}: unknown column(s) {', '.join(map(repr, unknown))}; expected image,label[,split]")
    missing = [h for h in REQUIRED if h not in header]
    if missing:
        raise UserError(f"{name}: no {' or '.join(missing)} column; expected image,label[,split]")
    if len(set(header)) != len(header):
        raise UserError(f"{name}: a column is named twice in its header ({','.join(header)})")


def _check_width(name: str, line: int, values: list[str], header: list[str]) -> bool:
    if len(values) != len(header):
        raise UserError(f"{name}: line {line} has {len(values)} values but the header names {len(header)} columns")
    return True


def _split_of(name: str, line: int, value: str) -> str:
    split = SPLIT_NAMES.get(value.strip().lower())
    if split is None:
        raise UserError(f"{name}: line {line} has split {value!r}; use train, val or test")
    return split


def _group(items: list[tuple[Path, str]], classes: list[str]) -> tuple[FileSplit, list[Path]]:
    """The rows' image files and labels, in the CSV's order; files without an image suffix set apart."""
    index = {c: i for i, c in enumerate(classes)}
    paths, labels, not_images = [], [], []
    for file, label in items:
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            not_images.append(file)
            continue
        paths.append(file)
        labels.append(index[label])
    return FileSplit(paths, torch.tensor(labels, dtype=torch.int64)), not_images
