"""Calibrated confidence and the "none of these" rule (:mod:`cnnlab.trust`) on a real trained run.

``trained_run`` (seednet, one epoch of mnist5k, through ``cnnlab train``) has its temperature and rule
fitted at the end of training; these tests check that they are stored, loaded, applied and reported
everywhere, and that old checkpoints keep working with T = 1 and no rule.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import onnxruntime
import pytest
import torch
from conftest import cli, copy_run
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_sample_images

import cnnlab
from cnnlab.checkpoint import load_checkpoint, save_atomic
from cnnlab.errors import UserError
from cnnlab.inference import Predictor, load
from cnnlab.spec import to_model_input
from cnnlab.trust.calibration import expected_calibration_error, fit_temperature


def photo_crops(predictor: Predictor, n: int = 40, seed: int = 0) -> torch.Tensor:
    """Grey crops of scikit-learn's two sample photos, prepared as the model prepares any image; the
    crops the preparation leaves empty (which ``predict`` refuses) are dropped."""
    rng, crops = random.Random(seed), []
    for photo in load_sample_images().images:  # china.jpg and flower.jpg, shipped with scikit-learn
        img = Image.fromarray(photo).convert("L")
        w, h = img.size
        for _ in range(n):
            s = rng.randint(40, 300)
            x, y = rng.randint(0, w - s), rng.randint(0, h - s)
            crop = predictor.prepare(img.crop((x, y, x + s, y + s)))
            if crop.max() > crop.min():
                crops.append(crop)
    return torch.stack(crops)


@pytest.fixture(scope="module")
def old_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``trained_run``'s best.pt as a run from before cnnlab.trust wrote it: no ``trust`` entry."""
    folder = tmp_path_factory.mktemp("old")
    ckpt = load_checkpoint(trained_run / "best.pt")
    del ckpt["trust"]
    save_atomic(ckpt, folder / "best.pt")
    return folder


def test_training_stores_a_temperature_and_rule_loadable_with_weights_only(trained_run: Path):
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)
    trust = ckpt["trust"]
    assert isinstance(trust["temperature"], float) and trust["temperature"] > 0
    rule = trust["rule"]
    assert rule["scorer"] == "knn+mahalanobis+msp" and rule["keep"] == 0.95
    assert rule["bank"].shape == (4000, 320)  # seednet's penultimate features of every training digit
    predictor = load(trained_run)
    assert predictor.temperature == trust["temperature"] and predictor.rule.threshold == rule["threshold"]


def test_probabilities_are_softmax_of_logits_over_the_temperature(trained_run: Path, mnist5k):
    predictor = load(trained_run)
    images = mnist5k.splits["val"].images[:64]

    log_probs = predictor.model(to_model_input(predictor.spec, images))
    expected = torch.softmax(log_probs / predictor.temperature, dim=1)
    torch.testing.assert_close(predictor.probabilities(images), expected, atol=1e-6, rtol=1e-5)


def test_fitted_temperature_lowers_nll_and_ece_of_overconfident_scores(trained_run: Path, mnist5k):

    predictor = load(trained_run)
    val = mnist5k.splits["val"]
    with torch.no_grad():
        logits = 4 * predictor.model(to_model_input(predictor.spec, val.images))  # made overconfident
    t = fit_temperature(logits, val.labels)
    assert t > 2  # undoes most of the ×4
    ece_before = expected_calibration_error(torch.softmax(logits, 1), val.labels)
    ece_after = expected_calibration_error(torch.softmax(logits / t, 1), val.labels)
    assert ece_after < ece_before / 2


def test_photos_are_unknown_far_more_often_than_digits(trained_run: Path, mnist5k):
    predictor = load(trained_run)
    photos = predictor.known(photo_crops(predictor))
    digits = predictor.known(mnist5k.splits["val"].images[:500])
    photo_share = sum(r["unknown"] for r in photos) / len(photos)
    digit_share = sum(r["unknown"] for r in digits) / len(digits)
    assert digit_share <= 0.1  # the threshold keeps 95 % of the validation digits
    assert photo_share > 3 * digit_share
    assert min(r["known_score"] for r in digits[:50]) > -50  # plain floats, higher = more like training


def save_unknown_photo(run: Path, path: Path) -> Path:
    """A photo crop that ``run``'s rule calls unknown, saved as a PNG at ``path``."""
    predictor = load(run)
    crops = photo_crops(predictor)
    verdicts = predictor.known(crops)
    crop = crops[next(i for i, r in enumerate(verdicts) if r["unknown"])]
    Image.fromarray(crop[0].numpy()).save(path)
    return path


