"""``cnnlab export``: a trained model as one ONNX or TorchScript file that runs without cnnlab.

The exported network takes normalised float32 images ``[batch, C, H, W]`` (any batch size) and
returns class probabilities ``[batch, classes]``. How to prepare its input travels with it, as JSON
(:func:`metadata`): in ONNX ``metadata_props`` (key ``cnnlab``, plus ``classes``, ``mean``, ``std``,
``input_shape``), in TorchScript the extra file ``cnnlab.json``. An image file becomes ``pixels`` the
way the model's :attr:`~cnnlab.inference.Predictor.preprocessing` does it (``image`` in the metadata:
its recipe, ``digit`` or ``resize``, and its steps), then::

    x = (pixels / 255 - mean) / std     # pixels: uint8 [batch, C, H, W], channel by channel

``--int8`` (:func:`export_int8`) writes a second, smaller ONNX file: onnxruntime's static quantization in
QDQ form (int8 weights per channel, uint8 activations, for convolutions and matrix products; softmax stays
float), its activation ranges calibrated on images of the run's validation split. It has the same input,
output and metadata (plus ``quantization``) and runs in any onnxruntime session.
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.atomic import write_atomic
from cnnlab.errors import UserError
from cnnlab.inference import OnnxModel, Predictor, load

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
EXPORT_FORMAT = "cnnlab-export-1"
OPSET = 17
CALIBRATION_IMAGES = 256  # validation images that calibrate an int8 model's activation ranges


class WithProbabilities(nn.Module):
    """A cnnlab model followed by what :func:`cnnlab.losses.probabilities` does to its outputs."""

    def __init__(self, model: nn.Module, single_logit: bool = False, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.single_logit = single_logit
        self.temperature = temperature  # calibration (cnnlab.trust): softmax(z / T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x) / self.temperature
        if self.single_logit:  # logistic regression: one logit → [1 − σ(z), σ(z)]
            p1 = torch.sigmoid(out)
            return torch.cat([1 - p1, p1], dim=1)
        return torch.softmax(out, dim=1)


def metadata(predictor: Predictor) -> dict[str, Any]:
    """Everything needed to feed the exported model and read its answer."""
    c, s = predictor.in_channels, predictor.image_size
    image = predictor.preprocessing.describe()
    return {
        "format": EXPORT_FORMAT,
        "model": predictor.config.model,
        "dataset": predictor.config.dataset,
        "classes": predictor.classes,
        "input": {"name": "input", "shape": ["batch", c, s, s], "dtype": "float32"},
        "output": {"name": "probabilities", "shape": ["batch", len(predictor.classes)], "dtype": "float32"},
        "mean": list(predictor.mean),
        "std": list(predictor.std),
        "image": image,
        "preprocessing": f"image file → pixels uint8 [batch, C, H, W] ({image['recipe']}: {image['steps']}); "
        "x = (pixels / 255 - mean) / std per channel",
        "temperature": predictor.temperature,  # already applied inside the exported model
        "unknown_rule": unknown_rule_note(predictor),
    }


def unknown_rule_note(predictor: Predictor) -> dict[str, Any]:
    """What the export says about the "none of these" rule: another runtime cannot apply it from the
    exported file, which outputs only the probabilities (the rule also needs the penultimate features
    and the training features it compares them with)."""
    if predictor.rule is None:
        return {"available": False, "reason": "this run has no unknown rule (trained before cnnlab had one)"}
    return {
        "available": False,
        "scorer": "knn+mahalanobis+msp",
        "threshold": predictor.rule.threshold,
        "keep": predictor.rule.keep,
        "reason": "the rule needs the penultimate features and the run's stored training features, which the "
        "exported model does not output: use cnnlab predict or cnnlab serve with the run directory to get "
        "known_score and unknown",
    }


def export(path: str | Path, format: str, out: str | Path | None = None) -> Path:
    """Export the model of a run directory or checkpoint to ``out`` (default: beside the checkpoint,
    ``model.onnx`` or ``model.torchscript.pt``); returns the written file."""
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    predictor = load(path)
    target = _target(out, predictor.path.parent / f"model{FORMATS[format]}")
    write_export(predictor, format, target)
    return target


def _target(out: str | Path | None, default: Path) -> Path:
    """``out`` (default ``default``), refused when it is a folder or its folder cannot be made."""
    target = Path(out) if out else default
    if target.is_dir():
        raise UserError(f"--out {target} is a folder; give a file name such as {target / default.name}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {target}: cannot write there ({exc.strerror or exc})") from None
    return target


def write_export(predictor: Predictor, format: str, target: Path) -> None:
    """Write ``predictor``'s model as ``format`` to ``target``, atomically (the model itself is not changed)."""
    single_logit = predictor.config.loss == "logistic"
    net = WithProbabilities(copy.deepcopy(predictor.model), single_logit, predictor.temperature).float().cpu().eval()
    example = torch.zeros(2, predictor.in_channels, predictor.image_size, predictor.image_size)
    meta = metadata(predictor)
    try:
        if format == "onnx":
            write_atomic(target, onnx_bytes(net, example, meta))
        else:
            _export_torchscript(net, example, meta, target)
    except OSError as exc:
        raise UserError(f"--out {target}: cannot write there ({exc.strerror or exc})") from None


