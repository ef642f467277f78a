# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (cnnlab)
#     language: python
#     name: cnnlab
# ---

# %% [markdown]
# # 03 · Choosing a loss: squared error, cross-entropy, logistic regression
#
# The tutorial introduces three ways to score a classifier: the mean squared error between predicted
# probabilities and one-hot targets, the cross-entropy, and (for two classes) logistic regression. Here
# the same network learns the same task with each of them, and then we look at the reason for what we
# see: the gradient each loss sends back when the network is confidently wrong.

# %% [markdown]
# ## 0. Settings
#
# `CNNLAB_SMOKE=1` (used by the test suite) shrinks every run to a few steps; leave it unset for the
# real thing. Runs go to `runs/notebooks/03_losses/` (or under `CNNLAB_RUNS`).

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython import get_ipython
from IPython.display import Image, display

import cnnlab
from cnnlab.losses import LOSSES

SMOKE = os.environ.get("CNNLAB_SMOKE") == "1"
ROOT = Path(cnnlab.__file__).resolve().parents[1]  # the repository cnnlab is installed from (pip install -e .)
RUNS = Path(os.environ.get("CNNLAB_RUNS") or ROOT / "runs" / "notebooks")
OUT = RUNS / "03_losses"
OUT.mkdir(parents=True, exist_ok=True)
EPOCHS = 1 if SMOKE else 9
STOP = 5 if SMOKE else None


def show(path):
    print(os.path.relpath(path, ROOT))
    if get_ipython() is not None:  # in Jupyter the picture itself; as a plain script only its path
        display(Image(filename=str(path)))


print("smoke test" if SMOKE else "full size", "- runs go to", os.path.relpath(OUT, ROOT))

# %% [markdown]
# ## 1. The three losses
#
# For an image $x_n$ with true class $y_n$ and the network's class probabilities
# $\hat y_n = \operatorname{softmax}(z_n)$ (with one-hot target $e_{y_n}$):
#
# | `loss=` | formula | output layer |
# | --- | --- | --- |
# | `mse` | $E = \frac{1}{2N} \sum_n \lVert \hat y_n - e_{y_n} \rVert^2$ | softmax over the classes |
# | `ce` | $E = -\frac{1}{N} \sum_n \ln \hat y_{n, y_n}$ (nats; divide by $\ln 2$ for bits) | softmax over the classes |
# | `logistic` | $E = -\frac{1}{N} \sum_n \left[ t_n \ln \sigma(z_n) + (1 - t_n) \ln (1 - \sigma(z_n)) \right]$ | one logit $z_n$, $\sigma(z) = 1 / (1 + e^{-z})$ |
#
# Logistic regression needs exactly two classes, so for a fair comparison all three learn the same
# two-class task: tell the digit **3** from the digit **8** (800 training and 200 validation images of
# `mnist5k`). Same network (`seednet`), same initial weights, same batches, same optimiser (the
# tutorial's SGD, learning rate 0.01, momentum 0.5), only the loss differs.

# %%
runs = {}
for loss in ("ce", "mse", "logistic"):
    print(f"--- loss = {loss}")
    runs[loss] = cnnlab.train(
        classes=["3", "8"], loss=loss, epochs=EPOCHS, max_steps=STOP,
        out=str(OUT / f"3v8-{loss}"), overwrite=True,
    )  # fmt: skip

# %% [markdown]
# ## 2. Learning curves side by side
#
# The loss values themselves are not comparable (different formulas, different units), so the left
# panel shows each loss relative to its value after the first epoch; the right panel shows what
# matters, the validation accuracy.

# %%
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.8))
for loss, result in runs.items():
    epochs = [row["epoch"] for row in result.history]
    first = result.history[0]["train_loss"]
    ax_loss.plot(epochs, [row["train_loss"] / first for row in result.history], "o-", label=loss)
    ax_acc.plot(epochs, [100 * row["val_acc"] for row in result.history], "s-", label=loss)
ax_loss.set(xlabel="epoch", ylabel="training loss / loss of epoch 1", title="training loss (relative)")
ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy, 3 vs 8")
for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
    ax.legend()
fig.savefig(OUT / "3v8-curves.png", dpi=110, bbox_inches="tight")
plt.close(fig)
show(OUT / "3v8-curves.png")

print("loss       val accuracy per epoch")
for loss, result in runs.items():
    print(f"{loss:9}  " + "  ".join(f"{100 * row['val_acc']:5.1f}%" for row in result.history))

