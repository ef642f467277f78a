"""Milliseconds per training step of cnnlab's trainer under different CPU settings, A/B interleaved.

    python benchmarks/engine_variants.py [--model seednet] [--batch-size 64] [--steps 200] [--rounds 5]
                                         [--variants plain,cl,cl+foreach,cl+t1,cl+compile]

Each variant trains ``engine.fit`` on a synthetic 60,000-image MNIST-shaped set for ``--steps``
optimiser steps (the first 40 are warm-up and not timed); the variants take turns, ``--rounds``
times, so a burst of load from other processes hits them alike, and the median per variant is
printed with the equivalent seconds per 60,000-image epoch. A variant is ``+``-joined words:
``plain`` (the defaults), ``cl`` (channels-last), ``foreach`` / ``noforeach`` (the optimiser's
multi-tensor path forced on / off), ``t1`` / ``t2`` (torch threads), ``compile`` (torch.compile),
``amp`` (bfloat16 autocast).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cnnlab import assembly, engine
from cnnlab.assembly import model_for, seed_everything
from cnnlab.bench.data import synthetic_data
from cnnlab.config import TrainConfig
from cnnlab.data import TensorSplit

WARMUP = 40


def variant_config(name: str, base: TrainConfig) -> tuple[TrainConfig, dict[str, object]]:
    """The TrainConfig and the extra settings (threads, foreach) a variant name stands for."""
    cfg, extra = base, {}
    for word in name.split("+"):
        if word == "cl":
            cfg = cfg.replace(channels_last=True)
        elif word == "compile":
            cfg = cfg.replace(compile=True)
        elif word == "amp":
            cfg = cfg.replace(amp=True)
        elif word in ("foreach", "noforeach"):
            extra["foreach"] = word == "foreach"
        elif word.startswith("t") and word[1:].isdigit():
            extra["threads"] = int(word[1:])
        elif word != "plain":
            raise SystemExit(f"unknown variant word {word!r}")
    return cfg, extra


def time_variant(name: str, data, base: TrainConfig, steps: int) -> float:
    """Median-free single measurement: ms per step after the warm-up steps."""
    cfg, extra = variant_config(name, base.replace(max_steps=steps))
    threads_before = torch.get_num_threads()
    if "threads" in extra:
        torch.set_num_threads(int(extra["threads"]))
    make_optimizer = assembly.make_optimizer
    if "foreach" in extra:

        def make_optimizer(model, cfg, _base=assembly.make_optimizer):  # noqa: ANN001, ANN202
            optimizer = _base(model, cfg)
            for group in optimizer.param_groups:
                group["foreach"] = extra["foreach"]
            return optimizer

    marks: dict[int, float] = {}

    def on_step(step: int, loss: torch.Tensor) -> None:
        if step in (WARMUP, steps):
            marks[step] = time.perf_counter()

    seed_everything(cfg.seed)
    model = model_for(cfg, data)
    saved = assembly.make_optimizer  # run_parts builds fit's optimiser
    assembly.make_optimizer = make_optimizer
    try:
        engine.fit(model, data, cfg, on_step=on_step)
    finally:
        assembly.make_optimizer = saved
        torch.set_num_threads(threads_before)
    return 1e3 * (marks[steps] - marks[WARMUP]) / (steps - WARMUP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="seednet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default="plain,cl,cl+foreach,cl+t1,cl+compile")
    args = parser.parse_args()
    data = synthetic_data(60_000)
    data.splits["val"] = TensorSplit(data.splits["val"].images[:500], data.splits["val"].labels[:500])
    base = TrainConfig(model=args.model, batch_size=args.batch_size, progress=False, epochs=1)
    variants = args.variants.split(",")
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            times[v].append(time_variant(v, data, base, args.steps))
    steps_per_epoch = 60_000 / args.batch_size
    print(
        f"{args.model}, batch {args.batch_size}, torch {torch.__version__}, {torch.get_num_threads()} threads default"
    )
    print(f"{'variant':<22} {'ms/step':>8} {'s/epoch':>8}   all rounds (ms/step)")
    for v in variants:
        ms = statistics.median(times[v])
        rounds = " ".join(f"{t:.2f}" for t in times[v])
        print(f"{v:<22} {ms:>8.2f} {ms * steps_per_epoch / 1e3:>8.2f}   {rounds}")


if __name__ == "__main__":
    main()
