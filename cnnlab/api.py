"""The Python API: :func:`train`, :func:`evaluate`, :func:`predict`, :func:`load`, :func:`summary`.

The CLI calls exactly these. Read :func:`train` top to bottom for the whole training path:
options → data → model → run directory → :func:`cnnlab.engine.fit` → pictures → finished.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab import distributed, runs
from cnnlab.checkpoint import FORMAT, load_checkpoint, resolve_checkpoint, resume_point, stored_config
from cnnlab.config import TrainConfig, validate
from cnnlab.data import Data, default_split, load_data, make_batches
from cnnlab.data.images import read_image
from cnnlab.engine import SYNC_EVERY, Diverged, Interrupted, fit, make_loss
from cnnlab.engine import evaluate as evaluate_batches
from cnnlab.env import resolve_device
from cnnlab.errors import UserError
from cnnlab.losses import probabilities
from cnnlab.models import build_model

# Options that may change when a run is resumed; everything else comes from the stored run.
RESUME_OVERRIDES = {"epochs", "device", "progress", "max_steps", "checkpoint_every", "tensorboard", "threads"}


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_val_acc: float
    model: nn.Module

    @property
    def val_acc(self) -> float:
        return self.history[-1]["val_acc"] if self.history else float("nan")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """One seed for python, numpy and torch; optionally deterministic kernels only."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def model_for(cfg: TrainConfig, data: Data) -> nn.Module:
    """The configured model sized for ``data`` (one output for logistic regression)."""
    outputs = 1 if cfg.loss == "logistic" else data.num_classes
    model = build_model(cfg.model, data.in_channels, data.image_size, outputs)
    return model.double() if cfg.dtype == "float64" else model


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    **options: Any,
) -> TrainResult:
    """Train a model and write its run directory; ``options`` override ``config`` field by field.

    ``resume=RUN_DIR`` continues that run from its ``last.pt`` with its stored options (only
    ``epochs``, ``device``, ``max_steps``, ``progress``, ... may be changed); a run killed before its
    first checkpoint starts over with the options in its ``config.json``.
    """
    ckpt = None
    if resume is not None:
        run_dir, ckpt = resume_point(resume)
        refused = sorted(set(options) - RESUME_OVERRIDES)
        if refused:
            raise UserError(
                f"--resume continues with the run's stored options; these cannot change: {', '.join(refused)}"
            )
        stored = ckpt["config"] if ckpt is not None else runs.read_config(run_dir).get("config")
        cfg = validate(stored_config(stored, run_dir).replace(**options))
        if ckpt is None:
            print(f"note: {run_dir} stopped before its first checkpoint; starting it over", file=sys.stderr)
    else:
        cfg = validate((config or TrainConfig()).replace(**options))
    world = distributed.init_from_env(cfg.device)  # under torchrun: join the other processes
    if ckpt is not None:  # keep the global batch if the number of processes changed
        cfg = cfg.replace(batch_size=distributed.per_process_batch(cfg.batch_size, ckpt.get("world_size", 1)))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed, cfg.deterministic)

    with distributed.main_first():  # rank 0 downloads and caches, then the others read
        data = load_data(cfg.dataset, cfg.data_dir, ("train", "val"), cfg.classes or None, cfg.image_size)
    model = model_for(cfg, data)
    if resume is None:  # rank 0 names and makes the run directory; every process learns its path
        out, overwrite_ok = cfg.out, overwrite
        run_dir = distributed.run_on_main(
            lambda: runs.create_run_dir(out or runs.default_run_dir(cfg.model, cfg.dataset), overwrite_ok)
        )
        cfg = cfg.replace(out=str(run_dir))
    extra = checkpoint_header(cfg, data)
    set_status = runs.set_status if world.is_main else _nothing
    if world.is_main:
        runs.write_config(run_dir, cfg.to_dict(), "running", classes=data.classes, world_size=world.size)

    stop_requested = _install_sigint()
    try:
        state = fit(
            model, data, cfg, run_dir=run_dir, on_step=on_step, resume=ckpt, checkpoint_extra=extra,
            on_epoch=(lambda state: runs.write_metrics(run_dir, state.rows())) if world.is_main else None,
            should_stop=distributed.agreed(stop_requested, every=SYNC_EVERY),
        )  # fmt: skip
    except Diverged as exc:
        set_status(run_dir, "failed", error=str(exc))
        raise
    except Interrupted as exc:
        set_status(run_dir, "interrupted")
        exc.run_dir = run_dir  # for the "resume with" hint
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint now, the last one stays
        set_status(run_dir, "interrupted")
        raise
    except BaseException as exc:
        set_status(run_dir, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        distributed.cleanup()
    if not world.is_main:  # rank 0 draws the pictures and finishes the run directory
        return TrainResult(run_dir, state.rows(), state.best_val_acc, model)
    try:  # Ctrl-C from here on (its flag, or a KeyboardInterrupt) still leaves a resumable run
        if stop_requested():
            raise KeyboardInterrupt
        return _finish_run(run_dir, state, model, data, cfg)
    except KeyboardInterrupt:
        runs.set_status(run_dir, "interrupted")
        exc = Interrupted("stopped after training, before the final pictures; the checkpoints are complete")
        exc.run_dir = run_dir
        raise exc from None


def _finish_run(run_dir: Path, state: Any, model: nn.Module, data: Data, cfg: TrainConfig) -> TrainResult:
    """Write the final metrics, curves and confusion matrix (of ``best.pt``) and mark the run finished."""
    from cnnlab import plots  # matplotlib and torchmetrics load only when pictures are drawn
    from cnnlab.metrics import confusion_matrix

    history = state.rows()
    runs.write_metrics(run_dir, history)
    plots.plot_curves(history, run_dir / "curves.png", title=f"{cfg.model} on {cfg.dataset}")
    best = load_checkpoint(run_dir / "best.pt")
    model.load_state_dict(best["model"])
    val = evaluate_batches(model, _eval_batches(data, "val", cfg, model), make_loss(cfg), keep_outputs=True)
    matrix = confusion_matrix(val["outputs"], val["labels"], len(data.classes))
    plots.plot_confusion(
        matrix, data.classes, run_dir / "confusion.png", title=f"validation accuracy {100 * val['accuracy']:.2f}%"
    )
    result = {
        "best_val_acc": state.best_val_acc,
        "final_val_acc": history[-1]["val_acc"],
        "epochs_done": len(state.history),
        "steps": state.step,
    }
    runs.set_status(run_dir, "finished", result=result)
    return TrainResult(run_dir, history, state.best_val_acc, model)


def checkpoint_header(cfg: TrainConfig, data: Data) -> dict[str, Any]:
    """What every checkpoint carries besides the weights: how to rebuild and feed the model."""
    return {
        "format": FORMAT,
        "arch": {
            "model": cfg.model,
            "in_channels": data.in_channels,
            "image_size": data.image_size,
            "num_outputs": 1 if cfg.loss == "logistic" else data.num_classes,
        },
        "data": {"dataset": cfg.dataset, "classes": data.classes, "mean": list(data.mean), "std": list(data.std)},
        "config": cfg.to_dict(),
        "world_size": distributed.world()[1],  # processes that trained it (the global batch is batch_size × this)
    }


def _nothing(*args: Any, **kwargs: Any) -> None:
    pass


def _install_sigint() -> Callable[[], bool]:
    """Ctrl-C sets a flag the training loop checks after each step (a second Ctrl-C aborts)."""
    requested = [False]

    def handler(signum: int, frame: Any) -> None:
        if requested[0]:
            raise KeyboardInterrupt
        requested[0] = True

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. inside a server): no handler
        pass
    return lambda: requested[0]


