"""``cnnlab bench``: its pieces measured against first principles, and the command end to end."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from conftest import run_cli
from torch import nn

from cnnlab.bench.data import synthetic_data
from cnnlab.bench.measure import _measure, _targets, cnnlab_fit
from cnnlab.bench.probes import PeakMemory, SideResult, conv_seconds_per_step, flops_per_image, matmul_peak_gflops
from cnnlab.bench.reference import TutorialDataset, reference_fit
from cnnlab.cli import main
from cnnlab.config import TrainConfig, validate
from cnnlab.data import Data
from cnnlab.models import build_model
from cnnlab.spec import to_model_input

SIDE_KEYS = {
    "train_seconds", "val_seconds", "seconds_per_epoch", "images_per_second", "gflops", "fraction_of_peak",
    "peak_memory_mb", "val_accuracy", "val_loss",
}  # fmt: skip
TOP_KEYS = {
    "device", "threads", "dataset", "train_images", "val_images", "model", "epochs", "batch_size",
    "forward_flops_per_image", "train_flops_per_image", "matmul_gflops", "floor_seconds_per_epoch",
    "reference", "cnnlab", "speedup", "accuracy_difference", "conv_seconds_per_epoch", "conv_share",
    "speedup_ceiling",
}  # fmt: skip


def _conv_linear_macs(model: nn.Module, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(all multiply-adds, those of the first layer) of one image's forward, from the layer shapes."""
    macs: list[int] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs.append(output[0].numel() * k)
        elif isinstance(module, nn.Linear):
            macs.append(module.in_features * module.out_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return sum(macs), macs[0]


def test_flop_count_matches_the_layer_arithmetic():
    """Forward: 2 FLOPs per multiply-add of every conv and linear layer. Training: forward plus the
    weight gradients plus the input gradients of every layer but the first (≈ 3× forward)."""
    data = synthetic_data(20)
    for name in ("seednet", "fastnet"):
        model = build_model(name, 1, 28, 10)
        forward, train = flops_per_image(model, data)
        macs, first = _conv_linear_macs(model, (1, 28, 28))
        assert forward == 2 * macs
        assert train == 2 * (3 * macs - first)


def test_synthetic_digits_are_deterministic_and_their_labels_are_in_the_pixels():
    data = synthetic_data(600)
    again = synthetic_data(600)
    train, val = data.splits["train"], data.splits["val"]
    assert train.images.shape == (600, 1, 28, 28) and train.images.dtype == torch.uint8 and len(val) == 100
    assert torch.equal(train.images, again.splits["train"].images)
    # the nearest class mean (from the training images) names the validation labels
    means = torch.stack([train.images[train.labels == c].float().mean(0) for c in range(10)])
    distance = ((val.images.float().unsqueeze(1) - means.unsqueeze(0)) ** 2).flatten(2).sum(2)
    assert (distance.argmin(1) == val.labels).float().mean() > 0.7


def test_tutorial_dataset_gives_what_cnnlab_normalises_on_the_device():
    data = synthetic_data(30)
    split = data.splits["train"]
    dataset = TutorialDataset(split, data.spec.mean, data.spec.std)
    x, label = dataset[7]
    assert label == int(split.labels[7])
    assert torch.allclose(x, to_model_input(data.spec, split.images[7:8])[0], atol=1e-6)


def test_peak_memory_sees_a_large_allocation():
    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    before = memory.peak_mb()
    block = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB, touched
    assert memory.peak_mb() - before > 60
    del block


def test_conv_time_covers_every_convolution_and_only_convolutions():
    """A model without convolutions spends nothing in them; seednet's two take a positive time, and
    the probe leaves the model's weights and gradients as they were."""
    data = synthetic_data(64)
    cfg = TrainConfig(batch_size=16, channels_last=True)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert conv_seconds_per_step(linear, data, cfg, torch.device("cpu")) == 0.0
    model = build_model("seednet", 1, 28, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = conv_seconds_per_step(model, data, cfg, torch.device("cpu"), rounds=2, repeats=2)
    assert 0 < seconds < float("inf")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak_gflops(torch.device("cpu"), size=128, repeats=2) > 0


def test_the_two_loops_train_the_same_model_the_same_way():
    """From the same initial weights, the tutorial's loop and cnnlab's trainer take the same SGD steps
    on the same batches in the same order: after an epoch their weights agree (float rounding only)."""
    data = synthetic_data(96)
    cfg = TrainConfig(epochs=1, batch_size=16, channels_last=False, progress=False)
    torch.manual_seed(0)
    start = build_model("seednet", 1, 28, 10)
    reference, ours = copy.deepcopy(start), copy.deepcopy(start)
    reference_side = reference_fit(reference, data, cfg, torch.device("cpu"))
    cnnlab_side = cnnlab_fit(ours, data, cfg, torch.device("cpu"))
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(start.parameters(), ours.parameters()))
    assert moved > 1e-3  # 6 steps really changed the weights
    for a, b in zip(reference.parameters(), ours.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert reference_side.val_accuracy == cnnlab_side.val_accuracy
    assert len(reference_side.val_accuracies) == len(cnnlab_side.val_accuracies) == 1


def test_time_to_accuracy_counts_training_seconds_up_to_the_first_epoch_that_reaches_it():
    side = SideResult(train_seconds=[2.0, 3.0, 4.0], val_accuracies=[0.5, 0.8, 0.9])
    assert side.seconds_to_accuracy(0.5) == 2.0
    assert side.seconds_to_accuracy(0.75) == 5.0
    assert side.seconds_to_accuracy(0.9) == 9.0
    assert side.seconds_to_accuracy(0.95) is None


@pytest.fixture(scope="module")
def tiny_bench() -> tuple[TrainConfig, Data, dict, dict[str, SideResult]]:
    """Both loops measured on 128 synthetic images for 3 epochs, in the tutorial's fp32 layout (so
    their steps agree to float rounding), with the report and the recorded sides."""
    cfg = validate(TrainConfig(epochs=3, batch_size=32, channels_last=False, progress=False))
    data = synthetic_data(128)
    report, sides = _measure(cfg, data, torch.device("cpu"), matmul_size=64)
    return cfg, data, report, sides


def test_bench_report_holds_both_loops_trained_alike(tiny_bench) -> None:
    _, data, report, _ = tiny_bench
    assert set(report) >= TOP_KEYS
    assert (report["train_images"], report["val_images"]) == (128, len(data.splits["val"]))
    for side in ("reference", "cnnlab"):
        assert set(report[side]) >= SIDE_KEYS
        assert len(report[side]["train_seconds"]) == len(report[side]["val_accuracies"]) == 3
        assert 1 / 10 < report[side]["val_accuracy"] <= 1  # learned something: above chance (10 classes)
    # the same steps on the same batches: the same validation accuracy after every epoch
    assert report["cnnlab"]["val_accuracies"] == report["reference"]["val_accuracies"]
    assert report["accuracy_difference"] == 0
    assert report["cnnlab_flags"]["channels_last"] is False  # the options reach the cnnlab side
    assert report["conv_seconds_per_epoch"] > 0 and report["speedup"] > 0


def test_time_to_the_reference_accuracy_is_read_off_the_recorded_epochs(tiny_bench) -> None:
    """cnnlab reaches the tutorial loop's final accuracy (it trains alike): the time reported is the
    training time up to the first recorded epoch at that accuracy, and no earlier one reached it."""
    cfg, data, _, sides = tiny_bench
    targets = _targets(sides, cfg, data, torch.device("cpu"), False, None)
    ours = sides["cnnlab"]
    goal = targets["reference_accuracy"] - targets["tolerance"]
    assert targets["reference_accuracy"] == sides["reference"].val_accuracy
    reached = targets["cnnlab_seconds_to_reference_accuracy"]
    assert reached is not None and targets["sooner"] is not None and targets["sooner"] > 0
    first = next(i for i, acc in enumerate(ours.val_accuracies) if acc >= goal)
    assert reached == pytest.approx(sum(ours.train_seconds[: first + 1]))
    assert all(acc < goal for acc in ours.val_accuracies[:first])


def test_an_accuracy_never_reached_gives_no_time_and_an_early_one_the_first_epoch(tiny_bench) -> None:
    cfg, data, _, sides = tiny_bench
    ours = sides["cnnlab"]
    unreachable = dataclasses.replace(sides["reference"], val_accuracy=max(ours.val_accuracies) + 0.01)
    missed = _targets({**sides, "reference": unreachable}, cfg, data, torch.device("cpu"), False, None)
    assert missed["cnnlab_seconds_to_reference_accuracy"] is None and missed["sooner"] is None
    easy = dataclasses.replace(sides["reference"], val_accuracy=ours.val_accuracies[0])
    early = _targets({**sides, "reference": easy}, cfg, data, torch.device("cpu"), False, None)
    assert early["cnnlab_seconds_to_reference_accuracy"] == ours.train_seconds[0]


@pytest.mark.slow
def test_bench_command_end_to_end_with_the_fast_recipe():
    result = run_cli("bench", "--synthetic", "512", "--epochs", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= TOP_KEYS and (report["train_images"], report["model"]) == (512, "seednet")
    # the cnnlab side is `cnnlab train` with no flags: its default layout
    assert report["cnnlab_flags"]["channels_last"] is TrainConfig().channels_last
    fast = report["targets"]["fast_recipe"]
    assert fast["epochs"] == 4 and fast["tutorial_epochs"] == TrainConfig().epochs  # --recipe fast: 4 epochs
    assert len(report["cnnlab"]["val_accuracies"]) == 2 and 0 <= fast["val_accuracy"] <= 1


@pytest.mark.slow
def test_bench_text_report_and_user_errors(capsys):
    args = ["bench", "--synthetic", "64", "--epochs", "1", "--batch-size", "32", "--threads", "1", "--no-fast-recipe"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "speedup" in out and "GFLOP/s" in out and "convolution kernels alone" in out
    assert "per epoch:" in out and "--recipe fast" not in out
    assert main(["bench", "--synthetic", "5"]) == 2
    assert "at least 10" in capsys.readouterr().err
    assert main(["bench", "--model", "nope", "--synthetic", "64"]) == 2
    assert "unknown model" in capsys.readouterr().err