# %% [markdown]
# On this easy two-class task the three losses end up close together, and cross-entropy leads from the
# first epoch. Logistic regression *is* the two-class cross-entropy written with one logit: the softmax of
# $(z_0, z_1)$ is $(1 - \sigma(d), \sigma(d))$ with $d = z_1 - z_0$. But with two outputs each logit
# receives the gradient $\pm(\hat y_1 - t)$, so one update of the last layer moves the decision value $d$
# twice as far as it moves the single logit of logistic regression (for that layer, like a doubled
# learning rate); the two networks also start from different random weights.
#
# ## 3. Why: the gradient of a confident wrong answer
#
# Learning is driven by $\partial E / \partial z$, the gradient at the logits: backpropagation
# multiplies it into every weight's gradient. Take a single image of class 0 that the network
# confidently calls class 1, with probability $p$ for the wrong class. By the chain rule:
#
# * **cross-entropy**: $\dfrac{\partial E}{\partial z} = \hat y - e_y$, so the component for the true
#   class is $-(1 - \hat y_0) = -p$: the more wrong, the *stronger* the push.
# * **squared error**: $\dfrac{\partial E}{\partial z} = J^{\top} (\hat y - e_y)$ with the softmax
#   Jacobian $J = \operatorname{diag}(\hat y) - \hat y \hat y^{\top}$. For two classes
#   $\hat y = (1 - p, p)$, $J = p (1 - p) \begin{pmatrix} 1 & -1 \\ -1 & 1 \end{pmatrix}$ and
#   $\hat y - e_y = (-p, p)$, so $\dfrac{\partial E}{\partial z} = 2 p^2 (1 - p)\,(-1, 1)$, which goes
#   to **zero** as $p \to 1$: the softmax is saturated and the error signal vanishes.
# * **logistic regression**: $\dfrac{\partial E}{\partial z} = \sigma(z) - t = p$, like cross-entropy.
#
# Here autograd computes them for $p$ from 0.5 to 0.9999 (cnnlab's `ce` and `mse` take the network's
# log-probabilities, `logistic` its single logit):


# %%
def logit_gradient(loss, p_wrong):
    """|dE/dz| for one example of class 0 given probability p_wrong for the wrong class."""
    target = torch.tensor([0])
    if loss == "logistic":  # one logit: sigma(z) = P(class 1) = p_wrong
        z = torch.tensor([[math.log(p_wrong / (1 - p_wrong))]], dtype=torch.float64, requires_grad=True)
        output = z
    else:  # two logits whose softmax is [1 - p_wrong, p_wrong]
        z = torch.tensor([[0.0, math.log(p_wrong / (1 - p_wrong))]], dtype=torch.float64, requires_grad=True)
        output = torch.log_softmax(z, dim=1)
    (grad,) = torch.autograd.grad(LOSSES[loss](output, target), z)
    return grad.norm().item()


confidences = [0.5, 0.7, 0.9, 0.99, 0.999, 0.9999]
print("p(wrong)     |dE/dz| ce    |dE/dz| mse   |dE/dz| logistic")
for p in confidences:
    print(f"{p:<10}   {logit_gradient('ce', p):11.6f}   {logit_gradient('mse', p):11.6f}   "
          f"{logit_gradient('logistic', p):11.6f}")  # fmt: skip

# %% [markdown]
# In numbers: the norm of the cross-entropy gradient is $\sqrt{2}\,p$, growing towards $1.41$; the norm
# of the squared-error gradient is $2\sqrt{2}\,p^2 (1 - p)$, largest for a mildly wrong answer
# ($p = 2/3$) and then collapsing, about 5,000 times weaker than cross-entropy at $p = 0.9999$. A network
# trained with squared error barely corrects its most confident mistakes.

# %%
gaps = [0.5 * 10 ** (-k / 20) for k in range(75)]  # 1 - p from 0.5 down to 0.0001
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for loss, style in (("ce", "-"), ("mse", "--"), ("logistic", ":")):
    ax.plot(gaps, [logit_gradient(loss, 1 - gap) for gap in gaps], style, label=loss, linewidth=2)
ax.set_xscale("log")
ax.set_yscale("log")
ax.invert_xaxis()
ax.set(xlabel="1 - p(wrong class)   (more confidently wrong to the right)", ylabel="|dE/dz|",
       title="gradient at the logits for a wrong answer")  # fmt: skip
ax.grid(alpha=0.3, which="both")
ax.legend()
fig.savefig(OUT / "gradient.png", dpi=110, bbox_inches="tight")
plt.close(fig)
show(OUT / "gradient.png")

# %% [markdown]
# ## 4. All ten digits
#
# With ten classes the effect is stronger: at the start every class has probability about $0.1$, so the
# squared error's gradients are small from the first step. The tutorial's loss `nll` on the network's
# log-probabilities is the cross-entropy.

# %%
ten = {}
for loss in ("nll", "mse"):
    print(f"--- loss = {loss}")
    ten[loss] = cnnlab.train(loss=loss, epochs=EPOCHS, max_steps=STOP, out=str(OUT / f"10-{loss}"), overwrite=True)

fig, ax = plt.subplots(figsize=(6, 3.8))
for loss, result in ten.items():
    ax.plot([r["epoch"] for r in result.history], [100 * r["val_acc"] for r in result.history], "o-", label=loss)
ax.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy, 10 digits")
ax.grid(alpha=0.3)
ax.legend()
fig.savefig(OUT / "10-curves.png", dpi=110, bbox_inches="tight")
plt.close(fig)
show(OUT / "10-curves.png")
for loss, result in ten.items():
    print(f"{loss:4}: best validation accuracy {100 * result.best_val_acc:.2f}%")

# %% [markdown]
# Squared error is not wrong, only slow with a softmax output: it needs a larger learning rate or many
# more epochs. Cross-entropy (and its two-class form, logistic regression) is the standard choice for
# classification because its gradient is largest exactly where the network is most wrong.
#
# Next: [04 · Your own images](04_your_own_images.ipynb).
