"""Writing raw partition data sets crash-safely: :class:`RawPartitionWriter` and
:func:`write_raw_partitions`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from typing import Callable, Optional, Sequence

import numpy as np

from ...errors import DataSetError
from ..._json import jsonable
from ..base import DataSet, FrameReader
from ..raw import parse_dtype, parse_shape
from .chunks import ChunkEncoder
from .codecs import ChunkLayout, file_frames, part_file_name
from .reader import RawPartitionDataSet, open_raw_partitions
from .sidecar import SIDECAR_NAME, sidecar_document, validate_sidecar

#: Default size of one partition file written by :class:`RawPartitionWriter`.
DEFAULT_FILE_BYTES = 256 * 2**20
_TMP_PART = re.compile(r"^part-\d{5,}\.[a-z0-9]+\.tmp$")
#: Buffers per ``os.writev`` call (Linux's IOV_MAX).
_IOV_MAX = 1024


class RawPartitionWriter:
    """Write frames, in order, as a raw partition data set in directory ``dest``.

    Use as a context manager and call :meth:`write` with blocks ``(n, sig_y, sig_x)`` of
    the declared dtype. A new partition file starts whenever the current one holds
    ``partition_bytes`` (rounded down to whole frames, at least one frame). Files are
    written as ``part-NNNNN.raw.tmp``, hashed as they go, and renamed when complete;
    ``dataset.json`` is published atomically on a successful exit only when all
    ``prod(nav_shape)`` frames were written. An exception inside the ``with`` block (or
    :meth:`abort`) removes everything this writer wrote and publishes nothing.

    An existing data set in ``dest`` is an error unless ``overwrite=True``, which
    deletes it (its sidecar first, then its files) when writing starts.

    ``codec`` names a preset of :data:`~.codecs.CODECS`: other than ``"none"``, each
    file's frames are compressed in chunks (``partition_bytes`` then counts the
    frames' uncompressed bytes, in whole chunks) and the sidecar is version 2.
    """

    def __init__(
        self,
        dest,
        *,
        nav_shape,
        sig_shape,
        dtype,
        partition_bytes: int = DEFAULT_FILE_BYTES,
        metadata: Optional[dict] = None,
        overwrite: bool = False,
        codec: str = "none",
    ):
        self.dest = os.path.abspath(os.fspath(dest))
        self.nav_shape = parse_shape("nav_shape", nav_shape, (1, 2))
        self.sig_shape = parse_shape("sig_shape", sig_shape, (2,))
        self.dtype = parse_dtype(dtype)
        if int(partition_bytes) != partition_bytes or partition_bytes <= 0:
            raise DataSetError(
                f"partition_bytes must be a positive number of bytes, got {partition_bytes!r}"
            )
        self.metadata = jsonable(dict(metadata or {}))
        self.overwrite = bool(overwrite)
        self.n_frames = math.prod(self.nav_shape)
        self.frame_bytes = math.prod(self.sig_shape) * self.dtype.itemsize
        self.frames_per_file = max(1, int(partition_bytes) // self.frame_bytes)
        self.layout = ChunkLayout.of(codec, self.frame_bytes, min(self.frames_per_file, self.n_frames))
        if self.layout is not None:
            self.frames_per_file = file_frames(self.frames_per_file, self.layout.chunk_frames)
        self._encoder: Optional[ChunkEncoder] = None
        self.frames_written = 0
        self._parts: list[dict] = []
        self._file = None  # the open tmp file of the current part
        self._hash = None
        self._current: Optional[dict] = None
        self._state = "new"  # new -> writing -> closed | aborted
        self._created_dest = False

    # -- lifecycle
    def __enter__(self) -> "RawPartitionWriter":
        self._start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    @property
    def sidecar_path(self) -> str:
        """Where ``dataset.json`` is published."""
        return os.path.join(self.dest, SIDECAR_NAME)

    def _start(self) -> None:
        if self._state != "new":
            if self._state == "writing":
                return
            raise DataSetError(f"this writer is {self._state}; create a new RawPartitionWriter")
        if os.path.exists(self.dest) and not os.path.isdir(self.dest):
            raise DataSetError(f"{self.dest!r} is a file; pass a directory path as dest")
        if os.path.exists(self.sidecar_path):
            if not self.overwrite:
                raise DataSetError(
                    f"{self.dest!r} already holds a data set ({SIDECAR_NAME}); pass "
                    f"overwrite=True to replace it, or choose another directory"
                )
            self._remove_old_dataset()
        if not os.path.isdir(self.dest):
            os.makedirs(self.dest)
            self._created_dest = True
        for name in os.listdir(self.dest):  # leftovers of an interrupted writer
            if _TMP_PART.match(name):
                os.remove(os.path.join(self.dest, name))
        self._state = "writing"

    def _remove_old_dataset(self) -> None:
        try:
            with open(self.sidecar_path, encoding="utf-8") as f:
                old = [p.get("file") for p in json.load(f).get("partitions", [])]
        except (OSError, ValueError, AttributeError, TypeError):
            old = []
        os.remove(self.sidecar_path)
        for name in old:
            plain = isinstance(name, str) and os.path.basename(name) == name
            if plain and name not in ("", ".", ".."):
                try:
                    os.remove(os.path.join(self.dest, name))
                except (FileNotFoundError, IsADirectoryError):
                    pass

    # -- writing
    def write(self, block) -> None:
        """Append frames ``(n, sig_y, sig_x)`` of the declared dtype."""
        self._start()
        if not isinstance(block, np.ndarray):
            raise DataSetError(
                f"write() takes a numpy array of frames, got {type(block).__name__}; pass "
                f"np.asarray(block)"
            )
        if block.dtype != self.dtype:
            raise DataSetError(
                f"block dtype {block.dtype.str} differs from the declared dtype "
                f"{self.dtype.str}; convert with block.astype({self.dtype.str!r})"
            )
        if block.ndim != 3 or tuple(block.shape[1:]) != self.sig_shape:
            raise DataSetError(
                f"block of shape {block.shape} is not (n, {self.sig_shape[0]}, "
                f"{self.sig_shape[1]}) frames of the declared sig_shape; reshape it to "
                f"(-1, {self.sig_shape[0]}, {self.sig_shape[1]})"
            )
        block = np.ascontiguousarray(block)

        def put(pos: int, k: int) -> None:
            if self._encoder is None:
                self._store(block[pos : pos + k].reshape(-1).view(np.uint8))
            else:
                for chunk in self._encoder.feed(block[pos : pos + k]):
                    self._store(chunk)

        self._append(len(block), put)

    def write_frames(self, frames: Sequence) -> None:
        """Append frames given as one buffer each (bytes-like objects of one frame's
        bytes in the declared dtype), to uncompressed files: the frames of a received
        stream are written from where they arrived (``os.writev``), without
        assembling a block."""
        self._start()
        if self.layout is not None:
            raise DataSetError("write_frames() writes uncompressed files; write blocks with write() to compress")
        views = [memoryview(f).cast("B") for f in frames]
        if any(v.nbytes != self.frame_bytes for v in views):
            sizes = sorted({v.nbytes for v in views} - {self.frame_bytes})
            raise DataSetError(
                f"frames of {sizes} bytes given, but a {self.sig_shape} {self.dtype.str} frame is "
                f"{self.frame_bytes} bytes; pass whole frames of the declared layout"
            )
        self._append(len(views), lambda pos, k: self._store_views(views[pos : pos + k]))

    def _append(self, n: int, put: Callable[[int, int], None]) -> None:
        """Append ``n`` frames file by file: ``put(pos, k)`` stores frames
        ``pos:pos + k`` of them in the current file."""
        if self.frames_written + n > self.n_frames:
            raise DataSetError(
                f"writing {n} more frames would make {self.frames_written + n}, but "
                f"nav_shape {self.nav_shape} has {self.n_frames}; check nav_shape or the "
                f"blocks written"
            )
        pos = 0
        while pos < n:
            if self._file is None:
                self._open_part()
            room = self.frames_per_file - (self._current["stop"] - self._current["start"])
            k = min(room, n - pos)
            put(pos, k)
            self._current["stop"] += k
            self.frames_written += k
            pos += k
            if k == room:
                self._finish_part()

    def _store_views(self, views: list) -> None:
        """Append buffers to the current file in as few system calls as it takes."""
        self._file.flush()  # anything buffered goes first
        for v in views:
            self._hash.update(v)
            self._current["bytes"] += v.nbytes
        fd = self._file.fileno()
        while views:
            written = os.writev(fd, views[:_IOV_MAX])
            while views and written >= views[0].nbytes:
                written -= views[0].nbytes
                views = views[1:]
            if written:  # a partial write (a signal): go on from there
                views[0] = views[0][written:]

    def _store(self, data) -> None:
        """Append bytes to the current file."""
        data = memoryview(data)
        self._file.write(data)
        self._hash.update(data)
        self._current["bytes"] += data.nbytes

    def _part_path(self, name: str) -> str:
        """Where part ``name`` is written until it is complete."""
        return os.path.join(self.dest, name + ".tmp")

    def _sync_part(self, f) -> None:
        """Make a complete part durable before it is renamed and listed."""
        f.flush()
        os.fsync(f.fileno())

    def _open_part(self) -> None:
        name = part_file_name(len(self._parts), self.layout)
        self._current = {"file": name, "start": self.frames_written, "stop": self.frames_written, "bytes": 0}
        self._file = open(self._part_path(name), "wb")
        self._hash = hashlib.sha256()
        if self.layout is not None:
            self._encoder = ChunkEncoder(self.layout, self.dtype, self.sig_shape, self.dest)

    def _finish_part(self) -> None:
        part, f = self._current, self._file
        if self._encoder is not None:
            for chunk in self._encoder.flush():
                self._store(chunk)
            part.update(self._encoder.record())
            self._encoder = None
        self._sync_part(f)
        f.close()
        self._file = None
        path = os.path.join(self.dest, part["file"])
        if self._part_path(part["file"]) != path:
            os.replace(self._part_path(part["file"]), path)
        part["sha256"] = self._hash.hexdigest()
        self._parts.append(part)
        self._current = None

    def close(self) -> str:
        """Finish the last file and publish ``dataset.json``; returns its path.

        Fewer frames than ``nav_shape`` holds is an error: the writer aborts and no
        sidecar is published.
        """
        if self._state == "closed":
            return self.sidecar_path
        self._start()
        if self.frames_written != self.n_frames:
            self.abort()
            raise DataSetError(
                f"only {self.frames_written} of the {self.n_frames} frames of nav_shape "
                f"{self.nav_shape} were written to {self.dest!r}, so no {SIDECAR_NAME} was "
                f"published and the partial files were removed; write all frames"
            )
        return self._publish(self.nav_shape, self.metadata)

    def _publish(self, nav_shape, metadata: dict) -> str:
        """Finish the last file and publish ``dataset.json`` for the frames written,
        as a data set of ``nav_shape``; on failure, abort."""
        try:
            if self._file is not None:
                self._finish_part()
            publish_sidecar(self.dest, sidecar_document(nav_shape, self.sig_shape, self.dtype, self._parts,
                                                        metadata, self.layout))
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return self.sidecar_path

    def abort(self) -> None:
        """Stop writing and remove every file this writer created; no sidecar."""
        if self._state in ("closed", "aborted"):
            return
        self._state = "aborted"
        if self._file is not None:
            self._file.close()
            self._file = None
        paths = [os.path.join(self.dest, p["file"]) for p in self._parts]
        if self._current is not None:
            paths.append(self._part_path(self._current["file"]))
        paths.append(self.sidecar_path + ".tmp")
        for path in paths:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        self._parts, self._current = [], None
        if self._created_dest:
            try:
                os.rmdir(self.dest)
            except OSError:
                pass


def write_json_atomically(path: str, doc: dict) -> None:
    """Write ``doc`` as JSON to ``path`` through a synced temporary file and a rename,
    so readers see the old file or the whole new one."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def publish_sidecar(dest: str, doc: dict) -> str:
    """Check ``doc`` (a :func:`~.sidecar.sidecar_document`) and publish it atomically
    as the ``dataset.json`` of ``dest``; returns its path."""
    path = os.path.join(dest, SIDECAR_NAME)
    validate_sidecar(doc, path)
    write_json_atomically(path, doc)
    return path


