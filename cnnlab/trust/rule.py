"""The "none of these" rule: a known-score (higher = more like the training data) and a threshold that
keeps a stated share of the validation split; below it an input is *unknown*.

The score was picked by measurement (``benchmarks/trust.py``, README "Knowing what it doesn't know"):
among energy, Mahalanobis, kNN on the penultimate features and the top softmax probability, alone and
combined, the mean of three z-scores did best on near unknowns (other digits) and far ones (photo crops)
for both recipes::

    known_score = (z_knn + z_mahalanobis + z_msp) / 3,   z_s = (s − mean_val(s)) / std_val(s)

- ``knn``: −distance of the L2-normalised features to their k-th nearest training feature (k = 5;
  pytorch-ood's :class:`~pytorch_ood.detector.KNN`);
- ``mahalanobis``: −min over classes of the Mahalanobis distance to the class mean, shared covariance
  (pytorch-ood's :class:`~pytorch_ood.detector.Mahalanobis`);
- ``msp``: log(p / (1 − p)) of the calibrated top probability p = max softmax(z / T).

The threshold is the (1 − keep) quantile of the validation scores. Everything is stored as plain
tensors and numbers (:meth:`UnknownRule.state`), so a checkpoint stays loadable with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

SCORER = "knn+mahalanobis+msp"
K = 5
MAX_BANK = 20_000  # training features kept for kNN (a seeded random subset beyond)
DEFAULT_KEEP = 0.95


@dataclass
class UnknownRule:
    """A fitted rule: ``known_score(logits, features)`` and ``threshold``."""

    threshold: float
    keep: float
    temperature: float
    bank: torch.Tensor  # [N, D] training features (kNN neighbours)
    mu: torch.Tensor | None  # [C, D] class means (Mahalanobis), None when a class had no training image
    precision: torch.Tensor | None  # [D, D]
    center: torch.Tensor  # [3] validation mean of each part
    scale: torch.Tensor  # [3] validation std of each part
    k: int = K
    _knn: Any = field(default=None, repr=False)
    _maha: Any = field(default=None, repr=False)

    def parts(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The three raw scores [N, 3]: kNN, Mahalanobis, MSP (each higher = more known)."""
        logits, features = logits.float(), features.float()
        knn = -self._knn_detector().predict_features(features).float()
        maha = -self._maha_detector().predict_features(features).float() if self.mu is not None else knn * 0
        p = torch.softmax(logits / self.temperature, dim=1).max(dim=1).values.double().clamp(1e-12, 1 - 1e-12)
        msp = (p.log() - (-p).log1p()).float()
        return torch.stack([knn.cpu(), maha.cpu(), msp.cpu()], dim=1)

    def known_score(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Mean z-score of the parts (the Mahalanobis part is left out when it could not be fitted)."""
        z = (self.parts(logits, features) - self.center) / self.scale
        if self.mu is None:
            z = z[:, [0, 2]]
        return z.mean(dim=1)

    def unknown(self, score: torch.Tensor) -> torch.Tensor:
        return score < self.threshold

    def state(self) -> dict[str, Any]:
        """Plain tensors and numbers for the checkpoint."""
        return {
            "scorer": SCORER, "threshold": self.threshold, "keep": self.keep, "k": self.k,
            "bank": self.bank, "center": self.center, "scale": self.scale,
            **({"mu": self.mu, "precision": self.precision} if self.mu is not None else {}),
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any], temperature: float) -> UnknownRule:
        return cls(
            float(state["threshold"]), float(state["keep"]), temperature, state["bank"],
            state.get("mu"), state.get("precision"), state["center"], state["scale"], int(state["k"]),
        )  # fmt: skip

    def _knn_detector(self) -> Any:
        if self._knn is None:
            from pytorch_ood.detector import KNN

            self._knn = KNN(None, k=min(self.k, len(self.bank)))
            self._knn.fit_features(self.bank.float(), torch.zeros(len(self.bank), dtype=torch.long))
        return self._knn

    def _maha_detector(self) -> Any:
        if self._maha is None:
            from pytorch_ood.detector import Mahalanobis

            self._maha = Mahalanobis(None)
            self._maha.mu, self._maha.precision = self.mu.float(), self.precision.float()
        return self._maha


def fit_rule(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_logits: torch.Tensor,
    val_features: torch.Tensor,
    temperature: float,
    keep: float = DEFAULT_KEEP,
    seed: int = 0,
) -> UnknownRule:
    """Fit the parts on the training features, normalise them and set the threshold on validation."""
    from pytorch_ood.detector import Mahalanobis

    bank = train_features.float()
    if len(bank) > MAX_BANK:
        bank = bank[torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed))[:MAX_BANK]]
    num_classes = val_logits.shape[1]
    mu = precision = None
    if set(train_labels.tolist()) == set(range(num_classes)):
        maha = Mahalanobis(None).fit_features(train_features.float(), train_labels.long())
        mu, precision = maha.mu.cpu(), maha.precision.cpu()
    ones = torch.ones(3)
    rule = UnknownRule(0.0, keep, temperature, bank, mu, precision, ones * 0, ones, min(K, len(bank)))
    parts = rule.parts(val_logits, val_features)
    rule.center = parts.mean(dim=0)
    rule.scale = parts.std(dim=0).nan_to_num(1.0).clamp(min=1e-6) if len(parts) > 1 else ones
    scores = rule.known_score(val_logits, val_features)
    rule.threshold = float(torch.quantile(scores.double(), 1 - keep)) if keep < 1 else float(scores.min()) - 1e-6
    return rule
