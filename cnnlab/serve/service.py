"""What the web page and the JSON API ask of a trained model, without any web framework.

:class:`ModelService` loads a run once and answers three questions: what model is this
(:meth:`ModelService.info`), what is in this image (:meth:`ModelService.predict`: classes,
probabilities, the input as the network sees it and the feature maps of each convolution) and why
(:meth:`ModelService.explain`: an attribution map and its overlay on the input).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data.images import TooLarge
from cnnlab.errors import UserError
from cnnlab.explain.methods import DEFAULT_METHOD, METHODS
from cnnlab.inference import Predictor, load
from cnnlab.models import layer_names
from cnnlab.preprocess import require_content

MAX_CHANNELS = 32  # feature maps shown per layer
EXAMPLES = 12  # validation images on the page's strip
MAX_PIXELS = 4096 * 4096  # pixels decoded per upload (a JPEG larger is decoded at 1/2, 1/4 or 1/8 scale to fit)


def png_base64(pixels: np.ndarray) -> str:
    """uint8 [H, W] (grey) or [H, W, 3] (colour) → base64 of a PNG file."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_base64(image: torch.Tensor) -> str:
    """uint8 [C, H, W] → base64 PNG (grey for one channel, RGB for three)."""
    pixels = image.permute(1, 2, 0).numpy()
    return png_base64(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


@functools.cache
def _viridis() -> np.ndarray:
    """matplotlib's viridis as a lookup table: uint8 [256, 3]."""
    import matplotlib

    return (matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def tile(images: np.ndarray, gap: int = 1, fill: int = 255) -> tuple[np.ndarray, int, int]:
    """uint8 [N, H, W, ...] → one image of the N tiles in a near-square grid, ``gap`` pixels of
    ``fill`` between them; returns (image, rows, cols)."""
    n, h, w = images.shape[:3]
    cols = max(1, int(np.ceil(np.sqrt(n))))
    rows = max(1, int(np.ceil(n / cols)))
    grid = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *images.shape[3:]), fill, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = image
    return grid, rows, cols


def feature_map_pngs(maps: list[tuple[str, torch.Tensor]], max_channels: int = MAX_CHANNELS) -> list[dict[str, Any]]:
    """Each layer's activations [C, H, W] → one PNG of its first ``max_channels`` channels in a grid
    (white lines between them), each channel scaled to its own range: its minimum → dark violet, its maximum →
    yellow (viridis)."""
    lut = _viridis()
    layers = []
    for name, full in maps:
        m = full.float().cpu()[:max_channels]
        low = m.amin(dim=(1, 2), keepdim=True)
        span = (m.amax(dim=(1, 2), keepdim=True) - low).clamp_min(1e-8)
        levels = ((m - low) / span * 255).round().to(torch.uint8).numpy()
        grid, rows, cols = tile(lut[levels])
        layers.append(
            {"name": name, "shape": list(full.shape), "shown": len(levels), "rows": rows, "cols": cols,
             "png": png_base64(grid)}
        )  # fmt: skip
    return layers


class ModelService:
    """A loaded run, ready to answer the page: one model, its classes and how to feed it."""

    def __init__(
        self, run_or_checkpoint: str | Path, max_pixels: int = MAX_PIXELS, backend: str = "torch",
        onnx: str | Path | None = None, tta: bool = False,
    ):  # fmt: skip
        self.predictor: Predictor = load(run_or_checkpoint, backend=backend, onnx=onnx, tta=tta)
        self.max_pixels = max_pixels
        self.dark_background = self.predictor.spec.mean[0] < 0.5  # MNIST-like: light ink on dark
        self.run_config = _read_run_config(self.predictor.path.parent)
        self._attributing = threading.Lock()
        self._examples: list[dict[str, str]] | None = None

    def info(self) -> dict[str, Any]:
        """Architecture, dataset, classes, normalisation and the run's recorded accuracy."""
        p, cfg = self.predictor, self.predictor.config
        result = self.run_config.get("result") or {}
        spec = p.spec.describe()  # as the export metadata describes the input
        return {
            "model": cfg.model,
            "dataset": cfg.dataset,
            "classes": spec["classes"],
            "input_shape": spec["input"]["shape"][1:],
            "mean": spec["mean"],
            "std": spec["std"],
            "light_on_dark": self.dark_background,
            "preprocessing": spec["image"],
            "preprocessing_summary": p.preprocessing.summary(),
            "parameters": sum(t.numel() for t in p.model.parameters()),
            "layers": layer_names(p.model),
            "status": self.run_config.get("status"),
            "best_val_acc": result.get("best_val_acc"),
            "final_val_acc": result.get("final_val_acc"),
            "epochs": result.get("epochs_done"),
            "checkpoint": p.path.name,
            "explain_methods": list(METHODS),
            "default_explain_method": DEFAULT_METHOD,
            "unknown_rule": p.rule is not None,  # answers carry "unknown" when the input looks like no class
            "unknown_message": "that doesn't look like any "
            + ("digit" if p.preprocessing.recipe == "digit" else "of the classes"),
            "backend": p.backend,
        }

    def examples(self, n: int = EXAMPLES) -> list[dict[str, str]]:
        """Up to ``n`` images of the run's validation split as the model takes them, the classes in turn:
        ``[{"label": true class, "image": base64 PNG}, ...]``; none when that data is not on this machine."""
        if self._examples is None:
            from cnnlab.reports import split_images

            try:
                images, labels = split_images(self.predictor, "val")
            except (UserError, OSError):
                images, labels = torch.zeros(0), torch.zeros(0, dtype=torch.long)
            by_class = [torch.nonzero(labels == c).flatten().tolist() for c in range(self.predictor.spec.num_classes)]
            order: list[int] = []  # the first of each class, then the second of each, ...
            for rank in range(max(map(len, by_class), default=0)):
                order += [c[rank] for c in by_class if rank < len(c)]
            self._examples = [
                {"label": self.predictor.spec.classes[int(labels[i])], "image": image_base64(images[i])}
                for i in order[:n]
            ]
        return self._examples

    def prepare(self, data: bytes) -> torch.Tensor:
        """Image bytes → uint8 [C, H, W] as the model sees it (the Predictor's preprocessing, as ``predict``);
        any image it cannot use, or one with nothing on it, is a UserError."""
        p = self.predictor
        try:
            image = p.prepare(p.preprocessing.decode(data, "upload", self.max_pixels))
            return require_content(image, "upload")
        except TooLarge as exc:
            raise UserError(f"{exc}; start serve with a larger --max-pixels to accept it") from None
        except UserError:
            raise
        except Exception as exc:  # an odd mode or a malformed file that slipped past the decoder: bad input
            raise UserError(f"upload: cannot use this image ({type(exc).__name__}: {exc})") from None

    def explain(self, data: bytes, method: str | None = None, topk: int = 3) -> dict[str, Any]:
        """:meth:`predict`'s answer plus why: the ``method``'s attribution map of the predicted class
        (rows of columns at the input resolution; positive = evidence for it) and an ``overlay`` PNG (data
        URL) of its positive part on the input, as ``cnnlab explain`` computes them."""
        from cnnlab.explain.attribution import attribute_images, check_method
        from cnnlab.plots import overlay_rgb

        method = check_method(method)
        p = self.predictor
        image = self.prepare(data)
        answer = self.answer(image, topk)
        target = torch.tensor([p.spec.classes.index(answer["label"])])
        with self._attributing:  # Captum's layer hooks (Grad-CAM) must not see another request's forward pass
            amap = attribute_images(p, image.unsqueeze(0), target, method)[0]
        return {
            **answer,
            "method": method,
            "target": answer["label"],
            "attribution": amap.tolist(),
            "overlay": "data:image/png;base64," + png_base64(overlay_rgb(image, amap)),
        }

    def predict(self, data: bytes, topk: int = 3) -> dict[str, Any]:
        """Image bytes → top class, every class's (calibrated) probability, whether it looks like none of
        the classes (``known_score``, ``unknown``), the prepared input and the feature maps."""
        return self.answer(self.prepare(data), topk)

    def answer(self, image: torch.Tensor, topk: int = 3) -> dict[str, Any]:
        """A prepared input uint8 [C, H, W] → :meth:`predict`'s answer."""
        from cnnlab.plots import feature_maps

        p = self.predictor
        with torch.no_grad():
            probs = p.probabilities(image.unsqueeze(0))[0]
            maps = feature_maps(p.model, p.model_input(image.unsqueeze(0)))
        values, index = probs.topk(min(topk, len(probs)))
        top = [[p.spec.classes[int(i)], float(v)] for v, i in zip(values, index)]
        return {
            "label": top[0][0],
            "probability": top[0][1],
            "probabilities": {name: float(v) for name, v in zip(p.spec.classes, probs)},
            "topk": top,
            "input": image_base64(image),
            "feature_maps": feature_map_pngs(maps),
            **p.known(image.unsqueeze(0))[0],  # known_score, unknown ("none of these", cnnlab.trust)
        }


def _read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.json`` if it is there and readable, else nothing (a bare checkpoint)."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: nested too deeply
        return {}
    return config if isinstance(config, dict) else {}
