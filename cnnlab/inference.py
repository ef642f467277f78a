"""Using a trained model: :func:`load` a run directory or checkpoint into a :class:`Predictor`, and
:func:`predict` image files with it, or stream any number of them (files and folders) with
:func:`predict_files` into a CSV or JSON Lines file (:func:`write_predictions`).

The Predictor owns the one way an image becomes its input (:attr:`Predictor.preprocessing`, see
:mod:`cnnlab.preprocess`): ``predict``, ``serve``, ``eval``'s galleries and the export metadata all use it.
It runs its network with PyTorch (``backend="torch"``) or, with ``backend="onnx"``, the exported ONNX
model in onnxruntime (:class:`OnnxModel`), fed the same uint8 images and normalised with the mean and std
stored in the ONNX file's metadata.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnlab import trust
from cnnlab.atomic import write_atomic
from cnnlab.checkpoint import load_checkpoint, resolve_checkpoint, stored_config
from cnnlab.config import TrainConfig
from cnnlab.env import resolve_device
from cnnlab.errors import UserError
from cnnlab.losses import probabilities
from cnnlab.models import build_model
from cnnlab.preprocess import Preprocessing, require_content
from cnnlab.spec import ImageSpec, spec_from_checkpoint, spec_from_export, to_model_input
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


BACKENDS = ("torch", "onnx")
BATCH_SIZE = 64  # images per model call when predicting files


@dataclass
class Predictor:
    """A trained model with everything needed to feed it (``spec``: classes, image shape, normalisation and
    the recipe for new images)."""

    model: nn.Module
    spec: ImageSpec
    config: TrainConfig
    path: Path
    tta: bool = False  # average each image's probabilities with its mirror image's (FlipAverage)
    temperature: float = 1.0  # calibration: probabilities are softmax(z / T) (1 for runs from before it)
    rule: UnknownRule | None = None  # the "none of these" rule (None for runs from before it)

    @property
    def scorer(self) -> nn.Module:
        """The model as predictions use it: itself, or with ``tta`` averaged over flips."""
        return FlipAverage(self.model) if self.tta else self.model

    runtime: OnnxModel | None = None  # backend "onnx": the exported model, run by onnxruntime

    @property
    def backend(self) -> str:
        """``torch`` or ``onnx``: what computes :meth:`probabilities`."""
        return "torch" if self.runtime is None else "onnx"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def preprocessing(self) -> Preprocessing:
        """How an image becomes this model's input (the spec's recipe): as training decoded it
        (resize-and-crop for pretrained weights), MNIST's digit recipe for grey light-on-dark built-in data,
        else a resize."""
        return self.spec.preprocessing

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, C, H, W] → this model's input, on its device in its dtype
        (:func:`cnnlab.spec.to_model_input`)."""
        return to_model_input(self.spec, images, self.device, self.dtype)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 images [N, C, H, W] (a tensor or NumPy array) of the model's shape → class probabilities
        [N, classes]."""
        images = torch.as_tensor(images)
        shape = self.spec.shape
        if images.dim() != 4 or tuple(images.shape[1:]) != shape:
            raise UserError(f"images must have shape [N, {', '.join(map(str, shape))}] (got {list(images.shape)})")
        if self.runtime is not None:  # the exported model applies the temperature itself
            return self.runtime.probabilities(images)
        self.model.eval()
        return probabilities(self.scorer(self.model_input(images)) / self.temperature).float().cpu()

    @torch.no_grad()
    def known(self, images: torch.Tensor | np.ndarray) -> list[dict[str, Any]]:
        """Per image ``{"known_score", "unknown"}`` from the run's rule (:mod:`cnnlab.trust`): the score
        is higher the more the image looks like the training data; ``unknown`` is true below the
        threshold. Both are ``None`` for a run without a rule."""
        from cnnlab.trust.features import logits_and_features

        images = torch.as_tensor(images)
        if self.rule is None:
            return [{"known_score": None, "unknown": None} for _ in range(len(images))]
        scores = self.rule.known_score(*logits_and_features(self.model, self.model_input(images)))
        return [{"known_score": float(s), "unknown": bool(self.rule.unknown(s))} for s in scores]

    def answers(self, probs: torch.Tensor, topk: int = 3) -> list[dict[str, Any]]:
        """Class probabilities [N, classes] → one answer per image: ``label``, ``probability`` and ``topk``
        (``[[class, p], ...]``, most likely first). The one place an answer is made: ``predict``, the CSV
        rows and what other features add to an answer go through it."""
        k = min(topk, probs.shape[1])
        values, index = probs.topk(k, dim=1)
        results = []
        for vs, ixs in zip(values.tolist(), index.tolist()):
            top = [[self.spec.classes[i], v] for v, i in zip(vs, ixs)]
            results.append({"label": top[0][0], "probability": top[0][1], "topk": top})
        return results

    def answer_fields(self, topk: int = 3) -> list[str]:
        """The keys of an answer row: :meth:`answers`' and :meth:`known`'s (a CSV header is made from them
        before any image is read)."""
        n = self.spec.num_classes
        return [*self.answers(torch.full((1, n), 1.0 / n), topk)[0], "known_score", "unknown"]

    def read(self, path: str | Path, invert: bool = False) -> torch.Tensor:
        """An image file → uint8 [C, H, W], prepared by :attr:`preprocessing` (``invert``: take it as dark
        ink on a light background, whatever the detection says)."""
        return self.preprocessing.read(path, invert)

    def prepare(self, img: Image.Image, invert: bool = False) -> torch.Tensor:
        """A decoded PIL image → uint8 [C, H, W], prepared by :attr:`preprocessing`."""
        return self.preprocessing.prepare(img, invert)


def load(
    path: str | Path, device: str = "cpu", tta: bool = False, backend: str = "torch", onnx: str | Path | None = None
) -> Predictor:
    """Load a run directory (its ``best.pt``) or a checkpoint file for evaluation or prediction.

    ``backend="onnx"``: :meth:`Predictor.probabilities` runs the ONNX file ``onnx`` (default: the run's
    ``model.onnx``, exported on first use) in onnxruntime on the CPU; ``tta``: predictions average over
    flips (refused for a model whose training did not flip images, and with the onnx backend)."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if onnx is not None and backend != "onnx":
        raise UserError("--onnx FILE runs with the onnx backend: add --backend onnx")
    if tta and backend == "onnx":
        raise UserError("--tta averages over flips with the torch backend: leave out --tta or --backend onnx")
    predictor = _load_torch(path, device, tta)
    if backend == "onnx":
        predictor.runtime = OnnxModel.for_predictor(predictor, onnx)
    return predictor


