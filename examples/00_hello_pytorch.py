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
# # 00 · Hello PyTorch
#
# Part A of the tutorial: before training anything, make sure the installation works. This notebook
# prints the versions of Python, PyTorch and torchvision, tells which device a training run would use
# (a CUDA GPU, Apple's MPS, or the CPU), and does a first small computation with tensors.
#
# Run it from the repository with the `cnnlab` kernel (`make demo` installs it), or as a plain script:
# `python examples/00_hello_pytorch.py`.

# %% [markdown]
# ## 1. Versions and device
#
# `cnnlab.hello()` collects everything in one dictionary; `cnnlab hello` on the command line prints the
# same thing. The *device* is where tensors live and where the arithmetic runs: `cuda` when PyTorch sees
# an NVIDIA GPU, `mps` on Apple silicon, otherwise `cpu` with the number of threads PyTorch will use.

# %%
import torch
import torchvision

import cnnlab

info = cnnlab.hello()
for key, value in info.items():
    print(f"{key:12} {value}")

# %% [markdown]
# The two libraries can also be asked directly. `torch.cuda.is_available()` is the question every
# training script asks before it moves a model to the GPU.

# %%
print("torch      ", torch.__version__)
print("torchvision", torchvision.__version__)
print("CUDA available:", torch.cuda.is_available())
print("MPS available: ", torch.backends.mps.is_available())
device = torch.device(info["device"])
print("device used:   ", device)

# %% [markdown]
# ## 2. A first tensor operation
#
# A tensor is an n-dimensional array that can live on the GPU and remember how it was computed.
# Here is a matrix product $C = A B$ of a $2 \times 3$ and a $3 \times 2$ matrix, computed on the
# device chosen above:
#
# $$C_{ij} = \sum_k A_{ik} B_{kj}$$

# %%
A = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], device=device)
B = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], device=device)
C = A @ B
print(C)
print("shape", tuple(C.shape), "dtype", C.dtype, "device", C.device)

# %% [markdown]
# ## 3. A first gradient
#
# What makes PyTorch a deep-learning library is *autograd*: it records the operations on tensors that
# have `requires_grad=True` and computes derivatives backwards through them. For
#
# $$f(x) = \sum_i x_i^2 \qquad\text{the gradient is}\qquad \frac{\partial f}{\partial x_i} = 2 x_i ,$$
#
# and `f.backward()` fills in `x.grad` with exactly that.

# %%
x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
f = (x**2).sum()
f.backward()
print("f(x)       =", f.item())
print("autograd   =", x.grad.tolist())
print("2x by hand =", (2 * x.detach()).tolist())
assert torch.equal(x.grad, 2 * x.detach())

# %% [markdown]
# Everything is in place. Next: [01 · The tutorial's CNN on MNIST](01_cnn_mnist.ipynb).
