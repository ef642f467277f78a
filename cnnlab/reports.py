"""Reports on a trained model: :func:`evaluate` (loss, accuracy, per-class report, confusion matrix,
the most-confused class pairs, a gallery of the most confident mistakes with a Grad-CAM overlay each,
calibration: ECE before and after the run's temperature with a reliability diagram)
and :func:`summary` (torchinfo's layer table).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from cnnlab.assembly import eval_batches, make_loss
from cnnlab.data import Data, TensorSplit, default_split, load_data
from cnnlab.data.registry import is_file_dataset
from cnnlab.data.splits import FileSplit
from cnnlab.engine import evaluate as evaluate_batches
from cnnlab.errors import UserError
from cnnlab.inference import Predictor, load, read_images, warn_stderr
from cnnlab.losses import probabilities
from cnnlab.models import build_model
from cnnlab.runs import file_name_part


def evaluate(
    path: str | Path,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    split: str | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
    tta: bool = False,
) -> dict[str, Any]:
    """Loss, accuracy, per-class report, confusion matrix, most-confused pairs (``most_confused``: true →
    predicted, count, largest first) and mistakes gallery (with Grad-CAM overlays) of a trained model.

    Defaults: the run's own dataset; the ``test`` split where the dataset has one, else ``val``.
    Pictures go to ``out`` (default: ``eval-<dataset>-<split>/`` beside the checkpoint); with no mistake
    there is no gallery (``mistakes_png`` is None). ``tta``: the numbers of the predictions averaged over
    flips (:class:`cnnlab.inference.FlipAverage`).
    """
    from cnnlab import plots
    from cnnlab.metrics import confusion_matrix, format_most_confused, format_report, most_confused, per_class_report

    predictor = load(path, device, tta)
    cfg = predictor.config
    dataset = dataset or cfg.dataset
    split = split or default_split(dataset)
    data = _eval_data(predictor, dataset, data_dir or cfg.data_dir, split)
    classes = list(data.spec.classes)
    batches = eval_batches(data, split, cfg, predictor.model)
    result = evaluate_batches(predictor.scorer, batches, make_loss(cfg.replace(label_smoothing=0.0)), keep_outputs=True)
    outputs, labels = result.pop("outputs"), result.pop("labels")
    report = per_class_report(outputs, labels, classes)
    matrix = confusion_matrix(outputs, labels, len(classes))
    confused = most_confused(matrix, classes)
    out_dir = Path(out) if out else predictor.path.parent / f"eval-{file_name_part(dataset)}-{split}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None
    confusion_png = plots.plot_confusion(matrix, classes, out_dir / "confusion.png",
                                         title=f"{dataset} {split}: accuracy {100 * result['accuracy']:.2f}%")  # fmt: skip
    gallery_png = _mistakes_gallery(predictor, data, split, outputs, labels, out_dir / "mistakes.png")
    calibration = _calibration(predictor, outputs, labels, out_dir / "reliability.png")
    return {
        **result,
        "dataset": dataset,
        "split": split,
        "per_class": report,
        "confusion_matrix": matrix.tolist(),
        "most_confused": confused,
        "confusion_png": str(confusion_png),
        "mistakes_png": None if gallery_png is None else str(gallery_png),
        "calibration": calibration,
        "report": format_report(report) + "\n" + format_most_confused(confused),
    }


def _calibration(predictor: Predictor, outputs: torch.Tensor, labels: torch.Tensor, path: Path) -> dict[str, Any]:
    """Expected calibration error before (T = 1) and after the run's temperature, and the reliability
    diagram of both (:mod:`cnnlab.trust.calibration`)."""
    from cnnlab.trust.calibration import expected_calibration_error, reliability_diagram

    t = predictor.temperature
    if outputs.dim() != 2 or outputs.shape[1] < 2 or len(labels) == 0:  # one logit: nothing to calibrate
        return {"temperature": t, "ece_before": None, "ece": None, "reliability_png": None}
    before, after = probabilities(outputs), probabilities(outputs / t)
    diagram = reliability_diagram(before, after, labels, t, path)
    ece_before, ece = expected_calibration_error(before, labels), expected_calibration_error(after, labels)
    return {"temperature": t, "ece_before": ece_before, "ece": ece, "reliability_png": str(diagram)}


def _eval_data(predictor: Predictor, dataset: str, data_dir: str | Path, split: str) -> Data:
    """The ``split`` to evaluate on, fed as the model was trained (its spec: its own mean and std, whatever
    the data's), after checking that the data has the model's classes and image shape. Your own image files (``folder:``, ``csv:``) are read by the model itself,
    :meth:`Predictor.read`, so ``eval`` sees each file exactly as ``predict`` does (colour files for a grey
    model are converted, as ``predict`` converts them)."""
    cfg = predictor.config
    own_files = is_file_dataset(dataset)
    data = load_data(
        dataset, data_dir, (split,), cfg.classes or None, predictor.spec.size,
        val_fraction=cfg.val_fraction, memory_budget=0 if own_files else cfg.memory_budget,
        resize=predictor.spec.resize,
    )  # fmt: skip
    if own_files:  # read as the model reads files: its shape, whatever the data's
        files = data.splits[split]
        assert isinstance(files, FileSplit)  # memory_budget=0: the split lists its files
        images, kept = read_images(predictor, list(files.paths), warn=warn_stderr)  # a bad file: a warning, skipped
        data = dataclasses.replace(data, splits={split: TensorSplit(images, files.labels[kept])})
    _check_compatible(predictor, data, shape=not own_files)
    return dataclasses.replace(data, spec=predictor.spec)


def split_images(predictor: Predictor, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
    """The run's own ``split`` as the model takes it: (uint8 images [N, C, H, W], labels [N])."""
    cfg = predictor.config
    part = _eval_data(predictor, cfg.dataset, cfg.data_dir, split).splits[split]
    if isinstance(part, TensorSplit):
        return part.images, part.labels
    images, kept = read_images(predictor, list(part.paths), warn=warn_stderr)
    return images, part.labels[kept]


def _check_compatible(predictor: Predictor, data: Data, shape: bool = True) -> None:
    """Refuse data of other classes than the model's, or (``shape``) of another image shape."""
    theirs, ours = data.spec, predictor.spec
    if shape and theirs.shape != ours.shape:
        raise UserError(
            f"{data.name} has {'x'.join(map(str, theirs.shape))} images but the model takes "
            f"{'x'.join(map(str, ours.shape))}"
        )
    if theirs.classes != ours.classes:
        raise UserError(f"{data.name}'s classes {list(theirs.classes)} differ from the model's {list(ours.classes)}")


def _mistakes_gallery(
    predictor: Predictor, data: Data, split: str, outputs: torch.Tensor, labels: torch.Tensor, path: Path
) -> Path | None:
    """The most confident mistakes (at most 16) with a Grad-CAM overlay each, or None (nothing written) when
    there is no mistake."""
    from cnnlab import plots
    from cnnlab.explain.attribution import attribute_images
    from cnnlab.metrics import most_confident_mistakes

    index = most_confident_mistakes(outputs, labels, k=16)
    if not len(index):
        return None
    probs = probabilities(outputs[index])
    split_data = data.splits[split]
    if hasattr(split_data, "images"):
        images = split_data.images[index]
    else:
        images = torch.stack([predictor.read(split_data.paths[i]) for i in index.tolist()])
    titles = [
        f"true {data.spec.classes[int(labels[i])]}\npred {data.spec.classes[int(p.argmax())]} {100 * float(p.max()):.0f}%"
        for i, p in zip(index.tolist(), probs)
    ]
    if not any(isinstance(m, torch.nn.Conv2d) for m in predictor.model.modules()):
        return plots.plot_gallery(images, titles, path, title="most confidently wrong")  # nothing for Grad-CAM
    predicted = probs.argmax(dim=1)
    maps = attribute_images(predictor, images, predicted, "gradcam")
    overlays = [plots.overlay_rgb(img, m) for img, m in zip(images, maps)]
    return plots.plot_gallery_with_overlays(
        images, overlays, titles, path, title="most confidently wrong (Grad-CAM: evidence for the wrong answer)"
    )


def summary(
    model: str = "seednet", dataset: str = "mnist5k", data_dir: str = "./data", plot: str | Path | None = None
) -> str:
    """torchinfo's layer table (output shapes, parameters) of ``model`` sized for ``dataset``."""
    from torchinfo import summary as torchinfo_summary

    from cnnlab import plots
    from cnnlab.data.registry import DATASETS

    info = DATASETS.get(dataset)
    if info is not None:
        spec = info.spec
    else:
        data = load_data(dataset, data_dir, ("train",))
        spec = data.spec
    channels, size, classes = spec.channels, spec.size, spec.num_classes
    net = build_model(model, channels, size, classes)
    stats = torchinfo_summary(
        net, input_size=(1, channels, size, size), col_names=("output_size", "num_params"), verbose=0, device="cpu"
    )
    if plot:
        plots.plot_architecture(net, (channels, size, size), plot, title=f"{model} for {dataset}")
    return _name_units(str(stats))


def _name_units(table: str) -> str:
    """torchinfo 1.8 prints its unit enum's name on Python ≥ 3.11 (``Total mult-adds (Units.MEGABYTES)``):
    show the unit itself (``Total mult-adds (M)``)."""
    from torchinfo.enums import Units

    for unit in Units:
        table = table.replace(f"({unit})", f"({unit.value})")
    return table
