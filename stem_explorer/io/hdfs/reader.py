"""Raw partition data sets on HDFS: the frame source tasks open on the workers, the
data set whose partitions follow the partition files (and their blocks), and
``open_hdfs``.

Layout and sidecar are those of :mod:`stem_explorer.io.partitioned`; the partition
files live on HDFS, each made of whole HDFS blocks. A partition's ``locations`` are
the hosts of the DataNodes holding replicas of all its blocks (the NameNode's live
answer at open time), so the engine runs it on a worker of one of those hosts.

A worker reads a tile into a preallocated buffer, piece by block piece: from the
node's own block file when it stores the block (:mod:`.blocks`), otherwise from a
ranged WebHDFS read of the rest of the block, from a DataNode holding a replica (its
own host's first), which the following tiles continue. A tile inside one locally
stored block is returned zero-copy.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional, Sequence

import numpy as np

from ...errors import ChecksumError, DataSetError, DataSetNotFoundError, FormatError
from ..base import FrameReader
from ..calibration import stored_calibration
from ..partitioned.chunks import ChunkDecoder, Chunking
from ..partitioned.reader import PartFilesSource, RawPartitionDataSet
from ..partitioned.sidecar import SIDECAR_NAME, parse_sidecar
from ..raw import _check_range
from .blocks import local_block
from .config import HdfsURL, parse_url, webhdfs_for
from .webhdfs import CONNECTION_ERRORS, Block, ReadStream, WebHDFS

#: Short-circuit policies: read local block files checking their CRCs once per
#: process ("verify"), without checking ("trust"), or never ("off").
SHORT_CIRCUIT = ("verify", "trust", "off")

_PIECE_BYTES = 8 * 2**20  # hashing reads this much at a time


def this_host() -> Optional[str]:
    """The host of the dask worker running this code, or None outside a worker."""
    try:
        from distributed import get_worker

        return get_worker().address.split("://")[-1].rsplit(":", 1)[0]
    except (ImportError, ValueError):
        return None


def replica_order(block: Block, host: Optional[str]) -> list[str]:
    """The block's DataNode WebHDFS servers, the one on ``host`` (this worker's IP)
    first."""
    local = [a for a in block.http if host and a.rsplit(":", 1)[0] == host]
    return local + [a for a in block.http if a not in local]


class BlockFile:
    """Byte access to one HDFS file through its blocks (local first, then WebHDFS)."""

    def __init__(self, client: WebHDFS, path: str, blocks: Sequence[Block], short_circuit: str):
        self.client = client
        self.path = path
        self.blocks = tuple(blocks)
        self.short_circuit = short_circuit
        self._starts = [b.offset for b in self.blocks]
        self._local: dict[int, Optional[np.ndarray]] = {}
        self._host = this_host()
        self._stream: Optional[ReadStream] = None

    def local(self, i: int) -> Optional[np.ndarray]:
        """Mapping of block ``i`` when this node stores it (cached), else None."""
        if self.short_circuit == "off":
            return None
        if i not in self._local:
            self._local[i] = local_block(self.blocks[i], verify=self.short_circuit == "verify")
        return self._local[i]

    def pieces(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """``(block index, start, stop)`` byte ranges (file offsets) covering start:stop."""
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        pos = start
        while pos < stop:
            if i >= len(self.blocks):
                raise FormatError(f"HDFS file {self.path} ends before byte {stop}; re-ingest the data set")
            b = self.blocks[i]
            end = min(stop, b.offset + b.length)
            if end > pos:
                yield i, pos, end
                pos = end
            i += 1

    def view(self, start: int, stop: int) -> Optional[np.ndarray]:
        """Zero-copy bytes start:stop when one locally stored block holds them."""
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        b = self.blocks[i] if self.blocks else None
        if b is None or stop > b.offset + b.length:
            return None
        mapped = self.local(i)
        return None if mapped is None else mapped[start - b.offset : stop - b.offset]

    def read_into(self, start: int, out: np.ndarray) -> None:
        """Fill the byte array ``out`` with the file's bytes from ``start``."""
        for i, a, b in self.pieces(start, start + len(out)):
            dest = out[a - start : b - start]
            mapped = self.local(i)
            if mapped is not None:
                off = self.blocks[i].offset
                dest[:] = mapped[a - off : b - off]
            else:
                self._remote(i, a, memoryview(dest))

    def _remote(self, i: int, start: int, out: memoryview) -> None:
        """Bytes of block ``i`` from a DataNode, continuing the open stream when this
        read starts where the last one ended (one request per block, not per tile)."""
        block, stream = self.blocks[i], self._stream
        replicas = replica_order(block, self._host)
        if stream is None or stream.position != start or stream.end < start + len(out):
            self.close()
            end = block.offset + block.length
            stream = self._stream = self.client.open_read(self.path, start, end - start, replicas)
        try:
            stream.readinto(out)
        except CONNECTION_ERRORS:  # the DataNode went away mid-block: read this piece elsewhere
            self.close()
            self.client.read_into(self.path, start, out, [a for a in replicas if a != stream.address])

    def close(self) -> None:
        """End the open stream, if any."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def sha256(self, length: int) -> str:
        """sha256 of the file's first ``length`` bytes, read piecewise."""
        h = hashlib.sha256()
        buf = np.empty(min(length, _PIECE_BYTES), np.uint8)
        try:
            for pos in range(0, length, _PIECE_BYTES):
                n = min(_PIECE_BYTES, length - pos)
                view = self.view(pos, pos + n)
                if view is None:
                    self.read_into(pos, buf[:n])
                    view = buf[:n]
                h.update(view)
        finally:
            self.close()
        return h.hexdigest()


