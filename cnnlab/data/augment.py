"""Training-time augmentation of uint8 image batches that already live on the device.

Levels (``--augment``):

* ``none``: the images as they are.
* an integer ``N`` (1–8): shift each image by up to ``N`` pixels (pad with black, crop), the
  tutorial-era augmentation; plus a left-right flip where flips are allowed.
* ``light``: pad-and-crop by up to 1/8 of the side (reflected border), left-right flip.
* ``strong``: random-resized-crop (35–100 % of the area, aspect 3/4–4/3), left-right flip, colour
  jitter (brightness, contrast, saturation × U(0.7, 1.3), each image its own factors).
* ``trivial``: ``light`` followed by TrivialAugment (Müller & Hutter, 2021: one random operation of a
  fixed list at a random strength, per image).

Every image draws its own parameters, and the whole result is a pure function of (seed, epoch, step):
:func:`batch_generator` seeds a dedicated ``torch.Generator`` from those three numbers, so a resumed run
augments exactly as an uninterrupted one, and the process's global RNG (dropout's) is never advanced.

Which library: ``python benchmarks/augment_speed.py`` (a 256×3×32×32 uint8 batch, 2 threads, on a
2-core machine under load ~19): ``torchvision.transforms.v2`` draws one set of parameters per call
(RandomResizedCrop: 16 ms a batch, but 1 distinct output for 256 identical images), and looped per image
it took 103 ms; ``kornia.augmentation`` draws per image on the whole batch (RandomResizedCrop 56 ms,
244 distinct; TrivialAugment 58 ms, 256 distinct). So random-resized-crop and TrivialAugment are
kornia's, run inside a forked RNG seeded from the batch's generator (kornia samples from the global
RNG); crops, flips and colour-jitter factors are drawn from the generator itself and applied with
tensor indexing and ``kornia.enhance``. Per batch: ``light`` 37 ms, ``strong`` 102 ms, ``trivial`` 157 ms.
"""

from __future__ import annotations

from typing import Any

import torch

LEVELS = ("none", "light", "strong", "trivial")
MAX_SHIFT = 8


def parse_level(value: Any) -> str | int:
    """``--augment`` as stored: ``none``, ``light``, ``strong``, ``trivial`` or a pixel shift 1–8
    (``0`` and ``"0"`` are ``none``; ``"2"`` is 2). Raises ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a level: {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        shift = int(value)
        if not 0 <= shift <= MAX_SHIFT:
            raise ValueError(f"a pixel shift must be 0 to {MAX_SHIFT}")
        return "none" if shift == 0 else shift
    if isinstance(value, str) and value in LEVELS:
        return value
    raise ValueError(f"not a level: {value!r}")


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The dedicated generator of one batch: seeded by ``(seed, epoch, step)`` alone."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + step) % 2**63)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return (low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float32)).to(device)


def shift(x: torch.Tensor, pad: int, generator: torch.Generator, mode: str = "constant") -> torch.Tensor:
    """Pad-and-crop: each image moved by up to ``pad`` pixels in x and y (border zero or reflected)."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x if mode == "constant" else x.float(), (pad,) * 4, mode=mode).to(x.dtype)
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device).view(1, h) + offsets[0].view(n, 1)).view(n, 1, h, 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + offsets[1].view(n, 1)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, channel, rows, cols]


def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image flipped left-right with probability ½."""
    chosen = (torch.rand(len(x), generator=generator) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(chosen, x.flip(3), x)


def colour_jitter(x: torch.Tensor, generator: torch.Generator, strength: float = 0.3) -> torch.Tensor:
    """Brightness, contrast and saturation each × U(1 − s, 1 + s), per image (float images in [0, 1])."""
    from kornia import enhance

    n, device = len(x), x.device
    x = enhance.adjust_brightness(x, _uniform(n, -strength / 2, strength / 2, generator, device))
    x = enhance.adjust_contrast(x, _uniform(n, 1 - strength, 1 + strength, generator, device))
    if x.shape[1] == 3:
        x = enhance.adjust_saturation(x, _uniform(n, 1 - strength, 1 + strength, generator, device))
    return x


def _with_seed(generator: torch.Generator, device: torch.device) -> Any:
    """A forked RNG seeded from ``generator``: kornia's samplers draw from it, the global RNG is untouched."""
    fork = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))

    class _Seeded:
        def __enter__(self) -> None:
            fork.__enter__()
            torch.manual_seed(seed)

        def __exit__(self, *exc: Any) -> None:
            fork.__exit__(*exc)

    return _Seeded()


def resized_crop(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """kornia's RandomResizedCrop: 35–100 % of the area, aspect ratio 3/4–4/3, back to full size."""
    import kornia.augmentation as K

    with _with_seed(generator, x.device):
        return K.RandomResizedCrop(x.shape[-2:], scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3))(x)


def trivial_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """kornia's TrivialAugment: per image one operation of its list at a random strength."""
    import kornia.augmentation as K

    if x.shape[1] != 3:  # its colour operations need RGB; grey images go through as three equal channels
        return trivial_augment(x.expand(-1, 3, -1, -1), generator)[:, :1]
    with _with_seed(generator, x.device):
        return K.auto.TrivialAugment()(x).clamp_(0, 1)


def augment(images: torch.Tensor, level: str | int, generator: torch.Generator, flips: bool) -> torch.Tensor:
    """uint8 images ``[N, C, H, W]`` → augmented images: uint8 for ``none``/``light``/a shift, float in
    [0, 1] for ``strong``/``trivial`` (their interpolation and colour maths need floats)."""
    if level == "none":
        return images
    if isinstance(level, int):
        out = shift(images, level, generator)
        return flip(out, generator) if flips else out
    side = images.shape[-1]
    if level in ("light", "trivial"):
        out = shift(images, max(1, side // 8), generator, mode="reflect")
        out = flip(out, generator) if flips else out
        return out if level == "light" else trivial_augment(out.float().div_(255.0), generator)
    out = resized_crop(images.float().div_(255.0), generator)
    out = flip(out, generator) if flips else out
    return colour_jitter(out, generator).clamp_(0, 1)
