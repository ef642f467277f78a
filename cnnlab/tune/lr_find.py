"""The learning-rate finder (Leslie Smith's range test, as fastai and Lightning run it).

Train the configured model from its fresh initialisation for at most ``steps`` batches while the
learning rate grows exponentially from ``start`` to ``end``: step i uses

    lr_i = start · (end / start) ^ (i / (steps − 1)).

The loss is smoothed with a bias-corrected exponential moving average (β = 0.98):

    m_i = β · m_(i−1) + (1 − β) · loss_i,    smoothed_i = m_i / (1 − β^i)

and the test stops early once ``smoothed_i`` exceeds :data:`EXPLODE_FACTOR` times its minimum (or a
loss is not finite). Two suggestions are read off the smoothed curve, leaving out its first tenth
and its last :data:`TRIM_END` points as fastai does: the steepest descent (the most negative
d smoothed / d log10 lr before the lowest point) and fastai's "valley" (the middle of the longest
valley), which is :data:`SUGGESTION`.

Nothing is written and no state is left behind: the model, optimiser and batches are built fresh,
and the global random generators and the torch thread count are restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.assembly import model_for, run_parts, training_data
from cnnlab.checkpoint import rng_state, set_rng_state
from cnnlab.config import MAX_FACTOR, TrainConfig, validate
from cnnlab.env import resolve_device
from cnnlab.errors import UserError

SMOOTHING = 0.98  # β of the moving average
EXPLODE_FACTOR = 4.0  # stop once the smoothed loss exceeds this many times its minimum
MIN_POINTS = 5  # fewer recorded steps than this cannot give a suggestion
TRIM_END = 5  # the last points, left out of the suggestions
SUGGESTION = "valley"  # which of the two rules `suggestion` (and `cnnlab train --lr auto`) uses


def lr_find(
    cfg: TrainConfig, start: float = 1e-7, end: float = 10.0, steps: int = 100, explode: float = EXPLODE_FACTOR
) -> dict[str, Any]:
    """Run the range test for ``cfg``'s model, data, loss and optimiser (its ``lr`` and schedule are ignored).

    Returns ``{"suggestion", "steepest", "valley", "lrs", "losses", "raw_losses", "start", "end",
    "steps", "stopped"}``: ``losses`` is the smoothed curve, ``stopped`` is ``"exploded"`` or ``"end"``.
    """
    _check_range(start, end, steps, explode)
    cfg = validate(cfg.replace(lr=start))
    with _global_state_kept(cfg.threads):
        lrs, raw, stopped = _range_test(cfg, start, end, steps, explode)
    smoothed = smooth(raw)
    if not all(math.isfinite(x) for x in raw):  # the step that blew up is reported, not kept
        lrs, raw, smoothed = lrs[:-1], raw[:-1], smoothed[:-1]
    if len(lrs) < MIN_POINTS:
        raise UserError(
            f"lr-find: the loss exploded after {len(lrs)} steps (lr {lrs[-1] if lrs else start:.3g}); lower --start"
        )
    kept_lrs, kept_losses = _trimmed(lrs), _trimmed(smoothed)
    rules = {"steepest": steepest(kept_lrs, kept_losses), "valley": valley(kept_lrs, kept_losses)}
    return {
        "suggestion": rules[SUGGESTION],
        **rules,
        "lrs": lrs,
        "losses": smoothed,
        "raw_losses": raw,
        "start": start,
        "end": end,
        "steps": len(lrs),
        "stopped": stopped,
    }


def suggest_lr(cfg: TrainConfig, **options: Any) -> float:
    """The learning rate :func:`lr_find` suggests for ``cfg`` (``options``: start, end, steps)."""
    return float(lr_find(cfg, **options)["suggestion"])


def record(result: dict[str, Any]) -> dict[str, Any]:
    """What a run's ``config.json`` keeps of an :func:`lr_find` result: the suggestions and the test's
    range, without the curve."""
    keys = ("suggestion", "steepest", "valley", "start", "end", "steps", "stopped")
    return {"rule": SUGGESTION, **{key: result[key] for key in keys}}


def _check_range(start: float, end: float, steps: int, explode: float) -> None:
    checks = [
        (0 < start < end, f"lr-find needs 0 < --start < --end (got {start:g} and {end:g})"),
        (end <= MAX_FACTOR, f"--end must be at most {MAX_FACTOR:g} (got {end:g})"),
        (MIN_POINTS <= steps <= 100_000, f"--steps must be {MIN_POINTS} to 100000 (got {steps})"),
        (explode > 1, f"the explosion factor must be > 1 (got {explode:g})"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def _range_test(
    cfg: TrainConfig, start: float, end: float, steps: int, explode: float
) -> tuple[list[float], list[float], str]:
    """Train with the growing rate; return the rates, the raw losses and why it stopped. The model,
    batches, optimiser, loss and autocast are those ``cnnlab train`` builds (:func:`run_parts`)."""
    data = training_data(cfg, ("train",))
    torch.manual_seed(cfg.seed)  # after loading, as `cnnlab train` seeds: the same initial weights
    parts = run_parts(cfg, data, model_for(cfg, data), resolve_device(cfg.device))
    model, optimizer, loss_fn, autocast = parts.model, parts.optimizer, parts.loss_fn, parts.autocast
    model.train()
    lrs: list[float] = []
    raw: list[float] = []
    smoothed = SmoothedLoss()
    for x, y in _endless(parts.train_batches):
        lr = start * (end / start) ** (len(lrs) / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast:
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lrs.append(lr)
        raw.append(float(loss.detach()))  # one sync per step: a short test, and the stop rule needs the value
        if smoothed.add(raw[-1]) > explode * smoothed.minimum or not math.isfinite(raw[-1]):
            return lrs, raw, "exploded"
        if len(lrs) == steps:
            return lrs, raw, "end"
    raise AssertionError("unreachable")  # pragma: no cover


def _endless(batches: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of epoch 1, 2, ... (each epoch in the order a training run would use)."""
    epoch = 1
    while True:
        yield from batches.batches(epoch)
        epoch += 1


