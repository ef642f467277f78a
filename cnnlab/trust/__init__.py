"""Knowing what a model doesn't know: a calibrated temperature and the "none of these" rule.

Both are fitted once, at the end of training (:func:`fit_run`, on ``best.pt``'s weights: the
temperature and the rule's threshold on the validation split, the rule's neighbours on the training
split), and stored in ``best.pt`` under ``trust`` as plain numbers and tensors::

    {"temperature": T, "rule": {"scorer", "threshold", "keep", "k", "bank", "center", "scale", "mu", "precision"}}

A checkpoint without it (older runs, logistic regression) loads with T = 1 and no rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from cnnlab.trust.rule import DEFAULT_KEEP, UnknownRule, fit_rule

__all__ = ["DEFAULT_KEEP", "UnknownRule", "fit_rule", "fit_run", "from_checkpoint", "fit_trust"]


def fit_trust(
    model: nn.Module, train_batches: Any, val_batches: Any, keep: float = DEFAULT_KEEP
) -> dict[str, Any] | None:
    """Temperature and rule for ``model`` (``None`` for a single-logit model), as checkpoint state."""
    from cnnlab.trust.calibration import fit_temperature
    from cnnlab.trust.features import collect

    val = collect(model, val_batches.batches())
    if val["logits"].shape[1] < 2 or len(val["labels"]) == 0:
        return None
    temperature = fit_temperature(val["logits"], val["labels"])
    train = collect(model, train_batches.batches())
    rule = fit_rule(train["features"], train["labels"], val["logits"], val["features"], temperature, keep)
    return {"temperature": temperature, "rule": rule.state()}


def fit_run(
    checkpoint: Path, model: nn.Module, train_batches: Any, val_batches: Any, keep: float
) -> dict[str, Any] | None:
    """Fit the temperature and rule for ``model`` (holding ``checkpoint``'s weights) on its training and
    validation batches and store them in ``checkpoint`` (rewritten atomically)."""
    from cnnlab.checkpoint import load_checkpoint, save_atomic

    state = fit_trust(model, train_batches, val_batches, keep)
    if state is None:
        return None
    ckpt = load_checkpoint(checkpoint)
    save_atomic({**ckpt, "trust": state}, checkpoint)
    return state


def from_checkpoint(ckpt: dict[str, Any]) -> tuple[float, UnknownRule | None]:
    """(temperature, rule) stored in a loaded checkpoint; (1.0, None) for one without them."""
    state = ckpt.get("trust")
    if not state:
        return 1.0, None
    temperature = float(state["temperature"])
    rule = state.get("rule")
    return temperature, (UnknownRule.from_state(rule, temperature) if rule else None)
