"""Calibrated confidence: one temperature T fitted on the validation split (temperature scaling,
Guo et al. 2017), so that
p = softmax(z / T) is right as often as it claims; measured by the expected calibration error
(torchmetrics' :class:`~torchmetrics.classification.MulticlassCalibrationError`, 15 equal-width bins):
ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

ECE_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimising the validation negative log-likelihood of softmax(logits / T): L-BFGS with
    a strong-Wolfe line search on log T; 1.0 when there is nothing to fit or the fit does not lower the
    NLL. (pytorch-ood's TemperatureScaling stops after 50 steps of size 0.01 and misses the optimum.)"""
    if len(labels) == 0 or logits.shape[1] < 2:
        return 1.0
    logits, labels = logits.float(), labels.long()
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or t <= 0 or nll(logits, labels, t) > nll(logits, labels, 1.0):
        return 1.0
    return t


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean −log softmax(z / T)[y]."""
    return float(torch.nn.functional.cross_entropy(logits / temperature, labels))


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """torchmetrics' multiclass ECE (L1, 15 equal-width confidence bins)."""
    from torchmetrics.classification import MulticlassCalibrationError

    metric = MulticlassCalibrationError(num_classes=probs.shape[1], n_bins=ECE_BINS, norm="l1")
    return float(metric(probs.float(), labels.long()))


def reliability_diagram(
    before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor, temperature: float, path: Path
) -> Path:
    """Accuracy against confidence per bin, before and after temperature scaling, with the diagonal
    a perfectly calibrated model follows; written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnlab.atomic import write_atomic

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    edges = torch.linspace(0, 1, ECE_BINS + 1)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    for probs, name in ((before, "T = 1"), (after, f"T = {temperature:.2f}")):
        confidence, predicted = probs.max(dim=1)
        correct = (predicted == labels).float()
        index = torch.bucketize(confidence, edges[1:-1])
        xs, ys = [], []
        for b in range(ECE_BINS):
            mask = index == b
            if mask.any():
                xs.append(float(confidence[mask].mean()))
                ys.append(float(correct[mask].mean()))
        ece = expected_calibration_error(probs, labels)
        ax.plot(xs, ys, "o-", label=f"{name}: ECE {100 * ece:.2f}%")
    ax.set(xlabel="confidence (top probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("reliability diagram")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path
