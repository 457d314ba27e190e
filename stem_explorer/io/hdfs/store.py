"""An HDFS folder as an ingestion target: the file operations ingestion needs, done
by whichever process holds the (picklable) store, usually a dask worker.

A worker on a DataNode's host uploads to that DataNode, so the first replica of every
block it writes is local (HDFS puts the writer's own node first); the other replicas
go where the NameNode places them.
"""

from __future__ import annotations

import json
from typing import Iterable, Optional

from ...errors import DataSetError, DataSetNotFoundError
from ..store_common import parse_json, paths_overlap
from .config import HdfsURL, _same_endpoint, is_hdfs_url, parse_url, webhdfs_for
from .lease import HdfsLease
from .reader import BlockFile, this_host
from .webhdfs import WebHDFS

#: ``dfs.namenode.fs-limits.min-block-size`` when the NameNode does not tell (Hadoop's default)
DEFAULT_MIN_BLOCK_BYTES = 2**20

_LOCAL_DATANODE: dict = {}  # (namenode, host) -> DataNode WebHDFS address or None


class HdfsStore:
    """Files of one HDFS folder (``url``), addressed by name."""

    def __init__(self, url: str, *, webhdfs: Optional[str] = None, user: Optional[str] = None):
        self.url: HdfsURL = parse_url(url)
        self.client: WebHDFS = webhdfs_for(self.url, webhdfs, user)

    def __str__(self) -> str:
        return str(self.url)

    def path(self, name: str) -> str:
        return f"{self.url.path.rstrip('/')}/{name}"

    def check_destination(self) -> None:
        """Raise unless the folder exists or can be created (it is not a file)."""
        try:
            kind = self.client.status(self.url.path)["type"]
        except DataSetNotFoundError:
            return
        if kind != "DIRECTORY":
            raise DataSetError(f"{self.url} is a file; pass a folder (new, or holding a data set) as the destination")

    def overlaps(self, source) -> bool:
        """Whether the data at ``source`` (an HDFS URL) is this folder, inside it, or
        holds it, on the same NameNode."""
        if not is_hdfs_url(source):
            return False
        url = parse_url(source)
        return _same_endpoint(webhdfs_for(url).namenode, self.client.namenode) and paths_overlap(url.path, self.url.path)

    def min_block_bytes(self) -> int:
        """The smallest block size the NameNode accepts (``dfs.namenode.fs-limits.min-block-size``)."""
        value = self.client.configuration("dfs.namenode.fs-limits.min-block-size")
        try:
            return int(value)
        except (TypeError, ValueError):  # not told, or written with a unit suffix: Hadoop's default
            return DEFAULT_MIN_BLOCK_BYTES

    def list(self, sub: str = "") -> dict:
        """``{name: size}`` of the files in the folder (or its subfolder ``sub``)."""
        try:
            entries = self.client.list(self.path(sub) if sub else self.url.path)
        except DataSetNotFoundError:
            return {}
        return {n: int(e["length"]) for n, e in entries.items() if e["type"] == "FILE"}

    def names(self, sub: str = "") -> list:
        """Names of every entry (files and folders) of the folder or its ``sub``."""
        try:
            return list(self.client.list(self.path(sub) if sub else self.url.path))
        except DataSetNotFoundError:
            return []

    def file_id(self, name: str) -> int:
        """HDFS's id of the file: changes whenever the file is written anew."""
        return int(self.client.status(self.path(name))["fileId"])

    def file_ids(self) -> dict:
        """``{name: file_id}`` of the files in the folder, in one listing."""
        try:
            entries = self.client.list(self.url.path)
        except DataSetNotFoundError:
            return {}
        return {n: int(e["fileId"]) for n, e in entries.items() if e["type"] == "FILE"}

    def makedirs(self, sub: str = "") -> None:
        self.client.mkdirs(self.path(sub) if sub else self.url.path)

    def create(self, name: str, length: int, chunks: Iterable, *, blocksize: Optional[int] = None,
               replication: Optional[int] = None) -> None:
        """Write file ``name`` (replacing it) from ``chunks``: through this host's
        DataNode when there is one."""
        self.client.create(self.path(name), length, chunks, overwrite=True, blocksize=blocksize,
                           replication=replication, datanode=self._local_datanode())

    def _local_datanode(self) -> Optional[str]:
        """WebHDFS address of the DataNode on this worker's host (None outside a
        worker, on a host without one, or when the NameNode does not say)."""
        host = this_host()
        if host is None:
            return None
        key = (self.client.namenode, host)
        if key not in _LOCAL_DATANODE:
            try:
                nodes = self.client.datanodes()
            except DataSetError:  # no JMX: the NameNode picks, as for any client
                nodes = []
            found = [d["http"] for d in nodes if host in (d["host"], d["http"].rsplit(":", 1)[0])]
            _LOCAL_DATANODE[key] = found[0] if found else None
        return _LOCAL_DATANODE[key]

    def sha256(self, name: str, length: int) -> str:
        """sha256 of what HDFS stores for ``name``, read the way tasks read it."""
        path = self.path(name)
        return BlockFile(self.client, path, self.client.block_locations(path), "verify").sha256(length)

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst`` in one NameNode operation, replacing ``dst``."""
        self.client.rename(self.path(src), self.path(dst), overwrite=True)

    def remove(self, name: str) -> None:
        self.client.delete(self.path(name), recursive=True)

    def read_json(self, name: str) -> Optional[dict]:
        try:
            data = self.client.read_all(self.path(name))
        except DataSetNotFoundError:
            return None
        return parse_json(data, self.url.child(name))

    def write_json(self, name: str, doc: dict, staging: str) -> None:
        """Publish ``doc`` as ``name`` atomically: written as ``staging`` (a name of
        the caller's own), then renamed."""
        data = (json.dumps(doc, indent=1) + "\n").encode()
        self.client.create(self.path(staging), len(data), [data], overwrite=True)
        self.rename(staging, name)

    def lock(self, token: str):
        """Context manager owning the folder for one ingestion (:class:`HdfsLease`)."""
        self.makedirs()
        return HdfsLease(self).hold(token)

    def lock_owner(self) -> Optional[dict]:
        return HdfsLease(self).owner()
