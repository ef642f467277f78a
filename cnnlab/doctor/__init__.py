"""``cnnlab doctor DATASET``: what is wrong with a dataset, before a model learns it.

- **likely label errors**: cleanlab's ``find_label_issues`` on out-of-fold probabilities from K-fold
  training with a recipe (:mod:`cnnlab.doctor.labels`);
- **exact and near duplicates**, within and across splits, train/test leakage first
  (:mod:`cnnlab.doctor.duplicates`);
- **odd images**: blank, too dark, too bright, blurry, tiny, extreme aspect ratio (:mod:`cnnlab.doctor.odd`).

Each finding names the image (its file for ``folder:``/``csv:`` data, ``split[index]`` for built-in
datasets), the issue, the given label and (label errors) the suggested one; a gallery PNG shows the
worst. Every option is checked before anything is trained or written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.errors import UserError

RECIPES = ("fast", "tutorial")
GALLERY = 24  # images in the gallery at most


def doctor(
    dataset: str,
    data_dir: str | Path = "./data",
    folds: int = 5,
    recipe: str = "fast",
    epochs: int | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    seed: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Find label issues, duplicates and odd images in ``dataset``; write ``gallery.png`` to ``out``
    (default ``doctor-<dataset>/``). ``folds`` and ``recipe`` (``fast`` or ``tutorial``, ``epochs`` to
    change its length) set the K-fold training that gives the out-of-fold probabilities."""
    from cnnlab.config import TrainConfig, validate
    from cnnlab.doctor.data import load_pool
    from cnnlab.doctor.duplicates import find_duplicates
    from cnnlab.doctor.labels import label_issues, out_of_fold_probabilities
    from cnnlab.doctor.odd import odd_images
    from cnnlab.recipes import FAST as FAST_RECIPE
    from cnnlab.runs import file_name_part

    if not 2 <= folds <= 20:
        raise UserError(f"--folds must be 2 to 20 (got {folds})")
    if recipe not in RECIPES:
        raise UserError(f"--recipe must be one of {', '.join(RECIPES)} (got {recipe!r})")
    cfg = TrainConfig().replace(**(FAST_RECIPE if recipe == "fast" else {}))
    cfg = validate(
        cfg.replace(
            dataset=dataset, device=device, seed=seed, progress=False, epochs=cfg.epochs if epochs is None else epochs
        )
    )
    out_dir = Path(out) if out else Path(f"doctor-{file_name_part(dataset)}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the gallery")
    pool = load_pool(dataset, data_dir)
    if pool.data.spec.num_classes < 2:
        raise UserError(f"{dataset} has one class: there is no label to doubt (the doctor needs two or more)")
    probs = out_of_fold_probabilities(pool, cfg, folds, progress)
    issues = label_issues(pool, probs)
    duplicates = find_duplicates(pool)
    odd = odd_images(pool)
    gallery = _gallery(pool, issues, duplicates, odd, out_dir / "gallery.png")
    return {
        "dataset": dataset,
        "images": len(pool.labels),
        "label_issues": issues,
        "duplicates": [[d["a"], d["b"]] for d in duplicates],
        "duplicate_details": [{k: v for k, v in d.items() if k != "index"} for d in duplicates],
        "odd": odd,
        "gallery_png": str(gallery),
    }


def _gallery(pool: Any, issues: list, duplicates: list, odd: list, path: Path) -> Path:
    """The worst findings in one grid: label issues, then duplicate pairs side by side, then odd images."""
    from cnnlab import plots

    index = {name: i for i, name in enumerate(pool.names)}
    picks: list[tuple[int, str]] = []
    for f in issues[: GALLERY // 2]:
        picks.append((index[f["image"]], f"label {f['label']}\nlooks like {f['suggested']}"))
    for d in duplicates[: GALLERY // 6]:
        a, b = d["index"]
        where = "across splits" if d["cross_split"] else d["kind"]
        picks += [(a, f"dup ({where})\n{_short(d['a'])}"), (b, f"dup ({where})\n{_short(d['b'])}")]
    for f in odd[: GALLERY - len(picks)]:
        picks.append((index[f["image"]], f"{f['issue']}\n{_short(f['image'])}"))
    picks = picks[:GALLERY]
    images = pool.images[[i for i, _ in picks]] if picks else pool.images[:0]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {path.parent}: cannot write there ({exc.strerror or exc})") from None
    title = f"doctor: {len(issues)} label issues, {len(duplicates)} duplicate pairs, {len(odd)} odd images"
    return plots.plot_gallery(images, [t for _, t in picks], path, title=title)


def _short(name: str) -> str:
    return Path(name).name if "/" in name else name


def format_findings(result: dict[str, Any], limit: int = 20) -> str:
    """The findings as text: one line each (file, issue, given label, suggested label), the first ``limit`` of each kind."""
    lines = [f"{result['dataset']}: {result['images']} images"]
    sections = [
        ("likely label errors", result["label_issues"],
         lambda f: f"{f['image']}: label {f['label']}, looks like {f['suggested']} (score {f['score']:.3f})"),
        ("duplicates", result["duplicate_details"],
         lambda d: f"{d['a']} = {d['b']}: {d['kind']} duplicate{' ACROSS SPLITS' if d['cross_split'] else ''} "
                   f"(similarity {d['similarity']:.3f})"),
        ("odd images", result["odd"], lambda f: f"{f['image']}: {f['issue']} (label {f['label']}, value {f['value']})"),
    ]  # fmt: skip
    for title, findings, line in sections:
        lines.append(f"\n{title}: {len(findings)}")
        lines += ["  " + line(f) for f in findings[:limit]]
        if len(findings) > limit:
            lines.append(f"  ... and {len(findings) - limit} more (--json lists every one)")
    lines.append(f"\ngallery of the worst: {result['gallery_png']}")
    return "\n".join(lines)


__all__ = ["doctor", "format_findings"]
