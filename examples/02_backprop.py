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
# # 02 · Backpropagation, derived and proven
#
# The tutorial derives how a network learns: a loss $E$ measures how wrong it is, the chain rule gives
# the gradient $\partial E / \partial w$ of every weight, and gradient descent moves each weight a small
# step against its gradient. This notebook writes the derivation down, then checks every formula with
# numbers: against PyTorch's autograd, against finite differences, and by training with a NumPy-only
# engine (`cnnlab.backprop`) that implements the backward pass of every layer by hand.

# %% [markdown]
# ## 0. Settings
#
# `CNNLAB_SMOKE=1` (used by the test suite) makes every computation tiny; leave it unset for the real
# thing. Pictures go to `runs/notebooks/` (or `CNNLAB_RUNS`).

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython import get_ipython
from IPython.display import Image, display

import cnnlab
from cnnlab.backprop import compare, make_loss
from cnnlab.backprop.convert import build_torch_model, from_torch
from cnnlab.backprop.data import load_arrays
from cnnlab.backprop.derivation import closed_form_fc_grad
from cnnlab.backprop.train import train_numpy
from cnnlab.losses import ce, logistic, mse, nats_to_bits
from cnnlab.models import build_model

SMOKE = os.environ.get("CNNLAB_SMOKE") == "1"
ROOT = Path(cnnlab.__file__).resolve().parents[1]  # the repository cnnlab is installed from (pip install -e .)
RUNS = Path(os.environ.get("CNNLAB_RUNS") or ROOT / "runs" / "notebooks")
OUT = RUNS / "02_backprop"
OUT.mkdir(parents=True, exist_ok=True)
torch.set_default_dtype(torch.float64)  # float64 everywhere: differences are rounding error, not noise


def show(path):
    print(os.path.relpath(path, ROOT))
    if get_ipython() is not None:  # in Jupyter the picture itself; as a plain script only its path
        display(Image(filename=str(path)))


print("smoke test" if SMOKE else "full size", "- pictures go to", os.path.relpath(OUT, ROOT))

# %% [markdown]
# A batch of real digits to work with: $N$ training images of `mnist5k` picked at random (with a fixed
# seed), normalised exactly as the trainer does, and the tutorial's network `seednet` with PyTorch's
# initial weights for seed 1.

# %%
N = 8 if SMOKE else 64
rng = np.random.default_rng(0)
arrays = load_arrays("mnist5k", splits=("train",))
pick = rng.choice(len(arrays.y["train"]), size=N, replace=False)
x_np, y_np = arrays.x["train"][pick].astype(np.float64), arrays.y["train"][pick]
x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
torch.manual_seed(1)
model = build_model("seednet", 1, 28, 10)
print("batch", tuple(x.shape), "labels", y[:16].tolist(), "...")

# %% [markdown]
# ## 1. The quadratic loss and gradient descent
#
# The tutorial starts from the mean squared error between the network's output $\hat y_d$ (here the
# ten class probabilities) and the one-hot target $y_d$ of each example $d$ of a batch of $N$:
#
# $$E = \frac{1}{2N} \sum_{d=1}^{N} \lVert \hat y_d - y_d \rVert^2
#     = \frac{1}{N} \sum_{d=1}^{N} E_d, \qquad E_d = \tfrac{1}{2} \lVert \hat y_d - y_d \rVert^2 .$$
#
# The $\tfrac12$ only makes the derivative tidy: $\partial E_d / \partial \hat y_d = \hat y_d - y_d$.
# Because differentiation is linear, the gradient of the batch loss is the average of the per-example
# gradients,
#
# $$\frac{\partial E}{\partial w} = \frac{1}{N} \sum_{d=1}^{N} \frac{\partial E_d}{\partial w},$$
#
# and gradient descent changes every weight against it, with the learning rate $\alpha$:
#
# $$\Delta w = -\alpha \frac{\partial E}{\partial w} .$$
#
# First check: the gradient of $E$ for the whole batch equals the mean of the $N$ gradients of the
# single-example losses $E_d$ (`cnnlab.losses.mse` with one example is exactly $E_d$). We look at the
# weights $W$ of the last, fully connected layer.

