"""Predicting many files: folders walked in order, a CSV/JSON Lines row per file (against per-file
``cnnlab.predict``), bad files answered by a warning and an error row, the onnx backend's parity with
torch, and ``explain``/``eval`` given a corrupt file among good ones."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.cli import main as cli_main
from cnnlab.errors import UserError
from cnnlab.inference import image_files, load, predict_files, write_predictions
from cnnlab.spec import image_spec


def save_digits(folder: Path, mnist5k, n: int, start: int = 0) -> list[Path]:
    """``n`` real validation digits as PNG files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    val = mnist5k.splits["val"]
    paths = []
    for i in range(start, start + n):
        path = folder / f"digit{i:03d}.png"
        Image.fromarray(val.images[i, 0].numpy()).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def folder(tmp_path: Path, mnist5k) -> Path:
    """A folder of 9 digits (3 in a sub-folder), one corrupt PNG, one text file and hidden files."""
    root = tmp_path / "photos"
    save_digits(root, mnist5k, 6)
    save_digits(root / "more", mnist5k, 3, start=6)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.txt").write_text("not an image")
    shutil.copy(root / "digit000.png", root / ".hidden.png")
    (root / ".cache").mkdir()
    shutil.copy(root / "digit000.png", root / ".cache" / "digit.png")
    return root


def test_a_folder_is_walked_recursively_sorted_without_hidden_or_non_image_files(folder: Path, tmp_path: Path):
    names = [str(p.relative_to(folder)) for p in image_files([folder])]
    assert names == [
        "broken.png",
        *[f"digit{i:03d}.png" for i in range(6)],
        *[f"more/digit{i:03d}.png" for i in (6, 7, 8)],
    ]
    # a file given by name is kept whatever its name, in the order given
    assert image_files([folder / "notes.txt", folder / "more"])[0] == folder / "notes.txt"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files in this folder"):
        image_files([tmp_path / "empty"])


