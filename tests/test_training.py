"""The training path as users meet it: resuming, early stopping, refusals before anything is written,
the flags' defaults and help, and a command line that starts without torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_image_folder

import cnnlab
from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import build_parser, main
from cnnlab.config import TrainConfig
from cnnlab.errors import UserError


def _config_bytes(run: Path) -> bytes:
    return (run / "config.json").read_bytes()


@pytest.fixture(scope="module")
def onecycle_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch one-cycle run on 1,000 mnist5k digits (classes 0–1 keep it small)."""
    out = tmp_path_factory.mktemp("runs") / "onecycle"
    cnnlab.train(schedule="onecycle", epochs=2, classes=["0", "1"], out=out, progress=False)
    return out


@pytest.mark.slow
def test_a_finished_run_cannot_be_lengthened_when_its_schedule_depends_on_the_length(onecycle_run: Path):
    before = _config_bytes(onecycle_run)
    with pytest.raises(UserError, match="onecycle.*cannot change on resume"):
        cnnlab.train(resume=onecycle_run, epochs=6, progress=False)
    with pytest.raises(UserError, match="nothing to train"):
        cnnlab.train(resume=onecycle_run, progress=False)
    assert _config_bytes(onecycle_run) == before  # refused: the finished run is untouched


@pytest.mark.slow
def test_a_finished_constant_or_step_schedule_run_continues_for_more_epochs(tmp_path: Path, capsys):
    run = tmp_path / "r"
    cnnlab.train(schedule="step", epochs=1, classes=["0", "1"], out=run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "resuming at epoch 2, step" in out and "epoch 2/2" in out
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "finished" and config["result"]["epochs_done"] == 2
    ckpt = load_checkpoint(run / "last.pt")
    gamma, lr = TrainConfig().gamma, TrainConfig().lr
    assert ckpt["history"][1]["lr"] == pytest.approx(lr * gamma**2)  # the step schedule went on


@pytest.mark.slow
def test_early_stopping_stops_on_patience_and_is_kept_on_resume(tmp_path: Path):
    run = tmp_path / "r"
    # lr so small that nothing improves by 0.05 accuracy after the first epoch
    result = cnnlab.train(
        lr=1e-6, momentum=0.0, epochs=50, early_stop=2, min_delta=0.05, classes=["0", "1"], out=run, progress=False
    )
    assert len(result.history) == 3  # epoch 1 sets the best; epochs 2 and 3 fail to beat it
    config = json.loads((run / "config.json").read_text())
    assert config["result"]["stopped_early"] == 3
    with pytest.raises(UserError, match="stopped early after epoch 3"):
        cnnlab.train(resume=run, progress=False)
    more = cnnlab.train(resume=run, early_stop=3, progress=False)  # a longer patience continues the run
    assert [row["epoch"] for row in more.history] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_early_stopping_patience_survives_a_resume_mid_run(tmp_path: Path):
    options = dict(lr=1e-6, momentum=0.0, epochs=50, early_stop=2, min_delta=0.05, classes=["0", "1"], progress=False)
    whole = cnnlab.train(out=tmp_path / "whole", **options)
    steps_per_epoch = whole.history[0]["steps"]
    cnnlab.train(out=tmp_path / "cut", max_steps=2 * steps_per_epoch + 3, **options)
    resumed = cnnlab.train(resume=tmp_path / "cut", max_steps=None, progress=False)
    assert [r["val_acc"] for r in resumed.history] == [r["val_acc"] for r in whole.history]


def test_missing_optional_package_is_refused_before_the_run_folder_exists(tmp_path: Path, capsys):
    pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here: the refusal cannot be shown")
    assert main(["train", "--tensorboard", "--out", str(tmp_path / "r")]) == 2
    assert "pip install 'cnnlab[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args, says",
    [
        (["predict", "{image}", "{run}"], "is a PNG image, not a cnnlab run directory"),
        (["eval", "{toml}"], "is a TOML file, not a cnnlab run directory"),
        (["eval", "{text}"], "is a text file"),
    ],
)
def test_swapped_arguments_say_what_the_file_is(trained_run, digit_png, tmp_path, capsys, args, says):
    (tmp_path / "cfg.toml").write_text("epochs = 2\n")
    (tmp_path / "notes.txt").write_text("hello\n")
    names = {"image": str(digit_png[0]), "run": str(trained_run), "toml": str(tmp_path / "cfg.toml")}
    names["text"] = str(tmp_path / "notes.txt")
    assert main([a.format(**names) for a in args]) == 2
    err = capsys.readouterr().err
    assert says in err and "usage: cnnlab" in err and "Python objects" not in err
    assert err.count("\n") == 1


def test_a_mistyped_flag_points_to_the_sub_commands_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epcohs", "2"])
    assert info.value.code == 2
    assert "(see cnnlab train --help)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[train]\nepochs = 2\n", r"top level of the file .* not in a table like \[train\]"),
        ('epochs = "two"\n', r"--config .*bad\.toml: option epochs must be of type int"),
    ],
)
def test_config_file_mistakes_name_the_file_and_the_fix(tmp_path: Path, capsys, toml: str, message: str):
    (tmp_path / "bad.toml").write_text(toml)
    assert main(["train", "--config", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "r")]) == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_every_train_flag_shows_the_default_of_trainconfig():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    text = " ".join(train.format_help().split())
    for f in dataclasses.fields(TrainConfig):
        if f.type in ("str", "float", "int"):
            assert f"{f.metadata['help']} (default: {f.default})" in text, f.name