# %%
W = model[7].weight
E = mse(model(x), y)
(grad_batch,) = torch.autograd.grad(E, W)
E_d = [mse(model(x[d : d + 1]), y[d : d + 1]) for d in range(N)]  # one example at a time
grad_mean = torch.stack([torch.autograd.grad(e, W)[0] for e in E_d]).mean(dim=0)
print(f"E = {E.item():.6f}   mean of the {N} E_d = {torch.stack(E_d).mean().item():.6f}")
print(f"dE/dW has shape {tuple(grad_batch.shape)}; max |batch - mean of per-example| = "
      f"{(grad_batch - grad_mean).abs().max().item():.2e}")  # fmt: skip

# %% [markdown]
# ## 2. The last layer in closed form
#
# For the fully connected layer $z_d = W h_d + b$ (its input $h_d$ holds the 320 features of example $d$)
# followed by the softmax $\hat y_d = \operatorname{softmax}(z_d)$, the chain rule gives, step by step,
#
# $$\frac{\partial E}{\partial \hat y_d} = \frac{1}{N} (\hat y_d - y_d), \qquad
#   J_d = \frac{\partial \hat y_d}{\partial z_d} = \operatorname{diag}(\hat y_d) - \hat y_d \hat y_d^{\top},$$
#
# $$\delta_d = J_d^{\top} (\hat y_d - y_d), \qquad
#   \frac{\partial E}{\partial W} = \frac{1}{N} \sum_{d} \delta_d h_d^{\top}, \qquad
#   \frac{\partial E}{\partial b} = \frac{1}{N} \sum_{d} \delta_d .$$
#
# $\delta_d$ is the *error signal* at the logits. `closed_form_fc_grad` computes exactly these formulas
# with explicit Jacobian matrices and no backward pass; autograd must agree.

# %%
h = model[:7](x)  # everything before the Linear layer: the 320 features of each image
dW, db = closed_form_fc_grad(h.detach().numpy(), W.detach().numpy(), model[7].bias.detach().numpy(), y_np)
E = mse(model(x), y)
auto_W, auto_b = torch.autograd.grad(E, [W, model[7].bias])
print("h:", tuple(h.shape), " W:", tuple(W.shape))
print(f"max |closed form - autograd|  dE/dW: {np.abs(dW - auto_W.numpy()).max():.2e}   "
      f"dE/db: {np.abs(db - auto_b.numpy()).max():.2e}   (largest |dE/dW| entry: {np.abs(dW).max():.2e})")  # fmt: skip

# %% [markdown]
# ## 3. Cross-entropy, in bits and in nats
#
# The tutorial's classification loss is the cross-entropy between the target and the predicted
# distribution; with a one-hot target only the probability of the true class $y_n$ counts. Written with
# $\log_2$ it is measured in **bits**:
#
# $$H = -\frac{1}{N} \sum_{n=1}^{N} \log_2 p(y_n \mid x_n) \quad \text{bits}.$$
#
# PyTorch uses the natural logarithm, **nats**: $E = -\frac1N \sum_n \ln p(y_n \mid x_n)$. Since
# $\log_2 p = \ln p / \ln 2$, the two differ only by a constant factor, $H = E / \ln 2$, and they have the
# same minimum. Its gradient with respect to the logits $z_n$ (before the softmax) is strikingly simple:
#
# $$\frac{\partial E}{\partial z_n} = \frac{1}{N} \left( \operatorname{softmax}(z_n) - e_{y_n} \right).$$
#
# An untrained network guesses about uniformly over 10 classes: $\ln 10 = 2.303$ nats $= \log_2 10 = 3.322$
# bits.