def test_csv_rows_match_per_file_predict(trained_run: Path, folder: Path, tmp_path: Path, capsys):
    out = tmp_path / "predictions.csv"
    assert cli_main(["predict", str(trained_run), str(folder), "--csv", str(out), "--topk", "2", "--workers", "2",
                     "--batch-size", "4"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert captured.err.count("warning: ") == 1 and "broken.png" in captured.err
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == [
        "image", "label", "probability", "class_1", "probability_1", "class_2", "probability_2",
        "known_score", "unknown", "error"
    ]  # fmt: skip
    assert [r["image"] for r in rows] == [str(p) for p in image_files([folder])]
    bad, good = rows[0], rows[1:]
    assert bad["image"].endswith("broken.png") and "not a readable image" in bad["error"] and bad["label"] == ""
    for row in good:
        (expected,) = cnnlab.predict(trained_run, row["image"], topk=2)
        assert row["error"] == "" and row["label"] == expected["label"] == row["class_1"]
        assert float(row["probability"]) == pytest.approx(expected["probability"], abs=1e-6)
        assert row["class_2"] == expected["topk"][1][0]
        assert float(row["probability_2"]) == pytest.approx(expected["topk"][1][1], abs=1e-6)
        assert float(row["known_score"]) == pytest.approx(expected["known_score"], abs=1e-5)
        assert row["unknown"] == str(expected["unknown"])
    assert "9 image(s) answered, 1 failed" in captured.out


def test_jsonl_to_stdout_and_a_run_that_answers_nothing_writes_nothing(trained_run: Path, folder: Path, tmp_path):
    predictor = load(trained_run)
    stdout = io.StringIO()
    rows = predict_files(predictor, [folder / "more", folder / "broken.png"], topk=1)
    assert write_predictions(rows, "-", "jsonl", [], stdout=stdout) == (3, 1)
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [line["error"] is None for line in lines] == [True, True, True, False]
    assert lines[0]["topk"] == [[lines[0]["label"], lines[0]["probability"]]]

    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "nothing.csv"
    with pytest.raises(UserError, match="no image could be answered"):
        write_predictions(predict_files(predictor, [folder / "broken.png"]), out, "csv", ["image", "error"])
    assert list((tmp_path / "out").iterdir()) == []  # no file, no temporary left behind


def test_predict_on_a_folder_with_a_corrupt_file_answers_the_others(trained_run: Path, folder: Path, capsys):
    assert cli_main(["predict", str(trained_run), str(folder)]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("digit") == 9 and "broken" not in captured.out
    assert captured.err.strip().splitlines() == [
        f"warning: {folder / 'broken.png'}: not a readable image (PNG, JPEG, GIF, BMP, WebP or TIFF)"
    ]
    assert cli_main(["predict", str(trained_run), str(folder / "broken.png"), "--json"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: no image could be answered")


def test_explain_skips_a_corrupt_file_with_a_warning(trained_run: Path, folder: Path, tmp_path, capsys):
    assert cli_main(["explain", str(trained_run), str(folder / "more"), str(folder / "broken.png"),
                     "--out", str(tmp_path / "why"), "--json"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert [Path(r["image"]).name for r in json.loads(captured.out)] == ["digit006.png", "digit007.png", "digit008.png"]
    assert "warning: " in captured.err and "broken.png" in captured.err


def test_eval_on_files_skips_a_corrupt_file_with_a_warning(trained_run: Path, tmp_path: Path, mnist5k, capsys):
    """``eval --dataset folder:...`` of a digit model reads each file as predict does; a corrupt one is skipped."""
    val, root = mnist5k.splits["val"], tmp_path / "labelled"
    for split, start in (("train", 0), ("val", 200)):
        for c in range(10):
            folder = root / split / str(c)
            folder.mkdir(parents=True)
            for k, i in enumerate(torch.nonzero(val.labels == c).flatten()[start // 100 : start // 100 + 2].tolist()):
                Image.fromarray(val.images[i, 0].numpy()).save(folder / f"{k}.png")
    (root / "val" / "3" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = cnnlab.evaluate(trained_run, dataset=f"folder:{root}", split="val", out=tmp_path / "eval")
    assert result["n"] == 20
    err = capsys.readouterr().err
    assert "warning: " in err and "zz-broken.png" in err


def test_onnx_backend_matches_torch_to_1e5(trained_run: Path, tmp_path: Path, mnist5k, folder: Path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_run / "best.pt", run / "best.pt")
    images = mnist5k.splits["val"].images[:64]
    torch_p = load(run)
    onnx_p = load(run, backend="onnx")  # exports on first use, into the run
    assert onnx_p.backend == "onnx" and (run / "model.onnx").is_file()
    np.testing.assert_allclose(onnx_p.probabilities(images).numpy(), torch_p.probabilities(images).numpy(), atol=1e-5)
    files = image_files([folder / "more"])
    by_torch = cnnlab.predict(run, files)
    by_onnx = cnnlab.predict(run, files, backend="onnx", onnx=run / "model.onnx")
    assert [r["label"] for r in by_torch] == [r["label"] for r in by_onnx]
    assert np.allclose([r["probability"] for r in by_torch], [r["probability"] for r in by_onnx], atol=1e-5)


def test_onnx_backend_refuses_another_models_file(trained_run: Path, tmp_path: Path):
    from cnnlab.assembly import checkpoint_header
    from cnnlab.checkpoint import save_atomic
    from cnnlab.config import TrainConfig
    from cnnlab.data import Data
    from cnnlab.export import export
    from cnnlab.models import build_model

    other = tmp_path / "other"
    other.mkdir()
    data = Data("mnist5k", image_spec("mnist5k", ["3", "8"], 1, 28, (0.1307,), (0.3081,)))
    save_atomic(
        {
            **checkpoint_header(TrainConfig(classes=["3", "8"]), data),
            "model": build_model("seednet", 1, 28, 2).state_dict(),
        },
        other / "best.pt",
    )
    foreign = export(other, "onnx")
    with pytest.raises(UserError, match="exported from another model"):
        load(trained_run, backend="onnx", onnx=foreign)
    with pytest.raises(UserError, match="add --backend onnx"):
        load(trained_run, onnx=foreign)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        load(trained_run, backend="onnx", onnx=tmp_path / "junk.onnx")


def test_serve_with_the_onnx_backend_and_its_examples(trained_run: Path, tmp_path: Path, digit_png):
    from fastapi.testclient import TestClient

    from cnnlab.serve.app import create_app

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_run / "best.pt", run / "best.pt")
    path, _ = digit_png
    answers = {}
    for backend in ("torch", "onnx"):
        with TestClient(create_app(run, backend=backend)) as client:
            assert client.get("/api/model").json()["backend"] == backend
            answers[backend] = client.post("/api/predict", files={"file": ("d.png", path.read_bytes())}).json()
            examples = client.get("/api/examples").json()
    assert [e["label"] for e in examples[:10]] == [str(i) for i in range(10)]  # each class in turn
    assert answers["onnx"]["label"] == answers["torch"]["label"]
    for name, p in answers["torch"]["probabilities"].items():
        assert answers["onnx"]["probabilities"][name] == pytest.approx(p, abs=1e-5)
