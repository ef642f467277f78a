"""The model zoo: plain ``nn.Sequential`` networks built by name.

Every builder takes ``(in_channels, image_size, num_classes)`` and adapts to them. A multi-class
model ends in ``log_softmax`` (the tutorial's convention: its outputs are log-probabilities, which
every loss in :mod:`cnnlab.losses` accepts). With ``num_classes == 1`` the model is a binary
logistic-regression head instead: one logit, no log_softmax.

Small images (under 16 pixels, e.g. the 8×8 ``digits``) get ``padding=2`` in the 5×5 convolutions
so the feature maps do not shrink to nothing.

``tv:NAME`` is any torchvision classification model (``torchvision.models.list_models``) with its
classifier sized for the dataset's classes, wrapped in :class:`TorchvisionNet` (grey images are
repeated to three channels; outputs are log-probabilities like every other model here).
:func:`load_pretrained` puts torchvision's DEFAULT weights into it, all but the new head.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import UserError


def _head(in_features: int, num_classes: int) -> list[nn.Module]:
    """Linear → log_softmax for classes, or a single logit for logistic regression."""
    if num_classes == 1:
        return [nn.Linear(in_features, 1)]
    return [nn.Linear(in_features, num_classes), nn.LogSoftmax(dim=1)]


def _pad5(image_size: int) -> int:
    return 0 if image_size >= 16 else 2


def _flat_features(body: nn.Sequential, in_channels: int, image_size: int, name: str) -> int:
    """Number of features ``body`` produces for one image (a dry run on zeros)."""
    with torch.no_grad():
        try:
            out = body(torch.zeros(1, in_channels, image_size, image_size))
        except RuntimeError:
            raise UserError(f"{name} cannot take {image_size}x{image_size} images (too small)") from None
    return out.numel()


def seednet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """The tutorial's canonical CNN: Conv2d(in,10,5) → MaxPool2d(2) → ReLU → Conv2d(10,20,5) →
    MaxPool2d(2) → ReLU → flatten → Linear(320,10) → log_softmax (320 inputs for 28×28)."""
    p = _pad5(image_size)
    body = nn.Sequential(
        nn.Conv2d(in_channels, 10, 5, padding=p), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, 5, padding=p), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(),
    )  # fmt: skip
    return nn.Sequential(*body, *_head(_flat_features(body, in_channels, image_size, "seednet"), num_classes))


def lenet5(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling: conv 6@5×5 (padding 2) → pool →
    conv 16@5×5 → pool → 120 → 84 → classes."""
    body = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=_pad5(image_size)), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )  # fmt: skip
    features = _flat_features(body, in_channels, image_size, "lenet5")
    return nn.Sequential(
        *body, nn.Linear(features, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), *_head(84, num_classes)
    )


def tutorialnet(in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> nn.Sequential:
    """PyTorch's CIFAR-10 tutorial network: conv 6@5×5 → pool → conv 16@5×5 → pool → 120 → 84 →
    classes, ReLU between."""
    p = _pad5(image_size)
    body = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=p), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=p), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )  # fmt: skip
    features = _flat_features(body, in_channels, image_size, "tutorialnet")
    return nn.Sequential(
        *body, nn.Linear(features, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), *_head(84, num_classes)
    )


def examplenet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """The pytorch/examples MNIST network: conv 32@3×3 → conv 64@3×3 → pool → dropout 0.25 → 128 →
    dropout 0.5 → classes."""
    body = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(),
    )  # fmt: skip
    features = _flat_features(body, in_channels, image_size, "examplenet")
    return nn.Sequential(*body, nn.Linear(features, 128), nn.ReLU(), nn.Dropout(0.5), *_head(128, num_classes))


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def fastnet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """A small modern CNN for accuracy per second: 3×3 conv–BN–ReLU blocks of 16 | pool | 32, 32 |
    pool | 64, then global max-pool → classes.

    Sized on a 2-core CPU (``benchmarks/time_to_98.py``): one block at full resolution and widths
    that are multiples of 16 (what oneDNN's vector kernels want). With ``--recipe fast`` it passes
    98 % on the official MNIST test set from the 4,000 mnist5k digits in about 5 s of training;
    the earlier 32, 32 | 64, 64 | 128 version (8 epochs, batch 128) scored ~0.4 points more in ~8x the time."""
    return nn.Sequential(
        *_conv_bn(in_channels, 16), nn.MaxPool2d(2),
        *_conv_bn(16, 32), *_conv_bn(32, 32), nn.MaxPool2d(2) if image_size >= 8 else nn.Identity(),
        *_conv_bn(32, 64), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        *_head(64, num_classes),
    )  # fmt: skip


