"""Data set readers, partitioning and the raw partition format.

``open_dataset`` is the one entry point; each format is a plugin module registered in
:mod:`stem_explorer.io.registry`.
"""

from .base import DEFAULT_PARTITION_BYTES, DataSet, FrameReader, FrameSource, Partition
from .registry import ReaderPlugin, find_reader, get_reader, readers, register_reader
from .open import open_dataset

__all__ = [
    "DEFAULT_PARTITION_BYTES",
    "DataSet",
    "FrameReader",
    "FrameSource",
    "Partition",
    "ReaderPlugin",
    "find_reader",
    "get_reader",
    "open_dataset",
    "readers",
    "register_reader",
]
