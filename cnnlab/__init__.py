"""cnnlab: learn, train and ship convolutional neural networks with PyTorch.

The public API mirrors the ``cnnlab`` command: :func:`train`, :func:`evaluate`, :func:`predict`,
:func:`load`, :func:`summary` and :func:`hello`.
"""

__version__ = "0.1.0"

from cnnlab.api import Predictor, TrainResult, evaluate, load, predict, summary, train  # noqa: E402
from cnnlab.config import TrainConfig  # noqa: E402
from cnnlab.env import hello  # noqa: E402
from cnnlab.errors import UserError  # noqa: E402

__all__ = [
    "Predictor",
    "TrainConfig",
    "TrainResult",
    "UserError",
    "__version__",
    "evaluate",
    "hello",
    "load",
    "predict",
    "summary",
    "train",
]
