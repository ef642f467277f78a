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

import argparse
import copy
import json
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnlab.config import COMPILE_MODES, TrainConfig, validate
from cnnlab.data import Data, TensorSplit, epoch_order, load_data
from cnnlab.data.registry import DIGITS
from cnnlab.env import resolve_device
from cnnlab.errors import UserError

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


# --------------------------------------------------------------------------- data


def synthetic_data(n: int, seed: int = 0) -> Data:
    """An MNIST-shaped set of ``n`` training and ``max(n // 6, 10)`` validation images (60,000 → 10,000).

    Each image is uniform noise (0..235) plus its class's pattern: a fixed random set of 4×4 blocks
    brightened by 20, faint against the noise. The label is in the pixels, so training learns it
    (not to 100 %) and the accuracies of two loops can be compared; it is not a stand-in for MNIST.
    """
    if n < 10:
        raise UserError(f"--synthetic needs at least 10 images (got {n})")
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.rand(10, 1, 7, 7, generator=generator) < 0.3
    patterns = blocks.repeat_interleave(4, 2).repeat_interleave(4, 3).to(torch.uint8) * 20
    total = n + max(n // 6, 10)
    labels = torch.randint(0, 10, (total,), generator=generator)
    images = torch.randint(0, 236, (total, 1, 28, 28), generator=generator, dtype=torch.uint8)
    images += patterns[labels]
    splits = {"train": TensorSplit(images[:n], labels[:n]), "val": TensorSplit(images[n:], labels[n:])}
    return Data(f"synthetic{n}", list(DIGITS), 1, 28, MNIST_MEAN, MNIST_STD, splits)


def bench_data(dataset: str | None, data_dir: str | Path, synthetic: int | None) -> Data:
    """The synthetic set, or the ``train`` and ``val`` splits of a named dataset (default mnist5k)."""
    if synthetic is not None:
        return synthetic_data(synthetic)
    data = load_data(dataset or "mnist5k", data_dir, ("train", "val"))
    if not all(isinstance(s, TensorSplit) for s in data.splits.values()):
        raise UserError("bench compares in-memory datasets; a folder: dataset streams from files")
    return data


class TutorialDataset(Dataset):
    """What torchvision's MNIST does per sample: uint8 array → PIL image → ``transform``."""

    def __init__(self, split: TensorSplit, mean: tuple[float, ...], std: tuple[float, ...]):
        from torchvision import transforms

        images = split.images.permute(0, 2, 3, 1)  # [N, H, W, C], as PIL wants it
        self.images = images[..., 0].numpy() if images.shape[-1] == 1 else images.numpy()
        self.labels = split.labels.tolist()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


class EpochOrder(Sampler[int]):
    """Shuffles like ``DataLoader(shuffle=True)`` but in cnnlab's seeded order of each epoch, so
    both loops see the same batches (call :meth:`set_epoch` before each epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.n, self.seed, self.epoch).tolist())


# --------------------------------------------------------------------------- measuring


@dataclass
class SideResult:
    """One training loop's numbers."""

    train_seconds: list[float] = field(default_factory=list)  # per epoch, training only
    val_seconds: list[float] = field(default_factory=list)  # per epoch, the validation pass
    val_loss: float = float("nan")
    val_accuracy: float = float("nan")
    peak_memory_mb: float = float("nan")

    @property
    def seconds_per_epoch(self) -> float:
        """Median training seconds of an epoch (the first one pays for warm-up)."""
        return statistics.median(self.train_seconds)


class PeakMemory:
    """Peak memory of a phase: CUDA allocations, or the process's peak resident set on the CPU.

    On Linux the resident high-water mark is reset through ``/proc/self/clear_refs``; elsewhere
    ``ru_maxrss`` (the whole process so far) is reported instead.
    """

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """The best GFLOP/s of a ``size``×``size`` fp32 matrix multiply (2·size³ FLOPs) on ``device``."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def flops_per_image(model: nn.Module, data: Data) -> tuple[float, float]:
    """(forward, training) FLOPs per image: counted by ``FlopCounterMode`` on one batch of a copy.

    Training is forward + backward (about 3× forward, less where the first layer needs no input
    gradient); optimiser updates and elementwise work are not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model).cpu().float().train()
    x = torch.zeros(4, data.in_channels, data.image_size, data.image_size)
    y = torch.zeros(4, dtype=torch.int64)
    with FlopCounterMode(display=False) as counter:
        probe(x)
    forward = counter.get_total_flops() / 4
    with FlopCounterMode(display=False) as counter:
        F.nll_loss(probe(x), y).backward()
    return forward, counter.get_total_flops() / 4