# %%
z = model(x).detach().requires_grad_(True)  # seednet's log-probabilities serve as logits
E_nats = ce(z, y)
H_bits = -(torch.log2(torch.softmax(z, dim=1))[torch.arange(N), y]).mean()
(dz,) = torch.autograd.grad(E_nats, z)
formula = (torch.softmax(z, dim=1) - torch.nn.functional.one_hot(y, 10)) / N
print(
    f"cross-entropy: {E_nats.item():.6f} nats = {nats_to_bits(E_nats.item()):.6f} bits "
    f"(log2 directly: {H_bits.item():.6f});  ln 10 = {math.log(10):.4f}, log2 10 = {math.log2(10):.4f}"
)
print(f"max |autograd dE/dz - (softmax(z) - e_y)/N| = {(dz - formula).abs().max().item():.2e}")  # fmt: skip

# %% [markdown]
# ## 4. Logistic regression for two classes
#
# With only two classes (here the digits 3 and 8, labelled $t = 0$ and $t = 1$) the network needs a
# single output $z$, the *logit*, and the sigmoid turns it into the probability of class 1:
#
# $$\sigma(z) = \frac{1}{1 + e^{-z}}, \qquad \sigma'(z) = \sigma(z)\,(1 - \sigma(z)).$$
#
# The loss is the binary cross-entropy
#
# $$E = -\frac{1}{N} \sum_{n} \left[ t_n \ln \sigma(z_n) + (1 - t_n) \ln (1 - \sigma(z_n)) \right],$$
#
# and with $\sigma'$ the derivative collapses to the same shape as the multi-class one:
#
# $$\frac{\partial E}{\partial z_n}
#   = -\frac{1}{N} \left[ \frac{t_n}{\sigma} - \frac{1 - t_n}{1 - \sigma} \right] \sigma (1 - \sigma)
#   = \frac{1}{N} \left( \sigma(z_n) - t_n \right).$$

# %%
pair = load_arrays("mnist5k", splits=("train",), classes=["3", "8"])
pick = rng.choice(len(pair.y["train"]), size=N, replace=False)
x38, t38 = torch.from_numpy(pair.x["train"][pick].astype(np.float64)), torch.from_numpy(pair.y["train"][pick])
torch.manual_seed(1)
binary = build_torch_model("seednet", 1, 28, 1).double()  # one logit, no LogSoftmax
z = binary(x38).detach().requires_grad_(True)
E = logistic(z, t38)
(dz,) = torch.autograd.grad(E, z)
formula = (torch.sigmoid(z[:, 0]) - t38) / N
print(f"classes {pair.spec.classes} -> t = 0, 1; first targets {t38[:8].tolist()}")
print(f"E = {E.item():.6f}; max |autograd dE/dz - (sigma(z) - t)/N| = {(dz[:, 0] - formula).abs().max().item():.2e}")
for n in range(4):
    print(f"  n={n}: z={z[n, 0].item():+.4f}  sigma={torch.sigmoid(z[n, 0]).item():.4f}  t={int(t38[n])}  "
          f"N*dE/dz={N * dz[n, 0].item():+.4f}")  # fmt: skip

# %% [markdown]
# ## 5. The proof for the whole network
#
# `cnnlab.backprop` implements every layer of `seednet` in NumPy: each `forward` next to its `backward`.
# `compare.check` builds the network twice with identical float64 weights, pushes one batch of real
# digits through both, and compares every gradient: $\partial E / \partial \theta$ for every parameter
# and $\partial E / \partial x$ at the input of every layer, as the relative error
# $\lVert a - b \rVert / \max(\lVert a \rVert, \lVert b \rVert)$. It then checks the NumPy gradients once
# more against central finite differences $\frac{E(w + \varepsilon) - E(w - \varepsilon)}{2\varepsilon}$
# on sampled coordinates. First the four losses in one line each:

# %%
BATCH, FD = (4, 1) if SMOKE else (32, 6)
checks = {}
for name in ("nll", "ce", "mse", "logistic"):
    checks[name] = compare.check("seednet", name, batch_size=BATCH, fd_samples=FD)
    r = checks[name]
    print(f"{name:9} classes {','.join(r['classes']):20} E = {r['loss_numpy']:.6f}   max rel error vs autograd "
          f"{r['max_rel_error']:.1e}   finite differences {'ok' if r['fd_passed'] else 'FAILED'}")  # fmt: skip
