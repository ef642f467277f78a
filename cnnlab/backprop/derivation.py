"""The tutorial's worked example, in closed form.

For the last fully connected layer of the tutorial network under the quadratic loss,
the gradient can be written out by hand; :func:`closed_form_fc_grad` does exactly
that, with explicit Jacobian matrices and no backward pass, so the tests can check
that the engine (and autograd) agree with the derivation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["closed_form_fc_grad"]


def closed_form_fc_grad(h: Any, weight: Any, bias: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """∂E/∂W and ∂E/∂b of the final FC layer under the tutorial's MSE loss.

    Forward (per sample n, C classes, h_n the FC input, y_n the one-hot target)::

        z_n = W h_n + b                  logits
        ŷ_n = softmax(z_n)               (= exp(LogSoftmax(z_n)))
        E   = 1/(2N) Σ_n ‖ŷ_n − y_n‖²

    Chain rule::

        ∂E/∂ŷ_n = (1/N)(ŷ_n − y_n)
        J_n     = ∂ŷ_n/∂z_n = diag(ŷ_n) − ŷ_n ŷ_nᵀ          (softmax Jacobian, C×C)
        δ_n     = J_nᵀ (ŷ_n − y_n)                            (error signal at the logits)
        ∂E/∂W   = (1/N) Σ_n δ_n h_nᵀ                          (C × in, same layout as W)
        ∂E/∂b   = (1/N) Σ_n δ_n

    Parameters: ``h`` [N, in], ``weight`` [C, in], ``bias`` [C], ``target`` int [N].
    Returns ``(dW, db)`` in float64.
    """
    h = np.asarray(h, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    t = np.asarray(target)
    n, c = h.shape[0], w.shape[0]
    z = h @ w.T + b
    z = z - z.max(axis=1, keepdims=True)
    yhat = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.zeros((n, c))
    y[np.arange(n), t] = 1.0
    jac = np.einsum("ni,ij->nij", yhat, np.eye(c)) - np.einsum("ni,nj->nij", yhat, yhat)
    delta = np.einsum("nji,nj->ni", jac, yhat - y)  # δ_n = J_nᵀ (ŷ_n − y_n)
    dw = np.einsum("ni,nk->ik", delta, h) / n  # (1/N) Σ_n δ_n h_nᵀ
    db = delta.sum(axis=0) / n
    return dw, db
