"""Compressed partition files: encoding frames chunk by chunk as they are written,
and decoding frame ranges straight into the reader's tile buffer.

Decoding runs where the frames are read (a dask worker), without h5py: the chunks a
tile needs are read in one request per file into a reused buffer, each chunk's
CRC-32C is checked, and every chunk that lies wholly inside the tile is decoded by
the codec into its place in the tile, on a small thread pool (numcodecs releases the
GIL while Blosc decodes, so the chunks of a tile decode on several cores when the
cores are free). A chunk only partly inside the read (a single frame, a tile that is
not chunk-aligned) is decoded once into a scratch chunk, kept for the next read.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Iterator, Optional, Protocol

import numpy as np

from ...errors import FormatError
from ..raw import _check_range
from .codecs import ChunkLayout, load_checksum, load_codec

#: Threads decoding one tile's chunks (``STEM_EXPLORER_DECODE_THREADS``, default:
#: the cores this process may use).
DECODE_THREADS_ENV = "STEM_EXPLORER_DECODE_THREADS"
#: Tile size of a task over compressed files (at least one chunk: tiles start on
#: chunks). Decoding a 32 MiB tile writes it out to memory before the kernels read it
#: back; a 4 MiB one is still in the cache: a bright-field disk over bitshuffle-LZ4
#: counting data ran at 1.8 instead of 1.45 GB/s on 2 workers (warm page cache).
DECODED_TILE_BYTES = 4 * 2**20


def decode_threads() -> int:
    """How many chunks of a tile decode at once in this process."""
    value = os.environ.get(DECODE_THREADS_ENV)
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_pool: list = [None]
_pool_lock = threading.Lock()


def _decode_pool() -> Optional[ThreadPoolExecutor]:
    """The process's decode threads, None when one thread is all it may use."""
    with _pool_lock:
        if _pool[0] is None and decode_threads() > 1:
            _pool[0] = ThreadPoolExecutor(decode_threads(), thread_name_prefix="stem-explorer-decode")
        return _pool[0]


@dataclass(frozen=True)
class Chunking:
    """The chunk layout of a compressed data set and, for each of its files, the
    compressed size and CRC-32C of every chunk (small and picklable: a partition's
    source carries only its own files' tables, :meth:`subset`)."""

    layout: ChunkLayout
    tables: dict = field(hash=False)  # file name -> (sizes, crc32c), tuples of ints

    @classmethod
    def from_sidecar(cls, doc: dict) -> Optional["Chunking"]:
        """The chunking a checked sidecar records, None for an uncompressed data set."""
        layout = ChunkLayout.from_sidecar(doc)
        if layout is None:
            return None
        tables = {p["file"]: (tuple(p["chunk_bytes"]), tuple(p["chunk_crc32c"])) for p in doc["partitions"]}
        return cls(layout, tables)

    def subset(self, names) -> "Chunking":
        return Chunking(self.layout, {name: self.tables[name] for name in names})


def chunk_record(sizes, crcs) -> dict:
    """A partition's chunk fields in the sidecar."""
    return {"chunk_bytes": [int(n) for n in sizes], "chunk_crc32c": [int(c) for c in crcs]}


class ChunkEncoder:
    """Compresses the frames of one file chunk by chunk, fed in blocks of any size.

    :meth:`feed` and :meth:`flush` yield the compressed chunks in file order (write
    them back to back); :meth:`record` then gives the file's chunk fields.
    """

    def __init__(self, layout: ChunkLayout, dtype, sig_shape, where: str):
        self.layout = layout
        self.codec = load_codec(layout, where)
        self.crc32c = load_checksum(layout, where)
        self._pending = np.empty((layout.chunk_frames,) + tuple(sig_shape), dtype)
        self._n = 0
        self.sizes: list[int] = []
        self.crcs: list[int] = []

    def feed(self, block: np.ndarray) -> Iterator[bytes]:
        """Compress the whole chunks ``block`` completes; keep the rest for later."""
        per = self.layout.chunk_frames
        pos = 0
        while pos < len(block):
            if self._n == 0 and len(block) - pos >= per:  # a whole chunk inside the block: no copy
                yield self._encode(block[pos : pos + per])
                pos += per
                continue
            k = min(per - self._n, len(block) - pos)
            self._pending[self._n : self._n + k] = block[pos : pos + k]
            self._n += k
            pos += k
            if self._n == per:
                yield self._encode(self._pending)
                self._n = 0

    def flush(self) -> Iterator[bytes]:
        """Compress the frames left over (the file's last, shorter chunk)."""
        if self._n:
            yield self._encode(self._pending[: self._n])
            self._n = 0

    def _encode(self, frames: np.ndarray) -> bytes:
        # typed frames: Blosc's shuffle works on the dtype's itemsize
        data = self.codec.encode(np.ascontiguousarray(frames))
        self.sizes.append(len(data))
        self.crcs.append(self.crc32c(data))
        return data

    def record(self) -> dict:
        return chunk_record(self.sizes, self.crcs)


