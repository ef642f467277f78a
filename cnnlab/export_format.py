"""What an exported file holds and how it is written: the network followed by its probabilities (with the
run's temperature), and cnnlab's metadata (how to feed it, how to read its answer). ``cnnlab export``
(:mod:`cnnlab.export`) and the onnx backend's export on first use (:class:`cnnlab.inference.OnnxModel`) both
write through :func:`write_export`."""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnnlab.atomic import write_atomic
from cnnlab.errors import UserError

if TYPE_CHECKING:  # for the type hints only: the predictor is passed in, never loaded here
    from cnnlab.inference import Predictor

EXPORT_FORMAT = "cnnlab-export-1"
OPSET = 17


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
    """Everything needed to feed the exported model and read its answer: the model's
    :meth:`~cnnlab.spec.ImageSpec.describe` (classes, input and output, mean, std, image recipe) and the
    run's own entries."""
    return {
        "format": EXPORT_FORMAT,
        "model": predictor.config.model,
        "dataset": predictor.config.dataset,
        **predictor.spec.describe(),
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


def write_export(predictor: Predictor, format: str, target: Path) -> None:
    """Write ``predictor``'s model as ``format`` to ``target``, atomically (the model itself is not changed)."""
    single_logit = predictor.config.loss == "logistic"
    net = WithProbabilities(copy.deepcopy(predictor.model), single_logit, predictor.temperature).float().cpu().eval()
    example = torch.zeros(2, *predictor.spec.shape)
    meta = metadata(predictor)
    try:
        if format == "onnx":
            write_atomic(target, onnx_bytes(net, example, meta))
        else:
            _export_torchscript(net, example, meta, target)
    except OSError as exc:
        raise UserError(f"--out {target}: cannot write there ({exc.strerror or exc})") from None


def onnx_bytes(net: nn.Module, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    """TorchScript-based ONNX exporter, batch dimension dynamic, metadata attached.

    torch marks this exporter deprecated (a DeprecationWarning, shown by pytest, hidden from users by
    Python's default filters) in favour of ``dynamo=True``, which needs the onnxscript package and took
    1.7-2.8 s per model here against 0.05-0.26 s (seednet, resnet9, tv:resnet18 on the 2-core CPU);
    both give the same outputs in onnxruntime. Move when torch drops this one."""
    import onnx

    buffer = io.BytesIO()
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
    proto.doc_string = "cnnlab model: how to feed it is in the metadata_props key cnnlab"  # not repeated here
    onnx.checker.check_model(proto)


TORCHSCRIPT_NOTE = (
    "note: PyTorch marks TorchScript (torch.jit) deprecated; it still runs in libtorch, but --format onnx is the "
    "maintained way to run the model outside Python"
)


def _export_torchscript(net: nn.Module, example: torch.Tensor, meta: dict[str, Any], target: Path) -> None:
    """``torch.jit.script`` (shape-independent, so any batch size works), metadata as ``cnnlab.json``.
    torch 2.14 marks torch.jit deprecated but it still works and is what C++/libtorch loads; its warning,
    repeated once per module, is replaced by :data:`TORCHSCRIPT_NOTE`, which ``cnnlab export`` prints once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        scripted = torch.jit.script(net)
        write_atomic(target, lambda f: torch.jit.save(scripted, f, _extra_files={"cnnlab.json": json.dumps(meta)}))