@contextlib.contextmanager
def _global_state_kept(threads: int | None) -> Iterator[None]:
    """Restore every global random generator (and the torch thread count, if ``threads`` sets it)."""
    saved_rng, saved_threads = rng_state(), torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        set_rng_state(saved_rng)
        torch.set_num_threads(saved_threads)


class SmoothedLoss:
    """Bias-corrected exponential moving average: m_i = β m_(i−1) + (1−β) x_i, value_i = m_i / (1 − β^i)."""

    def __init__(self, beta: float = SMOOTHING) -> None:
        self.beta, self.m, self.count = beta, 0.0, 0
        self.minimum = math.inf

    def add(self, x: float) -> float:
        """Take the next raw loss; return the smoothed value (``minimum`` is the lowest so far)."""
        self.count += 1
        self.m = self.beta * self.m + (1 - self.beta) * x
        value = self.m / (1 - self.beta**self.count)
        self.minimum = min(self.minimum, value)
        return value


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """The :class:`SmoothedLoss` curve of ``losses``."""
    average = SmoothedLoss(beta)
    return [average.add(x) for x in losses]


def steepest(lrs: list[float], losses: list[float]) -> float:
    """The rate where the curve falls fastest on its way down to its lowest point: the argmin of
    d loss / d log10(lr) (central differences) over the points up to the minimum of ``losses``."""
    curve = np.asarray(losses, dtype=float)
    slopes = np.gradient(curve, np.log10(np.asarray(lrs, dtype=float)))
    lowest = int(np.argmin(curve))
    return float(lrs[int(np.argmin(slopes[: lowest + 1]))])


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's "valley" rule: the middle of the longest valley of the curve.

    The valley's size is the length of the longest strictly decreasing subsequence of ``losses``
    (dynamic programming: ``length[i] = 1 + max(length[j])`` over the earlier points j with a higher
    loss); the valley ends at that subsequence's last point and is as many points wide as the
    subsequence is long; the suggestion is its middle, ``length / 2`` points before its end."""
    n = len(losses)
    length = [1] * n
    for i in range(n):
        for j in range(i):
            if losses[j] > losses[i]:
                length[i] = max(length[i], length[j] + 1)
    end = max(range(n), key=lambda i: (length[i], -i))  # the earliest end among the longest
    return float(lrs[max(end - length[end] // 2, 0)])


def _trimmed(values: list[float]) -> list[float]:
    """``values`` without the first tenth (too little training to mean anything) and the last
    :data:`TRIM_END` points (the blow-up), as fastai reads its curve; all of them if too few would remain."""
    first, stop = len(values) // 10, len(values) - TRIM_END
    return values[first:stop] if stop - first >= MIN_POINTS else values


def plot_lr_find(result: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """The loss against the learning rate (log scale), raw and smoothed, with both suggestions marked."""
    from cnnlab import plots  # matplotlib loads only when a picture is drawn

    plt = plots.plt
    lrs, losses = result["lrs"], result["losses"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(lrs, result["raw_losses"], color="0.75", linewidth=1, label="loss per batch")
    ax.plot(lrs, losses, color="C0", linewidth=2, label="smoothed")
    for name, marker, color in (("steepest", "o", "C1"), ("valley", "s", "C2")):
        lr = result[name]
        ax.plot([lr], [losses[lrs.index(lr)]], marker, color=color, markersize=9, label=f"{name}: {lr:.2g}")
    ax.axvline(result["suggestion"], color="C2", linestyle="--", linewidth=1)
    low = min(min(losses), min(result["raw_losses"]))
    high = 1.6 * losses[0] - 0.6 * low  # the start of the curve two thirds of the way up
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss", ylim=(low - 0.05 * (high - low), high))
    ax.set_title(title or f"lr-find: suggestion {result['suggestion']:.2g}")
    ax.grid(alpha=0.3)
    ax.legend()
    return plots._save(fig, path)
