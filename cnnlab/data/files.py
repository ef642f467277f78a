"""What the two datasets of your own files share: ``folder:`` (class sub-folders) and ``csv:`` (a table of
files and labels). Their prefixes, the split names they understand, the scan result and the class checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.data.splits import FileSplit
from cnnlab.errors import UserError

FOLDER_PREFIX = "folder:"
CSV_PREFIX = "csv:"
DEFAULT_VAL_FRACTION = 0.2  # of each class held out for val when a folder: or csv: dataset has no val split
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class Found:
    """What a scan found, before any image is decoded.

    ``groups`` holds ``train`` (in the flat layouts also the images val is held out of), and ``val``
    and ``test`` where the layout names them; ``not_images`` the files of each group skipped by name."""

    classes: list[str]
    groups: dict[str, FileSplit]
    not_images: dict[str, list[Path]] = field(default_factory=dict)
    ignored: list[Path] = field(default_factory=list)  # folders beside train/ val/ test/, which are not read


def sort_classes(names: set[str] | list[str]) -> list[str]:
    """Class names in label order: by number when every name is an integer, else alphabetically."""
    names = set(names)
    if names and all(n.isdigit() for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def check_same_classes(name: str, split: str, train_classes: list[str], classes: list[str]) -> None:
    """Refuse a val or test split whose classes are not exactly training's."""
    missing = sorted(set(train_classes) - set(classes))
    extra = sorted(set(classes) - set(train_classes))
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"extra {', '.join(extra)}"] if extra else []
        )
        raise UserError(f"{name}: the {split} split's classes differ from training's ({'; '.join(parts)})")
