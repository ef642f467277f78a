"""The job a training process belongs to: one process, or one of several under torchrun (DDP).

:func:`join` decides it once, before training: without torchrun's variables it returns a
:class:`cnnlab.engine.World` of one process, whose methods do nothing (sums are the tensor itself, the model is
not wrapped); under ``torchrun --nproc-per-node N -m cnnlab train ...`` it joins the process group
(NCCL on CUDA, each process on ``cuda:LOCAL_RANK``; gloo on the CPU) and returns a
:class:`ProcessGroup` with the same methods, made collective. The training loop calls the methods
and never asks which of the two it has.

How a step is shared: ``--batch-size`` is per process, so the global batch is ``batch_size × size``.
Every process visits the same seeded order and takes every ``size``-th sample of each global batch
(``cnnlab.data.loaders``); DDP averages the gradients. Each process's mean loss is weighted by its
share of the global batch (:meth:`World.loss_weights`), so the averaged gradient is exactly the
global batch's mean gradient, also for a short last batch that does not split evenly.

Only the main process (rank 0) prints and writes the run directory; the others learn its path from
:meth:`World.run_on_main`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

from cnnlab.engine import World
from cnnlab.env import resolve_device
from cnnlab.errors import UserError

T = TypeVar("T")


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 when cnnlab was not started by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join(device_name: str = "auto") -> World:
    """This process's :class:`World`: one process, or the process group torchrun describes.

    Refuses impossible set-ups before connecting, so that every process fails fast with the same
    one-line error instead of waiting for the others.
    """
    if env_world_size() <= 1:
        return World(resolve_device(device_name))
    import torch.distributed as dist

    device = _ddp_device(device_name)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return ProcessGroup(device, dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _ddp_device(name: str) -> torch.device:
    """The device of this process in a job of several: ``cuda:LOCAL_RANK`` on CUDA, else the CPU."""
    if name == "mps":
        raise UserError("--device mps cannot train with several processes (DDP needs CUDA or the CPU)")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda: several processes on CUDA need NCCL, but no CUDA GPU is visible to PyTorch; "
            "use --device cpu (gloo) or auto"
        )
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank, local_size = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    count = torch.cuda.device_count()
    if max(local_size, local_rank + 1) > count:
        raise UserError(
            f"{max(local_size, local_rank + 1)} processes on this machine but only {count} CUDA GPU(s) visible: "
            f"use --nproc-per-node {count} or fewer (or --device cpu)"
        )
    return torch.device("cuda", local_rank)


class ProcessGroup(World):
    """One of ``size`` processes under torchrun: the same methods as :class:`World`, made collective."""

    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def summed(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def any_true(self, flag: bool) -> bool:
        import torch.distributed as dist

        value = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def agreed(self, flag: Callable[[], bool], every: int) -> Callable[[], bool]:
        calls = [0]

        def check() -> bool:  # all processes see the flag turn true at the same call
            calls[0] += 1
            return calls[0] % every == 0 and self.any_true(flag())

        return check

    def broadcast(self, obj: T) -> T:
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """A :class:`UserError` on rank 0 is raised on every process (so none waits for the others)."""
        outcome: tuple[str, Any] = ("ok", None)
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except UserError as exc:
                outcome = ("user-error", str(exc))
            except Exception as exc:
                self.broadcast(("crash", f"{type(exc).__name__}: {exc}"))
                raise
        kind, value = self.broadcast(outcome)
        if kind == "user-error":
            raise UserError(value)
        if kind == "crash":
            raise RuntimeError(f"rank 0 failed: {value}")
        return value

    @contextmanager
    def main_first(self) -> Iterator[None]:
        import torch.distributed as dist

        if not self.is_main:
            dist.barrier()
        try:
            yield
        finally:
            if self.is_main:
                dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel around ``model``. Keep training-time forward passes on the wrapper
        and everything else (evaluation, state dicts, checkpoints) on ``model``: its state dict has no
        ``module.`` prefix, so checkpoints load the same in one process and in many."""
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def loss_weights(self, n: int, global_batch: int) -> list[float] | None:
        """``size × mine / global`` per batch: DDP's average of the processes' gradients is then the
        mean gradient of the whole global batch (1.0 for batches that split evenly)."""
        return shard_weights(n, global_batch, self.rank, self.size)

    def evaluated(self, result: dict[str, Any]) -> dict[str, Any]:
        n = result["n"]
        local = torch.tensor(
            [result["loss"] * n, result["accuracy"] * n, float(n)], dtype=torch.float64,
            device=self._collective_device(),
        )  # fmt: skip
        loss_sum, correct, total = self.summed(local).tolist()
        return {**result, "loss": loss_sum / max(total, 1), "accuracy": round(correct) / max(total, 1), "n": int(total)}

    def shard_loss(self, loss_fn: Callable) -> Callable:
        return safe_loss(loss_fn)

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def shard_weights(n: int, global_batch: int, rank: int, size: int) -> list[float]:
    """Per batch of an epoch of ``n`` samples, the factor for process ``rank``'s mean loss such that
    the average of the ``size`` processes' gradients is the whole global batch's mean gradient."""
    weights = []
    for start in range(0, n, global_batch):
        m = min(global_batch, n - start)
        mine = len(range(rank, m, size))
        weights.append(1.0 if m % size == 0 else size * mine / m)
    return weights


def safe_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """``loss_fn`` that gives 0 (still attached to the graph) for an empty batch.

    Under DDP a last batch smaller than the world leaves some processes without samples; they must
    still join the gradient all-reduce, and a mean over nothing would be NaN.
    """

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss_fn(output, target) if len(target) else output.sum() * 0.0

    return loss
