"""Codecs of compressed raw partitions: the named presets, loading a codec where the
data is read (with an error naming the package when it is not installed), and the
chunk layout a compressed data set records in its sidecar.

A compressed partition file is its frames cut into chunks of ``chunk_frames`` frames
(the last chunk of a file may be shorter), each compressed on its own and stored back
to back. The sidecar records the codec (a numcodecs configuration), ``chunk_frames``,
and for every file the compressed size and CRC-32C of each chunk, so a reader finds
any frame's chunk without reading the file's other bytes and detects a damaged chunk
before decoding it. Codecs come from numcodecs (maintained by the zarr developers;
Blosc with its bit-shuffle filter is what DECTRIS detectors write through HDF5), the
checksums from google-crc32c (hardware CRC-32C, about 10 times zlib's CRC-32): the
``compression`` extra installs both.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field
from typing import Optional

from ...errors import CodecError, DataSetError

#: Blosc's shuffle filter numbers (numcodecs.Blosc.BITSHUFFLE is 2).
_BITSHUFFLE = 2

#: Blosc block of the zstd presets. Blosc's automatic choice is small at low levels,
#: and zstd pays per block: on counting data (0.25 electrons per pixel, uint16) 256 KiB
#: blocks decoded level 1 at 1.3-1.6 GB/s instead of 0.5-0.7 (one core, same ratio or
#: better); LZ4 was the same with either, so it keeps the automatic block.
_ZSTD_BLOCK = 2**18

#: ``--codec`` names: numcodecs configurations (None: uncompressed, the plain format).
#: Every preset is Blosc with its bit-shuffle filter, which puts the bits of equal
#: weight together: counting data (mostly 0 and 1 per pixel) becomes long runs of
#: zero bytes. ``zstdN`` is Blosc's compression level N with zstd (Blosc maps it to
#: zstd level 2N - 1).
CODECS: dict[str, Optional[dict]] = {
    "none": None,
    "bslz4": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": _BITSHUFFLE, "blocksize": 0},
    **{f"zstd{level}": {"id": "blosc", "cname": "zstd", "clevel": level, "shuffle": _BITSHUFFLE,
                        "blocksize": _ZSTD_BLOCK} for level in (1, 3, 5)},
}

#: Uncompressed bytes of one chunk: small enough that one frame's chunk decodes in a
#: few milliseconds, large enough that a tile is a handful of chunks (decoded in
#: parallel) and the sidecar lists a few hundred chunks per GiB.
CHUNK_BYTES = 4 * 2**20

#: The install command every "not installed" error gives.
INSTALL = "pip install 'stem_explorer[compression]'"


def codec_config(name: str) -> Optional[dict]:
    """The numcodecs configuration of preset ``name`` (None for ``"none"``)."""
    if name not in CODECS:
        raise DataSetError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}")
    config = CODECS[name]
    return None if config is None else dict(config)


def chunk_frames_for(frame_bytes: int, frames_per_file: int) -> int:
    """Frames per chunk: about :data:`CHUNK_BYTES`, at most a whole file."""
    return max(1, min(frames_per_file, CHUNK_BYTES // max(1, frame_bytes)))


@dataclass(frozen=True)
class ChunkLayout:
    """How a compressed data set is cut and encoded: codec name and numcodecs
    configuration, frames per chunk."""

    name: str
    config: dict = field(hash=False)
    chunk_frames: int

    @classmethod
    def of(cls, name: str, frame_bytes: int, frames_per_file: int) -> Optional["ChunkLayout"]:
        """The layout of preset ``name`` for files of ``frames_per_file`` frames (a
        multiple of the chunk's frames, see :meth:`file_frames`), None for ``"none"``."""
        config = codec_config(name)
        if config is None:
            return None
        return cls(name, config, chunk_frames_for(frame_bytes, frames_per_file))

    @classmethod
    def from_sidecar(cls, doc: dict) -> Optional["ChunkLayout"]:
        """The layout a (checked) sidecar records, None for an uncompressed one."""
        codec = doc.get("codec")
        if codec is None:
            return None
        return cls(codec["name"], dict(codec["config"]), int(codec["chunk_frames"]))

    def to_sidecar(self) -> dict:
        return {"name": self.name, "config": dict(self.config), "chunk_frames": self.chunk_frames}

    def n_chunks(self, n_frames: int) -> int:
        return math.ceil(n_frames / self.chunk_frames)

    def describe(self) -> str:
        """e.g. ``bslz4 (blosc lz4, level 5, bit-shuffle)``"""
        c = self.config
        if c.get("id") == "blosc":
            shuffle = {0: "no shuffle", 1: "byte shuffle", 2: "bit-shuffle"}.get(c.get("shuffle"), "shuffle ?")
            return f"{self.name} (blosc {c.get('cname')}, level {c.get('clevel')}, {shuffle})"
        return f"{self.name} (numcodecs {c.get('id')})"


def part_file_name(index: int, layout: Optional[ChunkLayout]) -> str:
    """Name of partition file ``index``: ``part-00000.raw``, or with the codec's name
    as suffix (``part-00000.bslz4``) when compressed."""
    return f"part-{index:05d}.{'raw' if layout is None else layout.name}"


def file_frames(frames_per_file: int, chunk_frames: int) -> int:
    """``frames_per_file`` rounded down to whole chunks (at least one chunk): chunks
    then start at multiples of ``chunk_frames`` in the whole data set."""
    return max(chunk_frames, frames_per_file // chunk_frames * chunk_frames)


def _missing(layout: ChunkLayout, where: str, package: str, detail: str) -> CodecError:
    return CodecError(
        f"{where} is compressed with codec {layout.describe()}, which needs the Python package "
        f"{package} on {socket.gethostname()} ({detail}); install it on every machine that reads the "
        f"data (every dask worker): {INSTALL}"
    )


def load_codec(layout: ChunkLayout, where: str):
    """The numcodecs codec of ``layout``, or a :class:`CodecError` naming the codec and
    the package to install on this machine (a dask worker, usually)."""
    try:
        import numcodecs
    except ImportError as exc:
        raise _missing(layout, where, "numcodecs", f"import failed: {exc}") from None
    try:
        codec = numcodecs.get_codec(dict(layout.config))
    except (ValueError, TypeError, KeyError) as exc:
        raise _missing(layout, where, f"providing the numcodecs codec {layout.config.get('id')!r}",
                       f"numcodecs {numcodecs.__version__} says: {exc}") from None
    if layout.config.get("id") == "blosc":
        from numcodecs import blosc

        if layout.config.get("cname") not in blosc.list_compressors():
            raise _missing(layout, where, f"numcodecs with Blosc's {layout.config.get('cname')} compressor",
                           f"this numcodecs' Blosc has {', '.join(blosc.list_compressors())}")
    return codec


def load_checksum(layout: ChunkLayout, where: str):
    """``crc32c(buffer) -> int`` (google-crc32c), or a CodecError naming the package."""
    try:
        import google_crc32c
    except ImportError as exc:
        raise _missing(layout, where, "google-crc32c", f"import failed: {exc}") from None
    return google_crc32c.value
