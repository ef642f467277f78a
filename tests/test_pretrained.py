"""torchvision's models (``--model tv:NAME``), their pretrained weights (``--pretrained``), their
preprocessing, and ``--freeze``; offline, with weights files written into a temporary TORCH_HOME."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli
from PIL import Image

import cnnlab
from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main as cli_main
from cnnlab.models import head_parameters, weights_file
from cnnlab.spec import to_model_input

MODEL = "tv:shufflenet_v2_x0_5"  # 1.4 M parameters: the smallest of torchvision's classifiers to train here
COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torchvision cache, and no way out to the internet (a proxy on a closed port)."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    return home


def stand_in_weights(name: str = MODEL, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights saved where torchvision keeps ``name``'s DEFAULT weights (its file name)."""
    import torchvision

    torch.manual_seed(seed)
    state = torchvision.models.get_model(name.removeprefix("tv:")).state_dict()
    path = weights_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def photo_folder(root: Path, per_class: int = 10, test_per_class: int = 4) -> Path:
    """Colour photos of three classes (noisy red, green or blue), 30-90 px, not square, with a test/ split."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = (int(v) for v in rng.integers(30, 90, 2))
                pixels = (rng.normal(0, 30, (h, w, 3)) + colour).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def test_offline_without_the_weights_is_one_line_and_leaves_no_run_folder(torch_home: Path, tmp_path: Path):
    data = photo_folder(tmp_path / "photos")
    out = tmp_path / "run"
    code, _, err = cli("train", "--model", MODEL, "--pretrained", "--dataset", f"folder:{data}", "--out", out)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    expected = weights_file(MODEL)
    assert expected.name in lines[0] and str(expected.parent) in lines[0]
    assert not out.exists() and not torch_home.exists()  # no run folder, no empty cache folders


@pytest.mark.slow
def test_pretrained_weights_are_loaded_and_frozen_for_the_first_epochs(torch_home: Path, tmp_path: Path):
    stand_in = stand_in_weights()
    data = photo_folder(tmp_path / "photos")
    out = tmp_path / "run"
    cnnlab.train(
        model=MODEL, pretrained=True, freeze=1, dataset=f"folder:{data}", image_size=32, batch_size=8,
        optimizer="adam", lr=0.003, epochs=1, out=str(out), progress=False, schedule="none",
    )  # fmt: skip
    ckpt = load_checkpoint(out / "last.pt")
    model = cnnlab.load(out).model
    head = {id(p) for p in head_parameters(model)}
    names = {id(p): name for name, p in model.named_parameters()}
    head_names = {names[i].removeprefix("net.") for i in head}
    assert head_names == {"fc.weight", "fc.bias"}
    for name, _ in model.named_parameters():  # epoch 1: only the new head learned
        key = name.removeprefix("net.")
        if key in head_names:
            assert ckpt["model"][name].shape[0] == 3  # sized for the three colours, not ImageNet's 1000
        else:
            assert torch.equal(ckpt["model"][name], stand_in[key]), name
    meta = ckpt["data"]
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert meta["resize"] == round(32 * 256 / 224) and ckpt["arch"]["image_size"] == 32
    config = json.loads((out / "config.json").read_text())
    assert config["pretrained_weights"] == weights_file(MODEL).name

    # Resumed for a second epoch: everything learns now, and no weights are fetched again.
    os.remove(weights_file(MODEL))
    cnnlab.train(resume=out, epochs=2, progress=False)
    after = load_checkpoint(out / "last.pt")["model"]
    changed = [n for n, _ in model.named_parameters() if not torch.equal(after[n], ckpt["model"][n])]
    assert len(changed) == len(list(model.parameters()))


@pytest.mark.slow
def test_a_fine_tuned_model_reads_images_as_its_training_did(torch_home: Path, tmp_path: Path):
    """predict, eval and the training data see the same pixels: shorter side resized, centre crop."""
    stand_in_weights()
    data = photo_folder(tmp_path / "photos")
    out = tmp_path / "run"
    cnnlab.train(
        model=MODEL, pretrained=True, dataset=f"folder:{data}", image_size=32, epochs=1, batch_size=8,
        optimizer="adam", lr=0.003, out=str(out), progress=False,
    )  # fmt: skip
    predictor = cnnlab.load(out)
    prep = predictor.preprocessing
    assert (prep.recipe, prep.size, prep.box) == ("crop", 32, 37)
    wide = Image.new("RGB", (120, 60), (40, 40, 200))
    wide.paste((200, 40, 40), (0, 0, 30, 60))  # a red band at the far left: the centre crop cuts it away
    pixels = prep.prepare(wide)
    assert pixels.shape == (3, 32, 32) and int(pixels[0].max()) < 100

    from cnnlab.assembly import training_data
    from cnnlab.data import load_data

    loaded = training_data(predictor.config, ("test",))
    files = load_data(f"folder:{data}", splits=("test",), image_size=32, memory_budget=0, resize=37).splits["test"]
    for i in (0, 5):
        assert torch.equal(loaded.splits["test"].images[i], predictor.read(files.paths[i]))

    result = cnnlab.evaluate(out, split="test")
    assert result["n"] == 12 and sorted(row["class"] for row in result["per_class"]) == sorted(COLOURS)
    probs = predictor.probabilities(predictor.read(files.paths[0]).unsqueeze(0))[0]
    assert cnnlab.predict(out, files.paths[0])[0]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)

    from fastapi.testclient import TestClient

    from cnnlab.serve.app import create_app

    upload = {"file": ("photo.png", files.paths[0].read_bytes(), "image/png")}
    with TestClient(create_app(out)) as client:
        answer = client.post("/api/predict", files=upload).json()
        assert answer["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
        assert [m["name"] for m in answer["feature_maps"]] == [
            "conv1",
            "maxpool",
            "stage2",
            "stage3",
            "stage4",
            "conv5",
        ]
        assert client.post("/api/explain", files=upload).status_code == 200
        assert "fc: Linear" in client.get("/api/model").json()["layers"]


@pytest.mark.slow
def test_exported_torchvision_model_matches_cnnlab(torch_home: Path, tmp_path: Path):
    import onnxruntime

    from cnnlab.export import export

    stand_in_weights()
    data = photo_folder(tmp_path / "photos", per_class=6, test_per_class=1)
    out = tmp_path / "run"
    cnnlab.train(
        model=MODEL, pretrained=True, dataset=f"folder:{data}", image_size=32, epochs=1, max_steps=2, batch_size=8,
        out=str(out), progress=False,
    )  # fmt: skip
    predictor = cnnlab.load(out)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    expected = predictor.probabilities(images).numpy()
    x = to_model_input(predictor.spec, images).numpy()
    session = onnxruntime.InferenceSession(
        str(export(out, "onnx", tmp_path / "m.onnx")), providers=["CPUExecutionProvider"]
    )
    (onnx_probs,) = session.run(["probabilities"], {"input": x})
    np.testing.assert_allclose(onnx_probs, expected, rtol=1e-4, atol=1e-6)
    scripted = torch.jit.load(str(export(out, "torchscript", tmp_path / "m.torchscript.pt")))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(torch.from_numpy(x)).numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_grey_images_train_a_torchvision_model_from_scratch(tmp_path: Path):
    """No weights needed without --pretrained; grey digits are repeated to the three channels it takes."""
    cnnlab.train(
        model="tv:resnet18", dataset="digits", epochs=1, max_steps=3, out=str(tmp_path / "run"), progress=False
    )
    predictor = cnnlab.load(tmp_path / "run")
    assert predictor.spec.channels == 1 and predictor.preprocessing.recipe == "digit"
    assert predictor.probabilities(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape == (2, 10)


def test_wrong_or_misused_weights_are_one_line(torch_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    data = photo_folder(tmp_path / "photos", per_class=3, test_per_class=1)
    wrong = stand_in_weights("tv:resnet18")  # resnet18's weights saved under shufflenet's file name
    torch.save(wrong, weights_file(MODEL))
    cases = [
        (["--model", MODEL, "--pretrained"], "not the weights of"),
        (["--model", "seednet", "--pretrained"], "--pretrained needs a torchvision model"),
        (["--model", MODEL, "--freeze", "1"], "--freeze needs --pretrained"),
        (["--model", "tv:no_such_net"], "unknown model"),
    ]
    for args, message in cases:
        code = cli_main(["train", *args, "--dataset", f"folder:{data}", "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not (tmp_path / "run").exists()


def test_models_lists_torchvisions_classifiers(capsys: pytest.CaptureFixture):
    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("tv:")}
    assert rows["tv:resnet18"][1] == "11,689,512" and rows["tv:resnet18"][2] == "69.8%"
    assert len(rows) > 50 and "seednet" in out


@pytest.mark.slow
def test_fine_tuning_with_discriminative_rates_and_photo_augmentation_resumes_exactly(torch_home: Path, tmp_path: Path):
    """--freeze 1 --lr-mult 0.5: the head alone first, then every layer group at half the rate of the next
    one; with the photos augmentation on the weights' preprocessing, a run stopped mid-epoch and
    resumed ends with the same weights and the same parameter groups as one that never stopped."""
    stand_in_weights()
    data = photo_folder(tmp_path / "photos", per_class=8, test_per_class=1)
    common = dict(
        model=MODEL, pretrained=True, freeze=1, lr_mult=0.5, dataset=f"folder:{data}", image_size=32,
        batch_size=8, epochs=2, lr=0.01, schedule="step", deterministic=True, progress=False,
    )  # fmt: skip
    cnnlab.train(out=tmp_path / "whole", **common)
    cnnlab.train(out=tmp_path / "cut", max_steps=4, **common)  # 20 training images: 3 steps an epoch
    cnnlab.train(resume=tmp_path / "cut", max_steps=None)
    whole, cut = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert whole["config"]["augment"] == "light" and whole["config"]["recipe"] == "photos"
    for key, value in whole["model"].items():
        assert torch.equal(value, cut["model"][key]), key
    rates = [group["initial_lr"] for group in whole["optimizer"]["param_groups"]]
    assert len(rates) > 3 and rates[-1] == 0.01
    assert all(a == pytest.approx(0.5 * b) for a, b in zip(rates, rates[1:]))
    assert rates == [group["initial_lr"] for group in cut["optimizer"]["param_groups"]]
