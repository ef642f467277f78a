"""Attribution maps through Captum: which input pixels make the model answer a class.

Every method attributes the model's *class score* (the logit before ``log_softmax``; for a one-logit
binary model, ``-z/2`` and ``+z/2``) to the pixels of the normalised input ``x`` [N, C, H, W], and gives
one map per image at the input's resolution, summed over colour channels:

* ``gradcam`` — Grad-CAM (Selvaraju et al. 2017, Captum's ``LayerGradCam``) on the model's last
  ``nn.Conv2d``: ReLU(Σ_k α_k A_k) with α_k = mean over positions of ∂score/∂A_k, upsampled bilinearly
  (``LayerAttribution.interpolate``).
* ``saliency`` — |∂score/∂x| (Simonyan et al. 2014, Captum's ``Saliency``): how sensitive the score is
  to each pixel, always ≥ 0.
* ``integrated-gradients`` — (x − x₀) · ∫₀¹ ∂score/∂x(x₀ + t(x − x₀)) dt with x₀ the black image
  (Sundararajan et al. 2017, Captum's ``IntegratedGradients``, 32 steps).
* ``occlusion`` — score(x) − score(x with a square patch blacked out), averaged over the patches that
  cover each pixel (Zeiler & Fergus 2014, Captum's ``Occlusion``; patch side ≈ 1/7 of the image, stride
  half of it).

Positive values are evidence for the target class (saliency's magnitudes are sensitivity, not sign).
"""

from __future__ import annotations

import sys
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import UserError
from cnnlab.explain.methods import DEFAULT_METHOD, METHODS
from cnnlab.inference import Predictor, image_files, load, read_images
from cnnlab.models import ClassScores, TorchvisionNet
from cnnlab.spec import to_model_input

IG_STEPS = 32
CHUNK = 64  # images attributed at once (bounds the memory of integrated gradients and occlusion)


class _BinaryScores(nn.Module):
    """A one-logit model as two class scores (−z/2, +z/2): their softmax is (1 − σ(z), σ(z))."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.cat([-z / 2, z / 2], dim=1)


def class_scores(model: nn.Module, num_classes: int) -> nn.Module:
    """The model up to its class scores: without a final ``LogSoftmax`` (whose gradient vanishes on
    confident answers); a one-logit binary model gives two scores. Shares the model's layers."""
    if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.LogSoftmax):
        return model[:-1]
    if isinstance(model, TorchvisionNet) and model.log_probabilities:
        return ClassScores(model)
    if num_classes == 2 and _outputs(model) == 1:
        return _BinaryScores(model)
    return model


def _outputs(model: nn.Module) -> int | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The model's last ``nn.Conv2d`` module (in registration order, which is the order of the forward
    pass for cnnlab's and torchvision's CNNs): the layer Grad-CAM explains."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise UserError("this model has no convolution layer: Grad-CAM needs one (use --method saliency)")
    return convs[-1]


MIN_GRADCAM_SIDE = 4  # a last-convolution map smaller than this (either side) gives a (nearly) constant Grad-CAM
_warned: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models already warned about in this process


def gradcam_grid(model: nn.Module, channels: int, size: int) -> tuple[int, int]:
    """(height, width) of the last convolution's output for one ``size``×``size`` input: Grad-CAM's resolution
    before its upsampling (seednet at 28x28: 8x8; tv:resnet18 at 32x32: 1x1)."""
    conv = last_conv(model)
    shape: list[int] = []
    hook = conv.register_forward_hook(lambda module, args, out: shape.extend(out.shape[-2:]))
    parameter = next(model.parameters())
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, channels, size, size, dtype=parameter.dtype, device=parameter.device))
    finally:
        hook.remove()
        model.train(was_training)
    return shape[0], shape[1]