assert all(r["passed"] for r in checks.values())

# %% [markdown]
# and the full table for the tutorial's quadratic loss, layer by layer (the errors are at the level of
# float64 rounding, about $10^{-16}$):

# %%
print(compare.format_table(checks["mse"]))

# %% [markdown]
# ## 6. Gradient descent by hand
#
# Now the update rule $\Delta w = -\alpha\, \partial E / \partial w$, written out in NumPy: forward pass,
# loss, backward pass through every layer, and then each weight array moved against its gradient.
# The same steps with PyTorch (`torch.optim.SGD` without momentum, from the same initial weights) must
# give the same losses. We repeat the steps on one batch, so with a small enough learning rate the loss
# must fall every time. (Try $\alpha = 0.1$: after a few steps a step overshoots and the loss jumps up.)

# %%
STEPS, ALPHA = (3, 0.03) if SMOKE else (20, 0.03)
torch.manual_seed(1)
reference = build_model("seednet", 1, 28, 10)
net = from_torch(reference, np.float64)  # the NumPy copy, same weights
loss = make_loss("nll")
numpy_losses = []
for _ in range(STEPS):
    E = loss.forward(net.forward(x_np), y_np)
    net.zero_grad()
    net.backward(loss.backward())
    for layer in net:
        for key in layer.params:
            layer.params[key] -= ALPHA * layer.grads[key]  # Δw = −α ∂E/∂w
    numpy_losses.append(E)

optimizer = torch.optim.SGD(reference.parameters(), lr=ALPHA, momentum=0.0)
torch_losses = []
for _ in range(STEPS):
    E = torch.nn.functional.nll_loss(reference(x), y)
    optimizer.zero_grad()
    E.backward()
    optimizer.step()
    torch_losses.append(E.item())

print("step   E (NumPy, by hand)   E (PyTorch)     difference")
for step, (a, b) in enumerate(zip(numpy_losses, torch_losses)):
    print(f"{step:4d}   {a:18.12f}   {b:14.12f}   {abs(a - b):.1e}")
assert all(later < earlier for earlier, later in zip(numpy_losses, numpy_losses[1:]))

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(range(STEPS), numpy_losses, "o-", label="NumPy, by hand")
ax.plot(range(STEPS), torch_losses, "x--", label="PyTorch SGD")
ax.set(xlabel="gradient-descent step", ylabel="loss E (nats)", title=f"{N} digits, learning rate {ALPHA}")
ax.xaxis.get_major_locator().set_params(integer=True)
ax.grid(alpha=0.3)
ax.legend()
fig.savefig(OUT / "descent.png", dpi=110, bbox_inches="tight")
plt.close(fig)
show(OUT / "descent.png")

# %% [markdown]
# ## 7. Training on all the digits without PyTorch
#
# `train_numpy` runs the tutorial's recipe (minibatches of 64, SGD with learning rate 0.01 and momentum
# 0.5, the same initial weights and the same batch order as `cnnlab.train`) with the NumPy engine alone.
# Both engines should trace the same learning curve; they differ only by float32 rounding, which grows
# slowly over thousands of steps.

# %%
EPOCHS = 1 if SMOKE else 3
STOP = 5 if SMOKE else None
torch.set_default_dtype(torch.float32)  # back to PyTorch's default for training
numpy_history = train_numpy(epochs=EPOCHS, max_steps=STOP, progress=False)
torch_run = cnnlab.train(out=str(OUT / "torch-run"), overwrite=True, epochs=EPOCHS, max_steps=STOP, progress=False)
print("epoch   NumPy: train loss  val acc    PyTorch: train loss  val acc")
for a, b in zip(numpy_history, torch_run.history):
    print(f"{a['epoch']:5d}   {a['train_loss']:17.4f}  {100 * a['val_acc']:6.2f}%   "
          f"{b['train_loss']:19.4f}  {100 * b['val_acc']:6.2f}%")  # fmt: skip

# %% [markdown]
# Next: [03 · Choosing a loss](03_losses.ipynb).
