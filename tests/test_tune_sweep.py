"""Sweeps on Optuna: concurrent processes on one SQLite study, pruning, Ctrl-C, and refused input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, cli

from cnnlab import runs
from cnnlab.config import TrainConfig
from cnnlab.errors import UserError
from cnnlab.tune.sweep import load_space, run_sweep, show_sweep, sqlite_url

# Tiny trials: the digits 0 and 1 (about 850 training images), 7 steps of 128 per epoch.
TINY = ("--classes", "0,1", "--batch-size", "128", "--quiet")
SPACE = """
[lr]
low = 1e-6
high = 0.5
log = true

[momentum]
low = 0.0
high = 0.9
"""


def sweep_process(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "sweep", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def load(out: Path, study: str = "sweep") -> optuna.Study:
    return optuna.load_study(study_name=study, storage=sqlite_url(out))


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path: Path) -> None:
    (tmp_path / "space.toml").write_text(SPACE)
    args = ("--trials", "4", "--out", "sw", "--space", "space.toml", "--epochs", "2", *TINY)
    workers = [sweep_process(*args, cwd=tmp_path) for _ in range(2)]
    for worker in workers:
        out, err = worker.communicate(timeout=900)
        assert worker.returncode == 0, err
    trials = load(tmp_path / "sw").get_trials()
    assert sorted(t.number for t in trials) == list(range(8))  # none lost, none twice
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    run_dirs = [tmp_path / t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == 8
    for t, run_dir in zip(trials, run_dirs):
        status = runs.read_config(run_dir)["status"]
        assert status == ("finished" if t.state.name == "COMPLETE" else "pruned")
        if t.state.name == "COMPLETE":
            assert t.value == max(row["val_acc"] for row in runs.read_metrics(run_dir))

    code, listed, err = cli("runs", "sw", "--json", cwd=tmp_path)
    assert code == 0, err
    assert sorted(r["name"] for r in json.loads(listed)) == [f"sweep/trial-{n:04d}" for n in range(8)]

    code, shown, err = cli("sweep", "--show", "--out", "sw", "--json", cwd=tmp_path)
    assert code == 0, err
    report = json.loads(shown)
    assert len(report["trials"]) == 8
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert report["best"]["number"] == best.number
    assert (tmp_path / "sw" / "sweep" / "history.png").is_file()


@pytest.mark.slow
def test_median_pruner_stops_a_bad_trial_early(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    out.mkdir()
    study = optuna.create_study(study_name="sweep", storage=sqlite_url(out), direction="maximize")
    for _ in range(3):
        study.enqueue_trial({"lr": 0.05, "momentum": 0.5})
    study.enqueue_trial({"lr": 1e-6, "momentum": 0.0})  # learns nothing in a few steps
    (tmp_path / "space.toml").write_text(SPACE)
    code, stdout, err = cli(
        "sweep", "--trials", "4", "--out", "sw", "--space", "space.toml", "--epochs", "4", *TINY, cwd=tmp_path
    )
    assert code == 0, err
    trials = load(out).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 + ["PRUNED"]
    bad = out / "sweep" / "trial-0003"
    assert runs.read_config(bad)["status"] == "pruned"
    assert len(runs.read_metrics(bad)) == 2 < 4  # the pruner first looks at epoch 2 and stops it there
    assert len(runs.read_metrics(out / "sweep" / "trial-0000")) == 4
    assert "pruned at epoch 2" in stdout


@pytest.mark.slow
def test_ctrl_c_saves_the_trial_and_a_rerun_continues_the_study(tmp_path: Path) -> None:
    # 60 steps (about 9 epochs of 7): long enough to be interrupted, short enough to rerun with the same options
    long = ("--epochs", "200", "--max-steps", "60")
    worker = sweep_process("--trials", "3", "--out", "sw", *long, *TINY, cwd=tmp_path)
    metrics = tmp_path / "sw" / "sweep" / "trial-0000" / "metrics.csv"
    deadline = time.monotonic() + 600
    while not metrics.exists() and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
    worker.send_signal(signal.SIGINT)
    out, err = worker.communicate(timeout=600)
    assert worker.returncode == 130, err
    assert "run the same command again" in err
    first = tmp_path / "sw" / "sweep" / "trial-0000"
    assert runs.read_config(first)["status"] == "interrupted" and (first / "last.pt").is_file()
    assert [t.state.name for t in load(tmp_path / "sw").get_trials()] == ["FAIL"]

    code, _, err = cli("sweep", "--trials", "1", "--out", "sw", *long, *TINY, cwd=tmp_path)
    assert code == 0, err
    assert [t.state.name for t in load(tmp_path / "sw").get_trials()] == ["FAIL", "COMPLETE"]


@pytest.mark.parametrize(
    "space, message",
    [
        ("[colour]\nchoices = [1, 2]", "unknown option 'colour'"),
        ("[lr]\nlow = 0.1\nhigh = 0.01", "low must be below high"),
        ("[weight_decay]\nlow = 0.0\nhigh = 0.1\nlog = true", "a log range needs low > 0"),
        ("[momentum]\nlow = 0.0\nhigh = 1.5", "--momentum must be in [0, 1)"),
        ("[model]\nchoices = ['seednet', 'nonet']", "unknown model 'nonet'"),
        ("[augment]\nlow = 0\nhigh = 2.5", "high must be an integer"),
        ("[lr]\nlow = 0.01\nhigh = 0.1\nspread = 2", "unknown key(s) spread"),
        ("[out]\nchoices = ['a', 'b']", "out is not a hyperparameter"),
    ],
)
def test_bad_search_spaces_are_refused(tmp_path: Path, space: str, message: str) -> None:
    path = tmp_path / "space.toml"
    path.write_text(space)
    with pytest.raises(UserError, match=re.escape(message)):
        load_space(path, TrainConfig())


@pytest.mark.slow
def test_bad_storage_and_unknown_study_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot open it"):
        run_sweep(TrainConfig(), 1, storage="nosuchdb://host/x", out=tmp_path / "sw")
    with pytest.raises(UserError, match="does not exist"):
        run_sweep(TrainConfig(), 1, storage=f"sqlite:///{tmp_path}/missing/x.db", out=tmp_path / "sw")
    with pytest.raises(UserError, match="no sweep in"):
        show_sweep(out=tmp_path / "sw")
    assert list(tmp_path.iterdir()) == []

    out = tmp_path / "sw"
    out.mkdir()
    optuna.create_study(study_name="mine", storage=sqlite_url(out))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(UserError, match="no study 'other'.*studies there: mine"):
        show_sweep("other", out=out)
    assert sorted(p.name for p in out.iterdir()) == before


def test_cli_bad_space_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "space.toml").write_text("[lr]\nlow = 0.5\nhigh = 0.1\n")
    code, _, err = cli("sweep", "--trials", "2", "--space", "space.toml", "--out", "sw", cwd=tmp_path)
    assert code == 2
    assert err.startswith("error: --space space.toml: [lr] impossible range") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.toml"]


@pytest.mark.slow
def test_a_diverging_trial_fails_and_the_sweep_goes_on(tmp_path: Path) -> None:
    (tmp_path / "space.toml").write_text("[lr]\nchoices = [1e6]\n")
    base = TrainConfig(classes=["0", "1"], batch_size=128, epochs=1, max_steps=3, progress=False, device="cpu")
    space = load_space(tmp_path / "space.toml", base)
    lines: list[str] = []
    result = run_sweep(base, 2, space=space, out=tmp_path / "sw", echo=lines.append)
    assert [t["state"] for t in result["trials"]] == ["FAIL", "FAIL"] and result["best"] is None
    assert sum("diverged" in line for line in lines) == 2
    assert runs.read_config(tmp_path / "sw" / "sweep" / "trial-0001")["status"] == "failed"


@pytest.mark.slow  # waits out Optuna's heartbeat grace period
def test_a_trial_whose_process_died_is_marked_failed_in_its_run_folder(tmp_path: Path) -> None:
    """Optuna's heartbeat fails a trial whose process was killed; its run folder's config.json, which
    the killed process left saying "running", then says "failed" too."""
    from cnnlab.tune.sweep import _open_storage

    storage = _open_storage(sqlite_url(tmp_path), create=True, out=tmp_path)
    storage.grace_period = 1  # the test does not wait the real grace period of 30 s
    study = optuna.create_study(storage=storage, study_name="s")
    run_dir = tmp_path / "s" / "trial-0000"
    run_dir.mkdir(parents=True)
    runs.write_config(run_dir, TrainConfig().to_dict(), "running")
    trial = study.ask()
    trial.set_user_attr("run_dir", str(run_dir))
    storage.record_heartbeat(trial._trial_id)  # then the process "dies": no more heartbeats
    time.sleep(2.2)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    config = runs.read_config(run_dir)
    assert config["status"] == "failed" and "killed" in config["error"]


@pytest.mark.slow  # waits out Optuna's heartbeat grace period
def test_a_dead_trial_naming_a_folder_outside_the_sweep_touches_nothing(tmp_path: Path) -> None:
    """A database someone gives you may name any folder as a dead trial's run_dir: failing the stale trial
    (as ``sweep --show`` does) leaves a ``config.json`` outside ``OUT/STUDY/`` exactly as it was."""
    from cnnlab.tune.sweep import _open_storage

    out = tmp_path / "sweeps"
    out.mkdir()
    storage = _open_storage(sqlite_url(out), create=True, out=out)
    storage.grace_period = 1
    study = optuna.create_study(storage=storage, study_name="sweep")
    elsewhere = tmp_path / "my-run"
    elsewhere.mkdir()
    runs.write_config(elsewhere, TrainConfig().to_dict(), "running")
    before = (elsewhere / "config.json").read_bytes()
    trial = study.ask()
    trial.set_user_attr("run_dir", str(elsewhere))
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.2)
    optuna.storages.fail_stale_trials(study)  # what sweep --show does first
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert (elsewhere / "config.json").read_bytes() == before


@pytest.mark.slow
def test_a_rerun_with_other_fixed_options_is_refused_naming_them(tmp_path: Path) -> None:
    from cnnlab.tune.sweep import DEFAULT_SPACE, FIXED_ATTR, fixed_options

    base = TrainConfig(classes=["0", "1"], batch_size=128, epochs=1, max_steps=2, progress=False, device="cpu")
    first = run_sweep(base, 1, out=tmp_path / "sw", echo=lambda line: None)
    assert len(first["trials"]) == 1
    stored = load(tmp_path / "sw").user_attrs[FIXED_ATTR]
    assert stored == fixed_options(base, DEFAULT_SPACE)
    assert stored["epochs"] == 1 and stored["dataset"] == "mnist5k" and "lr" not in stored and "device" not in stored
    with pytest.raises(UserError) as refused:
        run_sweep(base.replace(epochs=3, dataset="digits"), 1, out=tmp_path / "sw", echo=lambda line: None)
    message = str(refused.value)
    assert "\n" not in message and "--study NAME" in message
    assert "--epochs 3 (study: 1)" in message and "--dataset digits (study: mnist5k)" in message
    assert "--lr" not in message  # searched options may differ
    assert len(load(tmp_path / "sw").get_trials()) == 1  # nothing was added
    assert sorted(p.name for p in (tmp_path / "sw" / "sweep").iterdir()) == ["trial-0000"]
    # another study name starts afresh; where a trial runs (device, threads, out) is not an experiment's option
    other = run_sweep(base.replace(epochs=3, max_steps=1), 1, "other", out=tmp_path / "sw", echo=lambda line: None)
    assert other["study"] == "other" and len(other["trials"]) == 1
    study = load(tmp_path / "sw")
    from cnnlab.tune.sweep import keep_fixed_options

    keep_fixed_options(study, fixed_options(base.replace(device="auto", threads=1), DEFAULT_SPACE))  # accepted