class HdfsPartitionSource(PartFilesSource):
    """Picklable recipe for frames in raw partition files on HDFS.

    ``parts`` is a tuple of ``(file, start, stop, blocks)``; like
    :class:`~stem_explorer.io.partitioned.RawPartitionSource`, a partition's source
    lists only its own files (:meth:`subset`).
    """

    def __init__(self, client: WebHDFS, directory: str, parts, *, n_frames: int, sig_shape,
                 dtype, short_circuit: str = "verify", chunking: Optional[Chunking] = None):
        self.client = client
        self.directory = directory
        self.parts = tuple((str(f), int(a), int(b), tuple(blocks)) for f, a, b, blocks in parts)
        self.n_frames = int(n_frames)
        self.sig_shape = tuple(int(n) for n in sig_shape)
        self.dtype = np.dtype(dtype)
        self.short_circuit = short_circuit
        self._index_parts()
        self._set_chunking(chunking)

    def open(self, payload=None) -> "HdfsPartitionReader":
        return HdfsPartitionReader(self)

    def subset(self, start: int, stop: int) -> "HdfsPartitionSource":
        """The same source restricted to the files holding frames ``start:stop``."""
        parts = [p for p in self.parts if p[1] < stop and p[2] > start]
        return type(self)(self.client, self.directory, parts, n_frames=self.n_frames, sig_shape=self.sig_shape,
                          dtype=self.dtype, short_circuit=self.short_circuit, chunking=self.chunking)

    def file(self, i: int) -> BlockFile:
        name, _a, _b, blocks = self.parts[i]
        return BlockFile(self.client, f"{self.directory}/{name}", blocks, self.short_circuit)

    def host_groups(self, start: int, stop: int) -> list[tuple[str, ...]]:
        """The DataNodes holding each block of the files with frames ``start:stop``."""
        return [tuple(b.hosts) for p in self.parts if p[1] < stop and p[2] > start for b in p[3]]

    def __repr__(self) -> str:
        return (f"HdfsPartitionSource({self.client.namenode!r}, {self.directory!r}, {len(self.parts)} "
                f"files, sig_shape={self.sig_shape}, dtype={self.dtype.str!r})")


class HdfsPartitionReader(FrameReader):
    """Frames of an :class:`HdfsPartitionSource`: zero-copy from a local block when
    possible, else copied into one reused buffer. Compressed files are decoded from
    the same block reads (:class:`~stem_explorer.io.partitioned.chunks.ChunkDecoder`)."""

    def __init__(self, source: HdfsPartitionSource):
        self.source = source
        self._files: dict[int, BlockFile] = {}
        self._buffer: Optional[np.ndarray] = None
        self._frame_bytes = math.prod(source.sig_shape) * source.dtype.itemsize
        self._decoder = None if source.chunking is None else ChunkDecoder(source, self)

    def _file(self, i: int) -> BlockFile:
        if i not in self._files:
            self._files[i] = self.source.file(i)
        return self._files[i]

    def file_name(self, i: int) -> str:
        s = self.source
        return f"{s.directory}/{s.parts[i][0]} (HDFS, NameNode {s.client.namenode})"

    def read_bytes(self, i: int, offset: int, out: np.ndarray) -> None:
        """Fill ``out`` (uint8) from byte ``offset`` of file ``i``."""
        self._file(i).read_into(offset, out)

    def read(self, start: int, stop: int) -> np.ndarray:
        if self._decoder is not None:
            return self._decoder.read(start, stop)
        s, fb = self.source, self._frame_bytes
        _check_range(start, stop, s.n_frames)
        shape = (stop - start,) + s.sig_shape
        if start == stop:
            return np.empty(shape, s.dtype)
        i = s.part_index(start)
        first = s.parts[i][1]
        if stop <= s.parts[i][2]:
            view = self._file(i).view((start - first) * fb, (stop - first) * fb)
            if view is not None and view.ctypes.data % s.dtype.alignment == 0:
                return view.view(s.dtype).reshape(shape)
        n_bytes = (stop - start) * fb
        if self._buffer is None or self._buffer.nbytes < n_bytes:
            self._buffer = np.empty(n_bytes, np.uint8)
        out = self._buffer[:n_bytes]
        pos = start
        while pos < stop:
            i = s.part_index(pos)
            _name, a, b, _blocks = s.parts[i]
            end = min(stop, b)
            self._file(i).read_into((pos - a) * fb, out[(pos - start) * fb : (end - start) * fb])
            pos = end
        return out.view(s.dtype).reshape(shape)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._buffer = None
        if self._decoder is not None:
            self._decoder.close()


