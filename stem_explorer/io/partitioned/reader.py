"""Reading raw partition data sets: memory-mapped frame sources, the data set whose
partitions follow the files, :func:`open_raw_partitions`, and the reader plugin."""

from __future__ import annotations

import abc
import bisect
import math
import os
from typing import Optional, Sequence

import numpy as np

from ...errors import DataSetError, DataSetNotFoundError, FormatError
from ..base import (
    DEFAULT_PARTITION_BYTES,
    DataSet,
    FrameReader,
    FrameSource,
    Partition,
    plan_partitions,
)
from ..calibration import stored_calibration
from ..raw import _check_range, map_frames
from ..registry import ReaderPlugin, register_reader
from .chunks import DECODED_TILE_BYTES, ChunkDecoder, Chunking
from .sidecar import FORMAT_NAME, SIDECAR_NAME, _check_hashes, _check_sizes, read_sidecar


class PartFilesSource(FrameSource):
    """Frames stored in a sequence of files: ``parts`` rows begin ``(file, start, stop)``
    (flat frame range). Finds the file of a frame and the hosts of a frame range;
    subclasses say where each file's replicas are (:meth:`host_groups`).

    ``chunking`` (a :class:`~.chunks.Chunking`) is set when the files are compressed:
    reads then decode whole chunks, so tiles start on chunk boundaries
    (``frame_alignment``)."""

    parts: tuple
    chunking: Optional[Chunking] = None

    def _index_parts(self) -> None:
        self._starts = [p[1] for p in self.parts]

    def _set_chunking(self, chunking: Optional[Chunking]) -> None:
        """Keep the chunk tables of this source's own files."""
        if chunking is not None:
            self.chunking = chunking.subset(p[0] for p in self.parts)
            self.frame_alignment = chunking.layout.chunk_frames
            self.tile_bytes_limit = DECODED_TILE_BYTES

    def part_index(self, frame: int) -> int:
        """Index in :attr:`parts` of the file holding flat frame ``frame``."""
        i = bisect.bisect_right(self._starts, frame) - 1
        if i < 0 or not self.parts[i][1] <= frame < self.parts[i][2]:
            held = ", ".join(f"{p[1]}:{p[2]}" for p in self.parts)
            raise DataSetError(
                f"frame {frame} is not in this source's partition files (frames {held}); "
                f"read a partition's frames through its own source"
            )
        return i

    @abc.abstractmethod
    def host_groups(self, start: int, stop: int) -> list[tuple[str, ...]]:
        """For each stored piece of frames ``start:stop``, the hosts holding it."""

    def locations(self, start: int, stop: int) -> Optional[tuple[str, ...]]:
        """Hosts holding every piece of frames ``start:stop`` (else any of them, in
        order of appearance), or None when no location is known."""
        groups = [g for g in self.host_groups(start, stop) if g]
        if not groups:
            return None
        ordered = tuple(dict.fromkeys(h for g in groups for h in g))
        common = set.intersection(*(set(g) for g in groups))
        return tuple(h for h in ordered if h in common) or ordered

    def __getstate__(self):
        state = super().__getstate__()
        del state["_starts"]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._index_parts()