def small_grid_warning(predictor: Predictor) -> str | None:
    """One line when Grad-CAM cannot localise on this model: its last convolution's map is smaller than
    :data:`MIN_GRADCAM_SIDE` on a side (then the upsampled map is constant, or nearly); else None."""
    if not any(isinstance(m, nn.Conv2d) for m in predictor.model.modules()):
        return None
    h, w = gradcam_grid(predictor.model, predictor.spec.channels, predictor.spec.size)
    if min(h, w) >= MIN_GRADCAM_SIDE:
        return None
    s = predictor.spec.size
    return (
        f"warning: Grad-CAM explains {predictor.config.model}'s last convolution, whose map is only {h}x{w} at "
        f"{s}x{s} input, so its map is (nearly) constant; train with a larger --image-size (about "
        f"{s * MIN_GRADCAM_SIDE // min(h, w)} or more) or use another --method (e.g. saliency)"
    )


def warn_small_grid(predictor: Predictor) -> None:
    """Print :func:`small_grid_warning` on stderr, once per model in this process."""
    if predictor.model in _warned:
        return
    _warned.add(predictor.model)
    message = small_grid_warning(predictor)
    if message:
        print(message, file=sys.stderr, flush=True)


def check_method(method: str | None) -> str:
    """The method to use: ``method``, or :data:`~cnnlab.explain.DEFAULT_METHOD` for None."""
    if method is None:
        return DEFAULT_METHOD
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    return method


def class_index(target: str | int | None, classes: Sequence[str]) -> int | None:
    """A class given by name (or, if no class has that name, by index) → its index; None stays None."""
    if target is None:
        return None
    text = str(target)
    if text in classes:
        return classes.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(classes):
        return int(text)
    shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
    raise UserError(f"no class {text!r} in this model; its classes are: {shown} (or an index 0-{len(classes) - 1})")


