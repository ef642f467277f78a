"""The two sanity checks of Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018), per method.

* **Model randomisation**: attribute the same validation images (each to its true class) with the trained
  model and with the same architecture re-initialised (every layer's ``reset_parameters``, seeded). A map
  that explains the *model* must change: the mean Spearman rank correlation ρ between the two maps of each
  image must stay below :data:`RHO_MAX`, for the maps as they are and for their absolute values (the
  paper reports both; the check takes the larger ρ). A map that is constant (every pixel equal up to rounding,
  e.g. an all-zero Grad-CAM, or a 1x1 one upsampled) has no ranking: it is a failure (ρ = 1 in the mean,
  and the check fails), never ρ = 0, and is counted in ``constant_maps``.
* **Localisation on digits**: for each image, the share of its top 10 % attribution pixels that lie on the
  digit's ink (pixels ≥ 128, dilated by one pixel), divided by the ink's share of the image; the mean
  over images. 1.0 is chance; a method passes above :data:`LOC_MIN`. Only for digit models (grey, light
  ink on a dark background); ``None`` elsewhere ("n/a"), where a method is judged on randomisation alone.

A method passes when it passes both; its margin is the smaller of the two relative margins,
min(1 − ρ / RHO_MAX, ratio / LOC_MIN − 1). With ``repeats`` (other images, other random models) it passes
only when every repeat passes, and :func:`pick_default` takes the widest worst-case margin.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UserError
from cnnlab.explain.attribution import attribute_images, check_method
from cnnlab.explain.methods import METHODS
from cnnlab.inference import Predictor, load

RHO_MAX = 0.5  # randomisation: the paper's passing methods are far below 0.5
LOC_MIN = 1.5  # localisation: top-10 % pixels on the ink at least 1.5x as often as chance
TOP_FRACTION = 0.10
INK_LEVEL = 128


def validation_images(predictor: Predictor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images (uint8 [n, C, H, W]) and labels of the run's validation split."""
    return sanity_images(predictor, n)


