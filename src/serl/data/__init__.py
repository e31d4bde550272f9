"""Problem data: typed records, file/hub loaders and the embedded arithmetic seed set."""

from serl.data.arithmetic import generate_arithmetic, split_of
from serl.data.loading import EMBEDDED_DATASETS, load_problems
from serl.data.records import DataError, Problem

__all__ = ["EMBEDDED_DATASETS", "DataError", "Problem", "generate_arithmetic", "load_problems", "split_of"]
