"""The raw partition format: the project's own layout for ingested data.

A data set is a directory holding ``dataset.json`` (the sidecar, described by
``schemas/raw_partitions.schema.json``) and partition files ``part-00000.raw``,
``part-00001.raw``, ... Each file is the C-order bytes of a contiguous range of frames
(flat scan index), without headers, so it is memory-mapped zero-copy and one file is
one unit of work. The sidecar records every file's frame range, size, sha256 and,
optionally, the hosts that hold it locally (locality hints for the scheduler).

Compressed data sets (sidecar version 2, ``codec=`` of the writer; see
``docs/compression.md``) store each file's frames as chunks compressed one by one
(``part-00000.bslz4``...); :mod:`.codecs` names the codecs and :mod:`.chunks` encodes
and decodes them.

:class:`RawPartitionWriter` writes the format crash-safely: parts are written as
``*.tmp`` and renamed when complete, and ``dataset.json`` appears (atomically) only
when every frame has been written. A directory without ``dataset.json`` is not a data
set.
"""

from .reader import RawPartitionDataSet, RawPartitionReader, RawPartitionSource, open_raw_partitions
from .sidecar import FORMAT_NAME, SIDECAR_NAME, read_sidecar, sidecar_schema, verify_partitions
from .writer import DEFAULT_FILE_BYTES, RawPartitionWriter, write_raw_partitions

__all__ = [
    "DEFAULT_FILE_BYTES",
    "FORMAT_NAME",
    "SIDECAR_NAME",
    "RawPartitionDataSet",
    "RawPartitionReader",
    "RawPartitionSource",
    "RawPartitionWriter",
    "open_raw_partitions",
    "read_sidecar",
    "sidecar_schema",
    "verify_partitions",
    "write_raw_partitions",
]
