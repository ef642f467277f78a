"""The tutorial's own training loop, as the yardstick: per-sample PIL → ToTensor → Normalize, a
``DataLoader`` (batch 64, no workers), and ``loss.item()`` after every step. Its sampler shuffles in
cnnlab's seeded order, so both loops see the same batches and their accuracies can be compared."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnlab.assembly import EVAL_BATCH
from cnnlab.bench.probes import SideResult
from cnnlab.config import TrainConfig
from cnnlab.data import Data, TensorSplit, epoch_order


class TutorialDataset(Dataset):
    """What torchvision's MNIST does per sample: uint8 array → PIL image → ``transform``."""

    def __init__(self, split: TensorSplit, mean: tuple[float, ...], std: tuple[float, ...]):
        from torchvision import transforms

        images = split.images.permute(0, 2, 3, 1)  # [N, H, W, C], as PIL wants it
        self.images = images[..., 0].numpy() if images.shape[-1] == 1 else images.numpy()
        self.labels = split.labels.tolist()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


class EpochOrder(Sampler[int]):
    """Shuffles like ``DataLoader(shuffle=True)`` but in cnnlab's seeded order of each epoch, so
    both loops see the same batches (call :meth:`set_epoch` before each epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.n, self.seed, self.epoch).tolist())


def reference_fit(model: nn.Module, data: Data, cfg: TrainConfig, device: torch.device) -> SideResult:
    """The tutorial's loop: per-sample PIL → ToTensor → Normalize, DataLoader, ``.item()`` each step."""
    train_set = TutorialDataset(data.splits["train"], data.spec.mean, data.spec.std)
    val_set = TutorialDataset(data.splits["val"], data.spec.mean, data.spec.std)
    order = EpochOrder(len(train_set), cfg.seed)
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=order)
    val_loader = DataLoader(val_set, batch_size=EVAL_BATCH)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    result, losses = SideResult(), []
    for epoch in range(1, cfg.epochs + 1):
        order.set_epoch(epoch)
        started = time.perf_counter()
        model.train()
        for images, target in train_loader:
            images, target = images.to(device), target.to(device)
            optimizer.zero_grad()
            loss = F.nll_loss(model(images), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        trained = time.perf_counter()
        result.val_loss, result.val_accuracy = _reference_test(model, val_loader, device)
        result.train_seconds.append(trained - started)
        result.val_seconds.append(time.perf_counter() - trained)
        result.val_accuracies.append(result.val_accuracy)
    return result


@torch.no_grad()
def _reference_test(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for images, target in loader:
        images, target = images.to(device), target.to(device)
        output = model(images)
        loss_sum += F.nll_loss(output, target, reduction="sum").item()
        correct += (output.argmax(dim=1) == target).sum().item()
        n += len(target)
    return loss_sum / n, correct / n
