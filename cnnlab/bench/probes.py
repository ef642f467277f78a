"""What ``cnnlab bench`` measures besides the loops: memory, the machine's matmul peak, the model's
FLOPs, and the convolution kernels' own time."""

from __future__ import annotations

import copy
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data import Data


@dataclass
class SideResult:
    """One training loop's numbers."""

    train_seconds: list[float] = field(default_factory=list)  # per epoch, training only
    val_seconds: list[float] = field(default_factory=list)  # per epoch, the validation pass
    val_accuracies: list[float] = field(default_factory=list)  # after each epoch
    val_loss: float = float("nan")
    val_accuracy: float = float("nan")
    peak_memory_mb: float = float("nan")

    @property
    def seconds_per_epoch(self) -> float:
        """Median training seconds of an epoch (the first one pays for warm-up)."""
        return statistics.median(self.train_seconds)

    def seconds_to_accuracy(self, target: float) -> float | None:
        """Training seconds until the end of the first epoch whose validation accuracy reaches
        ``target`` (``None`` if none does)."""
        elapsed = 0.0
        for seconds, accuracy in zip(self.train_seconds, self.val_accuracies):
            elapsed += seconds
            if accuracy >= target:
                return elapsed
        return None


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
    x = torch.zeros(4, *data.spec.shape)
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
    from cnnlab.assembly import run_parts

    parts = run_parts(cfg, data, copy.deepcopy(model), device)  # placed and fed as the trainer does
    probe = parts.model.train()
    x, _ = next(iter(parts.train_batches.batches()))
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
    autocast = parts.autocast  # as the trainer runs them
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


def device_name(device: torch.device) -> str:
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
