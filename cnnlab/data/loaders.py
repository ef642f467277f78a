"""Batches for training and evaluation.

Every split is visited in the order :func:`epoch_order` gives (a seeded permutation per epoch, or with
``--balance sampler`` a seeded weighted draw), cut into consecutive slices of ``batch_size`` (the last
one may be shorter).

* :class:`TensorBatches` (in-memory splits): the uint8 images live on the device; each batch is an
  index into them, normalised (and optionally augmented) on the device. No per-sample Python.
* :class:`FileBatches` (``folder:`` and ``csv:`` splits larger than the memory budget): a torch
  DataLoader with worker processes decodes the files, with the same order, augmentation and
  normalisation, so it gives the same batches as the decoded images in memory would.

With ``world_size > 1`` (DDP) each global batch is split into ``world_size`` equal-stride shares,
so the ranks together see exactly what one process with the same global batch would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from cnnlab.data.augment import augment, batch_generator, parse_level
from cnnlab.data.images import read_image
from cnnlab.data.splits import Data, FileSplit, Split, TensorSplit
from cnnlab.spec import normalize, standardize


def epoch_order(n: int, seed: int, epoch: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The sample order that epoch ``epoch`` (1-based) of a run with ``seed`` uses: a permutation of
    ``range(n)``, or with per-sample ``weights`` ``n`` draws with replacement, sample i drawn with
    probability weights[i] / Σ weights. Either way a pure function of its arguments."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if weights is not None:
        return torch.multinomial(weights.double(), n, replacement=True, generator=generator)
    return torch.randperm(n, generator=generator)


def balanced_sample_weights(labels: torch.Tensor) -> torch.Tensor:
    """``--balance sampler``: per sample 1 / n_c, n_c the number of samples of its class, so that
    each class is drawn equally often in expectation."""
    counts = torch.bincount(labels)
    return 1.0 / counts[labels].double()


def num_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device`` without making the host wait: a CUDA copy from pageable memory
    synchronises the stream, one from pinned memory is queued behind the work already there."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# Datasets whose classes survive a left-right mirror (photos); never digits or letters.
MIRROR_DATASETS = frozenset({"cifar10", "cifar100", "cifar100-coarse"})
# Datasets of digits and letters: a mirror changes what they mean, so flips are refused unless forced.
GLYPH_DATASETS = frozenset({"mnist5k", "mnist", "digits", "fashion-mnist", "kmnist", "emnist"})


def flips_allowed(dataset: str, augment: str | int, hflip: str = "auto", channels: int = 3) -> bool:
    """Whether augmentation flips images left-right: ``--hflip on``/``off`` decide; ``auto`` flips
    colour photos (CIFAR, colour ``folder:`` and ``csv:`` data) at every level, and never the digit and
    letter datasets nor grey images of your own (a mirrored digit, letter or document means something
    else). An integer shift flips only the CIFAR sets, as it always did."""
    if hflip != "auto":
        return hflip == "on"
    if isinstance(parse_level(augment), int):
        return dataset in MIRROR_DATASETS
    return dataset not in GLYPH_DATASETS and channels == 3


class Batches:
    """What both batchers share: the order of an epoch, and normalisation on the device."""

    def __init__(
        self,
        n: int,
        data: Data,
        batch_size: int,
        device: torch.device,
        shuffle: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        augment: str | int = "none",
        flips: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        sample_weights: torch.Tensor | None = None,
    ):
        if sample_weights is not None and len(sample_weights) != n:
            raise ValueError(f"sample_weights has {len(sample_weights)} entries for {n} samples")
        self.n, self.data, self.batch_size, self.device = n, data, batch_size, device
        self.sample_weights = sample_weights  # with shuffle: each epoch is a weighted draw (epoch_order)
        self.shuffle, self.seed, self.dtype = shuffle, seed, dtype
        self.augment, self.rank, self.world_size = parse_level(augment), rank, world_size
        self.flips = flips_allowed(data.name, augment, channels=data.spec.channels) if flips is None else flips
        self.channels_last = channels_last
        shape = (1, data.spec.channels, 1, 1)  # made once: a new CUDA tensor per batch would sync the host
        self.mean = to_device(torch.tensor(data.spec.mean, dtype=torch.float32), device).view(shape)
        self.std = to_device(torch.tensor(data.spec.std, dtype=torch.float32), device).view(shape)

    def __len__(self) -> int:
        return num_batches(self.n, self.batch_size)

    def batch_indices(self, epoch: int, start: int, device: torch.device | None = None) -> Iterator[torch.Tensor]:
        """This rank's sample indices for batches ``start``, ``start + 1``, ... of ``epoch``; on ``device``
        if given (the epoch's order is copied there once, not once per batch)."""
        order = epoch_order(self.n, self.seed, epoch, self.sample_weights) if self.shuffle else torch.arange(self.n)
        if device is not None:
            order = to_device(order, device)
        for b in range(start, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size][self.rank :: self.world_size]

    def prepare(self, images: torch.Tensor, epoch: int = 1, batch: int = 0) -> torch.Tensor:
        """uint8 images on the device → (augmented) normalised float batch.

        Augmentation (:mod:`cnnlab.data.augment`) draws from a generator seeded by (seed, epoch, batch)
        and this rank, so batch ``batch`` of ``epoch`` is augmented the same whenever it is made."""
        if self.augment != "none":
            generator = batch_generator(self.seed + 7919 * self.rank, epoch, batch)
            images = augment(images, self.augment, generator, self.flips)
        if images.dtype == torch.uint8:  # the one formula (cnnlab.spec), with mean and std already on the device
            x = normalize(images, self.mean, self.std)
        else:  # strong/trivial augmentation returns floats in [0, 1]
            x = standardize(images.float(), self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.dtype)


class TensorBatches(Batches):
    """Batches of an in-memory split, resident on ``device``."""

    def __init__(self, split: TensorSplit, data: Data, batch_size: int, device: torch.device, **kwargs):
        super().__init__(len(split), data, batch_size, device, **kwargs)
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)

    def batches(self, epoch: int = 1, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) for batches ``start``, ``start + 1``, ... of ``epoch``."""
        batches = self.batch_indices(epoch, start, self.device)
        for b, index in enumerate(batches, start):  # index_select: a plain row gather, ~10x faster
            yield self.prepare(self.images.index_select(0, index), epoch, b), self.labels.index_select(0, index)


class _FileDataset(Dataset):
    """File ``i`` decoded as the dataset's images were (:func:`read_image`, the resize-and-crop included)."""

    def __init__(self, split: FileSplit, channels: int, size: int, resize: int | None = None):
        self.split, self.channels, self.size, self.resize = split, channels, size, resize

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return read_image(self.split.paths[i], self.channels, self.size, resize=self.resize), self.split.labels[i]


