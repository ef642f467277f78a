"""One ImageSpec describes how images feed a model, and one to_model_input turns uint8 images into its input:
the spec survives a checkpoint (written today, or rebuilt from a run written before it existed), and predict,
serve and export all feed the model through it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT

import cnnlab
from cnnlab.assembly import checkpoint_header
from cnnlab.config import TrainConfig
from cnnlab.data import Data, load_data
from cnnlab.errors import UserError
from cnnlab.spec import ImageSpec, image_spec, spec_from_checkpoint, spec_from_export, to_model_input

OLD_RUN = ROOT / "tests" / "fixtures" / "run-2026-12-05"  # written before the spec existed: arch + data only

DIGITS = [str(i) for i in range(10)]
CASES = [  # the dataset a model trained on, and its spec
    ("mnist5k", image_spec("mnist5k", DIGITS, 1, 28, (0.1307,), (0.3081,))),  # digit, box 20
    ("fashion-mnist", image_spec("fashion-mnist", DIGITS, 1, 28, (0.286,), (0.353,))),  # digit, box 28
    ("cifar10", image_spec("cifar10", ["a", "b"], 3, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))),  # resize
    ("folder:/p", image_spec("folder:/p", ["cat", "dog", "owl"], 3, 32, (0.485, 0.456, 0.406), (0.229,) * 3, 37)),
    ("csv:/d.csv", image_spec("csv:/d.csv", ["x", "y"], 1, 20, (0.1,), (0.3,))),  # own files: resize, even if dark
]
SPECS = [spec for _, spec in CASES]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.recipe}-{s.channels}x{s.size}")
def test_a_spec_round_trips_through_a_dict_and_a_weights_only_checkpoint(spec: ImageSpec, tmp_path: Path):
    assert ImageSpec.from_dict(spec.to_dict()) == spec
    torch.save({"spec": spec.to_dict()}, tmp_path / "s.pt")
    assert ImageSpec.from_dict(torch.load(tmp_path / "s.pt", weights_only=True)["spec"]) == spec
    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()  # plain JSON types only


def test_the_recipe_is_decided_once_from_the_data():
    digit, full, colour, crop, own = SPECS
    assert (digit.recipe, digit.box, full.box) == ("digit", 20, 28)
    assert (colour.recipe, colour.box) == ("resize", 32)
    assert (crop.recipe, crop.resize, crop.box) == ("crop", 37, 37)
    assert own.recipe == "resize"
    assert digit.preprocessing.describe()["box"] == 20 and crop.preprocessing.recipe == "crop"
    assert ImageSpec(("a", "b"), 3, 32, (0.5,) * 3, (0.2,) * 3, resize=40).preprocessing.describe()["box"] == 40
    assert ImageSpec(("a", "b"), 1, 28, (0.5,), (0.2,)).preprocessing.recipe == "resize"  # no recipe given
    with pytest.raises(ValueError, match="one value per channel"):
        ImageSpec(("a",), 3, 32, (0.5,), (0.5,))


@pytest.mark.parametrize(("dataset", "spec"), CASES, ids=[dataset for dataset, _ in CASES])
def test_a_checkpoint_without_a_spec_rebuilds_the_one_written_today(dataset: str, spec: ImageSpec):
    """What ``checkpoint_header`` writes today, read back; and the same header without its ``spec`` entry
    (a checkpoint written before it existed) rebuilt from ``arch`` and ``data`` to the same spec."""
    header = checkpoint_header(TrainConfig(dataset=dataset), Data(dataset, spec))
    assert header["spec"] == spec.to_dict()
    assert (header["arch"]["in_channels"], header["arch"]["image_size"]) == (spec.channels, spec.size)  # old readers
    old = {k: v for k, v in header.items() if k != "spec"}
    assert spec_from_checkpoint(header) == spec_from_checkpoint(old) == spec


def test_the_old_runs_checkpoint_gives_the_spec_of_its_data_today():
    old = torch.load(OLD_RUN / "best.pt", weights_only=True)
    assert "spec" not in old
    today = load_data("mnist5k", splits=()).spec
    assert spec_from_checkpoint(old) == today
    assert checkpoint_header(TrainConfig(), Data("mnist5k", today))["spec"] == today.to_dict()


def test_to_model_input_is_the_formula_channel_by_channel():
    spec = ImageSpec(("a", "b"), 3, 2, (0.5, 0.25, 0.0), (0.2, 0.5, 1.0))
    images = torch.tensor([[[[0, 255], [51, 128]], [[10, 20], [30, 40]], [[255, 0], [1, 2]]]], dtype=torch.uint8)
    expected = torch.tensor(
        [[[[(v / 255 - spec.mean[c]) / spec.std[c] for v in row] for row in images[0, c].tolist()] for c in range(3)]],
        dtype=torch.float64,
    )
    x = to_model_input(spec, images)
    assert x.dtype == torch.float32 and x.device == images.device
    assert torch.allclose(x.double(), expected, atol=1e-6)
    assert torch.isclose(x[0, 0, 0, 0], torch.tensor(-2.5)) and torch.isclose(x[0, 2, 0, 0], torch.tensor(1.0))
    x64 = to_model_input(spec, images, "cpu", torch.float64)
    assert x64.dtype == torch.float64 and torch.equal(x64, x.double())  # computed in float32, then cast
    assert images.dtype == torch.uint8 and images[0, 0, 0, 1] == 255  # the input is left as it was


@pytest.fixture(scope="module")
def old_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("spec") / "old"
    shutil.copytree(OLD_RUN, run)
    return run


@pytest.fixture(scope="module")
def digits(mnist5k) -> torch.Tensor:
    return mnist5k.splits["val"].images[:24]


def test_predict_feeds_the_model_through_to_model_input(old_run: Path, digits: torch.Tensor):
    predictor = cnnlab.load(old_run)
    assert predictor.spec == spec_from_checkpoint(torch.load(OLD_RUN / "best.pt", weights_only=True))
    assert predictor.preprocessing == predictor.spec.preprocessing
    with torch.no_grad():
        expected = torch.softmax(predictor.model(to_model_input(predictor.spec, digits)), dim=1)
    assert torch.allclose(predictor.probabilities(digits), expected, atol=1e-6)


def test_a_checkpoint_with_a_spec_answers_as_the_old_one(old_run: Path, tmp_path: Path, digits: torch.Tensor):
    """The old run's checkpoint given today's ``spec`` entry: the same spec, the same probabilities."""
    ckpt = torch.load(old_run / "best.pt", weights_only=True)
    spec = spec_from_checkpoint(ckpt)
    torch.save({**ckpt, "spec": spec.to_dict()}, tmp_path / "new.pt")
    new, old = cnnlab.load(tmp_path / "new.pt"), cnnlab.load(old_run)
    assert new.spec == old.spec
    assert torch.equal(new.probabilities(digits), old.probabilities(digits))


def test_a_spec_that_contradicts_the_model_is_refused(old_run: Path, tmp_path: Path):
    ckpt = torch.load(old_run / "best.pt", weights_only=True)
    colour = dataclasses.replace(spec_from_checkpoint(ckpt), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    torch.save({**ckpt, "spec": colour.to_dict()}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="damaged checkpoint: 'spec'"):
        cnnlab.load(tmp_path / "bad.pt")
    torch.save({**ckpt, "spec": {**colour.to_dict(), "channels": "1"}}, tmp_path / "worse.pt")
    with pytest.raises(UserError, match="damaged checkpoint: 'spec'"):
        cnnlab.load(tmp_path / "worse.pt")
    fewer = dataclasses.replace(spec_from_checkpoint(ckpt), classes=("0", "1", "2"))  # ten outputs, three names
    torch.save({**ckpt, "spec": fewer.to_dict()}, tmp_path / "fewer.pt")
    with pytest.raises(UserError, match="damaged checkpoint: 'spec'"):
        cnnlab.load(tmp_path / "fewer.pt")


def test_serve_and_the_onnx_export_describe_and_answer_with_the_same_spec(
    old_run: Path, digits: torch.Tensor, tmp_path: Path
):
    from cnnlab.export import export
    from cnnlab.inference import OnnxModel
    from cnnlab.serve.service import ModelService

    service = ModelService(old_run)
    predictor = service.predictor
    info, described = service.info(), predictor.spec.describe()
    assert (info["classes"], info["mean"], info["std"], info["preprocessing"]) == (
        described["classes"], described["mean"], described["std"], described["image"],
    )  # fmt: skip
    assert info["input_shape"] == [1, 28, 28]
    served = service.answer(digits[3])
    assert served["probabilities"] == pytest.approx(
        dict(zip(predictor.spec.classes, predictor.probabilities(digits[3:4])[0].tolist())), abs=1e-6
    )
    onnx = OnnxModel(export(old_run, "onnx", tmp_path / "m.onnx"))
    assert spec_from_export(onnx.metadata) == predictor.spec
    assert {k: onnx.metadata[k] for k in described} == json.loads(json.dumps(described))
    assert torch.allclose(onnx.probabilities(digits), predictor.probabilities(digits), atol=1e-5)


def test_the_onnx_backend_refuses_an_export_normalised_otherwise(old_run: Path, tmp_path: Path, digits: torch.Tensor):
    """Same classes, shape and recipe but another mean and std: the file would be fed differently, so it is
    another model's export."""
    from cnnlab.export import export

    exported = export(old_run, "onnx", tmp_path / "m.onnx")
    same = cnnlab.load(old_run, backend="onnx", onnx=exported)
    assert torch.allclose(same.probabilities(digits), cnnlab.load(old_run).probabilities(digits), atol=1e-5)
    ckpt = torch.load(old_run / "best.pt", weights_only=True)
    spec = dataclasses.replace(spec_from_checkpoint(ckpt), mean=(0.5,), std=(0.25,))
    other = tmp_path / "other"
    other.mkdir()
    torch.save({**ckpt, "spec": spec.to_dict()}, other / "best.pt")
    with pytest.raises(UserError, match="exported from another model"):
        cnnlab.load(other, backend="onnx", onnx=exported)
