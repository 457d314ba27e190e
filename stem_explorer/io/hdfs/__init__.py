"""Raw partition data sets on HDFS, read where their blocks live.

``open_dataset("hdfs://namenode:8020/scans/s1")`` opens a data set that
:func:`stem_explorer.ingest` wrote to HDFS: ``dataset.json`` plus one file per
partition, each file made of whole HDFS blocks. Each partition knows the hosts of
the DataNodes holding its blocks (from the NameNode), and the engine runs it on a
dask worker of one of those hosts. Workers read local blocks straight from the
DataNode's disk when they may (:mod:`.blocks`), others with ranged WebHDFS reads
(:mod:`.webhdfs`, standard library only: no Hadoop client, no JVM).

Modules: :mod:`.config` (URLs, Hadoop configuration), :mod:`.webhdfs` (the client),
:mod:`.blocks` (short-circuit reads), :mod:`.reader` (frame source, data set,
``open_hdfs``), :mod:`.store` (ingestion target).
"""

from ..registry import ReaderPlugin, register_reader
from .reader import HdfsPartitionDataSet, HdfsPartitionSource, open_hdfs
from .store import HdfsStore
from .webhdfs import Block, WebHDFS

__all__ = ["Block", "HdfsPartitionDataSet", "HdfsPartitionSource", "HdfsStore", "WebHDFS", "open_hdfs"]

for _scheme in ("hdfs", "webhdfs"):
    register_reader(
        ReaderPlugin(
            name=_scheme,
            open=open_hdfs,
            description=f"raw partition data set on HDFS ({_scheme}://host:port/path), data-local reads",
        ),
        replace=True,
    )