class Residual(nn.Module):
    """x + f(x): the skip connection of a residual block."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def resnet9(
    in_channels: int = 3, image_size: int = 32, num_classes: int = 10, width: int | None = None
) -> nn.Sequential:
    """A small residual network for colour images, laid out like the ResNet-9 of the DAWNBench CIFAR-10
    entries (and airbench): a conv–BN–ReLU stem, then stages of conv–BN–ReLU → max-pool that double the
    width, a residual block of two conv–BN–ReLU after the first and the last stage, global max-pool → classes.

    Sized for a CPU: ``width`` (default 16, 24 from 11 classes, 32 from 50) is the stem's, a quarter of
    ResNet-9's 64, and one stage per halving down to 4×4 pixels (3 stages for 32×32 images, 1 to 4)."""
    width = width or (16 if num_classes <= 10 else 24 if num_classes < 50 else 32)
    stages = max(1, min(4, (image_size // 4).bit_length() - 1))
    layers: list[nn.Module] = [*_conv_bn(in_channels, width)]
    c = width
    for stage in range(stages):
        layers += [*_conv_bn(c, 2 * c), nn.MaxPool2d(2)]
        c *= 2
        if stage in (0, stages - 1):
            layers.append(Residual(*_conv_bn(c, c), *_conv_bn(c, c)))
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), *_head(c, num_classes))


MODELS: dict[str, Callable[[int, int, int], nn.Sequential]] = {
    "seednet": seednet,
    "lenet5": lenet5,
    "tutorialnet": tutorialnet,
    "examplenet": examplenet,
    "fastnet": fastnet,
    "resnet9": resnet9,
}


TV = "tv:"  # prefix of torchvision's models: tv:resnet18, tv:mobilenet_v3_small, ...


def build_model(name: str, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Build model ``name`` for images [in_channels, image_size, image_size] and ``num_classes``
    outputs (1 = one logit for binary logistic regression)."""
    if name.startswith(TV):
        return TorchvisionNet(torchvision_name(name), in_channels, image_size, num_classes)
    if name not in MODELS:
        raise UserError(unknown_model(name))
    return MODELS[name](in_channels, image_size, num_classes)


def unknown_model(name: str) -> str:
    """The one line for a model name no builder knows; a torchvision name without ``tv:`` gets the hint."""
    hint = f"did you mean tv:{name}? " if name in torchvision_models() else ""
    return f"unknown model {name!r}; {hint}choose one of: {', '.join(MODELS)} or tv:NAME (see cnnlab models)"


def is_model(name: str) -> bool:
    """True for a model :func:`build_model` knows (imports torchvision only for ``tv:`` names)."""
    return name in MODELS or (name.startswith(TV) and name[len(TV) :] in torchvision_models())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(name: str) -> str:
    """First line of the model's docstring."""
    return " ".join((MODELS[name].__doc__ or "").split("\n\n")[0].split())


# ---- torchvision's models ------------------------------------------------------------------------


@functools.cache
def torchvision_models() -> tuple[str, ...]:
    """torchvision's image-classification models (not its detection, segmentation or video ones)."""
    from torchvision import models

    return tuple(models.list_models(module=models))


def torchvision_catalogue() -> list[dict[str, Any]]:
    """Each torchvision classifier with its DEFAULT weights' parameter count, ImageNet top-1 accuracy (%)
    and crop size, read from the weights' metadata (nothing is built or downloaded)."""
    from torchvision import models

    rows = []
    for name in torchvision_models():
        weights = models.get_model_weights(name).DEFAULT
        top1 = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1", float("nan"))
        crop = weights.transforms().crop_size[0]
        rows.append({"name": name, "params": weights.meta["num_params"], "top1": top1, "crop": crop})
    return rows


def torchvision_name(name: str) -> str:
    """``tv:resnet18`` → ``resnet18``, checked against torchvision's list."""
    short = name[len(TV) :]
    if short not in torchvision_models():
        raise UserError(f"unknown torchvision model {short!r}; see cnnlab models for the names")
    return short


class TorchvisionNet(nn.Module):
    """A torchvision classifier for ``num_classes`` (its own head, built at that size), taking
    ``in_channels`` 1 (repeated to the three channels it expects) or 3, returning log-probabilities
    (or, for ``num_classes == 1``, one logit)."""

    def __init__(self, arch: str, in_channels: int, image_size: int, num_classes: int):
        super().__init__()
        from torchvision import models

        if in_channels not in (1, 3):
            raise UserError(f"tv:{arch} takes grey or RGB images, not {in_channels} channels")
        extra = {"aux_logits": False, "init_weights": False} if arch in ("googlenet", "inception_v3") else {}
        if arch.startswith(("vit_", "swin_", "maxvit")):
            extra["image_size"] = image_size  # transformers are built for one input size
        try:
            self.net = models.get_model(arch, weights=None, num_classes=num_classes, **extra)
        except TypeError:  # the builder takes no image_size: it works at any size
            extra.pop("image_size", None)
            self.net = models.get_model(arch, weights=None, num_classes=num_classes, **extra)
        self.grey = in_channels == 1
        self.log_probabilities = num_classes > 1
        try:
            with torch.no_grad():
                self.eval()(torch.zeros(1, in_channels, image_size, image_size))
        except (RuntimeError, ValueError, AssertionError):
            raise UserError(
                f"tv:{arch} cannot take {image_size}x{image_size} images; pass a larger --image-size"
            ) from None
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.scores(x)
        return torch.log_softmax(out, dim=1) if self.log_probabilities else out

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The class scores (logits) before log_softmax."""
        return self.net(x.expand(-1, 3, -1, -1) if self.grey else x)


class ClassScores(nn.Module):
    """A :class:`TorchvisionNet` up to its class scores (what attribution methods explain); shares its layers."""

    def __init__(self, model: TorchvisionNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.scores(x)


def layer_names(model: nn.Module) -> list[str]:
    """The layers of a model, one line each: cnnlab's sequential models in full, torchvision's by their blocks."""
    if isinstance(model, TorchvisionNet):
        return [f"{name}: {type(block).__name__}" for name, block in model.net.named_children()]
    return [str(layer) for layer in model.children()]


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier head: the parameters of the model's last Linear or Conv2d layer (and of any
    layer after it), the part ``--freeze`` keeps training."""
    modules = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    last = max(i for i, m in enumerate(modules) if isinstance(m, (nn.Linear, nn.Conv2d)))
    return [p for m in modules[last:] for p in m.parameters(recurse=False)]


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """``--lr-mult``: the model's parameters in layer groups from the input to the head: a torchvision
    model's top-level blocks (ResNet: conv1, bn1, layer1, ..., layer4, fc), a cnnlab model's layers
    (a layer without parameters joins the next group); the head (:func:`head_parameters`) is the last group."""
    top = model.net if isinstance(model, TorchvisionNet) else model
    head = {id(p) for p in head_parameters(model)}
    groups = [[p for p in child.parameters() if id(p) not in head] for child in top.children()]
    return [g for g in groups if g] + [head_parameters(model)]


def set_trainable(model: nn.Module, head_only: bool) -> None:
    """``--freeze``: only the head learns (``head_only``), or every layer does."""
    head = {id(p) for p in head_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(not head_only or id(p) in head)


@dataclass(frozen=True)
class WeightsPreprocessing:
    """How torchvision's pretrained weights expect their images: shorter side resized to ``resize``,
    centre crop of ``size`` (their crop), then normalised with ``mean`` and ``std``; ``min_size`` the
    smallest input. :func:`cnnlab.assembly.training_data` turns it into the run's :class:`~cnnlab.spec.ImageSpec`."""

    size: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    min_size: int

    def for_size(self, size: int | None) -> tuple[int, int]:
        """(size, resize) for ``--image-size`` ``size`` (default: the weights' own crop), same proportions."""
        size = size or self.size
        return size, max(size, round(size * self.resize / self.size))


def default_weights(name: str) -> Any:
    from torchvision import models

    return models.get_model_weights(torchvision_name(name)).DEFAULT


def weights_preprocessing(name: str) -> WeightsPreprocessing:
    """The preprocessing of model ``tv:NAME``'s DEFAULT weights."""
    weights = default_weights(name)
    t = weights.transforms()
    return WeightsPreprocessing(
        size=int(t.crop_size[0]), resize=int(t.resize_size[0]), mean=tuple(t.mean), std=tuple(t.std),
        min_size=int(max(weights.meta.get("min_size", (1, 1)))),
    )  # fmt: skip


def weights_file(name: str) -> Path:
    """Where torchvision keeps model ``tv:NAME``'s DEFAULT weights: ``$TORCH_HOME/hub/checkpoints/FILE``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(default_weights(name).url)


def load_pretrained(model: TorchvisionNet, name: str, progress: bool = True) -> None:
    """Copy ``tv:NAME``'s DEFAULT weights into ``model``, all but the layers whose shape differs (the
    head, sized for other classes, stays as initialised). The file is read
    from torchvision's cache, or downloaded into it; offline without it, a UserError says where it goes."""
    path = ensure_weights(name, progress)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"{path}: not readable pretrained weights ({type(exc).__name__}); delete it and try again"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not readable pretrained weights (not a table of tensors); delete it and try again")
    own = model.net.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fits) < len(own) // 2:
        raise UserError(f"{path}: these are not the weights of {name} (only {len(fits)} of {len(own)} tensors fit)")
    model.net.load_state_dict(fits, strict=False)


def ensure_weights(name: str, progress: bool = True) -> Path:
    """The file of ``tv:NAME``'s DEFAULT weights in torchvision's cache, downloaded into it when missing
    (offline: a UserError naming the file and where it goes)."""
    path = weights_file(name)
    if not path.is_file():
        _download_weights(default_weights(name).url, path, progress)
    return path


def _download_weights(url: str, path: Path, progress: bool) -> None:
    """Download ``url`` to ``path`` (torch.hub's downloader: a temporary file, hash-checked, then moved)."""
    import torch.hub

    digest = re.search(r"-([a-f0-9]+)\.", os.path.basename(url))
    made = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if progress:
            print(f"downloading {url} to {path}", flush=True)
        torch.hub.download_url_to_file(url, str(path), digest.group(1) if digest else None, progress=progress)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a wrong hash is a RuntimeError
        for folder in made:  # leave no empty cache folders behind (deepest first)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        reason = getattr(exc, "reason", None) or exc
        raise UserError(
            f"--pretrained: cannot download {path.name} ({reason}); offline, copy that file into {path.parent}/ "
            "(set TORCH_HOME to use another cache) and run again"
        ) from None
