"""Using a trained model: :func:`load` a run directory or checkpoint into a :class:`Predictor`, and
:func:`predict` image files with it.

The Predictor owns the one way an image becomes its input (:attr:`Predictor.preprocessing`, see
:mod:`cnnlab.preprocess`): ``predict``, ``serve``, ``eval``'s galleries and the export metadata all use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnlab import trust
from cnnlab.checkpoint import load_checkpoint, resolve_checkpoint, stored_config
from cnnlab.config import TrainConfig
from cnnlab.env import resolve_device
from cnnlab.errors import UserError
from cnnlab.losses import probabilities
from cnnlab.models import build_model
from cnnlab.preprocess import Preprocessing, for_training_data, require_content
from cnnlab.trust.rule import UnknownRule


def valid_tta(cfg: TrainConfig, channels: int = 3) -> list[str]:
    """The test-time augmentations a model trained with ``cfg`` on ``channels``-channel images may use:
    ``hflip`` where its training flipped images left-right (``--augment`` with flips), else none."""
    from cnnlab.data.loaders import flips_allowed

    flipped = cfg.augment != "none" and flips_allowed(cfg.dataset, cfg.augment, cfg.hflip, channels)
    return ["hflip"] if flipped else []


class FlipAverage(nn.Module):
    """``--tta``: the model's class probabilities averaged over each image and its mirror image,
    p = ½ (p(x) + p(flip(x))), returned as log-probabilities (as a logit for a one-logit model)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        p = (probabilities(out) + probabilities(self.model(x.flip(3)))) / 2
        if out.shape[1] == 1:  # logistic: back to one logit
            return torch.logit(p[:, 1:].clamp(1e-7, 1 - 1e-7))
        return p.clamp_min(1e-12).log()


