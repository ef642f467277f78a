"""The tutorial's "Hello PyTorch": versions, the device a run would use, and the environment."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch

from cnnlab.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA if present, else MPS, else CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch (use --device cpu or auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple's MPS backend is not available here (use --device cpu or auto)")
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {name!r}; choose one of: auto, cpu, cuda, mps")
    return torch.device(name)


def environment_name() -> str | None:
    """The active conda environment or virtualenv, if any."""
    if os.environ.get("CONDA_DEFAULT_ENV"):
        return f"conda:{os.environ['CONDA_DEFAULT_ENV']}"
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        return f"venv:{sys.prefix}"
    return None


def versions() -> dict[str, str]:
    """The versions a run records (``config.json``) and ``cnnlab hello`` prints."""
    import torchvision

    from cnnlab import __version__

    return {
        "cnnlab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def hello() -> dict[str, Any]:
    """Versions and the device a run would use, as one dict."""
    device = resolve_device("auto")
    info: dict[str, Any] = {
        **versions(),
        "device": device.type,
        "environment": environment_name(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(0)
        info.update(
            device_name=torch.cuda.get_device_name(0),
            capability=f"{major}.{minor}",
            cuda=torch.version.cuda,
            device_count=torch.cuda.device_count(),
        )
    elif device.type == "cpu":
        info["threads"] = torch.get_num_threads()
    if torch.backends.cudnn.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def format_hello(info: dict[str, Any]) -> str:
    lines = [f"Hello PyTorch! cnnlab {info['cnnlab']}"]
    lines.append(f"  python       {info['python']}")
    lines.append(f"  torch        {info['torch']}")
    lines.append(f"  torchvision  {info['torchvision']}")
    device = info["device"]
    if device == "cuda":
        device += f" ({info['device_name']}, capability {info['capability']}, {info['device_count']} GPU(s))"
    elif device == "cpu":
        device += f" ({info['threads']} threads)"
    lines.append(f"  device       {device}")
    if info.get("cudnn"):
        lines.append(f"  cudnn        {info['cudnn']}")
    lines.append(f"  environment  {info['environment'] or 'system python'}")
    return "\n".join(lines)
