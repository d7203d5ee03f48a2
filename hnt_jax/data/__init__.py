"""Data layer: read published multi-behavior datasets, validate them, and generate synthetic ones.

Pure NumPy/SciPy on the host; nothing here imports JAX. Its errors are `hnt_jax.errors.DataError` and
`DatasetNotFoundError`.
"""
from hnt_jax.data.dataset import Dataset, format_statistics, statistics
from hnt_jax.data.load import load_dataset

__all__ = ["Dataset", "format_statistics", "load_dataset", "statistics"]
