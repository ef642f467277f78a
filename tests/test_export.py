"""``cnnlab export``: ONNX (onnxruntime) and TorchScript (torch.jit.load) give cnnlab's probabilities."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import run_cli

import cnnlab
from cnnlab.assembly import checkpoint_header
from cnnlab.checkpoint import save_atomic
from cnnlab.cli import main as cli_main
from cnnlab.config import TrainConfig
from cnnlab.data import Data
from cnnlab.errors import UserError
from cnnlab.export import export
from cnnlab.models import build_model
from cnnlab.spec import image_spec, to_model_input


@pytest.fixture(scope="module")
def checkpoint(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained run's best.pt, so exports land beside it and not in the shared run."""
    path = tmp_path_factory.mktemp("export") / "best.pt"
    shutil.copy(trained_run / "best.pt", path)
    return path


@pytest.fixture(scope="module")
def reference(checkpoint: Path, mnist5k) -> tuple[np.ndarray, np.ndarray]:
    """64 real validation digits, normalised as the metadata says, and cnnlab's probabilities for them."""
    predictor = cnnlab.load(checkpoint)
    images = mnist5k.splits["val"].images[:64]
    x = to_model_input(predictor.spec, images).float().numpy()
    return x, predictor.probabilities(images).numpy()


def test_onnx_matches_cnnlab_for_any_batch_size(checkpoint: Path, reference, tmp_path: Path):
    path = export(checkpoint, "onnx", tmp_path / "digits.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, expected = reference
    assert session.get_inputs()[0].shape[0] == "batch"
    for batch in (x[:1], x[:7], x):
        (probs,) = session.run(["probabilities"], {"input": batch})
        np.testing.assert_allclose(probs, expected[: len(batch)], atol=1e-5, rtol=0)


def test_onnx_metadata_documents_the_preprocessing(checkpoint: Path, tmp_path: Path):
    props = {p.key: p.value for p in onnx.load(str(export(checkpoint, "onnx", tmp_path / "m.onnx"))).metadata_props}
    meta = json.loads(props["cnnlab"])
    assert json.loads(props["classes"]) == [str(i) for i in range(10)] == meta["classes"]
    assert json.loads(props["mean"]) == pytest.approx([0.1307]) and json.loads(props["std"]) == pytest.approx([0.3081])
    assert json.loads(props["input_shape"]) == ["batch", 1, 28, 28]
    assert meta["model"] == "seednet" and "(pixels / 255 - mean) / std" in meta["preprocessing"]
    # the image recipe is the model's own (the Predictor's), the one predict and serve use
    assert meta["image"] == cnnlab.load(checkpoint).preprocessing.describe()
    assert (
        meta["image"]["recipe"] == "digit" and meta["image"]["box"] == 20 and "centre of mass" in meta["image"]["steps"]
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_matches_cnnlab_and_carries_its_metadata(checkpoint: Path, reference, tmp_path: Path):
    path = export(checkpoint, "torchscript", tmp_path / "m.torchscript.pt")
    files = {"cnnlab.json": ""}
    model = torch.jit.load(str(path), _extra_files=files)
    meta = json.loads(files["cnnlab.json"])
    assert meta["classes"] == [str(i) for i in range(10)] and meta["input"]["shape"] == ["batch", 1, 28, 28]
    x, expected = reference
    for n in (1, 5, len(x)):
        with torch.no_grad():
            probs = model(torch.from_numpy(x[:n])).numpy()
        np.testing.assert_allclose(probs, expected[:n], atol=1e-5, rtol=0)


def test_a_logistic_model_exports_two_class_probabilities(tmp_path: Path, mnist5k):
    """A one-logit model (``--loss logistic``) exports [1 − σ(z), σ(z)], as cnnlab reports it."""
    cfg = TrainConfig(loss="logistic", classes=["3", "8"])
    torch.manual_seed(0)
    model = build_model("seednet", 1, 28, 1)
    data = Data("mnist5k", image_spec("mnist5k", ["3", "8"], 1, 28, (0.1307,), (0.3081,)))
    save_atomic({**checkpoint_header(cfg, data), "model": model.state_dict()}, tmp_path / "best.pt")
    predictor = cnnlab.load(tmp_path / "best.pt")
    images = mnist5k.splits["val"].images[:9]
    x = to_model_input(predictor.spec, images).float().numpy()
    session = onnxruntime.InferenceSession(str(export(tmp_path / "best.pt", "onnx")))
    (probs,) = session.run(None, {"input": x})
    assert probs.shape == (9, 2)
    np.testing.assert_allclose(probs, predictor.probabilities(images).numpy(), atol=1e-5, rtol=0)


def test_the_residual_colour_network_exports_to_onnx_and_torchscript(tmp_path: Path, mnist5k):
    """resnet9 (BatchNorm, residual blocks, channels-last in training) exports like every other model."""
    torch.manual_seed(0)
    model = build_model("resnet9", 3, 16, 4).eval()
    for m in model.modules():  # running statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    data = Data(
        "folder:/photos", image_spec("folder:/photos", ["a", "b", "c", "d"], 3, 16, (0.5, 0.4, 0.3), (0.25, 0.25, 0.25))
    )
    save_atomic(
        {**checkpoint_header(TrainConfig(model="resnet9"), data), "model": model.state_dict()}, tmp_path / "best.pt"
    )
    predictor = cnnlab.load(tmp_path / "best.pt")
    grey = mnist5k.splits["val"].images[:15, :, 6:22, 6:22]
    images = torch.cat([grey[:5], grey[5:10], grey[10:]], dim=1)
    x = to_model_input(predictor.spec, images).float()
    expected = predictor.probabilities(images).numpy()
    session = onnxruntime.InferenceSession(str(export(tmp_path / "best.pt", "onnx")))
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-5, rtol=0)
    scripted = torch.jit.load(str(export(tmp_path / "best.pt", "torchscript")))
    with torch.no_grad():
        out = scripted(x.contiguous(memory_format=torch.channels_last))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_export_cli_writes_beside_the_checkpoint_by_default(checkpoint: Path):
    result = run_cli("export", str(checkpoint), "--format", "torchscript")
    assert result.returncode == 0, result.stderr
    assert (checkpoint.parent / "model.torchscript.pt").is_file()
    assert "model.torchscript.pt" in result.stdout and "Warning" not in result.stderr
    assert result.stderr.count("deprecated") == 1  # torch's per-module FutureWarnings become one note


