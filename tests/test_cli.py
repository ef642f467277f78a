"""End-to-end: the ``cnnlab`` command as a user runs it (in this process through ``main(argv)``; a few
smoke tests start a real process for the exit status and the absence of a traceback)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, cli, run_cli


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


def test_eval_reproduces_the_validation_accuracy(trained_run: Path):
    code, out, err = cli("eval", trained_run, "--json")
    assert code == 0, err
    numbers = json.loads(out)
    rows = list(csv.DictReader((trained_run / "metrics.csv").open()))
    assert numbers["n"] == 1000 and numbers["split"] == "val"
    assert numbers["accuracy"] == pytest.approx(max(float(r["val_acc"]) for r in rows), abs=1e-6)  # best.pt
    assert Path(numbers["confusion_png"]).is_file() and Path(numbers["mistakes_png"]).is_file()
    assert len(numbers["per_class"]) == 10


@pytest.mark.slow  # evaluates 1000 test digits, with pictures
def test_eval_on_an_idx_test_set(trained_run: Path, idx_test_dir: Path):
    code, out, err = cli("eval", trained_run, "--dataset", "mnist", "--data-dir", idx_test_dir)
    assert code == 0, err
    assert "mnist test: 1000 images" in out and "precision" in out


def test_predict_returns_the_label_of_a_validation_image(trained_run: Path, digit_png):
    path, label = digit_png
    code, out, err = cli("predict", trained_run, path, "--json", "--topk", "3")
    assert code == 0, err
    (answer,) = json.loads(out)
    assert answer["image"] == str(path) and answer["label"] == label
    assert len(answer["topk"]) == 3 and answer["topk"][0] == [label, answer["probability"]]
    code, out, _ = cli("predict", trained_run / "best.pt", path)
    assert code == 0 and f": {label} (" in out


def test_hello_json_has_versions_and_device():
    code, out, _ = cli("hello", "--json")
    info = json.loads(out)
    assert code == 0
    assert {"python", "torch", "torchvision", "device"} <= set(info)
    assert info["torch"] == torch.__version__


def test_listings_and_summary(tmp_path: Path):
    code, models, _ = cli("models")
    assert code == 0 and "seednet" in models and "8,490" in models
    code, datasets, _ = cli("datasets")
    assert code == 0 and "mnist5k" in datasets and "cifar10" in datasets and "folder:PATH" in datasets
    plot = tmp_path / "arch.png"
    code, summary, _ = cli("summary", "--model", "seednet", "--dataset", "mnist5k", "--plot", plot)
    assert code == 0 and "[1, 20, 4, 4]" in summary and "8,490" in summary and plot.stat().st_size > 1000
    assert "Total mult-adds (M): 0.47" in summary and "Units." not in summary


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
    code, _, err = cli(*args, "--out", tmp_path / "r") if args[0] == "train" else cli(*args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "config.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        # a train error in a real process: tests/fault/test_fault_flags.py::test_a_real_process_prints_one_line...
        pytest.param(["eval", "/nonexistent-run"], "no such run directory", marks=pytest.mark.slow),  # imports torch
        (["train", "--epcohs", "2"], "unrecognized arguments: --epcohs"),  # torch-free: a fraction of a second
    ],
)
def test_a_real_process_exits_2_with_one_line_and_no_traceback(tmp_path: Path, args: list[str], message: str):
    """Smoke test of the real command: its exit status, and nothing more than the one line at exit."""
    result = run_cli(*args, "--out", str(tmp_path / "r")) if args[0] == "train" else run_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: ") or len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "config.json").exists()


def test_unreadable_image_and_wrong_checkpoint(trained_run: Path, tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    code, _, err = cli("predict", trained_run, bad)
    assert code == 2 and "not a readable image" in err
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)
    ckpt["arch"]["model"] = "lenet5"
    torch.save(ckpt, tmp_path / "other.pt")
    code, _, err = cli("eval", tmp_path / "other.pt")
    assert code == 2 and "another architecture" in err
    (tmp_path / "junk.pt").write_bytes(bytes(range(256)))
    code, _, err = cli("predict", tmp_path / "junk.pt", bad)
    assert code == 2 and "not a readable checkpoint" in err
    (tmp_path / "notes.pt").write_bytes(b"junk")
    code, _, err = cli("predict", tmp_path / "notes.pt", bad)
    assert code == 2 and "is a text file, not a cnnlab run directory" in err


def test_config_file_and_flags(tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text('model = "lenet5"\nbatch-size = 128\nepochs = 3\n')
    out = tmp_path / "r"
    code, _, err = cli("train", "--config", toml, "--epochs", "1", "--dry-run", "--out", out, "--quiet")
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["model"], config["batch_size"], config["epochs"], config["max_steps"]) == ("lenet5", 128, 1, 1)


def test_in_process_commands_leave_the_test_process_as_they_found_it(tmp_path: Path):
    """``cli`` runs ``main(argv)`` in this process: a run that sets threads, deterministic mode, seeds and a
    Ctrl-C handler, in another working directory, changes none of them for the tests after it."""
    import os
    import signal

    def state():
        rng = torch.random.get_rng_state()
        deterministic = torch.are_deterministic_algorithms_enabled()
        return (
            os.getcwd(),
            torch.get_num_threads(),
            signal.getsignal(signal.SIGINT),
            deterministic,
            dict(os.environ),
            rng,
        )

    before = state()
    threads = 1 if torch.get_num_threads() > 1 else 2
    argv = ["train", "--dataset", "digits", "--dry-run", "--threads", str(threads), "--deterministic", "--quiet"]
    code, _, err = cli(*argv, "--out", "r", cwd=tmp_path)
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["threads"] == threads
    after = state()
    assert after[:5] == before[:5] and torch.equal(after[5], before[5])


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