def test_every_option_of_every_command_says_what_it_is_for():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"cnnlab {name} {action.option_strings[0]} has no help text"


def test_the_command_line_starts_without_torch():
    code = "import sys, cnnlab.cli; cnnlab.cli.build_parser(); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    shown = subprocess.run([sys.executable, "-m", "cnnlab", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert shown.returncode == 0 and "train" in shown.stdout and "bench" in shown.stdout


@pytest.mark.slow
def test_the_default_layout_is_channels_last_and_the_old_one_a_flag(tmp_path: Path):
    assert build_parser().parse_args(["train", "--no-channels-last"]).channels_last is False
    fast = cnnlab.train(max_steps=1, epochs=1, progress=False, out=tmp_path / "a")
    plain = cnnlab.train(max_steps=1, epochs=1, progress=False, out=tmp_path / "b", channels_last=False)
    second_conv = [m for m in fast.model if isinstance(m, torch.nn.Conv2d)][1].weight  # 20x10x5x5
    assert second_conv.is_contiguous(memory_format=torch.channels_last) and not second_conv.is_contiguous()
    assert all(p.is_contiguous() for p in plain.model.parameters())


@pytest.mark.slow
def test_a_folder_run_is_stored_with_an_absolute_path_and_evaluates_from_elsewhere(
    tmp_path: Path, mnist5k, monkeypatch, capsys
):
    make_image_folder(tmp_path / "work" / "ds", mnist5k, per_class=6)
    monkeypatch.chdir(tmp_path / "work")
    assert main(["train", "--dataset", "folder:ds", "--epochs", "1", "--out", "run", "--quiet"]) == 0
    stored = json.loads((tmp_path / "work" / "run" / "config.json").read_text())["config"]["dataset"]
    assert stored == f"folder:{tmp_path / 'work' / 'ds'}"
    monkeypatch.chdir(tmp_path)  # somewhere else
    capsys.readouterr()
    assert main(["eval", "work/run"]) == 0
    assert capsys.readouterr().out.startswith("folder:work/ds val:")  # shown relative to where you are


@pytest.mark.slow
def test_lr_auto_trains_with_the_finders_suggestion_and_records_it(tmp_path: Path):
    from cnnlab.tune.lr_find import lr_find

    options = dict(epochs=1, max_steps=2, classes=["0", "1"], progress=False)
    expected = lr_find(TrainConfig(**options))["suggestion"]  # the range test repeats exactly
    cnnlab.train(lr="auto", out=tmp_path / "r", **options)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["config"]["lr"] == config["lr_find"]["suggestion"] == pytest.approx(expected)
    with pytest.raises(UserError, match="cannot change: lr"):
        cnnlab.train(resume=tmp_path / "r", lr="auto")


@pytest.mark.slow
def test_eval_on_your_own_files_sees_each_file_as_predict_does(tmp_path: Path, mnist5k):
    """An MNIST-style model evaluated on a folder of dark-on-white digits: eval's accuracy is the share
    of files whose `predict` answer is their folder's class (one preprocessing for both)."""
    import shutil

    from PIL import Image, ImageOps

    cnnlab.train(epochs=1, out=tmp_path / "run", progress=False)
    val = mnist5k.splits["val"]
    files = []
    for c in range(10):
        (tmp_path / "ds" / "val" / str(c)).mkdir(parents=True)
        for k, i in enumerate(torch.nonzero(val.labels == c).squeeze(1)[:3].tolist()):
            path = tmp_path / "ds" / "val" / str(c) / f"{k}.png"
            ImageOps.invert(Image.fromarray(val.images[i, 0].numpy())).resize((56, 40)).save(path)  # on paper
            files.append((path, str(c)))
    shutil.copytree(tmp_path / "ds" / "val", tmp_path / "ds" / "train")
    report = cnnlab.evaluate(tmp_path / "run", dataset=f"folder:{tmp_path / 'ds'}", split="val", out=tmp_path / "e")
    answers = cnnlab.predict(tmp_path / "run", [p for p, _ in files])
    agree = sum(answer["label"] == c for answer, (_, c) in zip(answers, files)) / len(files)
    assert report["n"] == len(files) == 30
    assert report["accuracy"] == pytest.approx(agree)
    assert agree > 0.5  # the digit recipe really turned the paper drawings into MNIST-like input


def test_early_stop_zero_is_refused_before_anything_is_written(tmp_path: Path, capsys):
    assert main(["train", "--early-stop", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--early-stop must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_eval_defaults_to_the_test_split_where_your_own_images_have_one(tmp_path: Path, mnist5k):
    from cnnlab.data import default_split

    flat = make_image_folder(tmp_path / "flat", mnist5k, per_class=3)
    split_root = tmp_path / "split"
    make_image_folder(split_root / "train", mnist5k, per_class=3)
    make_image_folder(split_root / "test", mnist5k, per_class=2)
    rows = ["image,label,split"] + [
        f"{p.relative_to(flat)},{p.parent.name},{'test' if i % 3 == 0 else 'train'}"
        for i, p in enumerate(sorted(flat.rglob("*.*")))
    ]
    (flat / "list.csv").write_text("\n".join(rows) + "\n")
    assert default_split(f"folder:{flat}") == "val"
    assert default_split(f"folder:{split_root}") == "test"
    assert default_split(f"csv:{flat / 'list.csv'}") == "test"
    assert default_split("mnist") == "test" and default_split("mnist5k") == "val"