def _load_torch(path: str | Path, device: str, tta: bool = False) -> Predictor:
    ckpt_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path)
    try:
        arch, spec = ckpt["arch"], spec_from_checkpoint(ckpt)
        model = build_model(arch["model"], spec.channels, spec.size, arch["num_outputs"])
        cfg = stored_config(ckpt["config"], ckpt_path)
    except (KeyError, TypeError) as exc:
        raise UserError(f"{ckpt_path}: not a cnnlab checkpoint (missing {exc})") from None
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        shape = "x".join(map(str, spec.shape))
        raise UserError(
            f"{ckpt_path}: the weights do not fit a {arch['model']} for {shape} images (checkpoint of another "
            "architecture?)"
        ) from None
    if tta and "hflip" not in ckpt.get("tta", valid_tta(cfg, spec.channels)):
        raise UserError(
            f"--tta: {ckpt_path} was not trained with left-right flips (its --augment {cfg.augment}, --hflip "
            f"{cfg.hflip} on {cfg.dataset}), so averaging over flips would not be valid; leave out --tta"
        )
    if cfg.dtype == "float64":
        model = model.double()
    model.to(resolve_device(device)).eval()
    temperature, rule = trust.from_checkpoint(ckpt)
    return Predictor(model, spec, cfg, ckpt_path, tta, temperature, rule)