def occlusion_window(size: int) -> tuple[int, int]:
    """(patch side, stride) for an image of ``size`` pixels: about 1/7 of the side, stride half of it."""
    side = max(2, round(size / 7))
    return side, max(1, side // 2)


def attribute(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, baseline: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Attribution maps [N, H, W] (float32, on the CPU) of ``model``'s class score ``target`` [N] for the
    normalised inputs ``x`` [N, C, H, W]. ``baseline`` [1, C, 1, 1]: the normalised black image (what
    integrated gradients starts from and occlusion puts in a patch)."""
    with warnings.catch_warnings():  # Captum imports tqdm.auto, which asks notebooks without ipywidgets to install it
        warnings.filterwarnings("ignore", message="IProgress not found")
        from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    method = check_method(method)
    scores = class_scores(model, num_classes)
    maps = []
    for start in range(0, len(x), CHUNK):
        xs, ts = x[start : start + CHUNK].detach().requires_grad_(), target[start : start + CHUNK]
        base = baseline.to(xs.device, xs.dtype).expand_as(xs).contiguous()
        if method == "gradcam":
            cam = LayerGradCam(scores, last_conv(scores)).attribute(xs, target=ts, relu_attributions=True)
            a = LayerAttribution.interpolate(cam, tuple(xs.shape[2:]), interpolate_mode="bilinear")
        elif method == "saliency":
            a = Saliency(scores).attribute(xs, target=ts, abs=True)
        elif method == "integrated-gradients":
            a = IntegratedGradients(scores).attribute(xs, base, target=ts, n_steps=IG_STEPS, internal_batch_size=512)
        else:
            side, stride = occlusion_window(xs.shape[-1])
            c = xs.shape[1]
            a = Occlusion(scores).attribute(
                xs, (c, side, side), strides=(c, stride, stride), target=ts, baselines=base, perturbations_per_eval=64
            )
        maps.append(a.detach().sum(dim=1).float().cpu())
    return torch.cat(maps)


def black_baseline(predictor: Predictor) -> torch.Tensor:
    """The black image (pixels 0) as the model sees it, [1, C, 1, 1]: (0 − mean) / std."""
    return to_model_input(predictor.spec, torch.zeros(1, predictor.spec.channels, 1, 1, dtype=torch.uint8))


def attribute_images(
    predictor: Predictor, images: torch.Tensor, targets: torch.Tensor, method: str, model: nn.Module | None = None
) -> torch.Tensor:
    """uint8 images [N, C, H, W] as the predictor prepares them → attribution maps [N, H, W] for the class
    indices ``targets`` [N]. ``model``: another model of the same shape (the sanity checks' re-initialised
    copy); default the predictor's."""
    if method == "gradcam" and model is None:
        warn_small_grid(predictor)
    model = predictor.model if model is None else model
    model.eval()
    parameter = next(model.parameters())
    x = to_model_input(predictor.spec, images, parameter.device, parameter.dtype)
    return attribute(
        model, x, targets.to(parameter.device), method, black_baseline(predictor), predictor.spec.num_classes
    )


def explain(
    path: str | Path,
    images: list[str | Path] | str | Path,
    method: str | None = None,
    target: str | int | None = None,
    out: str | Path | None = None,
    invert: bool = False,
    device: str = "cpu",
    warn: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """For each image file (a folder: every image in it, see :func:`cnnlab.inference.image_files`): the
    prediction, and the attribution map of ``target`` (default: the predicted
    class) by ``method`` (default :data:`~cnnlab.explain.DEFAULT_METHOD`), saved as a PNG (input, map,
    overlay) in ``out`` (default ``explain/`` beside the checkpoint).

    Each result: ``image``, ``label``, ``probability``, ``known_score`` and ``unknown`` (as
    :func:`cnnlab.predict` gives them; ``None`` for a run without the rule), ``method``, ``target`` (a class name),
    ``attribution`` (rows of columns at the input resolution; positive = evidence for the target) and
    ``png``. The images go through the model's own preprocessing, as with :func:`cnnlab.predict`. Nothing
    is written unless the method and target exist and every image is readable; with ``warn``, a file that
    cannot be used is skipped instead and ``warn`` called with why."""
    from cnnlab import plots

    method = check_method(method)
    if isinstance(images, (str, Path)):
        images = [images]
    if not images:
        raise UserError("no images given: pass a list of image files (images=[...])")
    predictor = load(path, device)
    predictor.preprocessing.check_invert(invert)
    target_index = class_index(target, predictor.spec.classes)
    files = image_files(images)
    batch, kept = read_images(predictor, files, invert, warn)
    images = [files[i] for i in kept]
    probs = predictor.probabilities(batch)
    verdicts = predictor.known(batch)  # the "none of these" rule, as predict applies it
    predicted = probs.argmax(dim=1)
    targets = predicted if target_index is None else torch.full_like(predicted, target_index)
    maps = attribute_images(predictor, batch, targets, method)
    out_dir = _out_dir(out, predictor)
    results = []
    names = _png_names(out_dir, images, method)
    for image, png, img, amap, p, t, verdict in zip(images, names, batch, maps, probs, targets, verdicts):
        classes = predictor.spec.classes
        label, target_name = classes[int(p.argmax())], classes[int(t)]
        title = f"{Path(image).name}: {label} ({100 * float(p.max()):.1f}%) · {method} for {target_name}"
        plots.plot_attribution(img, amap, png, title=title)
        results.append(
            {"image": str(image), "label": label, "probability": float(p.max()), **verdict, "method": method,
             "target": target_name, "attribution": amap.tolist(), "png": str(png)}
        )  # fmt: skip
    return results


def _out_dir(out: str | Path | None, predictor: Predictor) -> Path:
    out_dir = Path(out) if out else predictor.path.parent / "explain"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None
    return out_dir


def _png_names(out_dir: Path, images: list[str | Path], method: str) -> list[Path]:
    """``<image stem>-<method>.png`` for each image; a stem seen before in this call gets ``-2``, ``-3``, ..."""
    from cnnlab.runs import file_name_part

    names, seen = [], {}
    for image in images:
        stem = file_name_part(Path(image).stem) or "image"
        seen[stem] = seen.get(stem, 0) + 1
        suffix = f"-{seen[stem]}" if seen[stem] > 1 else ""
        names.append(out_dir / f"{stem}{suffix}-{method}.png")
    return names