def onnx_bytes(net: nn.Module, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    """TorchScript-based ONNX exporter (no extra dependency), batch dimension dynamic, metadata attached."""
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter: the dynamo one needs onnxscript
        torch.onnx.export(
            net, (example,), buffer, dynamo=False, opset_version=OPSET,
            input_names=["input"], output_names=["probabilities"],
            dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
        )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    attach_metadata(proto, meta)
    return proto.SerializeToString()


def attach_metadata(proto: Any, meta: dict[str, Any]) -> None:
    """Set cnnlab's metadata on an ONNX ModelProto (replacing any there) and check the model."""
    import onnx

    del proto.metadata_props[:]
    props = {
        "cnnlab": json.dumps(meta),
        "classes": json.dumps(meta["classes"]),
        "mean": json.dumps(meta["mean"]),
        "std": json.dumps(meta["std"]),
        "input_shape": json.dumps(meta["input"]["shape"]),
    }
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = meta["preprocessing"]
    onnx.checker.check_model(proto)


def _export_torchscript(net: nn.Module, example: torch.Tensor, meta: dict[str, Any], target: Path) -> None:
    """``torch.jit.script`` (shape-independent, so any batch size works), metadata as ``cnnlab.json``.
    torch 2.14 marks torch.jit deprecated but it still works and is what C++/libtorch loads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(net)
        write_atomic(target, lambda f: torch.jit.save(scripted, f, _extra_files={"cnnlab.json": json.dumps(meta)}))


# ---- int8 --------------------------------------------------------------------------------------


class _Calibration:
    """onnxruntime's CalibrationDataReader over normalised images: one batch of ``batch`` at a time."""

    def __init__(self, x: torch.Tensor, batch: int = 32):
        self.batches = iter(x.split(batch))

    def get_next(self) -> dict[str, Any] | None:
        chunk = next(self.batches, None)
        return None if chunk is None else {"input": chunk.numpy()}


def accuracy(model: OnnxModel, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    """Fraction of ``images`` (uint8 [N, C, H, W]) whose most probable class under ``model`` is the label."""
    right = 0
    for chunk, truth in zip(images.split(batch), labels.split(batch)):
        right += int((model.probabilities(chunk).argmax(dim=1) == truth).sum())
    return right / max(1, len(labels))


def export_int8(
    path: str | Path, out: str | Path | None = None, calibration: int = CALIBRATION_IMAGES, seed: int = 0
) -> dict[str, Any]:
    """Write an int8 ONNX model (static QDQ quantization by onnxruntime, activation ranges calibrated on
    ``calibration`` images drawn from the run's validation split with ``seed``) to ``out`` (default
    ``model.int8.onnx`` beside the checkpoint), from the float model (the run's ``model.onnx``, exported
    first when missing or stale). Returns both files, their sizes in bytes and their accuracy on the whole
    validation split: ``{"fp32": {"path", "bytes", "val_accuracy"}, "int8": {...}, "val_images",
    "calibration_images"}``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from cnnlab.data import normalize
    from cnnlab.reports import split_images

    if calibration < 1:
        raise UserError(f"--calibration must be ≥ 1 (got {calibration})")
    predictor = load(path)
    target = _target(out, predictor.path.parent / "model.int8.onnx")
    fp32 = OnnxModel.for_predictor(predictor)
    images, labels = split_images(predictor, "val")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:calibration]
    x = normalize(images[order], fp32.mean, fp32.std)
    meta = {**fp32.metadata, "quantization": f"int8 static QDQ (onnxruntime), calibrated on {len(order)} "
            "validation images (MinMax)"}  # fmt: skip
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as scratch:
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32.path), str(prepared))  # shapes inferred, graph optimised, as advised
            quantize_static(
                str(prepared), str(quantized), _Calibration(x), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv", "Gemm", "MatMul"], per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )  # fmt: skip
        import onnx

        proto = onnx.load(str(quantized))
        attach_metadata(proto, meta)
        write_atomic(target, proto.SerializeToString())
    int8 = OnnxModel(target)
    return {
        "fp32": {
            "path": str(fp32.path),
            "bytes": fp32.path.stat().st_size,
            "val_accuracy": accuracy(fp32, images, labels),
        },
        "int8": {"path": str(target), "bytes": target.stat().st_size, "val_accuracy": accuracy(int8, images, labels)},
        "val_images": len(images),
        "calibration_images": len(order),
    }
