"""Pictures: training curves, confusion matrix, image galleries, filters, feature maps, and the
classic left-to-right CNN diagram. Every function writes a PNG and returns its path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from torch import nn  # noqa: E402

from cnnlab.errors import UserError  # noqa: E402


def _save(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` to ``path`` and return the file written: a name without a suffix gets ``.png``."""
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, train and validation."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["val_acc"] for r in history], "s-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(matrix: torch.Tensor, classes: list[str], path: str | Path, title: str = "") -> Path:
    """Confusion matrix with counts in the cells (rows: true class, columns: predicted)."""
    k = len(classes)
    size = max(4.0, 0.55 * k + 1.5)
    fig, ax = plt.subplots(figsize=(size, size))
    m = matrix.cpu().numpy()
    ax.imshow(m, cmap="Blues")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right")
    ax.set_yticklabels(classes)
    threshold = m.max() / 2 if m.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > threshold else "black")  # fmt: skip
    ax.set_title(title or f"accuracy {100 * m.trace() / max(m.sum(), 1):.2f}%")
    return _save(fig, path)


def plot_gallery(images: torch.Tensor, titles: list[str], path: str | Path, title: str = "") -> Path:
    """A grid of uint8 images [N, C, H, W] with a caption under each."""
    n = max(1, len(images))
    cols = min(8, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, caption in zip(axes.flat, images, titles):
        _show(ax, img)
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _show(ax: Any, img: torch.Tensor) -> None:
    """Draw one [C, H, W] uint8 image (matplotlib is given NumPy arrays, never tensors)."""
    if img.shape[0] == 1:
        ax.imshow(img[0].cpu().numpy(), cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(img.permute(1, 2, 0).cpu().numpy())


def plot_filters(weight: torch.Tensor, path: str | Path, title: str = "first-layer filters") -> Path:
    """Each output channel's kernel (first input channel, or RGB), scaled to its own range."""
    w = weight.detach().float().cpu()
    n = w.shape[0]
    cols = min(10, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        k = w[i]
        k = (k - k.min()) / (k.max() - k.min() + 1e-8)
        ax.imshow((k.permute(1, 2, 0) if k.shape[0] == 3 else k[0]).numpy(), cmap=None if k.shape[0] == 3 else "gray")
        ax.set_title(str(i), fontsize=7)
    fig.suptitle(title, y=1.0 + 0.12 / rows)  # above the filter numbers, not on top of them
    return _save(fig, path)


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(layer name, output [C, H, W]) after each Conv2d's following activation, for one image x [1, C, H, W];
    for a model that is not a plain sequence (torchvision's), one map per stage: see :func:`stage_outputs`."""
    model.eval()
    if not isinstance(model, nn.Sequential):
        return stage_outputs(model, x)
    maps = []
    convs_seen = 0
    for layer in model:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            convs_seen += 1
        if isinstance(layer, nn.ReLU) and convs_seen and (not maps or maps[-1][0] != f"conv{convs_seen}"):
            maps.append((f"conv{convs_seen}", x[0].clone()))
    return maps


def stage_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks of a network in the order they run: the children of its body (the first module with more
    than one child), a ``Sequential`` of different blocks among them opened one level (VGG's or MobileNet's
    ``features``; ResNet's ``layer1``, a row of the same block, stays one stage)."""
    root = model
    while len(list(root.children())) == 1:
        root = next(root.children())
    blocks: list[tuple[str, nn.Module]] = []
    for name, child in root.named_children():
        if isinstance(child, nn.Sequential) and len({type(m) for m in child.children()}) > 1:
            blocks += [(f"{name}.{sub}", module) for sub, module in child.named_children()]
        else:
            blocks.append((name, child))
    return [(n, m) for n, m in blocks if not isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]


def stage_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """One feature map [C, H, W] per stage of a network that is not a plain sequence (torchvision's): the
    outputs of :func:`stage_modules` that are images, consecutive blocks of the same output shape (one
    stage: ResNet's blocks of ``layer1``, a conv and its ReLU) shown once, by the last of them."""
    outputs: list[tuple[str, torch.Tensor]] = []
    hooks = [
        module.register_forward_hook(lambda mod, args, out, n=name: outputs.append((n, out)))
        for name, module in stage_modules(model)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    maps: list[tuple[str, torch.Tensor]] = []
    for name, out in outputs:
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            continue
        if maps and maps[-1][1].shape == out.shape[1:]:
            maps[-1] = (name, out[0].clone())
        else:
            maps.append((name, out[0].clone()))
    parents = [name.split(".")[0] for name, _ in maps]  # an opened block that gave one map keeps its own name
    return [(p if parents.count(p) == 1 else name, m) for p, (name, m) in zip(parents, maps)]


def plot_feature_maps(
    model: nn.Module, x: torch.Tensor, path: str | Path, max_channels: int = 16, image: torch.Tensor | None = None
) -> Path:
    """The activations of one image after each convolution block (or stage), one row per block, below the
    input ``image`` (uint8 [C, H, W]) when given."""
    maps = feature_maps(model, x)
    rows = ([("input", image)] if image is not None else []) + maps
    cols = min(max_channels, max((m.shape[0] for _, m in maps), default=1))
    fig, axes = plt.subplots(max(1, len(rows)), cols, figsize=(1.1 * cols, 1.25 * max(1, len(rows))), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    r = 0
    if image is not None:
        axes[0, 0].imshow(_input_rgb(image), cmap="gray" if image.shape[0] == 1 else None)
        axes[0, 0].set_title(f"input {tuple(image.shape)}", fontsize=8, loc="left")
        r = 1
    for name, m in maps:
        for c in range(min(cols, m.shape[0])):
            axes[r, c].imshow(m[c].float().cpu().numpy(), cmap="viridis")
        axes[r, 0].set_title(f"{name} {tuple(m.shape)}", fontsize=8, loc="left")
        r += 1
    return _save(fig, path)


def architecture_stages(model: nn.Sequential, in_shape: tuple[int, int, int]) -> list[tuple[str, tuple[int, ...]]]:
    """(label, output shape) for the input and for each conv, pool and linear layer of a sequential model."""
    if not isinstance(model, nn.Sequential):
        raise UserError("the diagram (--plot) draws cnnlab's own sequential models; the table describes tv: models")
    stages: list[tuple[str, tuple[int, ...]]] = [("input", in_shape)]
    x = torch.zeros(1, *in_shape)
    model.eval()
    with torch.no_grad():
        for layer in model:
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                stages.append((f"conv {layer.kernel_size[0]}x{layer.kernel_size[1]}", tuple(x.shape[1:])))
            elif isinstance(layer, (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)):
                stages.append(("pool", tuple(x.shape[1:])))
            elif isinstance(layer, nn.Linear):
                stages.append(("fully connected", tuple(x.shape[1:])))
    return stages


def plot_architecture(model: nn.Module, in_shape: tuple[int, int, int], path: str | Path, title: str = "") -> Path:
    """The classic CNN diagram: stacks of feature maps left to right, labelled with their shapes."""
    stages = architecture_stages(model, in_shape)
    fig, ax = plt.subplots(figsize=(max(8, 1.9 * len(stages)), 3.6))
    x0 = 0.0
    max_hw = max(s[1] for _, s in stages if len(s) == 3)
    for label, shape in stages:
        if len(shape) == 3:
            c, h, _ = shape
            side = 0.4 + 1.8 * h / max_hw
            layers = min(c, 8)
            for k in range(layers):
                ax.add_patch(Rectangle((x0 + 0.08 * k, 0.08 * k), side, side, facecolor="#9ecae1",
                                       edgecolor="#08519c", linewidth=0.8))  # fmt: skip
            width = side + 0.08 * layers
            text = f"{label}\n{c}@{shape[1]}x{shape[2]}"
        else:
            side = min(2.4, 0.3 + 0.02 * shape[0])
            ax.add_patch(Rectangle((x0, 0), 0.25, side, facecolor="#fdd0a2", edgecolor="#a63603"))
            width = 0.25
            text = f"{label}\n{shape[0]}"
        ax.text(x0 + width / 2, -0.35, text, ha="center", va="top", fontsize=8)
        x0 += width + 0.7
    ax.set_xlim(-0.3, x0)
    ax.set_ylim(-1.2, 3.0)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _save_atomic(fig: Any, path: str | Path) -> Path:
    """Like :func:`_save`, through the one atomic writer: the PNG is whole or not there."""
    from cnnlab.atomic import write_atomic

    path = Path(path)
    try:
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def _input_rgb(img: torch.Tensor) -> Any:
    """uint8 [C, H, W] (grey or RGB) → float NumPy [H, W, 3] in 0..1."""
    x = img.detach().cpu().float().div(255)
    return (x.expand(3, -1, -1) if x.shape[0] == 1 else x).permute(1, 2, 0).numpy()


def overlay_rgb(img: torch.Tensor, attribution: torch.Tensor, alpha: float = 0.6) -> Any:
    """The input uint8 [C, H, W] with the positive part of an attribution map [H, W] on top (inferno
    colours, opacity ``alpha`` × the value ÷ the map's maximum): uint8 NumPy [H, W, 3]."""
    import numpy as np

    base = _input_rgb(img) * 0.75
    heat = attribution.detach().float().cpu().clamp_min(0)
    top = float(heat.max())
    heat = (heat / top).numpy() if top > 0 else np.zeros(tuple(heat.shape))
    colour = matplotlib.colormaps["inferno"](heat)[:, :, :3]
    weight = alpha * heat[:, :, None]
    blended = ((1 - weight) * base + weight * colour).clip(0, 1)
    return (blended * 255).round().astype(np.uint8)


def plot_attribution(img: torch.Tensor, attribution: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """Three panels: the input as the model sees it, the attribution map (red: evidence for the target,
    blue: against, on a symmetric scale) and the map's positive part over the input. Written atomically."""
    a = attribution.detach().float().cpu()
    limit = max(float(a.abs().max()), 1e-12)
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 3.2))
    _show(axes[0], img)
    axes[0].set_title("input", fontsize=9)
    shown = axes[1].imshow(a.numpy(), cmap="bwr", vmin=-limit, vmax=limit)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    axes[1].set_title("attribution", fontsize=9)
    axes[2].imshow(overlay_rgb(img, a))
    axes[2].set_title("overlay", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save_atomic(fig, path)


def plot_gallery_with_overlays(
    images: torch.Tensor, overlays: list[Any], titles: list[str], path: str | Path, title: str = ""
) -> Path:
    """A grid of uint8 images [N, C, H, W], each with its overlay (uint8 [H, W, 3]) beside it and a caption."""
    n = max(1, len(images))
    pairs = min(4, n)
    rows = math.ceil(n / pairs)
    fig, axes = plt.subplots(rows, 2 * pairs, figsize=(1.6 * 2 * pairs, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (img, over, caption) in enumerate(zip(images, overlays, titles)):
        r, c = divmod(i, pairs)
        _show(axes[r, 2 * c], img)
        axes[r, 2 * c].set_title(caption, fontsize=8)
        axes[r, 2 * c + 1].imshow(over)
        axes[r, 2 * c + 1].set_title("Grad-CAM", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
