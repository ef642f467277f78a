"""``cnnlab viz``: what a trained CNN has learnt to look for (its first layer's filters) and what it
sees in one image (the input, then the feature maps after each convolution block of cnnlab's models or
each stage of torchvision's), as PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import UserError
from cnnlab.inference import load
from cnnlab.preprocess import require_content


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The model's first ``nn.Conv2d`` (the layer that looks at the pixels)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise UserError("this model has no convolution layer: there are no filters or feature maps to draw")


def visualize(
    path: str | Path, image: str | Path | None = None, out: str | Path | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """Draw the first convolution's filters (``filters.png``) and, below the input, the feature maps of every
    convolution block (a torchvision model: every stage) for ``image`` (default: the first validation image
    of the run's dataset) (``feature_maps.png``) in ``out`` (default ``viz/`` beside the checkpoint).
    Returns the PNG paths, the image, its maps' shapes and the picture's ``rows``."""
    from cnnlab import plots
    from cnnlab.explain.sanity import validation_images

    predictor = load(path, device)
    conv = first_conv(predictor.model)
    if image is not None:
        img, name = require_content(predictor.read(image), str(image)), str(image)
    else:
        images, labels = validation_images(predictor, 1)
        img = images[0]
        name = f"{predictor.config.dataset} validation image 0 (class {predictor.spec.classes[int(labels[0])]})"
    out_dir = Path(out) if out else predictor.path.parent / "viz"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None
    x = predictor.model_input(img.unsqueeze(0))
    filters_png = plots.plot_filters(
        conv.weight, out_dir / "filters.png", title=f"first-layer filters {tuple(conv.weight.shape)}"
    )
    maps = plots.feature_maps(predictor.model, x)
    maps_png = plots.plot_feature_maps(predictor.model, x, out_dir / "feature_maps.png", image=img)
    with torch.no_grad():
        probs = predictor.probabilities(img.unsqueeze(0))[0]
    return {
        "image": name,
        "label": predictor.spec.classes[int(probs.argmax())],
        "probability": float(probs.max()),
        "filters_png": str(filters_png),
        "feature_maps_png": str(maps_png),
        "layers": [{"name": n, "shape": list(m.shape)} for n, m in maps],
        "rows": ["input", *(n for n, _ in maps)],  # the rows of feature_maps.png
    }
