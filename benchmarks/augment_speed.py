"""Which library augments a batch per image, and how fast: kornia.augmentation against
torchvision.transforms.v2, and cnnlab's own levels.

    python benchmarks/augment_speed.py [--batch 256] [--size 32] [--threads 2] [--repeats 5]

A uint8 batch [batch, 3, size, size] of random pixels is augmented ``repeats`` times; printed per
row: milliseconds per batch and images per second. "distinct" is how many different outputs one
call gives for a batch of identical images (per-image parameters give about ``batch``; one set of
parameters per call gives 1). The result decided cnnlab/data/augment.py's design (its docstring).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def distinct(out: torch.Tensor) -> int:
    return len({o.float().numpy().tobytes() for o in out})


def main() -> None:
    import kornia.augmentation as K
    from torchvision.transforms import v2

    from cnnlab.data.augment import augment, batch_generator

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    same = x[:1].expand_as(x).contiguous()
    floats, same_f = x.float() / 255, same.float() / 255
    crop = K.RandomResizedCrop((args.size, args.size), scale=(0.35, 1.0))
    tv_crop = v2.RandomResizedCrop(args.size, scale=(0.35, 1.0), antialias=True)
    jitter, trivial = K.ColorJitter(0.3, 0.3, 0.3), K.auto.TrivialAugment()

    def per_image(batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([tv_crop(image) for image in batch])

    rows: list[tuple[str, Callable[[], torch.Tensor], Callable[[], torch.Tensor]]] = [
        ("kornia RandomResizedCrop (batch)", lambda: crop(floats), lambda: crop(same_f)),
        ("kornia ColorJitter b,c,s (batch)", lambda: jitter(floats), lambda: jitter(same_f)),
        ("kornia TrivialAugment (batch)", lambda: trivial(floats), lambda: trivial(same_f)),
        ("torchvision v2 RandomResizedCrop (one call)", lambda: tv_crop(x), lambda: tv_crop(same)),
        ("torchvision v2 RandomResizedCrop (per image)", lambda: per_image(x), lambda: per_image(same)),
    ]
    for level in ("light", "strong", "trivial"):
        rows.append(
            (f"cnnlab --augment {level}", lambda lv=level: augment(x, lv, batch_generator(1, 1, 0), True),
             lambda lv=level: augment(same, lv, batch_generator(1, 1, 0), True))
        )  # fmt: skip
    print(f"{args.batch} x 3 x {args.size} x {args.size} uint8, {args.threads} threads")
    for name, fn, on_same in rows:
        seconds = timed(fn, args.repeats)
        print(
            f"{name:46s} {1000 * seconds:8.1f} ms  {args.batch / seconds:8.0f} images/s  distinct {distinct(on_same())}"
        )


if __name__ == "__main__":
    main()
