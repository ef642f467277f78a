"""A training run, top to bottom: options → data → model → run directory → :func:`engine.fit` →
pictures → finished. :func:`train` is ``cnnlab train`` and ``cnnlab.train``.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab import runs
from cnnlab.assembly import checkpoint_header, eval_batches, initial_model, make_loss, training_data
from cnnlab.checkpoint import load_checkpoint, resume_point, stored_config
from cnnlab.config import RESUME_OVERRIDES, TrainConfig, validate
from cnnlab.data import Data
from cnnlab.data.registry import canonical_dataset, describe
from cnnlab.distributed import join
from cnnlab.engine import SYNC_EVERY, Interrupted, TrainState, evaluate, fit
from cnnlab.errors import UserError
from cnnlab.models import ensure_weights, weights_file
from cnnlab.recipes import Choice, describe_length, resolve, size_to_data
from cnnlab.text import safe_lines


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_val_acc: float
    model: nn.Module
    is_main: bool = True  # False on the other processes of a torchrun job (they print nothing)

    @property
    def val_acc(self) -> float:
        return self.history[-1]["val_acc"] if self.history else float("nan")


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> TrainResult:
    """Train a model and write its run directory; ``options`` override ``config`` field by field.

    ``resume=RUN_DIR`` continues that run from its ``last.pt`` with its stored options (only
    ``epochs``, ``device``, ``max_steps``, ``progress``, ... may be changed); a run killed before its
    first checkpoint starts over with the options in its ``config.json``. ``on_step(step, loss)``
    runs after every optimiser step, ``on_epoch(row)`` after every epoch with its metrics row (an
    exception it raises stops the run, which is then marked failed).
    """
    if resume is None:  # before any data is read or decoded (--lr auto reads it too)
        out = options.get("out", config.out if config is not None else None)
        if out:
            runs.refuse_existing_run(out, overwrite)
    (cfg, notes), run_dir, ckpt, choice = _options(config, resume, options)
    world = join(cfg.device)  # decided once: one process, or one of several under torchrun
    if ckpt is not None:  # keep the global batch if the number of processes changed
        cfg = cfg.replace(batch_size=world.per_process_batch(cfg.batch_size, ckpt.get("world_size", 1)))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.freeze and world.size > 1:
        raise UserError("--freeze works in one process for now; train without --nproc, or without --freeze")
    with world.main_first():  # rank 0 downloads and caches (data, pretrained weights), then the others read
        if cfg.pretrained and ckpt is None:
            ensure_weights(cfg.model, cfg.progress)  # before decoding any image: offline, say so at once
        data = training_data(cfg)
        if choice is not None:  # the recipe is decided once, here, before the run; a resumed run keeps it
            cfg = validate(size_to_data(cfg, choice, len(data.splits["train"])))
            notes = {**notes, "recipe": {"name": choice.name, "why": choice.why}}
        model = initial_model(cfg, data, pretrained=ckpt is None)  # a resumed run's weights come from its last.pt
    if cfg.pretrained:
        notes = {**notes, "pretrained_weights": weights_file(cfg.model).name}
    if run_dir is None:  # rank 0 names and makes the run directory; every process learns its path
        out = cfg.out or runs.default_run_dir(cfg.model, cfg.dataset)
        run_dir = world.run_on_main(lambda: runs.create_run_dir(out, overwrite))
        cfg = cfg.replace(out=str(run_dir))
    if world.is_main:
        runs.start_run(run_dir, cfg.to_dict(), classes=list(data.spec.classes), world_size=world.size, **notes)
        if cfg.progress:
            _announce(data, ckpt, notes.get("pretrained_weights"))
            if choice is not None:
                print(choice.line() + f"; {describe_length(cfg, _steps_per_epoch(cfg, data, world.size))}", flush=True)

    def epoch_done(state: TrainState) -> None:
        if world.is_main:
            runs.write_metrics(run_dir, state.rows())
        if on_epoch is not None:
            on_epoch(state.history[-1] if state.history else state.rows()[-1])

    stop_requested = _install_sigint()
    try:
        state = fit(
            model, data, cfg, world, run_dir=run_dir, on_step=on_step, resume=ckpt,
            checkpoint_extra=checkpoint_header(cfg, data, world.size), on_epoch=epoch_done,
            should_stop=world.agreed(stop_requested, every=SYNC_EVERY),
        )  # fmt: skip
    except BaseException as exc:
        if isinstance(exc, Interrupted):
            exc.run_dir = run_dir  # for the "resume with" hint
        if world.is_main:
            runs.fail_run(run_dir, exc)  # interrupted (resumable from its last checkpoint) or failed
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        world.close()
    if not world.is_main:  # rank 0 draws the pictures and finishes the run directory
        return TrainResult(run_dir, state.rows(), state.best_val_acc, model, is_main=False)
    try:  # Ctrl-C from here on (its flag, or a KeyboardInterrupt) still leaves a resumable run
        if stop_requested():
            raise KeyboardInterrupt
        return _finish_run(run_dir, state, model, data, cfg)
    except KeyboardInterrupt as exc:
        runs.fail_run(run_dir, exc)
        stopped = Interrupted("stopped after training, before the final pictures; the checkpoints are complete")
        stopped.run_dir = run_dir
        raise stopped from None


def _options(
    config: TrainConfig | None, resume: str | Path | None, options: dict[str, Any]
) -> tuple[tuple[TrainConfig, dict[str, Any]], Path | None, dict[str, Any] | None, Choice | None]:
    """The validated options of a new run (with what ``config.json`` records about them, e.g. the
    ``--lr auto`` range test, and the recipe it starts from), or of the run ``resume`` continues (with its
    directory and ``last.pt``, ``None`` when it stopped before its first checkpoint; no recipe choice)."""
    if resume is None:
        cfg, choice = resolve(config, options)
        auto_lr = cfg.lr == "auto"
        cfg = validate(cfg.replace(lr=TrainConfig().lr) if auto_lr else cfg)  # every other option first
        cfg = cfg.replace(dataset=canonical_dataset(cfg.dataset))  # a run can be evaluated from anywhere
        _check_optional_packages(cfg)
        return (_with_found_lr(cfg) if auto_lr else (cfg, {})), None, None, choice
    run_dir, ckpt = resume_point(resume)
    refused = sorted(set(options) - RESUME_OVERRIDES)
    if refused:
        raise UserError(f"a resumed run continues with its stored options; these cannot change: {', '.join(refused)}")
    raw = ckpt["config"] if ckpt is not None else runs.read_config(run_dir).get("config")
    if isinstance(raw, dict) and raw.get("engine") == "numpy":
        raise UserError(
            f"{run_dir} was trained by the NumPy engine (cnnlab backprop train), which cannot be resumed; "
            "train it again with cnnlab backprop train, or use its best.pt with eval, predict or export"
        )
    stored = stored_config(raw, run_dir)
    cfg = validate(stored.replace(**options))
    _check_optional_packages(cfg)
    if ckpt is None:
        print(f"note: {run_dir} stopped before its first checkpoint; starting it over", file=sys.stderr)
    else:
        _check_continuable(run_dir, ckpt, stored, cfg)
        if cfg.early_stop != stored.early_stop:  # a new patience: count afresh from here
            ckpt["early_stop"] = {**(ckpt.get("early_stop") or {}), "bad_epochs": 0, "stopped": None}
    return (cfg, {}), run_dir, ckpt, None


def _steps_per_epoch(cfg: TrainConfig, data: Data, world_size: int) -> int:
    return -(-len(data.splits["train"]) // (cfg.batch_size * world_size))


def _with_found_lr(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
    """``--lr auto``: the learning rate ``cnnlab lr-find`` suggests for this model, data and optimiser
    (the range test writes nothing; ``config.json`` keeps its suggestions under ``lr_find``)."""
    from cnnlab.tune.lr_find import lr_find, record

    found = record(lr_find(cfg))
    if cfg.progress:
        print(f"--lr auto: lr-find suggests {found['suggestion']:.3g} ({found['rule']})", flush=True)
    return cfg.replace(lr=float(found["suggestion"])), {"lr_find": found}


def _check_continuable(run_dir: Path, ckpt: dict[str, Any], stored: TrainConfig, cfg: TrainConfig) -> None:
    """Refuse, before anything is written, a resume that has nothing to train or that would bend the
    learning-rate schedule: one-cycle and cosine are shaped by the total number of steps, so their
    run cannot be lengthened (a constant or step schedule simply goes on)."""
    done_epochs = ckpt["epoch"] - 1 if ckpt["batch"] == 0 else ckpt["epoch"]
    stopped = (ckpt.get("early_stop") or {}).get("stopped")
    if stopped is not None and cfg.early_stop == stored.early_stop:
        raise UserError(
            f"{run_dir} stopped early after epoch {stopped} ({stored.monitor} no longer improved): nothing to "
            "train; pass another --early-stop (early_stop= in Python) to continue it"
        )
    plan = ckpt.get("plan")
    if plan is not None and ckpt["step"] >= plan["steps"]:
        raise UserError(
            f"{run_dir} has already taken the {plan['steps']} steps its --time-limit planned: nothing to train; "
            "start a new run to train longer"
        )
    if cfg.max_steps is not None and ckpt["step"] >= cfg.max_steps:
        raise UserError(
            f"{run_dir} has already taken its {cfg.max_steps} steps (--max-steps): nothing to train; "
            "pass a larger --max-steps (max_steps= in Python) to train further"
        )
    if ckpt["epoch"] > cfg.epochs:
        raise UserError(
            f"{run_dir} has already trained its {cfg.epochs} epochs: nothing to train; "
            f"pass a larger --epochs (epochs= in Python) than {done_epochs} to train further"
        )
    if cfg.schedule in ("onecycle", "cosine") and (cfg.epochs, cfg.max_steps) != (stored.epochs, stored.max_steps):
        raise UserError(
            f"{run_dir} uses --schedule {cfg.schedule}, whose learning-rate curve is fixed by the run's total "
            "length: its --epochs and --max-steps cannot change on resume; start a new run to train longer"
        )


def _check_optional_packages(cfg: TrainConfig) -> None:
    """Packages an option needs are checked before anything is written."""
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("--tensorboard needs the tensorboard package: pip install 'cnnlab[tensorboard]'")


def _announce(data: Data, ckpt: dict[str, Any] | None, weights: str | None = None) -> None:
    """One line on what the run trains on, where a resumed run continues, which weights it starts from."""
    print(safe_lines(describe(data)), flush=True)
    if weights and ckpt is None:
        print(f"starting from pretrained weights {weights}; the classifier head is new", flush=True)
    if ckpt is not None:
        print(f"resuming at epoch {ckpt['epoch']}, step {ckpt['step']}", flush=True)


def _finish_run(run_dir: Path, state: TrainState, model: nn.Module, data: Data, cfg: TrainConfig) -> TrainResult:
    """Write the final metrics, curves and confusion matrix (of ``best.pt``) and mark the run finished."""
    from cnnlab import plots, trust  # matplotlib and torchmetrics load only when pictures are drawn
    from cnnlab.metrics import confusion_matrix

    history = state.rows()
    runs.write_metrics(run_dir, history)
    plots.plot_curves(history, run_dir / "curves.png", title=f"{cfg.model} on {cfg.dataset}")
    best = load_checkpoint(run_dir / "best.pt")
    model.load_state_dict(best["model"])
    val = evaluate(model, eval_batches(data, "val", cfg, model), make_loss(cfg), keep_outputs=True)
    trust.fit_run(  # temperature and unknown rule, stored in best.pt
        run_dir / "best.pt",
        model,
        eval_batches(data, "train", cfg, model),
        eval_batches(data, "val", cfg, model),
        cfg.unknown_keep,
    )
    matrix = confusion_matrix(val["outputs"], val["labels"], data.spec.num_classes)
    plots.plot_confusion(
        matrix,
        list(data.spec.classes),
        run_dir / "confusion.png",
        title=f"validation accuracy {100 * val['accuracy']:.2f}%",
    )
    result = {
        "best_val_acc": state.best_val_acc,
        "final_val_acc": history[-1]["val_acc"],
        "epochs_done": len(state.history),
        "steps": state.step,
        "stopped_early": state.stopped_early,  # the epoch early stopping ended the run after, or null
        "stop_reason": state.stop_reason,  # epochs, max_steps, time_limit (its planned steps), deadline, early_stop
        "plan": state.plan,  # --time-limit: the planned steps and the measured speed they come from
        "train_seconds": state.seconds,
    }
    runs.finish_run(run_dir, result)
    return TrainResult(run_dir, history, state.best_val_acc, model)


def _install_sigint() -> Callable[[], bool]:
    """Ctrl-C sets a flag the training loop checks after each step (a second Ctrl-C aborts)."""
    requested = [False]

    def handler(signum: int, frame: Any) -> None:
        if requested[0]:
            raise KeyboardInterrupt
        requested[0] = True

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. inside a server): no handler
        pass
    return lambda: requested[0]
