"""The two sanity checks of Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018), per method.

* **Model randomisation**: attribute the same validation images (each to its true class) with the trained
  model and with the same architecture re-initialised (every layer's ``reset_parameters``, seeded). A map
  that explains the *model* must change: the mean Spearman rank correlation ρ between the two maps of each
  image must stay below :data:`RHO_MAX`, for the maps as they are and for their absolute values (the
  paper reports both; the check takes the larger ρ). A map that is constant (every pixel equal, e.g. an all-zero
  Grad-CAM) has no ranking: its ρ counts as 0 and is reported in ``constant_maps``.
* **Localisation on digits**: for each image, the share of its top 10 % attribution pixels that lie on the
  digit's ink (pixels ≥ 128, dilated by one pixel), divided by the ink's share of the image; the mean
  over images. 1.0 is chance; a method passes above :data:`LOC_MIN`. Only for digit models (grey, light
  ink on a dark background); ``None`` elsewhere.

A method passes when it passes both; its margin is the smaller of the two relative margins,
min(1 − ρ / RHO_MAX, ratio / LOC_MIN − 1), and :func:`pick_default` takes the widest.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UserError
from cnnlab.explain import METHODS
from cnnlab.explain.attribution import attribute_images, check_method
from cnnlab.inference import Predictor, load

RHO_MAX = 0.5  # randomisation: the paper's passing methods are far below 0.5
LOC_MIN = 1.5  # localisation: top-10 % pixels on the ink at least 1.5x as often as chance
TOP_FRACTION = 0.10
INK_LEVEL = 128


def validation_images(predictor: Predictor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images (uint8 [n, C, H, W]) and labels of the run's validation split."""
    from cnnlab.data import load_data

    cfg = predictor.config
    data = load_data(
        cfg.dataset, cfg.data_dir, ("val",), cfg.classes or None, predictor.image_size, resize=predictor.resize
    )
    split = data.splits["val"]
    k = min(n, len(split))
    if hasattr(split, "images"):
        images = split.images[:k]
    else:
        images = torch.stack([predictor.read(p) for p in split.paths[:k]])
    return images, split.labels[:k]


