"""Datasets: names → in-memory or on-disk splits → batches on the device."""

from cnnlab.data.loaders import epoch_order, make_batches
from cnnlab.data.registry import DATASETS, dataset_names, default_split, load_data, select_classes
from cnnlab.data.splits import Data, FileSplit, TensorSplit
from cnnlab.spec import ImageSpec, normalize, to_model_input

__all__ = [
    "DATASETS",
    "Data",
    "FileSplit",
    "ImageSpec",
    "TensorSplit",
    "dataset_names",
    "default_split",
    "epoch_order",
    "load_data",
    "make_batches",
    "normalize",
    "select_classes",
    "to_model_input",
]
