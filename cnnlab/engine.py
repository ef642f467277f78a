"""The training loop and evaluation; what the loop trains with is built by :func:`cnnlab.assembly.run_parts`.

Read :func:`fit` top to bottom: batches → forward → loss → backward → step, then validation,
a metrics row and checkpoints at the end of each epoch. Loss and accuracy are summed on the device
and read back only every :data:`SYNC_EVERY` steps, so the CPU never waits on every batch.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from tqdm import tqdm  # text bar everywhere: a Jupyter widget bar would not survive in a saved notebook

from cnnlab.assembly import make_optimizer, run_parts, total_steps
from cnnlab.checkpoint import rng_state, save_atomic, set_rng_state
from cnnlab.config import TrainConfig
from cnnlab.data import Data
from cnnlab.env import resolve_device
from cnnlab.errors import Diverged, Interrupted, UserError
from cnnlab.losses import LN2, predictions
from cnnlab.models import set_trainable

SYNC_EVERY = 25
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """The job the loop is part of, as one process sees it: ``rank`` of ``size`` processes, training on
    ``device``. This class is one process (rank 0 of 1), where every method is the identity;
    :class:`cnnlab.distributed.ProcessGroup` is one of several under torchrun, with the same methods
    made collective (:func:`cnnlab.distributed.join` picks which, once, before training)."""

    device: torch.device
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def summed(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over all processes."""
        return tensor

    def agreed(self, flag: Callable[[], bool], every: int) -> Callable[[], bool]:
        """``flag`` as every process sees it (checked together every ``every`` calls)."""
        return flag

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0, its result handed to every process."""
        return fn()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (downloads, cache writes), then the others."""
        yield

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training forward pass goes through (DDP's wrapper under several processes)."""
        return model

    def loss_weights(self, n: int, global_batch: int) -> list[float] | None:
        """Per batch, the factor for this process's mean loss (``None``: no weighting)."""
        return None

    def evaluated(self, result: dict[str, Any]) -> dict[str, Any]:
        """An evaluation of this process's shard → the whole split's."""
        return result

    def shard_loss(self, loss_fn: Callable) -> Callable:
        """The loss to train with: a process's share of a short last batch may be empty."""
        return loss_fn

    def per_process_batch(self, stored_batch: int, stored_world: int) -> int:
        """The ``--batch-size`` that keeps a resumed run's global batch when the number of processes changed."""
        total = stored_batch * stored_world
        if total % self.size:
            raise UserError(
                f"the run trained with a global batch of {total} ({stored_world} x {stored_batch}), which "
                f"{self.size} processes cannot share evenly; resume it with a number of processes that divides {total}"
            )
        return total // self.size

    def close(self) -> None:
        """Leave the process group (nothing to leave for one process)."""


StepHook = Callable[[int, torch.Tensor], None]


@dataclass
class TrainState:
    """Where a run is: ``epoch`` being trained (1-based), ``batch`` batches of it done, ``step``
    optimiser steps in all, ``history`` of finished epochs."""

    epoch: int = 1
    batch: int = 0
    step: int = 0
    best_val_acc: float = -1.0
    best_monitored: float | None = None  # early stopping: the best value of --monitor so far
    bad_epochs: int = 0  # early stopping: epochs since it last improved
    stopped_early: int | None = None  # the epoch after which early stopping ended the run
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: torch.Tensor | None = None  # this epoch so far: loss·n, correct, n
    partial: dict[str, Any] | None = None  # the row of an epoch cut short by max_steps
    plan: dict[str, Any] | None = None  # --time-limit: the planned steps and the speed they come from
    stop_reason: str | None = None  # epochs, max_steps, time_limit (the planned steps), deadline or early_stop
    seconds: float = 0.0  # training time so far (of every session of a resumed run)
    seconds_before: float = 0.0  # ... before this session

    def rows(self) -> list[dict[str, Any]]:
        """Finished epochs, plus the epoch cut short by ``max_steps`` if any."""
        return self.history + ([self.partial] if self.partial else [])


def _length_reason(cfg: TrainConfig, plan: dict[str, Any] | None, total: int) -> str:
    if cfg.max_steps == total:
        return "max_steps"
    if plan is not None and plan["steps"] == total and total < cfg.epochs * plan["steps_per_epoch"]:
        return "time_limit"
    return "epochs"


PLAN_SAFETY = 0.9  # the share of the time left that the planned steps may fill
PROBE_STEPS = (2, 8)  # --time-limit: warm-up steps, then timed steps (runs no longer than this are not planned)


def plan_steps(
    model: nn.Module,
    cfg: TrainConfig,
    world: World,
    train_batches: Any,
    val_batches: Any,
    loss_fn: Callable,
) -> dict[str, Any]:
    """``--time-limit``: how many optimiser steps fit, from the measured speed of the first steps.

    A copy of the model takes a few steps on the first batches (augmentation included) and
    validates once, so the run itself is untouched (its RNG included). With t seconds per step
    (the median after the warm-up steps), v per validation pass and s steps per epoch, S = ⌊0.9 · limit / (t + v / s)⌋
    steps fit; the limit counts from the first step of the run itself. Every process of a job agrees
    on the same S (their mean)."""
    warm, timed = PROBE_STEPS
    probe = copy.deepcopy(model).train()
    optimizer = make_optimizer(probe, cfg)
    devices = [world.device] if world.device.type == "cuda" else []
    durations: list[float] = []
    with torch.random.fork_rng(devices=devices):
        epoch = 1
        while len(durations) < warm + timed:
            batches = train_batches.batches(epoch)
            while len(durations) < warm + timed:
                begin = time.perf_counter()
                item = next(batches, None)
                if item is None:
                    break
                x, y = item
                loss = loss_fn(probe(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                _synchronize(world.device)
                durations.append(time.perf_counter() - begin)
            epoch += 1
        begin = time.perf_counter()
        evaluate(probe, val_batches, loss_fn)
        _synchronize(world.device)
        validation = time.perf_counter() - begin
    step = statistics.median(durations[warm:])  # the typical step: a burst of other work on the machine is not
    per_epoch = len(train_batches)
    left = cfg.time_limit - validation  # the last validation and checkpoint come after the last step
    steps = max(1, int(PLAN_SAFETY * max(left, 0.0) / (step + validation / per_epoch)))
    steps = int(world.summed(torch.tensor(float(steps), dtype=torch.float64)) / world.size)
    return {
        "steps": steps, "steps_per_epoch": per_epoch, "time_limit": cfg.time_limit,
        "seconds_per_step": step, "seconds_per_validation": validation, "probe_seconds": sum(durations) + validation,
    }  # fmt: skip


def _plan_line(plan: dict[str, Any], steps_per_epoch: int) -> str:
    return (
        f"--time-limit {plan['time_limit']:g}s: {plan['steps']} steps fit ({plan['steps'] / steps_per_epoch:.1f} "
        f"epochs at {1000 * plan['seconds_per_step']:.0f} ms a step, {plan['seconds_per_validation']:.1f} s a "
        "validation); the schedule ends there"
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Any, loss_fn: Callable, keep_outputs: bool = False) -> dict[str, Any]:
    """Mean loss and accuracy over ``batches``; with ``keep_outputs`` also every output and label."""
    model.eval()
    device = batches.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    outputs, labels = [], []
    for x, y in batches.batches():
        out = model(x)
        loss_sum += loss_fn(out, y).double() * len(y)
        correct += (predictions(out) == y).sum()
        n += len(y)
        if keep_outputs:
            outputs.append(out.float().cpu())
            labels.append(y.cpu())
    result: dict[str, Any] = {"loss": float(loss_sum) / max(n, 1), "accuracy": float(correct) / max(n, 1), "n": n}
    if keep_outputs:
        result["outputs"] = torch.cat(outputs) if outputs else torch.empty(0)
        result["labels"] = torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64)
    return result


def fit(
    model: nn.Module,
    data: Data,
    cfg: TrainConfig,
    world: World | None = None,
    run_dir: Path | None = None,
    on_step: StepHook | None = None,
    resume: dict[str, Any] | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    on_epoch: Callable[[TrainState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainState:
    """Train ``model`` on ``data['train']``, validating on ``data['val']`` after every epoch.

    Batches are cast to the model's parameter dtype (a ``.double()`` model trains in float64).
    With ``run_dir``, ``last.pt`` is written after every epoch (and every ``cfg.checkpoint_every``
    steps) and ``best.pt`` whenever validation accuracy improves. ``resume`` is a checkpoint dict
    to continue from, mid-epoch included. ``on_step(step, loss)`` runs after every optimiser step;
    ``on_epoch(state)`` after every epoch's checkpoints. When ``should_stop()`` turns true, ``last.pt``
    is saved and :class:`Interrupted` raised. ``world`` is the job this process is part of (default:
    one process on ``cfg.device``; see :func:`cnnlab.distributed.join`).

    ``cfg.balance``: ``weights`` weights the training loss by :func:`cnnlab.assembly.class_weights`, ``sampler`` draws
    each epoch's samples ∝ 1/class size (:func:`cnnlab.data.loaders.epoch_order`); validation stays
    the plain mean either way. ``cfg.freeze``: the first ``freeze`` epochs train only the head.
    """
    fit_started = time.perf_counter()
    world = world or World(resolve_device(cfg.device))
    device, progress = world.device, cfg.progress and world.is_main
    parts = run_parts(cfg, data, model, device, rank=world.rank, world_size=world.size)
    train_batches, val_batches, optimizer = parts.train_batches, parts.val_batches, parts.optimizer
    if val_batches is None:
        raise ValueError("fit validates on data.splits['val'], which this Data lacks")
    loss_fn, val_loss_fn = world.shard_loss(parts.loss_fn), world.shard_loss(parts.val_loss_fn)
    weights = world.loss_weights(train_batches.n, train_batches.batch_size)
    plan = resume.get("plan") if resume is not None else None  # a resumed run keeps its plan: never re-measured
    if plan is None and cfg.time_limit is not None and total_steps(cfg, len(train_batches)) > sum(PROBE_STEPS):
        plan = plan_steps(model, cfg, world, train_batches, val_batches, loss_fn)
        fit_started = time.perf_counter()  # the time limit counts from the first step; the probe is not in it
        if progress:
            print(_plan_line(plan, len(train_batches)), flush=True)
            if plan["steps"] < min(total_steps(cfg, len(train_batches)), 2 * len(train_batches)):
                print(
                    f"note: --time-limit {cfg.time_limit:g}s leaves time for only {plan['steps']} steps, under 2 "
                    "epochs: the model will be undertrained; give it more time", flush=True,
                )  # fmt: skip
    total = total_steps(cfg, len(train_batches), plan)
    epochs = min(cfg.epochs, -(-total // len(train_batches)))  # the last epoch the run reaches
    scheduler = parts.scheduler(total)
    state = TrainState(plan=plan)
    if resume is not None:
        state = _restore(resume, model, optimizer, scheduler, world.is_main)
    deadline = None if cfg.time_limit is None else fit_started + cfg.time_limit - state.seconds
    past_deadline = world.agreed(lambda: deadline is not None and time.perf_counter() >= deadline, every=1)
    forward = world.wrap(model)  # DDP averages gradients; `model` stays unwrapped
    if cfg.compile or cfg.compile_mode != "default":  # reduce-overhead replays CUDA graphs: no launch per kernel
        forward = torch.compile(forward, mode=cfg.compile_mode)
    autocast = parts.autocast
    writer = _tensorboard(run_dir) if cfg.tensorboard and run_dir and world.is_main else None
    watch = NonFiniteWatch(world)

    def checkpoint(name: str) -> None:
        watch.check(model, state.step)  # never save non-finite weights: the last good checkpoint stays
        sums = None if state.sums is None else world.summed(state.sums)  # every rank comes here together
        if run_dir is not None and world.is_main:
            state.seconds = state.seconds_before + time.perf_counter() - fit_started
            payload = _checkpoint_payload(model, optimizer, scheduler, state, sums)
            save_atomic({**payload, **(checkpoint_extra or {})}, run_dir / name)

    stop = state.stopped_early is not None or state.step >= total
    state.seconds_before = state.seconds
    while state.epoch <= epochs and not stop:
        epoch, started = state.epoch, time.perf_counter()
        if cfg.freeze:
            set_trainable(model, head_only=epoch <= cfg.freeze)
        model.train()
        if state.sums is None:
            state.sums = torch.zeros(3, dtype=torch.float64)
        sums = state.sums = state.sums.to(device)
        bar = tqdm(
            total=len(train_batches), initial=state.batch, desc=f"epoch {epoch}/{epochs}",
            disable=not progress, leave=False, unit="batch", dynamic_ncols=True,
        )  # fmt: skip
        for x, y in train_batches.batches(epoch, start=state.batch):
            with autocast:
                output = forward(x)
                loss = loss_fn(output, y)
            optimizer.zero_grad(set_to_none=True)
            (loss if weights is None else loss * weights[state.batch]).backward()
            optimizer.step()
            watch.record(state.step + 1, scheduler.get_last_lr()[0], loss.detach())
            scheduler.step()
            state.batch += 1
            state.step += 1
            with torch.no_grad():
                batch_loss = loss.detach()
                sums[0] += batch_loss.double() * len(y)
                sums[1] += (predictions(output) == y).sum()
                sums[2] += len(y)
            if on_step is not None:
                on_step(state.step, batch_loss)
            bar.update(1)
            if state.step % SYNC_EVERY == 0 or state.batch == len(train_batches):
                watch.check()
                running_sums = world.summed(sums)
                running = float(running_sums[0] / running_sums[2])
                if not math.isfinite(running):
                    raise Diverged(
                        f"loss became {running} by step {state.step} (lr {scheduler.get_last_lr()[0]:.3g}); "
                        "try a smaller --lr"
                    )
                bar.set_postfix(loss=f"{running:.4f}")
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                checkpoint("last.pt")
            if should_stop is not None and should_stop():
                bar.close()
                checkpoint("last.pt")
                raise Interrupted(f"stopped at epoch {epoch}, step {state.step}")
            if state.step >= total:
                stop, state.stop_reason = True, _length_reason(cfg, plan, total)
                break
            if deadline is not None and past_deadline():  # the plan was too long: stop at this step, on time
                stop, state.stop_reason = True, "deadline"
                break
        bar.close()
        watch.check()
        val = world.evaluated(evaluate(model, val_batches, val_loss_fn))
        sums = world.summed(sums)
        train_loss, train_acc = float(sums[0] / sums[2]), float(sums[1] / sums[2])
        if not math.isfinite(train_loss) or not math.isfinite(val["loss"]):
            raise Diverged(f"loss became non-finite in epoch {epoch} (step {state.step}); try a smaller --lr")
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val["loss"],
            "val_acc": val["accuracy"],
            "seconds": time.perf_counter() - started,
            "lr": scheduler.get_last_lr()[0],
            "steps": state.step,
        }
        if cfg.loss == "ce":
            row["train_loss_bits"], row["val_loss_bits"] = train_loss / LN2, val["loss"] / LN2
        finished = state.batch == len(train_batches)
        if finished:
            state.history.append(row)
            state.epoch, state.batch, state.sums = epoch + 1, 0, None
        else:  # cut short by max_steps: report it, but resume from the middle of this epoch
            state.partial = row
        if progress:
            print(format_epoch(row, epochs), flush=True)
        if writer is not None:
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                writer.add_scalar(key, row[key], epoch)
        improved = row["val_acc"] > state.best_val_acc
        state.best_val_acc = max(state.best_val_acc, row["val_acc"])
        if cfg.early_stop and finished and patience_ran_out(state, row, cfg):
            state.stopped_early, stop, state.stop_reason = epoch, True, "early_stop"
            if progress:
                print(f"early stop: {cfg.monitor} has not improved for {cfg.early_stop} epoch(s)", flush=True)
        if improved:  # best.pt first: a crash between the two writes then redoes the epoch and both
            checkpoint("best.pt")
        checkpoint("last.pt")
        if on_epoch is not None:
            on_epoch(state)
    if writer is not None:
        writer.close()
    state.stop_reason = state.stop_reason or "epochs"
    state.seconds = state.seconds_before + time.perf_counter() - fit_started
    return state


def patience_ran_out(state: TrainState, row: dict[str, Any], cfg: TrainConfig) -> bool:
    """Early stopping: count the epochs in which ``cfg.monitor`` did not improve by more than
    ``cfg.min_delta`` on its best value (higher is better for val_acc, lower for val_loss); true
    once there are ``cfg.early_stop`` of them in a row."""
    value, best = row[cfg.monitor], state.best_monitored
    sign = 1.0 if cfg.monitor == "val_acc" else -1.0
    if best is None or sign * (value - best) > cfg.min_delta:
        state.best_monitored, state.bad_epochs = value, 0
    else:
        state.bad_epochs += 1
    return state.bad_epochs >= cfg.early_stop


class NonFiniteWatch:
    """Names the first optimiser step whose loss is not finite, without a host sync per step.

    Each step's loss stays on the device in a short window; :meth:`check` reads the window only
    where the loop syncs anyway (every :data:`SYNC_EVERY` steps, at the end of an epoch, before
    every checkpoint) and raises :class:`Diverged` naming that step and its learning rate.
    """

    def __init__(self, world: World | None = None) -> None:
        self.world = world or World(torch.device("cpu"))  # one process unless told otherwise
        self.window: list[tuple[int, float, torch.Tensor]] = []
        self.lr = float("nan")

    def record(self, step: int, lr: float, loss: torch.Tensor) -> None:
        self.window.append((step, lr, loss))
        self.lr = lr

    def check(self, model: nn.Module | None = None, step: int = 0) -> None:
        """Raise :class:`Diverged` if a loss of the window (or, given ``model``, a weight) is not finite."""
        window, self.window = self.window, []
        if window:
            losses = torch.stack([loss.float() for _, _, loss in window])
            bad = self.world.summed((~torch.isfinite(losses)).double())  # a step that failed on any process
            if bool(bad.any()):
                step, lr, loss = window[int(torch.nonzero(bad)[0])]
                raise Diverged(
                    f"loss became {float(loss)} at step {step} (lr {lr:.3g}); training stopped and no "
                    "checkpoint after that step was written; try a smaller --lr"
                )
        if model is not None:
            tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
            if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
                raise Diverged(
                    f"weights became non-finite by step {step} (lr {self.lr:.3g}); training stopped and the "
                    "last checkpoint was kept; try a smaller --lr"
                )


def format_epoch(row: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%  "
        f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%  {row['seconds']:.1f}s"
    )


def _checkpoint_payload(
    model: nn.Module, optimizer: Any, scheduler: Any, state: TrainState, sums: torch.Tensor | None
) -> dict[str, Any]:
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),  # augmentation needs none: it is a pure function of (seed, epoch, step)
        "plan": state.plan,
        "seconds": state.seconds,
        "epoch": state.epoch,
        "batch": state.batch,
        "step": state.step,
        "best_val_acc": state.best_val_acc,
        "early_stop": {"best": state.best_monitored, "bad_epochs": state.bad_epochs, "stopped": state.stopped_early},
        "history": state.history,
        "epoch_sums": None if sums is None else sums.cpu(),  # all processes' sums
    }


def _restore(ckpt: dict[str, Any], model: nn.Module, optimizer: Any, scheduler: Any, is_main: bool) -> TrainState:
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise UserError(
            f"cannot resume: the checkpoint's training state does not fit this run ({type(exc).__name__})"
        ) from None
    early = ckpt.get("early_stop") or {}
    return TrainState(
        epoch=ckpt["epoch"], batch=ckpt["batch"], step=ckpt["step"],
        best_val_acc=ckpt.get("best_val_acc", -1.0), history=list(ckpt.get("history", [])),
        best_monitored=early.get("best"), bad_epochs=early.get("bad_epochs", 0), stopped_early=early.get("stopped"),
        sums=ckpt.get("epoch_sums") if is_main else None,  # rank 0 carries the run's sums
        plan=ckpt.get("plan"), seconds=float(ckpt.get("seconds", 0.0)),
    )  # fmt: skip


def _tensorboard(run_dir: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter  # its package is checked before the run starts

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