class OnnxModel:
    """An exported cnnlab model (``cnnlab export --format onnx``) in an onnxruntime session on the CPU:
    uint8 images → ``(pixels / 255 − mean) / std`` with the mean and std of its metadata → probabilities."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime

        self.path = Path(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )  # fmt: skip
        except Exception as exc:  # onnxruntime's own exception types: a missing, truncated or foreign file
            raise UserError(f"{self.path}: not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if "cnnlab" not in props:
            raise UserError(f"{self.path}: an ONNX model without cnnlab's metadata; make one with cnnlab export")
        try:
            self.metadata: dict[str, Any] = json.loads(props["cnnlab"])
            self.spec = spec_from_export(self.metadata)
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{self.path}: its cnnlab metadata is damaged; export the run again") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.metadata["output"]["name"]

    @classmethod
    def for_predictor(cls, predictor: Predictor, onnx: str | Path | None = None) -> OnnxModel:
        """``onnx`` (checked to be this model's export), else the run's ``model.onnx``: exported there
        (atomically) when it is missing, older than the checkpoint or another model's."""
        if onnx is not None:
            if not Path(onnx).is_file():
                raise UserError(f"--onnx {onnx}: no such file (make one with: cnnlab export RUN --format onnx)")
            model = cls(onnx)
            model.check_matches(predictor)
            return model
        target = predictor.path.parent / "model.onnx"
        if target.is_file() and target.stat().st_mtime >= predictor.path.stat().st_mtime:
            try:
                model = cls(target)
                model.check_matches(predictor)
                return model
            except UserError:
                pass  # another model's or unreadable: export it again
        from cnnlab.export_format import write_export

        write_export(predictor, "onnx", target)
        return cls(target)

    def check_matches(self, predictor: Predictor) -> None:
        """Refuse an ONNX file exported from another model: another spec (classes, input shape, mean and std,
        or preprocessing)."""
        if self.spec != predictor.spec:
            raise UserError(
                f"{self.path} was exported from another model (its classes, normalisation or preprocessing differ from "
                f"{predictor.path}'s); export this run: cnnlab export RUN --format onnx"
            )

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, C, H, W] → class probabilities [N, classes] (float32, on the CPU)."""
        x = to_model_input(self.spec, images.cpu()).numpy()
        (probs,) = self.session.run([self.output_name], {self.input_name: x})
        return torch.from_numpy(probs).float()


# ---- many files --------------------------------------------------------------------------------


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files and folders → the image files to read: a file as given; a folder walked recursively in sorted
    order, keeping the files with an image suffix (``IMAGE_SUFFIXES``) and skipping hidden files and
    folders (names starting with a dot). A folder with no image file in it is a UserError."""
    from cnnlab.data.images import IMAGE_SUFFIXES

    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            files.append(path)  # a missing or unreadable file is answered by an error row
            continue
        found = []
        for folder, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(folder) / n for n in sorted(names) if not n.startswith(".")
                      and Path(n).suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
        if not found:
            raise UserError(f"{path}: no image files in this folder (PNG, JPEG, GIF, BMP, WebP or TIFF)")
        files += found
    return files


class _Decoding(torch.utils.data.Dataset):
    """Image files read by the model's preprocessing: item i → (i, uint8 [C, H, W] or None, error or None)."""

    def __init__(self, files: list[Path], preprocessing: Preprocessing, invert: bool):
        self.files, self.preprocessing, self.invert = files, preprocessing, invert

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        path = self.files[i]
        try:
            return i, require_content(self.preprocessing.read(path, self.invert), str(path)), None
        except UserError as exc:
            return i, None, str(exc)
        except Exception as exc:  # a decoder fed odd bytes may raise anything: one bad file, not a stopped run
            return i, None, f"{path}: cannot use this image ({type(exc).__name__}: {exc})"


