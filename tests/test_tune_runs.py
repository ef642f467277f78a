"""`cnnlab runs`: one row per run directory, read from its config.json and metrics.csv."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli

from cnnlab import runs
from cnnlab.errors import UserError
from cnnlab.tune.compare import list_runs


def fake_run(folder: Path, status: str, accuracies: list[float], model: str = "seednet") -> Path:
    """A run directory written with cnnlab.runs' own writers: these accuracies, 1.5 s per epoch."""
    folder.mkdir(parents=True)
    runs.write_config(folder, {"model": model, "dataset": "mnist5k"}, status)
    history = [
        {"epoch": i + 1, "train_loss": 1.0, "train_acc": acc, "val_loss": 1.0 - acc, "val_acc": acc, "seconds": 1.5}
        for i, acc in enumerate(accuracies)
    ]
    runs.write_metrics(folder, history)
    return folder


def test_rows_come_from_config_and_metrics(tmp_path: Path) -> None:
    fake_run(tmp_path / "b", "interrupted", [0.5, 0.75], model="lenet5")
    fake_run(tmp_path / "nested" / "a", "finished", [0.6, 0.9, 0.8])
    (tmp_path / "empty").mkdir()  # no config.json: not a run
    rows = list_runs(tmp_path)
    assert [r["name"] for r in rows] == ["b", "nested/a"]
    b, a = rows
    assert (a["model"], a["dataset"], a["status"], a["epochs"]) == ("seednet", "mnist5k", "finished", 3)
    assert (a["best_val_acc"], a["final_val_acc"], a["seconds"]) == (0.9, 0.8, 4.5)
    assert (b["model"], b["status"], b["epochs"], b["best_val_acc"], b["final_val_acc"]) == (
        "lenet5", "interrupted", 2, 0.75, 0.75,
    )  # fmt: skip
    assert a["date"][:4].isdigit()
    assert [r["name"] for r in list_runs(tmp_path, ["nested/a"])] == ["nested/a"]


def test_damaged_and_unfinished_runs_are_listed(tmp_path: Path) -> None:
    fake_run(tmp_path / "ok", "finished", [0.9])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    started = tmp_path / "started"  # killed before its first epoch: no metrics.csv yet
    started.mkdir()
    runs.write_config(started, {"model": "seednet", "dataset": "digits"}, "running")
    rows = {r["name"]: r for r in list_runs(tmp_path)}
    assert rows["broken"]["status"] == "unreadable"
    assert (rows["started"]["status"], rows["started"]["epochs"], rows["started"]["best_val_acc"]) == (
        "running", 0, None,
    )  # fmt: skip
    with pytest.raises(UserError, match="not a run directory"):
        list_runs(tmp_path, ["nope"])
    with pytest.raises(UserError, match="no such folder"):
        list_runs(tmp_path / "missing")


def test_cli_lists_a_real_run_and_plots(tmp_path: Path, trained_run: Path) -> None:
    code, out, err = cli("runs", str(trained_run.parent), "--json", "--plot", "curves.png", cwd=tmp_path)
    assert code == 0, err
    (row,) = json.loads(out)
    metrics = runs.read_metrics(trained_run)
    assert (row["name"], row["model"], row["dataset"], row["status"]) == ("e2e", "seednet", "mnist5k", "finished")
    assert row["epochs"] == len(metrics) == 1
    assert row["best_val_acc"] == row["final_val_acc"] == metrics[0]["val_acc"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_table_of_chosen_runs(tmp_path: Path) -> None:
    fake_run(tmp_path / "runs" / "other", "finished", [0.3, 0.4])
    fake_run(tmp_path / "runs" / "skipped", "finished", [0.5])
    code, out, err = cli("runs", "runs", "other", cwd=tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "model", "dataset"]
    assert len(lines) == 2 and lines[1].split()[:7] == [
        "other",
        "seednet",
        "mnist5k",
        "2",
        "40.00%",
        "40.00%",
        "finished",
    ]


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    code, _, err = cli("runs", "missing", cwd=tmp_path)
    assert code == 2
    assert err.startswith("error: missing: no such folder") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_plot_without_png_suffix_names_the_file_really_written(tmp_path: Path, capsys, monkeypatch) -> None:
    from cnnlab.cli import main

    fake_run(tmp_path / "runs" / "a", "finished", [0.3, 0.4])
    monkeypatch.chdir(tmp_path)
    assert main(["runs", "runs", "--plot", "curves"]) == 0
    said = capsys.readouterr().out.splitlines()[-1]
    assert said == "validation curves saved to curves.png"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "curves").exists()
