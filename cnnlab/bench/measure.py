"""``cnnlab bench``: the tutorial's own training loop and cnnlab's trainer, side by side.

Both train the same model from the same initial weights on the same data with the same recipe
(by default the tutorial's: NLL loss, SGD lr 0.01 momentum 0.5, batch 64), in one process:

* **reference**: what the tutorial writes. A ``Dataset`` turns each sample into a PIL image and runs
  torchvision's ``ToTensor`` and ``Normalize`` on it; a ``DataLoader`` (batch 64, shuffled, no
  workers) collates them; a plain loop calls ``loss.item()`` after every step. Its sampler shuffles
  in cnnlab's seeded order, so both loops see the same batches and their accuracies can be held to
  each other closely (the cost is that of ``shuffle=True``: one permutation per epoch).
* **cnnlab**: :func:`cnnlab.engine.fit`. The split lives on the device as one uint8 tensor, a batch is
  an index into it normalised on the device, and the host reads the running loss every few steps.

For each side :func:`bench` measures training seconds per epoch, images per second, the achieved
GFLOP/s (FLOPs counted by ``FlopCounterMode``) against a timed fp32 matrix multiply, peak memory
and the final validation accuracy. It also times the model's convolution kernels alone
(:func:`conv_seconds_per_step`): the part of an epoch no loop around those kernels can save.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.bench.data import bench_data
from cnnlab.bench.probes import (
    PeakMemory,
    SideResult,
    conv_seconds_per_step,
    device_name,
    flops_per_image,
    matmul_peak_gflops,
    synchronize,
)  # fmt: skip
from cnnlab.bench.reference import reference_fit
from cnnlab.config import TrainConfig, validate
from cnnlab.data import Data
from cnnlab.env import resolve_device

# "Reached the tutorial loop's final accuracy" allows this much less: the two loops take the same
# steps up to float rounding, which moves a 1,000-image validation accuracy by about a tenth of a point.
ACCURACY_TOLERANCE = 0.001


def cnnlab_fit(model: nn.Module, data: Data, cfg: TrainConfig, device: torch.device) -> SideResult:
    """:func:`cnnlab.engine.fit`, timed by its hooks: an epoch's training ends at its last step."""
    from cnnlab.data.loaders import num_batches
    from cnnlab.engine import fit

    steps_per_epoch = num_batches(len(data.splits["train"]), cfg.batch_size)
    marks: dict[str, float] = {"epoch_start": time.perf_counter()}
    result = SideResult()

    def on_step(step: int, loss: torch.Tensor) -> None:
        if step % steps_per_epoch == 0:
            synchronize(device)
            marks["trained"] = time.perf_counter()

    def on_epoch(state: Any) -> None:
        now = time.perf_counter()
        result.train_seconds.append(marks["trained"] - marks["epoch_start"])
        result.val_seconds.append(now - marks["trained"])
        result.val_accuracies.append(state.rows()[-1]["val_acc"])
        marks["epoch_start"] = now

    state = fit(model, data, cfg, on_step=on_step, on_epoch=on_epoch)
    result.val_loss, result.val_accuracy = state.history[-1]["val_loss"], state.history[-1]["val_acc"]
    return result