def reinitialised(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer's weights drawn afresh (``reset_parameters``) from ``seed``."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh.eval()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rank correlation of two maps (SciPy; ties get their average rank); None when either
    map is constant."""
    from scipy.stats import spearmanr

    a, b = a.flatten().double().numpy(), b.flatten().double().numpy()
    if a.min() == a.max() or b.min() == b.max():
        return None
    return float(spearmanr(a, b).statistic)


def randomisation(trained: torch.Tensor, random: torch.Tensor) -> tuple[float, int]:
    """(mean Spearman ρ over images, how many image pairs had a constant map and counted as 0)."""
    rhos = [spearman(a, b) for a, b in zip(trained, random)]
    constant = sum(r is None for r in rhos)
    return sum(r or 0.0 for r in rhos) / len(rhos), constant


def ink_mask(images: torch.Tensor) -> torch.Tensor:
    """Where the digit's ink is: bool [N, H, W], pixels ≥ 128 in any channel, dilated by one pixel (3×3)."""
    ink = (images.amax(dim=1, keepdim=True) >= INK_LEVEL).float()
    return F.max_pool2d(ink, 3, stride=1, padding=1)[:, 0].bool()


def localisation(maps: torch.Tensor, images: torch.Tensor, top: float = TOP_FRACTION) -> float:
    """Mean over images of (share of the top ``top`` attribution pixels on the dilated ink) ÷ (the ink's share
    of the image); 1.0 = chance."""
    ink = ink_mask(images).flatten(1)
    flat = maps.flatten(1)
    k = max(1, round(top * flat.shape[1]))
    index = flat.topk(k, dim=1).indices
    on_ink = ink.gather(1, index).float().mean(dim=1)
    share = ink.float().mean(dim=1).clamp_min(1e-12)
    return float((on_ink / share).mean())


def check_method_sanity(
    predictor: Predictor, images: torch.Tensor, labels: torch.Tensor, method: str, seed: int = 0
) -> dict[str, Any]:
    """Both checks for one method on the given images (each attributed to its label)."""
    method = check_method(method)
    trained = attribute_images(predictor, images, labels, method)
    random = attribute_images(predictor, images, labels, method, model=reinitialised(predictor.model, seed))
    rho_signed, constant = randomisation(trained, random)
    rho_abs, constant_abs = randomisation(trained.abs(), random.abs())
    rho = max(rho_signed, rho_abs)
    digits = predictor.preprocessing.recipe == "digit"
    ratio = localisation(trained, images) if digits else None
    rho_pass = rho < RHO_MAX
    loc_pass = ratio is not None and ratio > LOC_MIN
    margin = min(1 - rho / RHO_MAX, ratio / LOC_MIN - 1) if ratio is not None else 1 - rho / RHO_MAX
    return {
        "method": method, "n": len(images), "randomisation_rho": rho, "rho_signed": rho_signed, "rho_abs": rho_abs,
        "constant_maps": max(constant, constant_abs),
        "randomisation_pass": rho_pass, "localisation": ratio, "localisation_pass": loc_pass,
        "passes": rho_pass and loc_pass, "margin": margin,
    }  # fmt: skip


def sanity_checks(
    path: str | Path, methods: list[str] | tuple[str, ...] = METHODS, n: int = 64, device: str = "cpu", seed: int = 0
) -> list[dict[str, Any]]:
    """Both sanity checks for each method on the first ``n`` validation images of the run in ``path``.

    One dict per method: ``method``, ``n``, ``randomisation_rho`` (mean Spearman ρ, trained vs re-initialised
    model), ``constant_maps``, ``randomisation_pass`` (ρ < :data:`RHO_MAX`), ``localisation`` (top-10 % on ink
    ÷ chance; None for non-digit models), ``localisation_pass`` (> :data:`LOC_MIN`), ``passes`` and
    ``margin``."""
    methods = [check_method(m) for m in methods]
    if n < 2:
        raise UserError(f"the sanity checks need at least 2 images (got {n})")
    predictor = load(path, device)
    images, labels = validation_images(predictor, n)
    return [check_method_sanity(predictor, images, labels, m, seed) for m in methods]


def pick_default(rows: list[dict[str, Any]]) -> str | None:
    """The method that passes both checks by the widest margin (None if none passes)."""
    passing = [r for r in rows if r["passes"]]
    return max(passing, key=lambda r: r["margin"])["method"] if passing else None


def format_sanity(rows: list[dict[str, Any]]) -> str:
    """The checks as a text table, and which method passes both by the widest margin."""
    head = f"sanity checks on {rows[0]['n']} validation images (Adebayo et al. 2018)" if rows else "no methods"
    lines = [
        head,
        f"{'':<22} {'randomisation: Spearman ρ':^34}   {'localisation':^20}",
        f"{'method':<22} {'signed':>8} {'|map|':>8}  {'< ' + str(RHO_MAX):<14}   {'÷ chance':>8}  {'> ' + str(LOC_MIN):<9}"
        f" {'margin':>7}",
    ]
    for r in rows:
        loc = "n/a" if r["localisation"] is None else f"{r['localisation']:.2f}x"
        constant = f"  ({r['constant_maps']} constant maps counted as ρ = 0)" if r["constant_maps"] else ""
        lines.append(
            f"{r['method']:<22} {r['rho_signed']:>8.3f} {r['rho_abs']:>8.3f}  "
            f"{'pass' if r['randomisation_pass'] else 'FAIL':<14}   {loc:>8}  "
            f"{'pass' if r['localisation_pass'] else 'FAIL':<9} {r['margin']:>7.2f}{constant}"
        )
    best = pick_default(rows)
    lines.append(f"widest margin over both checks: {best}" if best else "no method passes both checks")
    return "\n".join(line.rstrip() for line in lines)
