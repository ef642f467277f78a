"""Odd images: blank, too dark, too bright, blurry (each against the rest of the dataset), and for
image files tiny or of an extreme aspect ratio (from their original size)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.doctor.data import Pool

Z = 5.0  # robust z-score (median, 1.4826 · MAD) beyond which a brightness or sharpness is odd
TINY = 16  # pixels: an original side shorter than this is tiny
ASPECT = 3.0  # longer side / shorter side beyond this is extreme
LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def robust_z(values: torch.Tensor) -> torch.Tensor:
    median = values.median()
    mad = (values - median).abs().median() * 1.4826
    return (values - median) / mad.clamp(min=1e-6)


def image_stats(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image (grey, 0..1): brightness (mean), contrast (std), sharpness = log variance of the
    Laplacian over the variance of the image (blur lowers it, whatever the contrast)."""
    x = images.float().mean(dim=1, keepdim=True) / 255
    contrast = x.flatten(1).std(dim=1)
    laplace = F.conv2d(x, LAPLACE).flatten(1).var(dim=1)
    return {
        "brightness": x.flatten(1).mean(dim=1),
        "contrast": contrast,
        "sharpness": (laplace.clamp(min=1e-12) / contrast.pow(2).clamp(min=1e-12)).log(),
    }


def odd_images(pool: Pool) -> list[dict[str, Any]]:
    """``{"image", "issue", "label", "value"}`` per finding, the most extreme first within each issue."""
    stats = image_stats(pool.images)
    found: list[tuple[float, dict[str, Any]]] = []

    def add(i: int, issue: str, value: float, badness: float) -> None:
        label = pool.data.spec.classes[int(pool.labels[i])]
        found.append((badness, {"image": pool.names[i], "issue": issue, "label": label, "value": round(value, 4)}))

    blank = stats["contrast"] < 1 / 255
    brightness, sharpness = (
        robust_z(stats["brightness"]),
        robust_z(stats["sharpness"][~blank]) if (~blank).any() else None,
    )
    for i in blank.nonzero().flatten().tolist():
        add(i, "blank", float(stats["brightness"][i]), 100.0)
    for i in (brightness < -Z).nonzero().flatten().tolist():
        if not blank[i]:
            add(i, "too dark", float(stats["brightness"][i]), float(-brightness[i]))
    for i in (brightness > Z).nonzero().flatten().tolist():
        if not blank[i]:
            add(i, "too bright", float(stats["brightness"][i]), float(brightness[i]))
    if sharpness is not None:
        kept = (~blank).nonzero().flatten()
        for j in (sharpness < -Z).nonzero().flatten().tolist():
            add(int(kept[j]), "blurry", float(stats["sharpness"][kept[j]]), float(-sharpness[j]))
    for i, (w, h) in enumerate(pool.sizes or []):
        if min(w, h) < TINY:
            add(i, "tiny", float(min(w, h)), 50.0 + TINY - min(w, h))
        if max(w, h) / max(1, min(w, h)) > ASPECT:
            add(i, "extreme aspect ratio", max(w, h) / max(1, min(w, h)), 40.0 + max(w, h) / max(1, min(w, h)))
    found.sort(key=lambda f: -f[0])
    return [f for _, f in found]