class FileBatches(Batches):
    """Batches of a ``folder:`` or ``csv:`` split that streams from its files, decoded by DataLoader workers."""

    def __init__(self, split: FileSplit, data: Data, batch_size: int, device: torch.device, **kwargs):
        super().__init__(len(split), data, batch_size, device, **kwargs)
        spec = data.spec
        self.dataset = _FileDataset(split, spec.channels, spec.size, spec.resize)
        self.workers = min(4, max(0, (os.cpu_count() or 1) - 1))

    def batches(self, epoch: int = 1, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # generator: its own, or the DataLoader draws its workers' seed from the global RNG (dropout's) once
        # per epoch, and a run resumed mid-epoch would drop out differently from one that was not stopped
        loader = DataLoader(
            self.dataset,
            batch_sampler=[index.tolist() for index in self.batch_indices(epoch, start)],
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),
        )
        for b, (images, labels) in enumerate(loader, start):
            x = self.prepare(images.to(self.device, non_blocking=True), epoch, b)
            yield x, labels.to(self.device, non_blocking=True)


def make_batches(split: Split, data: Data, batch_size: int, device: torch.device, **kwargs) -> Batches:
    """The right batcher for ``split``: in-memory tensors or files through a DataLoader."""
    cls = FileBatches if isinstance(split, FileSplit) else TensorBatches
    return cls(split, data, batch_size, device, **kwargs)
