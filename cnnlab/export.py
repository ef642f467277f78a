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

import tempfile
from pathlib import Path
from typing import Any

import torch

from cnnlab.atomic import write_atomic
from cnnlab.errors import UserError
from cnnlab.export_format import attach_metadata, write_export
from cnnlab.inference import OnnxModel, load

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
CALIBRATION_IMAGES = 256  # validation images that calibrate an int8 model's activation ranges


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

    from cnnlab.reports import split_images
    from cnnlab.spec import to_model_input

    if calibration < 1:
        raise UserError(f"--calibration must be ≥ 1 (got {calibration})")
    predictor = load(path)
    target = _target(out, predictor.path.parent / "model.int8.onnx")
    fp32 = OnnxModel.for_predictor(predictor)
    images, labels = split_images(predictor, "val")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:calibration]
    x = to_model_input(fp32.spec, images[order])
    meta = {**fp32.metadata, "quantization": f"int8 static QDQ (onnxruntime), calibrated on {len(order)} "
            "validation images (MinMax)"}  # fmt: skip
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as scratch:
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "model.onnx"
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