def sanity_images(
    predictor: Predictor, n: int, dataset: str | None = None, data_dir: str | Path | None = None, split: str = "val"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images (uint8 [n, C, H, W], as the model takes them) and labels of ``split`` of
    ``dataset`` (default: the run's own dataset and data folder)."""
    from cnnlab.data import load_data

    cfg = predictor.config
    data = load_data(
        dataset or cfg.dataset, data_dir or cfg.data_dir, (split,), cfg.classes or None, predictor.spec.size,
        resize=predictor.spec.resize,
    )  # fmt: skip
    chosen = data.splits[split]
    k = min(n, len(chosen))
    if hasattr(chosen, "images"):
        images = chosen.images[:k]
    else:
        images = torch.stack([predictor.read(p) for p in chosen.paths[:k]])
    shape = predictor.spec.shape
    if tuple(images.shape[1:]) != shape:
        raise UserError(
            f"{data.name} has {'x'.join(map(str, images.shape[1:]))} images but the model takes {'x'.join(map(str, shape))}"
        )
    if data.spec.classes != predictor.spec.classes:
        raise UserError(
            f"{data.name}'s classes {list(data.spec.classes)} differ from the model's {list(predictor.spec.classes)}"
        )
    return images, chosen.labels[:k]


def reinitialised(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer's weights drawn afresh (``reset_parameters``) from ``seed``."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh.eval()


def is_constant(amap: torch.Tensor, tolerance: float = 1e-5) -> bool:
    """Whether a map is one value everywhere, up to float rounding (a 1x1 Grad-CAM upsampled): its span is
    at most ``tolerance`` times its largest magnitude."""
    span = float(amap.max() - amap.min())
    return span <= tolerance * float(amap.abs().max())


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rank correlation of two maps (SciPy; ties get their average rank); None when either
    map is constant (:func:`is_constant`)."""
    from scipy.stats import spearmanr

    if is_constant(a) or is_constant(b):
        return None
    a, b = a.flatten().double().numpy(), b.flatten().double().numpy()
    return float(spearmanr(a, b).statistic)


def randomisation(trained: torch.Tensor, random: torch.Tensor) -> tuple[float, int]:
    """(mean Spearman ρ over images, how many image pairs had a constant map). A constant map has no
    ranking: it counts as a failure, ρ = 1 (as if the map had not changed), never as 0."""
    rhos = [spearman(a, b) for a, b in zip(trained, random)]
    constant = sum(r is None for r in rhos)
    return sum(1.0 if r is None else r for r in rhos) / len(rhos), constant


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
    """Both checks for one method on the given images (each attributed to its label); the random model is
    the trained one re-initialised from ``seed``."""
    method = check_method(method)
    trained = attribute_images(predictor, images, labels, method)
    random = attribute_images(predictor, images, labels, method, model=reinitialised(predictor.model, seed))
    rho_signed, constant = randomisation(trained, random)
    rho_abs, constant_abs = randomisation(trained.abs(), random.abs())
    rho = max(rho_signed, rho_abs)
    constant = max(constant, constant_abs)
    digits = predictor.preprocessing.recipe == "digit"
    ratio = localisation(trained, images) if digits else None
    rho_pass = rho < RHO_MAX and not constant
    loc_pass = None if ratio is None else ratio > LOC_MIN
    margin = 1 - rho / RHO_MAX if ratio is None else min(1 - rho / RHO_MAX, ratio / LOC_MIN - 1)
    if constant:  # a failure whatever the other maps say
        margin = min(margin, -constant / len(images))
    return {
        "method": method, "n": len(images), "randomisation_rho": rho, "rho_signed": rho_signed, "rho_abs": rho_abs,
        "constant_maps": constant, "randomisation_pass": rho_pass, "localisation": ratio,
        "localisation_pass": loc_pass, "passes": rho_pass and loc_pass is not False, "margin": margin,
    }  # fmt: skip


def combine(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows of one method over several image sets and random models → one row: the means, a pass only
    where every repeat passes, ``margin_min`` (the worst repeat's margin) and ``spread`` ([min, max] of ρ,
    localisation and margin)."""
    first, k = repeats[0], len(repeats)

    def values(key: str) -> list[float]:
        return [r[key] for r in repeats]

    def mean(key: str) -> float:
        return sum(values(key)) / k

    spread_keys = ("randomisation_rho", "localisation", "margin") if first["localisation"] is not None else (
        "randomisation_rho", "margin")  # fmt: skip
    return {
        "method": first["method"], "n": first["n"], "repeats": k, "randomisation_rho": mean("randomisation_rho"),
        "rho_signed": mean("rho_signed"), "rho_abs": mean("rho_abs"), "constant_maps": sum(values("constant_maps")),
        "randomisation_pass": all(values("randomisation_pass")), "randomisations_passed": sum(values("randomisation_pass")),
        "localisation": None if first["localisation"] is None else mean("localisation"),
        "localisation_pass": None if first["localisation"] is None else all(values("localisation_pass")),
        "localisations_passed": None if first["localisation"] is None else sum(values("localisation_pass")),
        "passes": all(values("passes")), "passed": sum(values("passes")),
        "margin": mean("margin"), "margin_min": min(values("margin")),
        "spread": {key: [min(values(key)), max(values(key))] for key in spread_keys},
    }  # fmt: skip


def sanity_checks(
    path: str | Path,
    methods: list[str] | tuple[str, ...] = METHODS,
    n: int = 64,
    device: str = "cpu",
    seed: int = 0,
    repeats: int = 1,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    split: str = "val",
) -> list[dict[str, Any]]:
    """Both sanity checks for each method, ``repeats`` times: repeat r uses the next ``n`` images of
    ``split`` (default: the run's validation images; ``dataset``/``data_dir`` choose other data) and a
    random model re-initialised from ``seed + r``.

    One dict per method (see :func:`combine`): ``method``, ``n`` (images per repeat), ``repeats``,
    ``randomisation_rho`` (mean Spearman ρ, trained vs re-initialised model), ``constant_maps`` (each a
    failure), ``randomisation_pass`` (ρ < :data:`RHO_MAX` and no constant map, in every repeat),
    ``localisation`` (top-10 % on ink ÷ chance; None for non-digit models, judged on randomisation only),
    ``localisation_pass`` (> :data:`LOC_MIN`; None where not measured), ``passes``, ``margin`` (mean),
    ``margin_min`` and ``spread`` ([min, max] over the repeats)."""
    methods = [check_method(m) for m in methods]
    if repeats < 1:
        raise UserError(f"--repeats must be ≥ 1 (got {repeats})")
    if n < 2:
        raise UserError(f"the sanity checks need at least 2 images (got {n})")
    predictor = load(path, device)
    images, labels = sanity_images(predictor, n * repeats, dataset, data_dir, split)
    per = len(images) // repeats
    if per < 2:
        raise UserError(f"{len(images)} images are too few for {repeats} repeats of at least 2; lower --repeats or -n")
    sets = [(images[r * per : (r + 1) * per], labels[r * per : (r + 1) * per]) for r in range(repeats)]
    source = "validation" if dataset is None and split == "val" else f"{dataset or predictor.config.dataset} {split}"
    return [
        {
            **combine([check_method_sanity(predictor, x, y, m, seed + r) for r, (x, y) in enumerate(sets)]),
            "images": source,
        }
        for m in methods
    ]


def pick_default(rows: list[dict[str, Any]]) -> str | None:
    """The method that passes both checks (every repeat) by the widest worst-case margin (None if none passes)."""
    passing = [r for r in rows if r["passes"]]
    return max(passing, key=lambda r: r.get("margin_min", r["margin"]))["method"] if passing else None


def _cell(row: dict[str, Any], key: str, digits: int = 3, suffix: str = "") -> str:
    """``mean`` or, over several repeats, ``mean [min, max]``."""
    value = row[key]
    if value is None:
        return "n/a"
    spread = row.get("spread", {}).get(key)
    text = f"{value:.{digits}f}{suffix}"
    if row.get("repeats", 1) > 1 and spread:
        text += f" [{spread[0]:.{digits}f}, {spread[1]:.{digits}f}]"
    return text


def _verdict(passed: bool | None, count: int | None, repeats: int) -> str:
    if passed is None:
        return "n/a"
    if repeats > 1 and not passed and count:
        return f"FAIL {repeats - count}/{repeats}"
    return "pass" if passed else "FAIL"


def format_sanity(rows: list[dict[str, Any]], default: str | None = None) -> str:
    """The checks as a text table, which method passes both by the widest margin, and how the default
    ``default`` (:data:`~cnnlab.explain.DEFAULT_METHOD` unless given) fares; said plainly when none passes."""
    from cnnlab.explain.methods import DEFAULT_METHOD

    if not rows:
        return "no methods"
    default = default or DEFAULT_METHOD
    k = rows[0].get("repeats", 1)
    sets = (
        f" x {k} sets (other images, random models re-initialised from seeds 0-{k - 1}): mean [min, max]"
        if k > 1
        else ""
    )
    header = ["method", "ρ signed", "ρ |map|", f"< {RHO_MAX}", "localisation ÷ chance", f"> {LOC_MIN}", "margin"]
    table = [header]
    notes = []
    for r in rows:
        table.append([
            r["method"], f"{r['rho_signed']:.3f}", _cell(r, "rho_abs") if k == 1 else _cell(r, "randomisation_rho"),
            _verdict(r["randomisation_pass"], r.get("randomisations_passed"), k),
            _cell(r, "localisation", 2, "x"), _verdict(r["localisation_pass"], r.get("localisations_passed"), k), _cell(r, "margin", 2),
        ])  # fmt: skip
        if r["constant_maps"]:
            notes.append(f"{r['method']}: {r['constant_maps']} constant maps (no ranking), each counted as a failure")
    if k > 1:
        table[0][2] = "ρ max(signed, |map|)"
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    source = rows[0].get("images", "validation")
    lines = [f"sanity checks on {rows[0]['n']} {source} images{sets} (Adebayo et al. 2018)"]
    for row in table:
        lines.append(
            "  ".join(c.ljust(w) if i in (0, 3, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        )
    lines += notes
    if all(r["localisation"] is None for r in rows):
        lines.append("localisation: n/a (no ink mask outside grey digit models); judged on randomisation only")
    best = pick_default(rows)
    every = " in every set" if k > 1 else ""
    lines.append(f"widest margin over both checks{every}: {best}" if best else f"no method passes both checks{every}")
    by_default = next((r for r in rows if r["method"] == default), None)
    if by_default is not None and not by_default["passes"]:
        lines.append(f"the default method, {default}, does not pass here: read its maps with care")
    return "\n".join(line.rstrip() for line in lines)