def write_raw_partitions(
    dest,
    data,
    *,
    partition_bytes: int = DEFAULT_FILE_BYTES,
    block_bytes: int = 64 * 2**20,
    nav_shape=None,
    metadata: Optional[dict] = None,
    overwrite: bool = False,
    codec: str = "none",
) -> RawPartitionDataSet:
    """Write a :class:`DataSet`, or a numpy / dask array of frames, as raw partitions.

    Frames stream through the data set's own reader in blocks of about ``block_bytes``
    (aligned to its chunks), so memory stays bounded whatever the data size. The
    metadata defaults to a description of the source; ``codec`` compresses the files
    (see :class:`RawPartitionWriter`). Returns the written data set, opened.
    """
    if isinstance(data, DataSet):
        ds = data
    else:
        from ..memory import open_memory

        ds = open_memory(data)
    if metadata is None:
        metadata = {"source": ds.describe()}
    # the calibration travels with the frames (a user's metadata may set its own)
    metadata = {"calibration": ds.calibration.to_dict(), **metadata}
    align = max(1, ds.source.frame_alignment)
    per_block = max(1, int(block_bytes) // ds.frame_bytes)
    per_block = max(align, per_block // align * align)
    writer = RawPartitionWriter(
        dest,
        nav_shape=ds.nav_shape if nav_shape is None else nav_shape,
        sig_shape=ds.sig_shape,
        dtype=ds.dtype,
        partition_bytes=partition_bytes,
        metadata=metadata,
        overwrite=overwrite,
        codec=codec,
    )
    reader: Optional[FrameReader] = None
    try:
        with writer:
            for start in range(0, ds.n_frames, per_block):
                stop = min(ds.n_frames, start + per_block)
                payload = ds.local_payload(start, stop)
                if payload is None:  # files: one reader for all blocks
                    reader = reader or ds.source.open(None)
                    writer.write(reader.read(start, stop))
                else:
                    with ds.source.open(payload) as block_reader:
                        writer.write(block_reader.read(start, stop))
    finally:
        if reader is not None:
            reader.close()
    return open_raw_partitions(dest)