def test_predict_json_and_text_say_unknown(trained_run: Path, tmp_path: Path, digit_png: tuple[Path, str]):
    photo = save_unknown_photo(trained_run, tmp_path / "photo.png")
    digit, label = digit_png
    rows = cnnlab.predict(trained_run, [photo, digit])
    assert [r["unknown"] for r in rows] == [True, False] and rows[1]["label"] == label
    assert all(isinstance(r["known_score"], float) for r in rows)
    code, out, err = cli("predict", trained_run, photo, digit, "--json")
    assert code == 0, err
    assert [r["unknown"] for r in json.loads(out)] == [True, False]
    code, out, err = cli("predict", trained_run, photo, digit)
    assert code == 0, err
    text = out.splitlines()
    assert "unknown (looks like none of the classes" in text[0] and "unknown" not in text[1]


def test_explain_says_unknown_where_predict_does(trained_run: Path, tmp_path: Path, digit_png: tuple[Path, str]):
    photo = save_unknown_photo(trained_run, tmp_path / "photo.png")
    digit, _ = digit_png
    predicted = cnnlab.predict(trained_run, [photo, digit])
    code, out, err = cli("explain", trained_run, photo, digit, "--out", tmp_path / "maps", "--json")
    assert code == 0, err
    explained = json.loads(out)
    assert [r["unknown"] for r in explained] == [r["unknown"] for r in predicted] == [True, False]
    for e, p in zip(explained, predicted):
        assert e["known_score"] == pytest.approx(p["known_score"], abs=1e-5) and e["label"] == p["label"]
    code, out, err = cli("explain", trained_run, photo, digit, "--out", tmp_path / "maps")
    assert code == 0, err
    answers = [line.split(": ", 1)[1].split(" → ")[0] for line in out.splitlines()]  # paths hold "unknown" here
    assert answers[0].startswith("unknown (looks like none of the classes") and "unknown" not in answers[1]


@pytest.mark.slow  # evaluates 1000 digits, with pictures
def test_old_checkpoints_load_with_temperature_one_and_no_rule(old_run: Path, digit_png: tuple[Path, str]):
    predictor = load(old_run)
    assert predictor.temperature == 1.0 and predictor.rule is None
    row = cnnlab.predict(old_run, digit_png[0])[0]
    assert row["known_score"] is None and row["unknown"] is None
    code, out, err = cli("eval", old_run, "--json")
    assert code == 0, err
    calibration = json.loads(out)["calibration"]
    assert calibration["temperature"] == 1.0 and calibration["ece"] == calibration["ece_before"]


@pytest.mark.slow  # evaluates 1000 digits, with pictures
def test_eval_json_reports_calibration_and_draws_the_reliability_diagram(trained_run: Path, tmp_path: Path):
    code, out, err = cli("eval", trained_run, "--json", "--out", tmp_path / "eval")
    assert code == 0, err
    calibration = json.loads(out)["calibration"]
    assert calibration["temperature"] == load(trained_run).temperature
    assert 0 <= calibration["ece"] <= calibration["ece_before"] <= 1  # on the split the temperature was fitted to
    assert Image.open(calibration["reliability_png"]).size[0] > 300


def test_a_damaged_trust_entry_is_refused_in_one_line(trained_run: Path, tmp_path: Path):
    ckpt = load_checkpoint(trained_run / "best.pt")
    ckpt["trust"] = {"temperature": -1.0, "rule": None}
    save_atomic(ckpt, tmp_path / "best.pt")
    with pytest.raises(UserError, match="'trust'"):
        load(tmp_path)


def test_serve_answers_carry_known_score_and_unknown(trained_run: Path, digit_png: tuple[Path, str]):
    from cnnlab.serve.app import create_app

    with TestClient(create_app(trained_run)) as client:
        info = client.get("/api/model").json()
        assert info["unknown_rule"] is True and info["unknown_message"] == "that doesn't look like any digit"
        path, label = digit_png
        answer = client.post("/api/predict", files={"file": ("d.png", path.read_bytes(), "image/png")}).json()
    assert answer["label"] == label and answer["unknown"] is False
    assert answer["known_score"] == pytest.approx(cnnlab.predict(trained_run, path)[0]["known_score"], abs=1e-5)


def test_export_applies_the_temperature_and_says_the_rule_needs_cnnlab(trained_run: Path, tmp_path: Path, mnist5k):
    from cnnlab.export import export

    run = copy_run(trained_run, tmp_path / "run")
    target = export(run, "onnx")
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["cnnlab"])
    predictor = load(run)
    assert meta["temperature"] == predictor.temperature
    assert meta["unknown_rule"]["available"] is False and "penultimate features" in meta["unknown_rule"]["reason"]
    images = mnist5k.splits["val"].images[:8]

    x = to_model_input(predictor.spec, images).numpy()
    (probs,) = session.run(None, {"input": x})
    torch.testing.assert_close(torch.from_numpy(probs), predictor.probabilities(images), atol=1e-5, rtol=1e-4)