def conv_seconds_per_step(
    model: nn.Module, data: Data, cfg: TrainConfig, device: torch.device, rounds: int = 10, repeats: int = 20
) -> float:
    """Seconds one training step spends in the model's convolution kernels alone.

    Each ``Conv2d`` runs its forward and its backward (weight and bias gradients, and the input
    gradient for every convolution but the first, whose input is the data) on the input it gets
    from a real batch, in the memory format and precision the trainer uses. The fastest of
    ``rounds`` rounds of ``repeats`` steps is kept: a floor for these kernels on this machine,
    whatever loop calls them.
    """
    from cnnlab.data import make_batches

    probe = copy.deepcopy(model).to(device).train()
    if cfg.channels_last:
        probe.to(memory_format=torch.channels_last)
    batches = make_batches(data.splits["train"], data, cfg.batch_size, device, channels_last=cfg.channels_last)
    x, _ = next(iter(batches.batches()))
    convs = [m for m in probe.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return 0.0
    inputs: dict[nn.Conv2d, torch.Tensor] = {}

    def keep_input(conv: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        inputs[conv] = args[0].detach()

    hooks = [conv.register_forward_pre_hook(keep_input) for conv in convs]
    with torch.no_grad():
        probe(x)
    for hook in hooks:
        hook.remove()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp)  # as the trainer runs them
    work = []
    for conv in convs:
        is_data = inputs[conv].data_ptr() == x.data_ptr()  # the data needs no gradient
        conv_input = inputs[conv].requires_grad_(not is_data)
        wrt = list(conv.parameters()) + ([] if is_data else [conv_input])
        with torch.no_grad(), autocast:
            grad = torch.randn_like(conv(conv_input))
        work.append((conv, conv_input, wrt, grad))

    def one_step() -> None:
        for conv, conv_input, wrt, grad in work:
            with autocast:
                output = conv(conv_input)
            torch.autograd.grad(output, wrt, grad)

    one_step()  # warm-up: kernel selection, weight reorders
    best = float("inf")
    for _ in range(rounds):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            one_step()
        synchronize(device)
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


# --------------------------------------------------------------------------- the two loops


def reference_fit(model: nn.Module, data: Data, cfg: TrainConfig, device: torch.device) -> SideResult:
    """The tutorial's loop: per-sample PIL → ToTensor → Normalize, DataLoader, ``.item()`` each step."""
    train_set = TutorialDataset(data.splits["train"], data.mean, data.std)
    val_set = TutorialDataset(data.splits["val"], data.mean, data.std)
    order = EpochOrder(len(train_set), cfg.seed)
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=order)
    val_loader = DataLoader(val_set, batch_size=1000)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    result, losses = SideResult(), []
    for epoch in range(1, cfg.epochs + 1):
        order.set_epoch(epoch)
        started = time.perf_counter()
        model.train()
        for images, target in train_loader:
            images, target = images.to(device), target.to(device)
            optimizer.zero_grad()
            loss = F.nll_loss(model(images), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        trained = time.perf_counter()
        result.val_loss, result.val_accuracy = _reference_test(model, val_loader, device)
        result.train_seconds.append(trained - started)
        result.val_seconds.append(time.perf_counter() - trained)
    return result


@torch.no_grad()
def _reference_test(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for images, target in loader:
        images, target = images.to(device), target.to(device)
        output = model(images)
        loss_sum += F.nll_loss(output, target, reduction="sum").item()
        correct += (output.argmax(dim=1) == target).sum().item()
        n += len(target)
    return loss_sum / n, correct / n


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
        marks["epoch_start"] = now

    state = fit(model, data, cfg, on_step=on_step, on_epoch=on_epoch)
    result.val_loss, result.val_accuracy = state.history[-1]["val_loss"], state.history[-1]["val_acc"]
    return result


# --------------------------------------------------------------------------- the API


def bench(
    dataset: str | None = None,
    synthetic: int | None = None,
    data_dir: str | Path = "./data",
    model: str = "seednet",
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 0.01,
    momentum: float = 0.5,
    seed: int = 1,
    device: str = "auto",
    threads: int | None = None,
    channels_last: bool = True,
    compile: bool = False,
    compile_mode: str = "default",
    amp: bool = False,
    matmul_size: int = 2048,
) -> dict[str, Any]:
    """Train ``model`` with the reference loop, then with cnnlab's trainer, and compare them.

    ``channels_last``, ``compile`` (and ``compile_mode``) and ``amp`` are the cnnlab side's
    execution flags (the reference runs the tutorial's way); ``threads`` applies to both and is
    restored afterwards.

    Returns one dict (what ``cnnlab bench --json`` prints): the setup, the hardware yardsticks
    (``matmul_gflops``, ``floor_seconds_per_epoch``) and per side ``seconds_per_epoch``,
    ``images_per_second``, ``gflops``, ``peak_memory_mb``, ``val_accuracy``; then ``speedup``
    (reference seconds ÷ cnnlab seconds) and ``accuracy_difference`` (cnnlab − reference); and the
    convolution kernels' own time (``conv_seconds_per_epoch``, from :func:`conv_seconds_per_step`),
    their ``conv_share`` of cnnlab's epoch and ``speedup_ceiling`` (reference seconds ÷ theirs).
    """
    cfg = validate(
        TrainConfig(
            model=model, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, seed=seed,
            device=device, threads=threads, channels_last=channels_last, compile=compile, compile_mode=compile_mode,
            amp=amp, progress=False,
        )
    )  # fmt: skip
    target = resolve_device(cfg.device)
    data = bench_data(dataset, data_dir, synthetic)
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _measure(cfg, data, target, matmul_size)
    finally:
        torch.set_num_threads(threads_before)


def _measure(cfg: TrainConfig, data: Data, target: torch.device, matmul_size: int) -> dict[str, Any]:
    """The yardsticks, then both loops from the same initial weights; the report of :func:`bench`."""
    from cnnlab.api import model_for, seed_everything
    from cnnlab.data.loaders import num_batches

    seed_everything(cfg.seed)
    initial = model_for(cfg, data)
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
        "device_name": _device_name(target),
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
    return report


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


def _device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (Linux) or architecture."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _flags(r: dict[str, Any]) -> str:
    """The cnnlab side's execution flags in words: ``channels_last, compile (reduce-overhead)``."""
    flags = [k for k, on in r["cnnlab_flags"].items() if on]
    if r.get("compile_mode", "default") != "default":
        flags = [f"compile ({r['compile_mode']})" if k == "compile" else k for k in flags]
    return ", ".join(flags) or "no flags"


def format_report(r: dict[str, Any]) -> str:
    """The bench result as a small table."""
    lines = [
        f"{r['model']} on {r['dataset']} ({r['train_images']:,} train / {r['val_images']:,} val images), "
        f"batch {r['batch_size']}, {r['epochs']} epoch(s), {r['device']} ({r['device_name']}, {r['threads']} threads)",
        f"model: {r['forward_flops_per_image'] / 1e6:.3f} MFLOP/image forward, "
        f"{r['train_flops_per_image'] / 1e6:.3f} training; matmul peak {r['matmul_gflops']:.1f} GFLOP/s "
        f"→ compute floor {r['floor_seconds_per_epoch']:.2f} s/epoch",
        "reference: the tutorial's loop (per-sample PIL → ToTensor → Normalize, DataLoader, .item() per step); "
        f"cnnlab: engine.fit ({_flags(r)})",
        "",
        f"{'':<10} {'s/epoch':>8} {'images/s':>9} {'GFLOP/s':>8} {'of peak':>8} {'peak MB':>8} {'val acc':>8}",
    ]
    for name in ("reference", "cnnlab"):
        s = r[name]
        lines.append(
            f"{name:<10} {s['seconds_per_epoch']:>8.2f} {s['images_per_second']:>9,.0f} {s['gflops']:>8.1f} "
            f"{100 * s['fraction_of_peak']:>7.1f}% {s['peak_memory_mb']:>8.0f} {100 * s['val_accuracy']:>7.2f}%"
        )
    lines += [
        "",
        f"speedup {r['speedup']:.1f}x  (cnnlab is {r['cnnlab']['seconds_per_epoch'] / r['floor_seconds_per_epoch']:.1f}x "
        f"the compute floor); accuracy difference {100 * r['accuracy_difference']:+.2f} points",
    ]
    if r["speedup_ceiling"]:
        lines.append(
            f"convolution kernels alone: {r['conv_seconds_per_epoch']:.2f} s/epoch, "
            f"{100 * r['conv_share']:.0f}% of cnnlab's epoch; a loop on these kernels tops out at "
            f"{r['speedup_ceiling']:.1f}x here"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the command


def register(subparsers: Any) -> None:
    """Add ``cnnlab bench`` to the CLI."""
    p = subparsers.add_parser(
        "bench",
        help="the tutorial's training loop vs cnnlab's trainer: s/epoch, GFLOP/s, memory, accuracy, "
        "and the convolution kernels' own time",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--dataset", default=None, help="an in-memory dataset (default mnist5k)")
    source.add_argument(
        "--synthetic", type=int, metavar="N", help="N random MNIST-shaped images whose label is in the pixels"
    )
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--model", default="seednet")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True,
        help="cnnlab side: channels-last memory format (default on: faster on the CPU)",
    )  # fmt: skip
    p.add_argument("--compile", action="store_true", help="cnnlab side: torch.compile the model")
    p.add_argument(
        "--compile-mode", choices=COMPILE_MODES, default="default",
        help="cnnlab side: torch.compile mode (reduce-overhead replays CUDA graphs on a GPU); implies --compile",
    )  # fmt: skip
    p.add_argument("--amp", action="store_true", help="cnnlab side: bfloat16 autocast")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    result = bench(
        dataset=args.dataset, synthetic=args.synthetic, data_dir=args.data_dir, model=args.model,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, seed=args.seed,
        device=args.device, threads=args.threads, channels_last=args.channels_last, compile=args.compile,
        compile_mode=args.compile_mode, amp=args.amp,
    )  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0
