"""Data for a run: load a source, split it, and derive what each model trains on.

The data layer imports no schema and no application code: a request is any object with `DataRequest`'s
attributes (the recipe's `DataSpec` is one), and error messages name its fields under the caller's `where`.
Importing the package registers every source: the array sources in `DATASETS`, the text sources in `TEXT_DATASETS`.
"""

from __future__ import annotations

from kdforge.data.adapters import as_tensor_data, bundle_from_splits
from kdforge.data.bundle import DataBundle, DataRequest, student_and_scratch_train
from kdforge.data.load import load_data, text_source
from kdforge.data.sources import TEXT_DATASETS
from kdforge.data.tensors import iterate_batches, sequential_batches
from kdforge.registry import DATASETS
from kdforge.types import Batch, TensorData

__all__ = ["DATASETS", "TEXT_DATASETS", "Batch", "DataBundle", "DataRequest", "TensorData", "as_tensor_data",
           "bundle_from_splits", "iterate_batches", "load_data", "sequential_batches", "student_and_scratch_train",
           "text_source"]