class RawPartitionSource(PartFilesSource):
    """Picklable recipe for frames in raw partition files.

    ``parts`` is a tuple of ``(file, start, stop, locations)``. The source a
    :class:`Partition` carries lists only that partition's files (see
    :meth:`subset`), so task pickles stay small however many files the data set has.
    """

    def __init__(
        self,
        directory: str,
        parts: Sequence[tuple[str, int, int, tuple[str, ...]]],
        *,
        n_frames: int,
        sig_shape: Sequence[int],
        dtype,
        chunking: Optional[Chunking] = None,
    ):
        self.directory = os.fspath(directory)
        self.parts = tuple((str(f), int(a), int(b), tuple(loc)) for f, a, b, loc in parts)
        self.n_frames = int(n_frames)
        self.sig_shape = tuple(int(n) for n in sig_shape)
        self.dtype = np.dtype(dtype)
        self._index_parts()
        self._set_chunking(chunking)

    def open(self, payload=None) -> "RawPartitionReader":
        """Open a reader; files are mapped (or, compressed, opened) lazily on first read."""
        return RawPartitionReader(self)

    def subset(self, start: int, stop: int) -> "RawPartitionSource":
        """The same source restricted to the files holding frames ``start:stop``."""
        parts = [p for p in self.parts if p[1] < stop and p[2] > start]
        return RawPartitionSource(
            self.directory,
            parts,
            n_frames=self.n_frames,
            sig_shape=self.sig_shape,
            dtype=self.dtype,
            chunking=self.chunking,
        )

    def host_groups(self, start: int, stop: int) -> list[tuple[str, ...]]:
        """The recorded locations of each file holding frames ``start:stop``."""
        return [p[3] for p in self.parts if p[1] < stop and p[2] > start]

    def __repr__(self) -> str:
        return (
            f"RawPartitionSource({self.directory!r}, {len(self.parts)} files, "
            f"n_frames={self.n_frames}, sig_shape={self.sig_shape}, dtype={self.dtype.str!r})"
        )


