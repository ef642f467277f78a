"""The one description of how images feed a model, :class:`ImageSpec`, and the one way a batch of uint8
images becomes its input, :func:`to_model_input`.

A dataset (:class:`cnnlab.data.Data`), a checkpoint (its ``spec`` entry), a
:class:`~cnnlab.inference.Predictor`, the export metadata and ``serve`` all carry the same spec: the class
names, the image shape (``channels`` × ``size`` × ``size``), the per-channel ``mean`` and ``std`` the pixels
are normalised with, how files were decoded (``resize``) and the recipe that prepares a new image
(:attr:`ImageSpec.preprocessing`, see :mod:`cnnlab.preprocess`). Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the type hints only: torch is imported where a tensor is made
    import torch

    from cnnlab.preprocess import Preprocessing

RECIPES = ("digit", "resize", "crop")
BOX_FRACTION = 20 / 28  # MNIST: digits fit a 20×20 box inside 28×28
# Datasets whose images fill their frame instead (Fashion-MNIST's items, scikit-learn's 8×8 digits).
FULL_FRAME = {"fashion-mnist", "digits"}


@dataclass(frozen=True)
class ImageSpec:
    """How images feed a model: what its outputs mean, the shape and normalisation of its input, and how a
    new image is prepared.

    * ``classes`` — the class names, in the order of the model's outputs;
    * ``channels``, ``size`` — the input is uint8 ``[channels, size, size]`` (1: grey, 3: RGB);
    * ``mean``, ``std`` — per channel: the model sees ``(pixels / 255 − mean) / std`` (:func:`to_model_input`);
    * ``resize`` — ``folder:``/``csv:`` files were decoded with the shorter side scaled to this, then the
      central ``size`` square cut out (pretrained weights' way); ``None``: squeezed into the square;
    * ``recipe``, ``box`` — how a new image is prepared (:attr:`preprocessing`): ``digit`` (ink scaled to a
      ``box``-pixel box and centred, MNIST's way), ``resize`` (``box`` = ``size``) or ``crop`` (``box`` =
      ``resize``). :func:`image_spec` decides them from the data.
    """

    classes: tuple[str, ...]
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None
    recipe: str = ""  # "": crop with a resize, else resize
    box: int = 0  # 0: the recipe's natural box (size for resize, resize for crop)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not self.recipe:
            object.__setattr__(self, "recipe", "resize" if self.resize is None else "crop")
        if not self.box:
            object.__setattr__(self, "box", self.resize if self.recipe == "crop" and self.resize else self.size)
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; one of {', '.join(RECIPES)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need one value per channel ({self.channels}): {self.mean}, {self.std}")
        if (self.recipe == "crop") != (self.resize is not None):
            raise ValueError("the crop recipe goes with a resize, and only it")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """One input image: ``(channels, size, size)``."""
        return (self.channels, self.size, self.size)

    @property
    def preprocessing(self) -> Preprocessing:
        """The recipe that prepares a new image (a file, uploaded bytes, a PIL image) as this input."""
        from cnnlab.preprocess import Preprocessing

        return Preprocessing(self.recipe, self.channels, self.size, self.box)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, ints and strings (what a checkpoint stores; ``torch.load(weights_only=True)`` reads it)."""
        return {
            "classes": list(self.classes),
            "channels": self.channels,
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
            "recipe": self.recipe,
            "box": self.box,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageSpec:
        """The inverse of :meth:`to_dict` (a ValueError, KeyError or TypeError for anything else)."""
        for key in ("channels", "size", "box"):
            if not _is_int(d[key]):
                raise TypeError(f"spec {key} must be an integer, not {d[key]!r}")
        if d.get("resize") is not None and not _is_int(d["resize"]):
            raise TypeError(f"spec resize must be an integer or null, not {d['resize']!r}")
        if not all(isinstance(c, str) for c in d["classes"]):
            raise TypeError("spec classes must be strings")
        if not all(_is_number(v) for v in (*d["mean"], *d["std"])):
            raise TypeError("spec mean and std must be numbers")
        return cls(
            tuple(d["classes"]), d["channels"], d["size"], tuple(d["mean"]), tuple(d["std"]), d.get("resize"),
            str(d["recipe"]), d["box"],
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """Everything needed to feed a model of this spec and read its answer, for people and other runtimes:
        the export metadata's and ``serve``'s description of the input."""
        image = self.preprocessing.describe()
        return {
            "classes": list(self.classes),
            "input": {"name": "input", "shape": ["batch", *self.shape], "dtype": "float32"},
            "output": {"name": "probabilities", "shape": ["batch", self.num_classes], "dtype": "float32"},
            "mean": list(self.mean),
            "std": list(self.std),
            "image": image,
            "preprocessing": f"image file → pixels uint8 [batch, C, H, W] ({image['recipe']}: {image['steps']}); "
            "x = (pixels / 255 - mean) / std per channel",
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def image_spec(
    dataset: str,
    classes: Sequence[str],
    channels: int,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    resize: int | None = None,
) -> ImageSpec:
    """The spec of a model trained on ``dataset`` with this normalisation, its recipe decided once: ``crop``
    where training decoded files that way (``resize`` given: pretrained weights' preprocessing); ``digit`` for
    the built-in grey light-on-dark sets (``mean`` < 0.5: MNIST and its relatives; the ink fills
    ``round(size · 20/28)`` pixels, or all of ``size`` for sets whose items fill the frame); else ``resize``
    — also for your own ``folder:`` and ``csv:`` images, which training decoded by resizing them."""
    recipe, box = "resize", size
    if resize is not None:
        recipe, box = "crop", resize
    elif channels == 1 and mean[0] < 0.5 and not dataset.startswith(("folder:", "csv:")):
        recipe, box = "digit", size if dataset in FULL_FRAME else max(1, round(size * BOX_FRACTION))
    return ImageSpec(tuple(classes), channels, size, tuple(mean), tuple(std), resize, recipe, box)


def spec_from_checkpoint(ckpt: Mapping[str, Any]) -> ImageSpec:
    """The spec a checkpoint was written with: its ``spec`` entry, or for a checkpoint written before there
    was one, rebuilt from its ``arch`` (``in_channels``, ``image_size``), ``data`` (``classes``, ``mean``,
    ``std``, ``resize``) and ``config`` (``dataset``) by the rule that decided it then (:func:`image_spec`).
    A KeyError, TypeError or ValueError when they are missing or malformed."""
    if "spec" in ckpt:
        return ImageSpec.from_dict(ckpt["spec"])
    arch, meta = ckpt["arch"], ckpt["data"]
    dataset = str(ckpt["config"].get("dataset") or meta.get("dataset", ""))
    return image_spec(
        dataset, meta["classes"], arch["in_channels"], arch["image_size"], meta["mean"], meta["std"],
        meta.get("resize"),
    )  # fmt: skip


def spec_from_export(meta: Mapping[str, Any]) -> ImageSpec:
    """The spec an exported model's metadata (:meth:`ImageSpec.describe`, plus the export's own keys) was
    written from; for the crop recipe the shorter side (``resize``) is its ``box``."""
    image = meta["image"]
    resize = image["box"] if image["recipe"] == "crop" else None
    return ImageSpec(
        tuple(meta["classes"]), image["channels"], image["size"], tuple(meta["mean"]), tuple(meta["std"]), resize,
        image["recipe"], image["box"],
    )  # fmt: skip


def normalize(
    images: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """uint8 images [N, C, H, W] → float32 ``(x / 255 − mean) / std`` per channel, on their device."""
    return standardize(images.float().div_(255.0), mean, std)


def standardize(
    x: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Float pixels in [0, 1], [N, C, H, W] → ``(x − mean) / std`` per channel, in place (``mean`` and
    ``std``: one value per channel, or tensors already shaped [1, C, 1, 1] on ``x``'s device)."""
    import torch

    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def to_model_input(
    spec: ImageSpec,
    images: torch.Tensor,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """uint8 images [N, C, H, W] → the model's input: ``(x / 255 − spec.mean) / spec.std`` per channel,
    computed in float32 on ``device`` (default: where the images are), then cast to ``dtype`` (default
    float32). The one place predictions, explanations, ``serve`` and the exports' calibration make it."""
    x = normalize(images if device is None else images.to(device), spec.mean, spec.std)
    return x if dtype is None else x.to(dtype)