class HdfsPartitionDataSet(RawPartitionDataSet):
    """A raw partition data set on HDFS (partitions follow the files, as locally)."""

    source: HdfsPartitionSource


def read_hdfs_sidecar(client: WebHDFS, directory: str, where: str) -> dict:
    """Parse and check ``dataset.json`` of the data set in HDFS folder ``directory``."""
    try:
        text = client.read_all(f"{directory}/{SIDECAR_NAME}")
    except DataSetNotFoundError:
        raise DataSetNotFoundError(
            f"{where} does not exist: the folder is not a raw partition data set, or its "
            f"ingestion did not finish (re-run it: it resumes); check the path"
        ) from None
    try:
        text = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{where} is not UTF-8 text ({exc}); fix it or re-ingest the data set") from None
    return parse_sidecar(text, where)


def _check_sizes(url: HdfsURL, parts: Sequence[dict], listing: dict) -> None:
    for p in parts:
        status = listing.get(p["file"])
        if status is None:
            raise DataSetNotFoundError(
                f"partition file {url.child(p['file'])} listed in {SIDECAR_NAME} is missing on "
                f"HDFS; re-run the ingestion (it rewrites missing files)")
        if int(status["length"]) != p["bytes"]:
            raise FormatError(f"partition file {url.child(p['file'])} is {status['length']} bytes but "
                              f"{SIDECAR_NAME} records {p['bytes']}; re-ingest the data set")


def check_hashes(source: HdfsPartitionSource, parts: Sequence[dict], url: HdfsURL, threads: int = 4) -> None:
    """sha256 of every partition file against the sidecar; ChecksumError names each
    file that differs."""
    by_name = {p["file"]: p for p in parts}

    def actual(i):
        name = source.parts[i][0]
        return name, source.file(i).sha256(by_name[name]["bytes"])

    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(actual, range(len(source.parts))))
    bad = [f"{name}: expected sha256 {by_name[name]['sha256']}, got {digest}"
           for name, digest in found if digest != by_name[name]["sha256"]]
    if bad:
        raise ChecksumError(
            f"{len(bad)} partition file(s) in {url} do not match their checksums ({'; '.join(bad)}); "
            f"the bytes changed since ingestion: re-run the ingestion with overwrite=True, or "
            f"delete the named files and re-run it to rewrite just those"
        )


def open_hdfs(url: str, *, verify: str = "size", webhdfs: Optional[str] = None,
              user: Optional[str] = None, short_circuit: str = "verify") -> HdfsPartitionDataSet:
    """Open a raw partition data set on HDFS: ``hdfs://namenode:port/path/to/dir``.

    ``verify="size"`` checks every file exists with its recorded size, ``"full"``
    also its sha256 (reads everything, from this process). ``webhdfs`` is the
    NameNode's ``host:http_port`` when the Hadoop configuration does not say.
    ``short_circuit`` is how workers read blocks their own node stores (see
    :data:`SHORT_CIRCUIT`).
    """
    if verify not in ("size", "full"):
        raise DataSetError(f"verify must be 'size' or 'full', got {verify!r}")
    if short_circuit not in SHORT_CIRCUIT:
        raise DataSetError(f"short_circuit must be one of {SHORT_CIRCUIT}, got {short_circuit!r}")
    parsed = parse_url(url)
    client = webhdfs_for(parsed, webhdfs, user)
    if parsed.path.endswith("/" + SIDECAR_NAME):
        parsed = HdfsURL(parsed.scheme, parsed.host, parsed.port, parsed.path.rsplit("/", 1)[0] or "/")
    directory = parsed.path
    doc = read_hdfs_sidecar(client, directory, parsed.child(SIDECAR_NAME))
    parts = doc["partitions"]
    _check_sizes(parsed, parts, client.list(directory))
    client.learn_rpc_address(f"{directory}/{SIDECAR_NAME}")
    with ThreadPoolExecutor(8) as pool:
        blocks = list(pool.map(lambda p: client.block_locations(f"{directory}/{p['file']}"), parts))
    source = HdfsPartitionSource(
        client, directory, [(p["file"], p["start"], p["stop"], b) for p, b in zip(parts, blocks)],
        n_frames=math.prod(doc["nav_shape"]), sig_shape=doc["sig_shape"], dtype=doc["dtype"],
        short_circuit=short_circuit, chunking=Chunking.from_sidecar(doc),
    )
    if verify == "full":
        check_hashes(source, parts, parsed)
    metadata = dict(doc.get("metadata") or {})
    read_path = "hdfs" if source.chunking is None else f"hdfs, decode {source.chunking.layout.describe()}"
    metadata.update({"n_files": len(parts), "read_path": read_path, "verified": verify,
                     "namenode": client.namenode})
    return HdfsPartitionDataSet(source, doc["nav_shape"], format="raw_partitions", path=str(parsed),
                                metadata=metadata,
                                calibration=stored_calibration(metadata, repr(f"{parsed}/{SIDECAR_NAME}")))
