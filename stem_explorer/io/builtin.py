"""Importing this module registers the built-in readers.

Each module registers its :class:`~stem_explorer.io.registry.ReaderPlugin` at import;
a new built-in format is one module plus one name here (``hdfs`` is built in: it needs
only the standard library). Readers that need an optional dependency register from
their own extra package through the ``stem_explorer.readers`` entry point group instead.
"""

from . import (  # noqa: F401
    blockfile,
    dm,
    empad,
    hdf5,
    hdfs,
    memory,
    mib,
    mrc,
    npy,
    partitioned,
    raw,
    rosettasciio,
    ser,
    zarr_reader,
)

__all__ = [
    "blockfile",
    "dm",
    "empad",
    "hdf5",
    "hdfs",
    "memory",
    "mib",
    "mrc",
    "npy",
    "partitioned",
    "raw",
    "rosettasciio",
    "ser",
    "zarr_reader",
]
