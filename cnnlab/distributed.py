"""Data-parallel training across processes, GPUs and machines (DistributedDataParallel).

``torchrun --nproc-per-node N -m cnnlab train ...`` starts N copies of cnnlab; each reads its place
in the job from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ...) and :func:`init_from_env` joins the process group: NCCL when training on CUDA
(each process on ``cuda:LOCAL_RANK``), gloo on the CPU. Without those variables everything here is a
no-op and cnnlab runs as one process.

How a step is shared: ``--batch-size`` is per process, so the global batch is ``batch_size × world``.
Every process visits the same seeded order and takes every ``world``-th sample of each global
batch (``cnnlab.data.loaders``); DDP averages the gradients. Each process's mean loss is weighted by
its share of the global batch (:func:`loss_weights`), so the averaged gradient is exactly the global
batch's mean gradient, also for a short last batch that does not split evenly.

Only the main process (rank 0) prints and writes the run directory; the others learn its path from
:func:`run_on_main`. :func:`launch` is ``cnnlab train --nproc N``: torchrun on this machine.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from cnnlab.env import resolve_device
from cnnlab.errors import UserError

T = TypeVar("T")

_owned = False  # whether cnnlab created the process group (and so destroys it)


@dataclass(frozen=True)
class World:
    """This process's place in the job: global ``rank`` of ``size`` processes, ``local_rank`` on
    its machine, and the ``device`` it trains on."""

    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 when cnnlab was not started by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> tuple[int, int]:
    """``(rank, world_size)``: ``(0, 1)`` for a single process."""
    if active():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0, and in a single process (also after the process group is gone)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def device_for(name: str) -> torch.device:
    """The device this process trains on: ``cuda:LOCAL_RANK`` under DDP on CUDA, else as named."""
    if not active() and env_world_size() <= 1:
        return resolve_device(name)
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


def init_from_env(device_name: str = "auto") -> World:
    """Join the process group torchrun describes in the environment (nothing to do for one process).

    NCCL for CUDA, gloo for the CPU. Refuses impossible set-ups before connecting, so that every
    process fails fast with the same one-line error instead of waiting for the others.
    """
    global _owned
    device = device_for(device_name)
    if env_world_size() <= 1 and not active():
        return World(0, 1, 0, device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        _owned = True
        atexit.register(cleanup)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), device)


def cleanup() -> None:
    """Leave the process group cnnlab created (safe to call twice, or when there is none)."""
    global _owned
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if active():
        dist.barrier()


def summed(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all processes (a new tensor); ``tensor`` itself for one process."""
    if not active():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def any_true(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any of them."""
    if not active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def agreed(flag: Callable[[], bool], every: int) -> Callable[[], bool]:
    """``flag`` made collective: all processes see it turn true at the same call (checked every
    ``every`` calls, so the processes are not synchronised at every training step)."""
    if not active():
        return flag
    calls = [0]

    def check() -> bool:
        calls[0] += 1
        return calls[0] % every == 0 and any_true(flag())

    return check


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every process (picklable objects)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result to every process.

    A :class:`UserError` on rank 0 is raised on every process (so none waits for the others).
    """
    outcome: tuple[str, Any] = ("ok", None)
    if is_main():
        try:
            outcome = ("ok", fn())
        except UserError as exc:
            outcome = ("user-error", str(exc))
        except Exception as exc:
            broadcast_object(("crash", f"{type(exc).__name__}: {exc}"))
            raise
    kind, value = broadcast_object(outcome)
    if kind == "user-error":
        raise UserError(value)
    if kind == "crash":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (downloads, cache writes), then the others."""
    main = is_main()
    if not main:
        barrier()
    try:
        yield
    finally:
        if main:
            barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel under DDP, else ``model`` itself.

    Keep training-time forward passes on the wrapper and everything else (evaluation, state
    dicts, checkpoints) on ``model``: its state dict has no ``module.`` prefix, so checkpoints
    load the same in one process and in many.
    """
    if not active():
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def safe_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """``loss_fn`` that gives 0 (still attached to the graph) for an empty batch.

    Under DDP a last batch smaller than the world leaves some processes without samples; they must
    still join the gradient all-reduce, and a mean over nothing would be NaN.
    """

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss_fn(output, target) if len(target) else output.sum() * 0.0

    return loss


def loss_weights(n: int, global_batch: int, rank: int, size: int) -> list[float] | None:
    """Per batch of an epoch, the factor for process ``rank``'s mean loss such that DDP's average of
    the ``size`` processes' gradients is the mean gradient of the whole global batch:
    ``size × mine / global`` (1.0 for batches that split evenly; ``None`` for one process).
    """
    if size == 1:
        return None
    weights = []
    for start in range(0, n, global_batch):
        m = min(global_batch, n - start)
        mine = len(range(rank, m, size))
        weights.append(1.0 if m % size == 0 else size * mine / m)
    return weights


def evaluated(result: dict[str, Any]) -> dict[str, Any]:
    """An :func:`cnnlab.engine.evaluate` result of this process's shard → the whole split's."""
    if not active():
        return result
    n = result["n"]
    local = torch.tensor(
        [result["loss"] * n, result["accuracy"] * n, float(n)], dtype=torch.float64, device=_collective_device()
    )
    loss_sum, correct, total = summed(local).tolist()
    return {**result, "loss": loss_sum / max(total, 1), "accuracy": round(correct) / max(total, 1), "n": int(total)}


def per_process_batch(stored_batch: int, stored_world: int) -> int:
    """The ``--batch-size`` that keeps a resumed run's global batch when the number of processes changed."""
    _, size = world()
    total = stored_batch * stored_world
    if total % size:
        raise UserError(
            f"the run trained with a global batch of {total} ({stored_world} x {stored_batch}), which "
            f"{size} processes cannot share evenly; resume it with a number of processes that divides {total}"
        )
    return total // size


def launch(nproc: int, argv: list[str], device: str = "auto") -> int:
    """``cnnlab train --nproc N``: run ``torchrun --standalone --nproc-per-node N -m cnnlab ARGV``.

    ``argv`` is the command line without ``--nproc``. Returns torchrun's exit code (1 when any
    process failed; their ``error:`` lines say why), or 130 after Ctrl-C (the processes save
    ``last.pt`` and stop together).
    """
    if nproc < 1:
        raise UserError(f"--nproc must be ≥ 1 (got {nproc})")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch (use --device cpu or auto)")
    if device in ("auto", "cuda") and torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise UserError(
            f"--nproc {nproc}: only {torch.cuda.device_count()} CUDA GPU(s) visible "
            "(one process per GPU; use fewer processes or --device cpu)"
        )
    if device == "mps" and nproc > 1:
        raise UserError("--device mps cannot train with several processes (DDP needs CUDA or the CPU)")
    package_root = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command += ["-m", "cnnlab", *argv]
    interrupted: list[int] = []  # Ctrl-C reaches torchrun too: it asks the processes to save and stop
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        code = subprocess.call(command, env={**os.environ, "PYTHONPATH": python_path})
    finally:
        signal.signal(signal.SIGINT, previous)
    return 130 if interrupted and code != 0 else code


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` with ``--nproc N`` / ``--nproc=N`` removed."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out