class CompressedBytes(Protocol):
    """What :class:`ChunkDecoder` needs from a reader: the bytes of its files."""

    def file_name(self, i: int) -> str:
        """File ``i`` of the source, as error messages name it."""

    def read_bytes(self, i: int, offset: int, out: np.ndarray) -> None:
        """Fill the uint8 array ``out`` from byte ``offset`` of file ``i``."""


class ChunkDecoder:
    """Frame ranges of a compressed :class:`~.reader.PartFilesSource`, decoded from
    the bytes its reader fetches (``files``)."""

    def __init__(self, source, files: CompressedBytes):
        self.source = source
        self.files = files
        self.chunking: Chunking = source.chunking
        self.layout = self.chunking.layout
        where = files.file_name(0) if source.parts else "this data set"
        self.codec = load_codec(self.layout, where)
        self.crc32c = load_checksum(self.layout, where)
        self._blosc = self.layout.config.get("id") == "blosc"
        self._offsets: dict[int, np.ndarray] = {}
        self._tile: Optional[np.ndarray] = None
        self._compressed: Optional[np.ndarray] = None
        self._scratch: Optional[np.ndarray] = None
        self._scratch_key: Optional[tuple[int, int]] = None

    def _offsets_of(self, i: int) -> np.ndarray:
        """Byte offsets of file ``i``'s chunks, and its size at the end."""
        if i not in self._offsets:
            sizes = self.chunking.tables[self.source.parts[i][0]][0]
            self._offsets[i] = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        return self._offsets[i]

    def _buffer(self, attr: str, shape, dtype) -> np.ndarray:
        """A reused buffer of at least ``shape[0]`` rows (grown, never shrunk)."""
        buf = getattr(self, attr)
        if buf is None or len(buf) < shape[0] or buf.dtype != dtype:
            buf = np.empty(shape, dtype)
            setattr(self, attr, buf)
        return buf[: shape[0]]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop``, in a buffer reused by the next read."""
        s = self.source
        _check_range(start, stop, s.n_frames)
        out = self._buffer("_tile", (stop - start,) + s.sig_shape, s.dtype)
        if start == stop:
            return out
        kept = self._kept_frames(start, stop)
        if kept is not None:  # frames of the chunk decoded last (a frame at a time, say): no read at all
            out[:] = kept
            return out
        runs = list(self._runs(start, stop))
        total = sum(int(off[c1] - off[c0]) for _i, _a, c0, c1, off in runs)
        compressed = self._buffer("_compressed", (total,), np.uint8)
        whole, pos = [], 0
        for i, a, c0, c1, off in runs:
            run = compressed[pos : pos + int(off[c1] - off[c0])]
            self.files.read_bytes(i, int(off[c0]), run)
            pos += len(run)
            for c in range(c0, c1):
                data = run[int(off[c] - off[c0]) : int(off[c + 1] - off[c0])]
                f0, f1 = self._frames_of(i, c)
                lo, hi = max(f0, start), min(f1, stop)
                if (lo, hi) == (f0, f1):
                    whole.append((i, c, data, out[f0 - start : f1 - start]))
                else:  # part of a chunk: decode it whole, keep it for the next read
                    out[lo - start : hi - start] = self._chunk(i, c, data, f1 - f0)[lo - f0 : hi - f0]
        self._decode_all(whole)
        return out

    def _runs(self, start: int, stop: int):
        """``(file index, its first frame, first chunk, end chunk, offsets)`` of the
        chunks holding frames ``start:stop``, file by file."""
        s, per = self.source, self.layout.chunk_frames
        pos = start
        while pos < stop:
            i = s.part_index(pos)
            a, b = s.parts[i][1], s.parts[i][2]
            end = min(stop, b)
            yield i, a, (pos - a) // per, math.ceil((end - a) / per), self._offsets_of(i)
            pos = end

    def _frames_of(self, i: int, c: int) -> tuple[int, int]:
        """The flat frame range of chunk ``c`` of file ``i``."""
        per, (_name, a, b) = self.layout.chunk_frames, self.source.parts[i][:3]
        return a + c * per, min(b, a + (c + 1) * per)

    def _kept_frames(self, start: int, stop: int) -> Optional[np.ndarray]:
        """Frames ``start:stop`` from the scratch chunk when it holds them all."""
        if self._scratch_key is None:
            return None
        f0, f1 = self._frames_of(*self._scratch_key)
        return self._scratch[start - f0 : stop - f0] if f0 <= start and stop <= f1 else None

    def _chunk(self, i: int, c: int, data: np.ndarray, n_frames: int) -> np.ndarray:
        s = self.source
        scratch = self._buffer("_scratch", (self.layout.chunk_frames,) + s.sig_shape, s.dtype)[:n_frames]
        if self._scratch_key != (i, c):
            self._scratch_key = None
            self._decode(i, c, data, scratch)
            self._scratch_key = (i, c)
        return scratch

    def _decode_all(self, jobs: list) -> None:
        pool = _decode_pool() if len(jobs) > 1 else None
        if pool is None:
            for job in jobs:
                self._decode(*job)
            return
        futures = [pool.submit(self._decode, *job) for job in jobs]
        wait(futures)  # none still writes into the tile once this read has ended, even on an error
        for future in futures:
            future.result()  # the first damaged chunk's error

    def _decode(self, i: int, c: int, data: np.ndarray, dest: np.ndarray) -> None:
        """Check chunk ``c`` of file ``i`` and decode it into ``dest`` (its frames)."""
        if self.crc32c(data) != self.chunking.tables[self.source.parts[i][0]][1][c]:
            raise self._damaged(i, c, "does not match its CRC-32C checksum")
        if self._blosc:
            self._check_blosc_header(i, c, data, dest.nbytes)
        try:
            self.codec.decode(data, out=dest)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise self._damaged(i, c, f"cannot be decoded ({exc})") from None

    def _check_blosc_header(self, i: int, c: int, data: np.ndarray, nbytes: int) -> None:
        """Blosc trusts its 16-byte header (decoded size at bytes 4:8, compressed size at
        12:16, little-endian): a header that disagrees with the chunk would make it
        write short or read past the chunk, so it is refused first."""
        header = data[:16].tobytes()
        decoded = int.from_bytes(header[4:8], "little") if len(header) == 16 else -1
        stored = int.from_bytes(header[12:16], "little") if len(header) == 16 else -1
        if (decoded, stored) != (nbytes, len(data)):
            raise self._damaged(i, c, f"has a Blosc header saying {decoded} bytes compressed to {stored}, not "
                                      f"its frames' {nbytes} bytes in its {len(data)}")

    def close(self) -> None:
        """Drop the buffers (the last tile handed out stays valid while referenced)."""
        self._tile = self._compressed = self._scratch = None
        self._scratch_key = None

    def _damaged(self, i: int, c: int, problem: str) -> FormatError:
        off = self._offsets_of(i)
        f0, f1 = self._frames_of(i, c)
        return FormatError(
            f"partition file {self.files.file_name(i)} is damaged: its compressed chunk {c} (frames "
            f"{f0}:{f1}, bytes {int(off[c])}:{int(off[c + 1])}, codec {self.layout.name}) {problem}; nothing "
            f"of it is read. Restore the file or re-ingest the data set (opening the data set with "
            f"verify='full' checks every file's sha256)"
        )
