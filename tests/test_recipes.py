"""Recipes (cnnlab.recipes): picked once before the run, overridden by every explicit option; and
--time-limit, which sizes the schedule from the measured speed and stops on time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder

import cnnlab
from cnnlab.cli import build_parser, main
from cnnlab.config import MAX_EPOCHS, TrainConfig, parse_duration
from cnnlab.errors import UserError
from cnnlab.recipes import FAST, PHOTOS, photos_epochs, pick, resolve


@pytest.mark.parametrize(
    "dataset, recipe",
    [("mnist5k", "tutorial"), ("digits", "tutorial"), ("fashion-mnist", "tutorial"), ("folder:/x", "photos"),
     ("csv:/x.csv", "photos"), ("cifar10", "photos"), ("cifar100-coarse", "photos")],
)  # fmt: skip
def test_auto_picks_the_tutorial_for_digits_and_photos_for_your_own_and_colour_images(dataset: str, recipe: str):
    assert pick(dataset)[0] == recipe
    cfg, choice = resolve(None, {"dataset": dataset})
    assert cfg.recipe == choice.name == recipe and choice.why in choice.line()


def test_the_tutorial_recipe_is_trainconfigs_defaults():
    cfg, _ = resolve(None, {})
    assert cfg == TrainConfig(recipe="tutorial")


def test_explicit_options_beat_the_recipe_and_the_rest_comes_from_it():
    cfg, choice = resolve(None, {"dataset": "folder:/x", "model": "fastnet", "lr": 0.01})
    assert (cfg.model, cfg.lr, cfg.augment, cfg.schedule) == ("fastnet", 0.01, PHOTOS["augment"], "onecycle")
    assert choice.explicit == {"dataset", "model", "lr"}
    cfg, _ = resolve(TrainConfig(recipe="fast", batch_size=32), {})
    assert (cfg.model, cfg.batch_size, cfg.epochs) == ("fastnet", 32, FAST["epochs"])
    again, _ = resolve(cfg, {})  # a resolved config passed in again stays what it was
    assert again == cfg


def test_an_explicit_optimizer_or_loss_drops_the_recipe_options_that_no_longer_fit():
    from cnnlab.config import validate

    adam = validate(resolve(None, {"dataset": "folder:/x", "optimizer": "adam", "lr": 0.001})[0])
    assert (adam.optimizer, adam.nesterov, adam.momentum, adam.model) == ("adam", False, 0.5, "resnet9")
    nll = validate(resolve(None, {"dataset": "folder:/x", "loss": "nll"})[0])
    assert (nll.loss, nll.label_smoothing, nll.nesterov) == ("nll", 0.0, True)


def test_a_time_limit_without_epochs_trains_as_long_as_the_time_allows():
    assert resolve(None, {"recipe": "fast", "time_limit": "2m"})[0].epochs == MAX_EPOCHS
    assert resolve(None, {"recipe": "fast", "time_limit": "2m", "epochs": 3})[0].epochs == 3
    assert [parse_duration(v) for v in ("90", "90s", "2.5m", "1h", 7)] == [90, 90, 150, 3600, 7]
    for bad in ("soon", "-1", "0s", "1d"):
        with pytest.raises(UserError, match="--time-limit"):
            parse_duration(bad)


def test_photos_sizes_its_length_from_the_number_of_images():
    assert photos_epochs(1000) == 50 and photos_epochs(5000) == 12 and photos_epochs(100) == 60
    assert photos_epochs(2000) < photos_epochs(1000)


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5, 6, 8])
def test_one_cycle_works_for_runs_of_a_few_steps(total: int):
    """A time limit or --max-steps can make a one-cycle run very short (4 steps: a CIFAR smoke run)."""
    from cnnlab.assembly import make_optimizer, make_scheduler
    from cnnlab.models import build_model

    cfg = TrainConfig(**{**FAST, "max_steps": total})
    optimizer = make_optimizer(build_model("fastnet", 1, 8, 3), cfg)
    scheduler = make_scheduler(optimizer, cfg, 10)
    rates = []
    for _ in range(total):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    assert all(0 < r <= cfg.lr for r in rates)


def test_train_help_lists_the_new_flags(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--recipe", "--time-limit", "--augment", "--hflip", "photos", "trivial"):
        assert flag in text


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory: pytest.TempPathFactory, mnist5k) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("photos") / "f", mnist5k, per_class=16)


def test_a_folder_trains_with_the_photos_recipe_and_says_why(colour_folder: Path, tmp_path: Path, capsys):
    assert (
        main(["train", "--dataset", f"folder:{colour_folder}", "--max-steps", "2", "--out", str(tmp_path / "r")]) == 0
    )
    out = capsys.readouterr().out
    assert "recipe photos: folder: holds your own images" in out
    assert ", cut to 2 steps by --max-steps" in out  # the recipe line says how long the run really is
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    assert stored["config"]["model"] == "resnet9" and stored["config"]["recipe"] == "photos"
    assert stored["recipe"]["name"] == "photos"
    assert stored["config"]["epochs"] == photos_epochs(38)  # 48 images, a fifth held out for validation
    assert stored["result"]["stop_reason"] == "max_steps"


def test_a_time_limit_plans_the_steps_records_them_and_resumes_with_the_same_plan(colour_folder: Path, tmp_path: Path):
    """A run with --time-limit, copied mid-run (as a kill would leave it) and resumed, ends with the same
    weights as the run itself: the plan comes from the checkpoint, augmentation from (seed, epoch, step)."""
    common = dict(
        dataset=f"folder:{colour_folder}", model="fastnet", batch_size=8, time_limit="5m", epochs=3,
        augment="trivial", deterministic=True, progress=False, checkpoint_every=2,
    )  # fmt: skip
    snapshot = tmp_path / "snapshot"

    def copy_at(step: int, loss: torch.Tensor) -> None:
        if step == 7:  # last.pt holds step 6, mid-epoch 2 (5 steps per epoch)
            shutil.copytree(tmp_path / "whole", snapshot)

    whole = cnnlab.train(out=tmp_path / "whole", on_step=copy_at, **common)
    result = json.loads((tmp_path / "whole" / "config.json").read_text())["result"]
    assert result["plan"]["steps"] >= 15 and result["stop_reason"] == "epochs" and result["steps"] == 15
    assert torch.load(snapshot / "last.pt", weights_only=True)["step"] == 6
    resumed = cnnlab.train(resume=snapshot, progress=False)
    final = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    again = torch.load(snapshot / "last.pt", weights_only=True)
    assert again["plan"] == final["plan"]
    for key, value in final["model"].items():
        assert torch.equal(value, again["model"][key]), key
    assert resumed.history[-1]["val_loss"] == whole.history[-1]["val_loss"]


def test_a_short_time_limit_ends_the_schedule_on_time(colour_folder: Path, tmp_path: Path):
    run = cnnlab.train(
        dataset=f"folder:{colour_folder}", model="fastnet", batch_size=8, time_limit=0.5, progress=False,
        out=tmp_path / "r",
    )  # fmt: skip
    result = json.loads((tmp_path / "r" / "config.json").read_text())["result"]
    assert result["stop_reason"] in ("time_limit", "deadline")
    assert result["steps"] <= result["plan"]["steps"] < 5 * 200
    assert run.history and (tmp_path / "r" / "best.pt").is_file()
    last = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert last["scheduler"].get("total_steps", 1) == result["plan"]["steps"]  # (a one-step run has no cycle)