def test_export_refuses_bad_requests_with_user_errors(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(UserError, match="unknown export format"):
        export(checkpoint, "tflite")
    with pytest.raises(UserError, match="is a folder"):
        export(checkpoint, "onnx", tmp_path)
    assert cli_main(["export", str(tmp_path / "nothing"), "--format", "onnx"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


INT8_SCRIPT = """
import json, sys
sys.modules["cnnlab"] = None  # any import of cnnlab now fails: the file must run on onnxruntime alone
import numpy as np
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = json.loads(session.get_modelmeta().custom_metadata_map["cnnlab"])
x = np.load(sys.argv[2])
(probs,) = session.run(["probabilities"], {"input": x})
print(json.dumps({"quantization": meta["quantization"], "classes": meta["classes"], "probs": probs.tolist()}))
"""


def test_int8_export_is_smaller_keeps_metadata_and_runs_without_cnnlab(
    checkpoint: Path, reference, tmp_path: Path, capsys: pytest.CaptureFixture
):
    import subprocess
    import sys

    out = tmp_path / "small" / "digits.int8.onnx"
    assert (
        cli_main(["export", str(checkpoint), "--format", "onnx", "--int8", "--calibration", "32", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    fp32 = checkpoint.parent / "model.onnx"
    assert out.is_file() and fp32.is_file()
    assert out.stat().st_size <= 0.6 * fp32.stat().st_size
    assert f"{out.stat().st_size / 1024:,.1f} KiB" in printed and "validation accuracy" in printed
    x, expected = reference
    np.save(tmp_path / "x.npy", x)
    # a plain interpreter (-I: no PYTHONPATH, no current folder) in which cnnlab cannot be imported
    result = subprocess.run(
        [sys.executable, "-I", "-c", INT8_SCRIPT, str(out), str(tmp_path / "x.npy")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["classes"] == [str(i) for i in range(10)] and "calibrated on 32" in answer["quantization"]
    probs = np.array(answer["probs"])
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert (probs.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.9  # int8 mostly agrees with float


def test_int8_needs_onnx_and_calibration_needs_int8(checkpoint: Path, capsys: pytest.CaptureFixture):
    assert cli_main(["export", str(checkpoint), "--format", "torchscript", "--int8"]) == 2
    assert "--format onnx" in capsys.readouterr().err
    assert cli_main(["export", str(checkpoint), "--format", "onnx", "--calibration", "8"]) == 2
    assert "add --int8" in capsys.readouterr().err
    assert cli_main(["export", str(checkpoint), "--format", "onnx", "--int8", "--calibration", "0"]) == 2
    assert "--calibration must be" in capsys.readouterr().err