class RawPartitionReader(FrameReader):
    """Zero-copy views of mapped partition files; a read that spans two files is
    copied into a reused buffer. Compressed files are read with ``pread`` and decoded
    (:class:`~.chunks.ChunkDecoder`)."""

    def __init__(self, source: RawPartitionSource):
        self.source = source
        self._maps: dict[int, np.ndarray] = {}
        self._fds: dict[int, int] = {}
        self._buffer: Optional[np.ndarray] = None
        self._decoder = None if source.chunking is None else ChunkDecoder(source, self)

    def file_name(self, i: int) -> str:
        return repr(os.path.join(self.source.directory, self.source.parts[i][0]))

    def _missing(self, i: int) -> DataSetNotFoundError:
        return DataSetNotFoundError(
            f"partition file {self.file_name(i)} is missing (on this machine); restore it or "
            f"re-ingest the data set"
        )

    def _mapped(self, i: int) -> np.ndarray:
        if i not in self._maps:
            s = self.source
            name, start, stop, _loc = s.parts[i]
            path = os.path.join(s.directory, name)
            try:
                self._maps[i] = map_frames(
                    path, offset=0, n_frames=stop - start, sig_shape=s.sig_shape, dtype=s.dtype
                )
            except FileNotFoundError:
                raise self._missing(i) from None
        return self._maps[i]

    def read_bytes(self, i: int, offset: int, out: np.ndarray) -> None:
        """Fill ``out`` (uint8) from byte ``offset`` of file ``i``, and ask the kernel
        to read the same length after it ahead (the next tile's, when reading on)."""
        if i not in self._fds:
            try:
                self._fds[i] = os.open(os.path.join(self.source.directory, self.source.parts[i][0]), os.O_RDONLY)
            except FileNotFoundError:
                raise self._missing(i) from None
        fd, view, pos = self._fds[i], memoryview(out), 0
        while pos < len(view):
            got = os.preadv(fd, [view[pos:]], offset + pos)
            if got <= 0:
                raise FormatError(
                    f"partition file {self.file_name(i)} ends at byte {offset + pos}, before the "
                    f"{offset + len(view)} its chunks need; restore the file or re-ingest the data set"
                )
            pos += got
        os.posix_fadvise(fd, offset + pos, pos, os.POSIX_FADV_WILLNEED)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop``: a view of the mapped file when one file holds them."""
        if self._decoder is not None:
            return self._decoder.read(start, stop)
        s = self.source
        _check_range(start, stop, s.n_frames)
        if start == stop:
            return np.empty((0,) + s.sig_shape, s.dtype)
        i = s.part_index(start)
        first = s.parts[i][1]
        if stop <= s.parts[i][2]:
            return self._mapped(i)[start - first : stop - first]
        n = stop - start
        if self._buffer is None or len(self._buffer) < n:
            self._buffer = np.empty((n,) + s.sig_shape, s.dtype)
        out = self._buffer[:n]
        pos = start
        while pos < stop:
            i = s.part_index(pos)
            _name, a, b, _loc = s.parts[i]
            end = min(stop, b)
            out[pos - start : end - start] = self._mapped(i)[pos - a : end - a]
            pos = end
        return out

    def close(self) -> None:
        """Unmap and close the files (views already handed out keep their mapping alive)."""
        self._maps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._buffer = None
        if self._decoder is not None:
            self._decoder.close()


class RawPartitionDataSet(DataSet):
    """A raw partition data set: partitions never straddle a partition file."""

    source: RawPartitionSource

    def partitions(
        self, n_workers: int = 1, target_bytes: Optional[int] = None
    ) -> list[Partition]:
        """One partition per file, or runs of whole consecutive files.

        Files are already sized for work units, so ``target_bytes`` (default 256 MiB)
        only groups *small* files: there are about ``total / target_bytes`` partitions
        (rounded up to a multiple of ``n_workers``), but never fewer files than one per
        partition and never a partial file. Each partition's source lists only its own
        files, and its locations are the hosts holding them.
        """
        parts = self.source.parts
        n_workers = max(1, int(n_workers))
        mean_file_bytes = max(1, self.nbytes // len(parts))
        groups = plan_partitions(
            len(parts),
            mean_file_bytes,
            n_workers=n_workers,
            target_bytes=target_bytes or DEFAULT_PARTITION_BYTES,
        )
        out = []
        for index, (g0, g1) in enumerate(groups):
            start, stop = parts[g0][1], parts[g1 - 1][2]
            sub = self.source.subset(start, stop)
            out.append(Partition(index, start, stop, sub, sub.locations(start, stop)))
        return out


def open_raw_partitions(path, *, verify: str = "size") -> RawPartitionDataSet:
    """Open a raw partition data set: its directory, or its ``dataset.json``.

    ``verify="size"`` (default) checks that every file exists with the recorded size;
    ``verify="full"`` also checks every file's sha256 (reads all the data once).
    """
    if verify not in ("size", "full"):
        raise DataSetError(
            f"verify must be 'size' (check file sizes) or 'full' (also sha256), got {verify!r}"
        )
    directory, doc = read_sidecar(path)
    parts = doc["partitions"]
    _check_sizes(directory, parts)
    if verify == "full":
        _check_hashes(directory, parts)
    source = RawPartitionSource(
        directory,
        [(p["file"], p["start"], p["stop"], tuple(p.get("locations", ()))) for p in parts],
        n_frames=math.prod(doc["nav_shape"]),
        sig_shape=doc["sig_shape"],
        dtype=doc["dtype"],
        chunking=Chunking.from_sidecar(doc),
    )
    metadata = dict(doc.get("metadata") or {})
    read_path = "mmap" if source.chunking is None else f"decode {source.chunking.layout.describe()}"
    metadata.update({"n_files": len(parts), "read_path": read_path, "verified": verify})
    return RawPartitionDataSet(
        source, doc["nav_shape"], format="raw_partitions", path=directory, metadata=metadata,
        calibration=stored_calibration(metadata, repr(os.path.join(directory, SIDECAR_NAME))),
    )


def _sniff_raw_partitions(path) -> bool:
    """A directory holding ``dataset.json``, or a JSON file naming this format."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, SIDECAR_NAME))
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return False
    return FORMAT_NAME.encode() in head


PLUGIN = register_reader(
    ReaderPlugin(
        name="raw_partitions",
        open=open_raw_partitions,
        suffixes=(".json",),
        sniff=_sniff_raw_partitions,
        description="stem_explorer raw partition directory (dataset.json + part-*.raw)",
    ),
    replace=True,
)