def _eval_batches(data: Data, split: str, cfg: TrainConfig, model: nn.Module) -> Any:
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    return make_batches(data.splits[split], data, max(cfg.batch_size, 1000), device, dtype=dtype)


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

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, C, H, W] of the model's shape → class probabilities [N, classes]."""
        from cnnlab.data import normalize

        self.model.eval()
        dtype = next(self.model.parameters()).dtype
        x = normalize(images.to(self.device), self.mean, self.std).to(dtype)
        return probabilities(self.model(x)).float().cpu()

    def read(self, path: str | Path, invert: bool = False) -> torch.Tensor:
        """An image file → uint8 [C, H, W] shaped like the training data."""
        return read_image(path, self.in_channels, self.image_size, invert)


def load(path: str | Path, device: str = "cpu") -> Predictor:
    """Load a run directory (its ``best.pt``) or a checkpoint file for evaluation or prediction."""
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
    if cfg.dtype == "float64":
        model = model.double()
    model.to(resolve_device(device)).eval()
    return Predictor(
        model, list(meta["classes"]), arch["in_channels"], arch["image_size"],
        tuple(meta["mean"]), tuple(meta["std"]), cfg, ckpt_path,
    )  # fmt: skip


def evaluate(
    path: str | Path,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    split: str | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Loss, accuracy, per-class report, confusion matrix and mistakes gallery of a trained model.

    Defaults: the run's own dataset; the ``test`` split where the dataset has one, else ``val``.
    Pictures go to ``out`` (default: ``eval-<dataset>-<split>/`` beside the checkpoint).
    """
    from cnnlab import plots
    from cnnlab.metrics import confusion_matrix, format_report, per_class_report

    predictor = load(path, device)
    cfg = predictor.config
    dataset = dataset or cfg.dataset
    split = split or default_split(dataset)
    data = load_data(dataset, data_dir or cfg.data_dir, (split,), cfg.classes or None, predictor.image_size)
    _check_compatible(predictor, data)
    batches = _eval_batches(data, split, cfg, predictor.model)
    result = evaluate_batches(predictor.model, batches, make_loss(cfg.replace(label_smoothing=0.0)), keep_outputs=True)
    outputs, labels = result.pop("outputs"), result.pop("labels")
    report = per_class_report(outputs, labels, data.classes)
    matrix = confusion_matrix(outputs, labels, len(data.classes))
    name = Path(dataset.removeprefix("folder:")).name or "folder" if dataset.startswith("folder:") else dataset
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    out_dir = Path(out) if out else predictor.path.parent / f"eval-{safe}-{split}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None
    confusion_png = plots.plot_confusion(matrix, data.classes, out_dir / "confusion.png",
                                         title=f"{dataset} {split}: accuracy {100 * result['accuracy']:.2f}%")  # fmt: skip
    gallery_png = _mistakes_gallery(predictor, data, split, outputs, labels, out_dir / "mistakes.png")
    return {
        **result,
        "dataset": dataset,
        "split": split,
        "per_class": report,
        "confusion_matrix": matrix.tolist(),
        "confusion_png": str(confusion_png),
        "mistakes_png": str(gallery_png),
        "report": format_report(report),
    }


def _check_compatible(predictor: Predictor, data: Data) -> None:
    if (data.in_channels, data.image_size) != (predictor.in_channels, predictor.image_size):
        raise UserError(
            f"{data.name} has {data.in_channels}x{data.image_size}x{data.image_size} images but the model "
            f"takes {predictor.in_channels}x{predictor.image_size}x{predictor.image_size}"
        )
    if data.classes != predictor.classes:
        raise UserError(f"{data.name}'s classes {data.classes} differ from the model's {predictor.classes}")


def _mistakes_gallery(
    predictor: Predictor, data: Data, split: str, outputs: torch.Tensor, labels: torch.Tensor, path: Path
) -> Path:
    from cnnlab import plots
    from cnnlab.metrics import most_confident_mistakes

    index = most_confident_mistakes(outputs, labels, k=16)
    probs = probabilities(outputs[index]) if len(index) else torch.empty(0, len(data.classes))
    split_data = data.splits[split]
    if hasattr(split_data, "images"):
        images = split_data.images[index]
    else:
        images = torch.stack([predictor.read(split_data.paths[i]) for i in index.tolist()]) if len(index) else None
    if images is None or len(index) == 0:
        images = torch.zeros(0, predictor.in_channels, predictor.image_size, predictor.image_size, dtype=torch.uint8)
    titles = [
        f"true {data.classes[int(labels[i])]}\npred {data.classes[int(p.argmax())]} {100 * float(p.max()):.0f}%"
        for i, p in zip(index.tolist(), probs)
    ]
    return plots.plot_gallery(images, titles, path, title="most confidently wrong")


def predict(
    path: str | Path, images: list[str | Path], topk: int = 3, invert: bool = False, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Top-k classes for each image file, preprocessed like the training data."""
    if topk < 1:
        raise UserError(f"--topk must be ≥ 1 (got {topk})")
    predictor = load(path, device)
    batch = torch.stack([predictor.read(p, invert) for p in images])
    probs = predictor.probabilities(batch)
    k = min(topk, probs.shape[1])
    results = []
    for image, p in zip(images, probs):
        values, index = p.topk(k)
        top = [[predictor.classes[int(i)], float(v)] for v, i in zip(values, index)]
        results.append({"image": str(image), "label": top[0][0], "probability": top[0][1], "topk": top})
    return results


def summary(
    model: str = "seednet", dataset: str = "mnist5k", data_dir: str = "./data", plot: str | Path | None = None
) -> str:
    """torchinfo's layer table (output shapes, parameters) of ``model`` sized for ``dataset``."""
    from torchinfo import summary as torchinfo_summary

    from cnnlab import plots
    from cnnlab.data.registry import DATASETS

    info = DATASETS.get(dataset)
    if info is not None:
        channels, size, classes = info.in_channels, info.image_size, len(info.classes)
    else:
        data = load_data(dataset, data_dir, ("train",))
        channels, size, classes = data.in_channels, data.image_size, data.num_classes
    net = build_model(model, channels, size, classes)
    stats = torchinfo_summary(
        net, input_size=(1, channels, size, size), col_names=("output_size", "num_params"), verbose=0, device="cpu"
    )
    if plot:
        plots.plot_architecture(net, (channels, size, size), plot, title=f"{model} for {dataset}")
    return str(stats)
