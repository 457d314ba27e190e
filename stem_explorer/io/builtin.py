"""Importing this module registers the built-in readers.

Each module registers its :class:`~stem_explorer.io.registry.ReaderPlugin` at import;
a new built-in format is one module plus one line here. Readers that need an optional
dependency (an ``hdfs`` reader, say) register from their own extra package through the
``stem_explorer.readers`` entry point group instead.
"""

from . import hdf5, memory, mib, mrc, npy, partitioned, raw  # noqa: F401

__all__ = ["hdf5", "memory", "npy", "partitioned", "raw"]
