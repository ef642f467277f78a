"""Every numeric flag is range-checked: a bad value is one line on stderr, exit 2, no traceback, and
no run directory is left behind (certainly none that looks finished)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

import cnnlab
from cnnlab.cli import main
from cnnlab.config import MAX_EPOCHS

BAD_TRAIN_FLAGS = [
    (["--lr", "0"], "--lr must be > 0"),
    (["--lr", "-0.1"], "--lr must be > 0"),
    (["--lr", "nan"], "--lr must be > 0"),
    (["--lr", "inf"], "--lr must be > 0 and at most"),
    (["--lr", "1e300"], "--lr must be > 0 and at most"),  # used to overflow inside the optimiser
    (["--batch-size", "0"], "--batch-size must be > 0"),
    (["--batch-size", "-5"], "--batch-size must be > 0"),
    (["--epochs", "0"], "--epochs must be 1 to"),
    (["--momentum", "1"], "--momentum must be in [0, 1)"),
    (["--momentum", "nan"], "--momentum must be in [0, 1)"),
    (["--weight-decay", "-1"], "--weight-decay must be ≥ 0"),
    (["--weight-decay", "inf"], "--weight-decay must be ≥ 0"),
    (["--gamma", "0"], "--gamma must be in (0, 1]"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--loss", "ce", "--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
    (["--augment", "-1"], "--augment must be none, light, strong, trivial or a pixel shift 0 to 8"),
    (["--augment", "9"], "--augment must be none, light, strong, trivial or a pixel shift 0 to 8"),
    (["--seed", "-1"], "--seed must be 0 to 2**32 - 1"),
    (["--seed", str(2**64)], "--seed must be 0 to 2**32 - 1"),
    (["--max-steps", "0"], "--max-steps must be ≥ 1"),
    (["--checkpoint-every", "-3"], "--checkpoint-every must be ≥ 0"),
    (["--threads", "0"], "--threads must be 1 to 1024"),
    (["--threads", "100000"], "--threads must be 1 to 1024"),
    (["--image-size", "2"], "--image-size must be 4 to 512"),
    (["--image-size", "100000"], "--image-size must be 4 to 512"),
    (["--epochs", "1.5"], "argument --epochs: invalid int value"),  # argparse's own check
    (["--lr", "fast"], "argument --lr: invalid value 'fast': a number or auto"),
]


def run_main(argv: list[str]) -> int:
    """``cnnlab ARGV`` in this process: its exit code, whether it returned or argparse exited."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.parametrize("flags, message", BAD_TRAIN_FLAGS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_train_flags(tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str):
    out = tmp_path / "run"
    assert run_main(["train", "--dataset", "digits", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "RUN", "IMAGE", "--topk", "0"], "--topk must be ≥ 1"),
        (["predict", "RUN", "IMAGE", "--topk", "-2"], "--topk must be ≥ 1"),
        (["train", "--resume", "RUN", "--lr", "0.5"], "these cannot change: lr"),
        (["train", "--resume", "RUN", "--epochs", "0"], "--epochs must be 1 to"),
    ],
)
def test_bad_flags_of_other_commands(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
):
    run = tiny_run
    before = (run / "config.json").read_text()
    argv = [str(run) if a == "RUN" else str(tmp_path / "x.png") if a == "IMAGE" else a for a in argv]
    assert run_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert (run / "config.json").read_text() == before  # the run is untouched


@pytest.mark.parametrize(
    "toml, message",
    [
        ('lr = "fast"', "option lr must be of type float, not str"),
        ("epochs = 2.5", "option epochs must be of type int, not float"),
        ("deterministic = 1", "option deterministic must be of type bool, not int"),
        ("classes = [3, 8]", "option classes must be a list of class names"),
        ("seed = -4", "--seed must be 0 to 2**32 - 1"),
        ("speed = 3", "unknown option(s) speed"),
    ],
)
def test_bad_values_in_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture, toml: str, message: str):
    config = tmp_path / "run.toml"
    config.write_text(toml + "\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_huge_but_valid_numbers_are_fine(tmp_path: Path):
    result = cnnlab.train(
        dataset="digits", epochs=MAX_EPOCHS, max_steps=2, batch_size=10**9, checkpoint_every=10**12,
        seed=2**32 - 1, out=str(tmp_path / "run"), progress=False,
    )  # fmt: skip
    assert result.history[-1]["steps"] == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_real_process_prints_one_line_and_no_traceback(tmp_path: Path):
    result = run_cli("train", "--lr", "nan", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "error: --lr must be > 0 and at most 1e+30 (got nan)\n"
    assert not (tmp_path / "run").exists()