def bench(
    dataset: str | None = None,
    synthetic: int | None = None,
    data_dir: str | Path = "./data",
    matmul_size: int = 2048,
    fast_recipe: bool = True,
    mnist_test_dir: str | Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train ``model`` with the reference loop, then with cnnlab's trainer, and compare them.

    ``options`` are :class:`~cnnlab.config.TrainConfig` fields, with ``cnnlab train``'s defaults: the
    cnnlab side is exactly what ``cnnlab train`` runs with them. ``model``, ``epochs``,
    ``batch_size``, ``lr``, ``momentum`` and ``seed`` apply to both loops (the reference always uses
    SGD and the NLL loss); ``channels_last``, ``compile``, ``amp`` only to cnnlab's (the reference runs
    the tutorial's way); ``threads`` applies to both and is restored afterwards.

    Returns one dict (what ``cnnlab bench --json`` prints): the setup, the hardware yardsticks
    (``matmul_gflops``, ``floor_seconds_per_epoch``) and per side ``seconds_per_epoch``,
    ``images_per_second``, ``gflops``, ``peak_memory_mb``, ``val_accuracy``; then ``speedup``
    (reference seconds ÷ cnnlab seconds) and ``accuracy_difference`` (cnnlab − reference); and the
    convolution kernels' own time (``conv_seconds_per_epoch``, from :func:`conv_seconds_per_step`),
    their ``conv_share`` of cnnlab's epoch and ``speedup_ceiling`` (reference seconds ÷ theirs).

    ``targets`` holds the speed goals: ``speedup`` (≥ 3), ``sooner`` — the reference's total
    training time over cnnlab's time to the reference's final validation accuracy, less
    ``ACCURACY_TOLERANCE`` (≥ 5) — and,
    with ``fast_recipe``, ``--recipe fast`` trained on the same data: its whole training time
    against the tutorial loop's 9 epochs (9 × its median epoch). With ``mnist_test_dir`` (the
    official MNIST t10k IDX files) the fast recipe is also trained on mnist5k and scored there (≥ 98 %).
    """
    cfg = validate(TrainConfig(progress=False, **options))
    threads = cfg.threads
    target = resolve_device(cfg.device)
    data = bench_data(dataset, data_dir, synthetic)
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        report, sides = _measure(cfg, data, target, matmul_size)
        report["targets"] = _targets(sides, cfg, data, target, fast_recipe, mnist_test_dir)
        return report
    finally:
        torch.set_num_threads(threads_before)


def _measure(
    cfg: TrainConfig, data: Data, target: torch.device, matmul_size: int
) -> tuple[dict[str, Any], dict[str, SideResult]]:
    """The yardsticks, then both loops from the same initial weights; the report of :func:`bench`."""
    from cnnlab.assembly import initial_model, seed_everything
    from cnnlab.data.loaders import num_batches

    initial = initial_model(cfg, data)
    forward_flops, train_flops = flops_per_image(initial, data)
    peak = matmul_peak_gflops(target, matmul_size)
    memory = PeakMemory(target)
    sides: dict[str, SideResult] = {}
    for name, run in (("reference", reference_fit), ("cnnlab", cnnlab_fit)):
        seed_everything(cfg.seed)
        memory.reset()
        sides[name] = run(copy.deepcopy(initial), data, cfg, target)
        sides[name].peak_memory_mb = memory.peak_mb()
    n_train = len(data.splits["train"])
    conv_seconds = conv_seconds_per_step(initial, data, cfg, target) * num_batches(n_train, cfg.batch_size)
    report = {
        "device": str(target),
        "device_name": device_name(target),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dataset": data.name,
        "train_images": n_train,
        "val_images": len(data.splits["val"]),
        "model": cfg.model,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "cnnlab_flags": {
            "channels_last": cfg.channels_last,
            "compile": cfg.compile or cfg.compile_mode != "default",
            "amp": cfg.amp,
        },
        "compile_mode": cfg.compile_mode,
        "forward_flops_per_image": forward_flops,
        "train_flops_per_image": train_flops,
        "matmul_gflops": peak,
        "floor_seconds_per_epoch": train_flops * n_train / (peak * 1e9),
        "conv_seconds_per_epoch": conv_seconds,
    }
    for name, side in sides.items():
        report[name] = _side_report(side, n_train, train_flops, peak)
    report["speedup"] = report["reference"]["seconds_per_epoch"] / report["cnnlab"]["seconds_per_epoch"]
    report["accuracy_difference"] = sides["cnnlab"].val_accuracy - sides["reference"].val_accuracy
    report["conv_share"] = conv_seconds / report["cnnlab"]["seconds_per_epoch"]
    report["speedup_ceiling"] = report["reference"]["seconds_per_epoch"] / conv_seconds if conv_seconds else None
    return report, sides


def _side_report(side: SideResult, n_train: int, train_flops: float, peak: float) -> dict[str, Any]:
    seconds = side.seconds_per_epoch
    gflops = train_flops * n_train / seconds / 1e9
    return {
        **asdict(side),
        "seconds_per_epoch": seconds,
        "images_per_second": n_train / seconds,
        "gflops": gflops,
        "fraction_of_peak": gflops / peak,
    }


def _targets(
    sides: dict[str, SideResult], cfg: TrainConfig, data: Data, target: torch.device, fast: bool, mnist_test_dir: Any
) -> dict[str, Any]:
    """The speed goals measured: per-epoch speedup, time to the tutorial loop's accuracy, fast recipe."""
    reference, cnnlab = sides["reference"], sides["cnnlab"]
    goal = reference.val_accuracy
    reached = cnnlab.seconds_to_accuracy(goal - ACCURACY_TOLERANCE)
    targets: dict[str, Any] = {
        "reference_accuracy": goal,
        "tolerance": ACCURACY_TOLERANCE,
        "reference_seconds": sum(reference.train_seconds),
        "cnnlab_seconds_to_reference_accuracy": reached,
        "sooner": sum(reference.train_seconds) / reached if reached else None,
    }
    if fast:
        tutorial_epochs = TrainConfig().epochs
        side, _ = _fast_recipe(cfg, data, target)
        targets["fast_recipe"] = {
            "epochs": len(side.train_seconds),
            "seconds": sum(side.train_seconds),
            "val_accuracy": side.val_accuracy,
            "tutorial_epochs_seconds": tutorial_epochs * reference.seconds_per_epoch,
            "tutorial_epochs": tutorial_epochs,
        }
    if mnist_test_dir is not None:
        targets["fast_recipe_mnist_test_accuracy"] = _fast_recipe_on_mnist(cfg, mnist_test_dir, target)
    return targets


def _fast_config(cfg: TrainConfig) -> TrainConfig:
    """``--recipe fast`` with the run's seed, device and threads."""
    from cnnlab.recipes import FAST as FAST_RECIPE

    return validate(TrainConfig(**FAST_RECIPE, seed=cfg.seed, device=cfg.device, threads=cfg.threads, progress=False))


def _fast_recipe(cfg: TrainConfig, data: Data, target: torch.device) -> tuple[SideResult, nn.Module]:
    """``--recipe fast`` trained on ``data`` by cnnlab's trainer: its numbers and its model."""
    from cnnlab.assembly import initial_model

    fast = _fast_config(cfg)
    model = initial_model(fast, data)
    return cnnlab_fit(model, data, fast, target), model


def _fast_recipe_on_mnist(cfg: TrainConfig, mnist_test_dir: str | Path, target: torch.device) -> float:
    """``--recipe fast`` trained on mnist5k, scored on the official MNIST test set."""
    from cnnlab.assembly import eval_batches, make_loss
    from cnnlab.data import load_data
    from cnnlab.engine import evaluate

    _, model = _fast_recipe(cfg, load_data("mnist5k"), target)
    test = load_data("mnist", mnist_test_dir, ("test",), download=False)
    fast = _fast_config(cfg)
    return evaluate(model, eval_batches(test, "test", fast, model), make_loss(fast))["accuracy"]
