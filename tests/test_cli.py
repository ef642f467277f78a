"""End-to-end: the ``cnnlab`` command as a user runs it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(trained_run: Path):
    for name in ("config.json", "metrics.csv", "last.pt", "best.pt", "curves.png", "confusion.png"):
        assert (trained_run / name).is_file(), name
    config = json.loads((trained_run / "config.json").read_text())
    assert config["status"] == "finished"
    assert config["config"]["model"] == "seednet" and config["config"]["optimizer"] == "sgd"
    assert config["classes"] == [str(i) for i in range(10)] and "torch" in config["versions"]
    rows = list(csv.DictReader((trained_run / "metrics.csv").open()))
    assert list(rows[0])[:6] == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
    assert len(rows) == 1 and float(rows[0]["val_acc"]) >= 0.85
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)
    assert ckpt["arch"]["model"] == "seednet" and "0.weight" in ckpt["model"]


@pytest.mark.slow
def test_eval_reproduces_the_validation_accuracy(trained_run: Path):
    result = run_cli("eval", str(trained_run), "--json")
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout)
    rows = list(csv.DictReader((trained_run / "metrics.csv").open()))
    assert numbers["n"] == 1000 and numbers["split"] == "val"
    assert numbers["accuracy"] == pytest.approx(max(float(r["val_acc"]) for r in rows), abs=1e-6)  # best.pt
    assert Path(numbers["confusion_png"]).is_file() and Path(numbers["mistakes_png"]).is_file()
    assert len(numbers["per_class"]) == 10


@pytest.mark.slow
def test_eval_on_an_idx_test_set(trained_run: Path, idx_test_dir: Path):
    result = run_cli("eval", str(trained_run), "--dataset", "mnist", "--data-dir", str(idx_test_dir))
    assert result.returncode == 0, result.stderr
    assert "mnist test: 1000 images" in result.stdout and "precision" in result.stdout


@pytest.mark.slow
def test_predict_returns_the_label_of_a_validation_image(trained_run: Path, digit_png):
    path, label = digit_png
    result = run_cli("predict", str(trained_run), str(path), "--json", "--topk", "3")
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    assert answer["image"] == str(path) and answer["label"] == label
    assert len(answer["topk"]) == 3 and answer["topk"][0] == [label, answer["probability"]]
    plain = run_cli("predict", str(trained_run / "best.pt"), str(path))
    assert f": {label} (" in plain.stdout


@pytest.mark.slow
def test_hello_json_has_versions_and_device():
    result = run_cli("hello", "--json")
    info = json.loads(result.stdout)
    assert {"python", "torch", "torchvision", "device"} <= set(info)
    assert info["torch"] == torch.__version__


@pytest.mark.slow
def test_listings_and_summary(tmp_path: Path):
    assert "seednet" in run_cli("models").stdout and "8,490" in run_cli("models").stdout
    datasets = run_cli("datasets").stdout
    assert "mnist5k" in datasets and "cifar10" in datasets and "folder:PATH" in datasets
    plot = tmp_path / "arch.png"
    summary = run_cli("summary", "--model", "seednet", "--dataset", "mnist5k", "--plot", str(plot))
    assert "[1, 20, 4, 4]" in summary.stdout and "8,490" in summary.stdout and plot.stat().st_size > 1000
    assert "Total mult-adds (M): 0.47" in summary.stdout and "Units." not in summary.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "nope"], "unknown model 'nope'"),
        (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["train", "--lr", "0"], "--lr must be > 0"),
        (["train", "--batch-size", "-1"], "--batch-size must be > 0"),
        (["train", "--loss", "logistic"], "needs a two-class task"),
        (["train", "--config", "/nonexistent.toml"], "cannot read"),
        (["eval", "/nonexistent-run"], "no such run directory"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path: Path, args: list[str], message: str):
    result = run_cli(*args, "--out", str(tmp_path / "r")) if args[0] == "train" else run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "config.json").exists()


@pytest.mark.slow
def test_unreadable_image_and_wrong_checkpoint(trained_run: Path, tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    result = run_cli("predict", str(trained_run), str(bad))
    assert result.returncode == 2 and "not a readable image" in result.stderr
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)
    ckpt["arch"]["model"] = "lenet5"
    torch.save(ckpt, tmp_path / "other.pt")
    result = run_cli("eval", str(tmp_path / "other.pt"))
    assert result.returncode == 2 and "another architecture" in result.stderr
    (tmp_path / "junk.pt").write_bytes(bytes(range(256)))
    result = run_cli("predict", str(tmp_path / "junk.pt"), str(bad))
    assert result.returncode == 2 and "not a readable checkpoint" in result.stderr
    (tmp_path / "notes.pt").write_bytes(b"junk")
    result = run_cli("predict", str(tmp_path / "notes.pt"), str(bad))
    assert result.returncode == 2 and "is a text file, not a cnnlab run directory" in result.stderr


@pytest.mark.slow
def test_config_file_and_flags(tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text('model = "lenet5"\nbatch-size = 128\nepochs = 3\n')
    out = tmp_path / "r"
    result = run_cli("train", "--config", str(toml), "--epochs", "1", "--dry-run", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["model"], config["batch_size"], config["epochs"], config["max_steps"]) == ("lenet5", 128, 1, 1)


def test_environment_yml_lists_the_same_packages_as_pyproject():
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=;\[ ]", d)[0].lower() for d in project["dependencies"] if "python_version" not in d}
    conda_names = {"pytorch": "torch"}
    env = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:") :].splitlines():
        m = re.match(r"\s+-\s+([A-Za-z0-9_.-]+)", line)
        if m and m.group(1) not in ("python", "pip"):
            env.add(conda_names.get(m.group(1), m.group(1)).lower())
    assert names == env
