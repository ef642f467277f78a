"""Datasets: names → in-memory or on-disk splits → batches on the device."""

from cnnlab.data.loaders import epoch_order, make_batches
from cnnlab.data.registry import DATASETS, dataset_names, default_split, load_data, select_classes
from cnnlab.data.splits import Data, FileSplit, TensorSplit, normalize

__all__ = [
    "DATASETS",
    "Data",
    "FileSplit",
    "TensorSplit",
    "dataset_names",
    "default_split",
    "epoch_order",
    "load_data",
    "make_batches",
    "normalize",
    "select_classes",
]