def _as_list(items: list[Any]) -> list[Any]:
    return items


def default_workers(n_files: int, batch_size: int = BATCH_SIZE) -> int:
    """Decoding processes: none for a single batch (starting them costs more), else up to 4, one per core."""
    return 0 if n_files <= batch_size else min(4, os.cpu_count() or 1)


def decoding_loader(
    predictor: Predictor, files: list[Path], invert: bool, batch_size: int, workers: int | None
) -> torch.utils.data.DataLoader:
    """Batches of ``(index, image or None, error or None)`` for ``files``, in order, decoded by ``workers``
    processes (default :func:`default_workers`) with at most two batches each waiting."""
    workers = default_workers(len(files), batch_size) if workers is None else workers
    return torch.utils.data.DataLoader(
        _Decoding(files, predictor.preprocessing, invert), batch_size=batch_size, num_workers=workers,
        collate_fn=_as_list, prefetch_factor=2 if workers else None,
    )  # fmt: skip


def predict_files(
    predictor: Predictor,
    paths: Iterable[str | Path],
    topk: int = 3,
    invert: bool = False,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
    progress: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Answer every image file in ``paths`` (files and folders, see :func:`image_files`), in that order:
    one row per file, ``{"image", **predictor.answers(...), **predictor.known(...), "error": None}``, or ``{"image", "error"}``
    for a file that cannot be read (``warn`` is called with the message too); it never stops the run.

    ``workers`` processes decode the files (default :func:`default_workers`); the model answers
    ``batch_size`` at a time; at most a few batches are held, so memory does not grow with the number of
    files. ``progress``: a tqdm bar on stderr (when it is a terminal)."""
    from tqdm import tqdm

    if topk < 1:
        raise UserError(f"topk must be ≥ 1 (got {topk}; --topk on the command line)")
    if batch_size < 1:
        raise UserError(f"batch_size must be ≥ 1 (got {batch_size})")
    predictor.preprocessing.check_invert(invert)  # a refusal for every file: say it once, before reading any
    files = image_files(paths)
    if not files:
        raise UserError("no images given: pass image files or folders")
    loader = decoding_loader(predictor, files, invert, batch_size, workers)
    with tqdm(total=len(files), unit="img", file=sys.stderr, disable=None if progress else True) as bar:
        for batch in loader:
            good = [image for _, image, _ in batch if image is not None]
            answers: Iterator[dict[str, Any]] = iter([])
            known: Iterator[dict[str, Any]] = iter([])
            if good:
                stacked = torch.stack(good)
                answers = iter(predictor.answers(predictor.probabilities(stacked), topk))
                known = iter(predictor.known(stacked))
            for i, _, error in batch:
                if error is None:
                    yield {"image": str(files[i]), **next(answers), **next(known), "error": None}
                else:
                    if warn is not None:
                        warn(error)
                    yield {"image": str(files[i]), "error": error}
            bar.update(len(batch))


def predict(
    path: str | Path,
    images: list[str | Path] | str | Path,
    topk: int = 3,
    invert: bool = False,
    device: str = "cpu",
    tta: bool = False,
    backend: str = "torch",
    onnx: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Top-k classes (calibrated probabilities) for each image file (folders: every image in them, see
    :func:`image_files`), prepared by the model's :attr:`Predictor.preprocessing`, with ``known_score`` and
    ``unknown`` from the run's "none of these" rule (``None`` for runs trained before it). A file that cannot
    be used (unreadable, or nothing on it) is a UserError; :func:`predict_files` answers the others instead."""
    if isinstance(images, (str, Path)):
        images = [images]
    if not images:
        raise UserError("no images given: pass a list of image files (images=[...])")
    if topk < 1:
        raise UserError(f"topk must be ≥ 1 (got {topk}; --topk on the command line)")
    predictor = load(path, device, tta, backend, onnx)
    results = []
    for row in predict_files(predictor, images, topk, invert):
        error = row.pop("error")
        if error is not None:
            raise UserError(error)
        results.append(row)
    return results


# ---- writing rows ------------------------------------------------------------------------------

OUTPUT_FORMATS = ("csv", "jsonl")


def csv_header(fields: list[str], topk: int, classes: int) -> list[str]:
    """CSV columns for answers with ``fields`` (:meth:`Predictor.answer_fields`): ``image`` and each field,
    ``topk`` spread into ``class_1, probability_1, ...``, then ``error``."""
    header = ["image"]
    for field in fields:
        if field == "topk":
            for k in range(1, min(topk, classes) + 1):
                header += [f"class_{k}", f"probability_{k}"]
        else:
            header.append(field)
    return [*header, "error"]


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """An answer row → its CSV cells (lists and dicts as JSON, None as an empty cell)."""
    cells: dict[str, Any] = {}
    for key, value in row.items():
        if key == "topk":
            for k, (name, p) in enumerate(value, 1):
                cells[f"class_{k}"], cells[f"probability_{k}"] = name, p
        elif isinstance(value, (list, dict)):
            cells[key] = json.dumps(value)
        else:
            cells[key] = "" if value is None else value
    return cells


def write_predictions(
    rows: Iterable[dict[str, Any]], out: str | Path, fmt: str, header: list[str], stdout: IO[str] | None = None
) -> tuple[int, int]:
    """Stream ``rows`` into ``out`` as CSV (``header``'s columns) or JSON Lines, one row per line; ``-`` is
    stdout. A file is written atomically: nothing is there until every row is (a failed or interrupted
    run leaves no file), and when no image was answered none is written (a UserError). Returns
    (answered, failed)."""
    if fmt not in OUTPUT_FORMATS:
        raise UserError(f"unknown output format {fmt!r}; choose one of: {', '.join(OUTPUT_FORMATS)}")
    counts = [0, 0]

    def write(text: IO[str]) -> None:
        writer = csv.DictWriter(text, header, restval="", extrasaction="ignore") if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        for row in rows:
            counts[row.get("error") is not None] += 1
            if writer is not None:
                writer.writerow(csv_row(row))
            else:
                text.write(json.dumps(row) + "\n")
        if not counts[0]:
            raise UserError(f"no image could be answered ({counts[1]} failed); nothing written")

    if str(out) == "-":
        write(stdout or sys.stdout)
        return counts[0], counts[1]
    target = Path(out)
    if target.is_dir():
        raise UserError(f"{target} is a folder; give a file name such as {target / ('predictions.' + fmt)}")
    if not target.parent.is_dir():
        raise UserError(f"{target}: the folder {target.parent} does not exist")

    def write_binary(f: IO[bytes]) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        write(text)
        text.flush()
        text.detach()

    write_atomic(target, write_binary)
    return counts[0], counts[1]


def read_images(
    predictor: Predictor,
    files: list[Path],
    invert: bool = False,
    warn: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Read ``files`` by the model's preprocessing (decoded in parallel, as :func:`predict_files` does):
    (uint8 [N, C, H, W] of the good ones, their indices in ``files``). With ``warn``, a file that cannot be
    used is skipped and ``warn`` called with why (none readable is a UserError); without, it is a UserError."""
    predictor.preprocessing.check_invert(invert)
    loader = decoding_loader(predictor, files, invert, BATCH_SIZE, workers)
    images, kept = [], []
    for batch in loader:
        for i, image, error in batch:
            if image is not None:
                images.append(image)
                kept.append(i)
            elif warn is None:
                raise UserError(error)
            else:
                warn(error)
    if not images:
        raise UserError(f"none of the {len(files)} image file(s) could be read")
    return torch.stack(images), kept


def warn_stderr(message: str) -> None:
    """``warning: MESSAGE`` on stderr, above any progress bar (file names in it escaped, :func:`cnnlab.text.safe`)."""
    from tqdm import tqdm

    from cnnlab.text import safe

    tqdm.write(f"warning: {safe(message)}", file=sys.stderr)
