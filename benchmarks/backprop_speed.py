"""Forward + backward time per batch of seednet: the NumPy engine vs PyTorch on the CPU.

    python benchmarks/backprop_speed.py [--batch-size 64] [--repeats 60] [--threads N]

Both sides run the same float32 weights on the same batch of real mnist5k digits and do what
one training step needs before the update: forward, NLL loss, backward to every parameter
(the NumPy side skips ∂E/∂input of the first layer, as torch does for an input without
requires_grad). The median over ``--repeats`` timed runs is reported, after warm-up, for
PyTorch with its default threads and with one thread (NumPy runs BLAS on one thread, the
engine's default).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.backprop.convert import build_torch_model, from_torch
from cnnlab.backprop.data import load_arrays
from cnnlab.backprop.losses import NLLLoss
from cnnlab.backprop.threads import blas_threads


def median_ms(step: Callable[[], None], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_arrays("mnist5k", splits=("train",))
    x = data.x["train"][: args.batch_size]
    y = data.y["train"][: args.batch_size]

    torch.manual_seed(1)
    model = build_torch_model("seednet", 1, 28, 10)
    net = from_torch(model, np.float32)
    loss = NLLLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def numpy_step() -> None:
        out = net.forward(x)
        loss.forward(out, y)
        net.zero_grad()
        net.backward(loss.backward(), input_grad=False)

    def torch_step() -> None:
        model.zero_grad(set_to_none=True)
        F.nll_loss(model(xt), yt).backward()

    # the same numbers first: one step each, then compare a gradient
    numpy_step()
    torch_step()
    diff = np.abs(net[0].grads["weight"] - model[0].weight.grad.numpy()).max()

    with blas_threads(1):  # the engine's default (see cnnlab.backprop.threads)
        t_np = median_ms(numpy_step, args.repeats)
    t_torch = median_ms(torch_step, args.repeats)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t_torch1 = median_ms(torch_step, args.repeats)
    torch.set_num_threads(threads)
    print(f"seednet forward+backward, batch {args.batch_size}, float32, CPU, median of {args.repeats}")
    print(f"  NumPy engine (1 BLAS thread):  {t_np:8.2f} ms/batch")
    print(
        f"  PyTorch ({threads} threads):          {t_torch:8.2f} ms/batch   ratio NumPy/PyTorch {t_np / t_torch:.2f}x"
    )
    print(f"  PyTorch (1 thread):            {t_torch1:8.2f} ms/batch   ratio NumPy/PyTorch {t_np / t_torch1:.2f}x")
    print(f"  (same weights and batch: max |Δ ∂E/∂conv1.weight| = {diff:.1e})")


if __name__ == "__main__":
    main()