@dataclass
class Predictor:
    """A trained model with everything needed to feed it: classes, image shape, normalisation."""

    model: nn.Module
    classes: list[str]
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    config: TrainConfig
    path: Path
    resize: int | None = None  # trained on images scaled (shorter side) to this, then centre-cropped
    tta: bool = False  # average each image's probabilities with its mirror image's (FlipAverage)
    temperature: float = 1.0  # calibration: probabilities are softmax(z / T) (1 for runs from before it)
    rule: UnknownRule | None = None  # the "none of these" rule (None for runs from before it)

    @property
    def scorer(self) -> nn.Module:
        """The model as predictions use it: itself, or with ``tta`` averaged over flips."""
        return FlipAverage(self.model) if self.tta else self.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def preprocessing(self) -> Preprocessing:
        """How an image becomes this model's input: as training decoded it (resize-and-crop for pretrained
        weights), MNIST's digit recipe for grey light-on-dark built-in data, else a resize."""
        return for_training_data(self.in_channels, self.image_size, self.mean, self.config.dataset, self.resize)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 images [N, C, H, W] (a tensor or NumPy array) of the model's shape → class probabilities
        [N, classes]."""
        from cnnlab.data import normalize

        images = torch.as_tensor(images)
        shape = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != shape:
            raise UserError(f"images must have shape [N, {', '.join(map(str, shape))}] (got {list(images.shape)})")
        self.model.eval()
        dtype = next(self.model.parameters()).dtype
        x = normalize(images.to(self.device), self.mean, self.std).to(dtype)
        return probabilities(self.scorer(x) / self.temperature).float().cpu()

    @torch.no_grad()
    def known(self, images: torch.Tensor | np.ndarray) -> list[dict[str, Any]]:
        """Per image ``{"known_score", "unknown"}`` from the run's rule (:mod:`cnnlab.trust`): the score
        is higher the more the image looks like the training data; ``unknown`` is true below the
        threshold. Both are ``None`` for a run without a rule."""
        from cnnlab.data import normalize
        from cnnlab.trust.features import logits_and_features

        images = torch.as_tensor(images)
        if self.rule is None:
            return [{"known_score": None, "unknown": None} for _ in range(len(images))]
        dtype = next(self.model.parameters()).dtype
        x = normalize(images.to(self.device), self.mean, self.std).to(dtype)
        scores = self.rule.known_score(*logits_and_features(self.model, x))
        return [{"known_score": float(s), "unknown": bool(self.rule.unknown(s))} for s in scores]

    def read(self, path: str | Path, invert: bool = False) -> torch.Tensor:
        """An image file → uint8 [C, H, W], prepared by :attr:`preprocessing` (``invert``: take it as dark
        ink on a light background, whatever the detection says)."""
        return self.preprocessing.read(path, invert)

    def prepare(self, img: Image.Image, invert: bool = False) -> torch.Tensor:
        """A decoded PIL image → uint8 [C, H, W], prepared by :attr:`preprocessing`."""
        return self.preprocessing.prepare(img, invert)


def load(path: str | Path, device: str = "cpu", tta: bool = False) -> Predictor:
    """Load a run directory (its ``best.pt``) or a checkpoint file for evaluation or prediction; with
    ``tta``, predictions average over flips (refused for a model whose training did not flip images)."""
    ckpt_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path)
    try:
        arch, meta = ckpt["arch"], ckpt["data"]
        model = build_model(arch["model"], arch["in_channels"], arch["image_size"], arch["num_outputs"])
        cfg = stored_config(ckpt["config"], ckpt_path)
    except (KeyError, TypeError) as exc:
        raise UserError(f"{ckpt_path}: not a cnnlab checkpoint (missing {exc})") from None
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise UserError(
            f"{ckpt_path}: the weights do not fit a {arch['model']} for {arch['in_channels']}x"
            f"{arch['image_size']}x{arch['image_size']} images (checkpoint of another architecture?)"
        ) from None
    if tta and "hflip" not in ckpt.get("tta", valid_tta(cfg, int(ckpt["arch"]["in_channels"]))):
        raise UserError(
            f"--tta: {ckpt_path} was not trained with left-right flips (its --augment {cfg.augment}, --hflip "
            f"{cfg.hflip} on {cfg.dataset}), so averaging over flips would not be valid; leave out --tta"
        )
    if cfg.dtype == "float64":
        model = model.double()
    model.to(resolve_device(device)).eval()
    temperature, rule = trust.from_checkpoint(ckpt)
    return Predictor(
        model, list(meta["classes"]), arch["in_channels"], arch["image_size"],
        tuple(meta["mean"]), tuple(meta["std"]), cfg, ckpt_path, meta.get("resize"), tta, temperature, rule,
    )  # fmt: skip


def predict(
    path: str | Path,
    images: list[str | Path] | str | Path,
    topk: int = 3,
    invert: bool = False,
    device: str = "cpu",
    tta: bool = False,
) -> list[dict[str, Any]]:
    """Top-k classes (calibrated probabilities) for each image file, prepared by the model's
    :attr:`Predictor.preprocessing`, with ``known_score`` and ``unknown`` from the run's "none of these"
    rule (``None`` for runs trained before it). An image with nothing on it is a UserError."""
    if isinstance(images, (str, Path)):
        images = [images]
    if not images:
        raise UserError("no images given: pass a list of image files (images=[...])")
    if topk < 1:
        raise UserError(f"topk must be ≥ 1 (got {topk}; --topk on the command line)")
    predictor = load(path, device, tta)
    batch = torch.stack([require_content(predictor.read(p, invert), str(p)) for p in images])
    probs = predictor.probabilities(batch)
    k = min(topk, probs.shape[1])
    results = []
    for image, p, known in zip(images, probs, predictor.known(batch)):
        values, index = p.topk(k)
        top = [[predictor.classes[int(i)], float(v)] for v, i in zip(values, index)]
        results.append({"image": str(image), "label": top[0][0], "probability": top[0][1], "topk": top, **known})
    return results
