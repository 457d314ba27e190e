"""Quantum Detectors Merlin (Medipix3) ``.mib`` files, with the optional ``.hdr``.

A ``.mib`` file is a sequence of frames, each an ASCII header followed by the pixels.
The header is comma separated: ``MQ1``, sequence number, header size in bytes (the
offset of the pixels), number of chips, width, height, pixel depth, sensor layout,
chip select, time stamp, shutter time (s), counter, colour mode, gain, eight
thresholds, the DACs of every chip and (in newer firmware) an extension
``MQ1A``, time stamp, shutter time (``...ns``), counter depth (bits), padded with
NULs to the header size. Pixel depths:

* ``U08``: one byte per pixel (6-bit counters, and 1-bit counters as the Merlin
  software writes them);
* ``U16``: big-endian uint16 (12-bit counters);
* ``U32``: big-endian uint32 (24-bit counters, the two 12-bit counters combined);
* ``U01``: one bit per pixel, eight pixels to a byte, the first pixel in the most
  significant bit (1-bit counters packed); decoded to uint8 with numba into a
  reused buffer;
* ``R64``: the raw read-out of the chips in 64-bit words, which needs chip-wise
  unscrambling: not supported yet (a clear error says so).

``U08`` frames are read zero-copy: the per-frame headers are skipped through the
stride of the memory map (:class:`~stem_explorer.io.raw.MappedFrameSource`). The
big-endian ``U16``/``U32`` frames are mapped the same way and the data set keeps the
stored ``'>u2'``/``'>u4'``: the engine's mask kernels swap the bytes of the pixels they
read (a disk touches a quarter of the frame), and other ops get each tile swapped
into a buffer reused from tile to tile. ``native=True`` instead byte-swaps every
read into a reused buffer (:class:`DecodedFrameSource`), for callers that want
native ``uint16``/``uint32`` arrays. Quad (2x2) detectors are stored as one assembled
frame (512x512); ROI read-outs simply have fewer rows, as the header says.

Orientation: frames are returned in the file's own row order (row 0 is the first row
stored); nothing is flipped. (Some readers flip vertically; the references in
``../shared/realdata`` and this reader do not.)

Scan shape: ``nav_shape=`` wins; else the ``.hdr`` beside the file gives the scan
width when it states ``Frames per Trigger`` > 1 (one trigger per scan line) and
that is not the whole acquisition; else the frames' time stamps give it when a line
flyback pause follows every line (:mod:`stem_explorer.io.mib_scan`, as HyperSpy
infers it); else the frames are a 3-D stack, ``nav_shape=(n_frames,)``, and
``metadata["scan_shape_hint"]`` says how to pass the scan shape. The source (and why
a stack) is recorded in ``metadata["scan_shape_source"]``.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Optional

import numba
import numpy as np

from ..errors import DataSetError, DataSetNotFoundError, FormatError
from .base import DataSet, FrameReader, FrameSource
from .mib_scan import frame_times, scan_from_times
from .raw import MappedFrameSource, map_frames, nav_shape_hint, parse_shape
from .registry import ReaderPlugin, register_reader

__all__ = [
    "DecodedFrameSource",
    "check_frame_headers",
    "MibHeader",
    "is_mib",
    "open_mib",
    "parse_frame_header",
    "parse_hdr",
    "read_hdr",
]

MAGIC = b"MQ1,"

#: pixel depth string -> dtype of the stored pixels (None: bit-packed)
_STORED_DTYPES = {"U08": np.dtype("u1"), "U16": np.dtype(">u2"), "U32": np.dtype(">u4")}
_PACKED_DEPTH = "U01"

# field positions in the comma-separated header
_F_HEADER_BYTES, _F_CHIPS, _F_WIDTH, _F_HEIGHT, _F_DEPTH, _F_LAYOUT = 2, 3, 4, 5, 6, 7
_F_SHUTTER = 10
_EXTENSION = "MQ1A"


@dataclass(frozen=True)
class MibHeader:
    """What one frame header says (the fields a reader needs)."""

    header_bytes: int
    n_chips: int
    width: int
    height: int
    pixel_depth: str
    layout: str
    exposure_s: Optional[float] = None
    counter_depth: Optional[int] = None

    @property
    def is_raw(self) -> bool:
        """True for the raw chip read-out (``R64``), which is not decoded yet."""
        return self.pixel_depth.startswith("R")

    @property
    def data_bytes(self) -> int:
        """Bytes of pixels after the header."""
        if self.pixel_depth == _PACKED_DEPTH:
            return self.width * self.height // 8
        if self.is_raw:
            return self.width * self.height * int(self.pixel_depth[1:]) // 8
        return self.width * self.height * _STORED_DTYPES[self.pixel_depth].itemsize

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame record, header included: the file's frame stride."""
        return self.header_bytes + self.data_bytes

    def layout_fields(self) -> dict:
        """The fields that must agree across the frames of one file."""
        return {
            "header size": self.header_bytes,
            "chips": self.n_chips,
            "width": self.width,
            "height": self.height,
            "pixel depth": self.pixel_depth,
            "counter depth": self.counter_depth,
        }


def parse_frame_header(raw: bytes, where: str = "the file") -> MibHeader:
    """Parse the header bytes of one frame (``raw`` may run past the header)."""
    text = raw.split(b"\0", 1)[0].decode("ascii", errors="replace")
    fields = [f.strip() for f in text.split(",")]
    if fields[0] != "MQ1" or len(fields) <= _F_SHUTTER:
        raise FormatError(
            f"{where} does not start with a Merlin frame header ('MQ1,...'); check that "
            f"it is a .mib file, or pass the right format=..."
        )
    try:
        header = MibHeader(
            header_bytes=int(fields[_F_HEADER_BYTES]),
            n_chips=int(fields[_F_CHIPS]),
            width=int(fields[_F_WIDTH]),
            height=int(fields[_F_HEIGHT]),
            pixel_depth=fields[_F_DEPTH].upper(),
            layout=fields[_F_LAYOUT],
            exposure_s=_float_or_none(fields[_F_SHUTTER]),
            counter_depth=_extension_counter_depth(fields),
        )
    except ValueError:
        raise FormatError(
            f"the Merlin header of {where} has unreadable fields ({text[:80]!r}...); "
            f"the file is damaged or not a .mib file"
        ) from None
    if min(header.header_bytes, header.width, header.height, header.n_chips) <= 0:
        raise FormatError(f"the Merlin header of {where} states non-positive sizes: {header}")
    return header


def _float_or_none(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None


def _extension_counter_depth(fields: list[str]) -> Optional[int]:
    """Counter depth from the ``MQ1A`` extension (time stamp, shutter ns, depth)."""
    if _EXTENSION not in fields:
        return None
    depth = fields[fields.index(_EXTENSION) + 3 :][:1]
    return int(depth[0]) if depth and depth[0] else None


def read_hdr(path: str) -> dict:
    """The ``key: value`` lines of a Merlin ``.hdr`` file as a dict of strings (keys
    keep their parenthesised units, e.g. ``"Frames per Trigger (Number)"``)."""
    with open(path, encoding="ascii", errors="replace") as f:
        return parse_hdr(f.read())


def parse_hdr(text: str) -> dict:
    """The ``key: value`` lines of the text of a ``.hdr`` file, or of the acquisition
    header a Merlin sends on its data port (the same lines), as in :func:`read_hdr`."""
    result = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":\t")
        if sep:
            result[key.strip()] = value.strip().rstrip("\0").strip()
    return result


def is_mib(path) -> bool:
    """True when ``path`` starts with a Merlin frame header."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


# -- decoding into a reused buffer ------------------------------------------------------------
@numba.njit(nogil=True)
def _unpack_bits(packed, out):  # pragma: no cover - compiled
    n, rows, nbytes = packed.shape
    for i in range(n):
        for r in range(rows):
            for b in range(nbytes):
                value = packed[i, r, b]
                for k in range(8):
                    out[i, r, 8 * b + k] = (value >> (7 - k)) & 1


def _swap_bytes(stored: np.ndarray, out: np.ndarray) -> None:
    # a byte-order cast; numpy's copy loop swaps at memory speed (~8 GB/s a core)
    np.copyto(out, stored, casting="equiv")


#: how :class:`DecodedFrameSource` turns stored frames into the ones it returns
_DECODERS = {"unpack_bits": _unpack_bits, "swap_bytes": _swap_bytes}


class DecodedFrameSource(FrameSource):
    """Frames at a fixed offset and stride stored in a form the kernels cannot use as
    they are, mapped as stored and decoded by each read into one buffer the reader
    reuses:

    * ``"unpack_bits"``: 1-bit frames packed eight pixels to a byte (first pixel in the
      most significant bit), read as uint8 0/1 values (numba);
    * ``"swap_bytes"``: big-endian 12/24-bit counts, read as native uint16/uint32. The
      engine would otherwise swap every tile into a fresh array, and dask workers
      return freed memory to the system at once (``MALLOC_TRIM_THRESHOLD_``), so each
      tile would page-fault its copy in anew: that halved the 12-bit throughput.
    """

    def __init__(self, path: str, *, offset: int, n_frames: int, sig_shape, frame_stride: int,
                 decode: str, stored_dtype):
        sy, sx = (int(n) for n in sig_shape)
        stored_dtype = np.dtype(stored_dtype)
        if decode == "unpack_bits":
            if sx % 8:
                raise FormatError(
                    f"{path!r}: 1-bit frames {sy}x{sx} are not a whole number of bytes per "
                    f"row; only widths that are multiples of 8 are supported"
                )
            stored_shape, dtype = (sy, sx // 8), np.dtype("u1")
        else:
            stored_shape, dtype = (sy, sx), stored_dtype.newbyteorder("=")
        self.stored = MappedFrameSource(
            path, offset=offset, n_frames=n_frames, sig_shape=stored_shape,
            dtype=stored_dtype, frame_stride=frame_stride,
        )
        self.decode = decode
        self.n_frames = int(n_frames)
        self.sig_shape = (sy, sx)
        self.dtype = dtype

    def open(self, payload=None) -> "DecodedFrameReader":
        """Map the stored frames; reads decode into a buffer the reader reuses."""
        return DecodedFrameReader(self)


class DecodedFrameReader(FrameReader):
    """Decodes :class:`DecodedFrameSource` frames into one reused buffer."""

    def __init__(self, source: DecodedFrameSource):
        self.source = source
        self._stored = source.stored.open()
        self._decode = _DECODERS[source.decode]
        self._buffer: Optional[np.ndarray] = None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` decoded, a view of the buffer (valid until the next
        read)."""
        stored = self._stored.read(start, stop)
        n = stop - start
        if self._buffer is None or len(self._buffer) < n:
            self._buffer = np.empty((n,) + self.source.sig_shape, self.source.dtype)
        out = self._buffer[:n]
        if n:
            self._decode(stored, out)
        return out

    def close(self) -> None:
        """Release the mapping and the buffer."""
        self._stored.close()
        self._buffer = None


# -- checking the whole file ------------------------------------------------------------------
def _frame_headers(path: str, first: MibHeader, n_frames: int) -> np.ndarray:
    """The header bytes of every frame, one row each (a view of the file's mapping)."""
    return map_frames(
        path, offset=0, n_frames=n_frames, sig_shape=(1, first.header_bytes),
        dtype="u1", frame_stride=first.frame_bytes,
    )[:, 0, :]


def _check_frames(path: str, first: MibHeader, n_frames: int) -> None:
    """Every frame of the file must start with a header of the first frame's layout."""
    headers = _frame_headers(path, first, n_frames)
    check_frame_headers(headers, headers[0], first, repr(path), byte_offset=first.frame_bytes)


def check_frame_headers(headers: np.ndarray, reference: np.ndarray, first: MibHeader, where: str, *,
                        first_index: int = 0, byte_offset: Optional[int] = None) -> None:
    """Every row of ``headers`` (``(n, header_bytes)`` uint8, frames ``first_index``
    on of ``where``, a file or a stream) must be a Merlin frame header of the layout
    and counter depth of ``reference`` (frame 0's header bytes, parsed as ``first``).
    Headers are compared as bytes (vectorised) and only differing ones parsed.
    ``byte_offset``: the frame stride of a file, to say where a bad frame starts."""
    magic = np.frombuffer(MAGIC, np.uint8)
    bad = np.flatnonzero((headers[:, : len(MAGIC)] != magic).any(axis=1))
    if bad.size:
        k = first_index + int(bad[0])
        at = f" at byte {k * byte_offset}" if byte_offset else ""
        raise FormatError(
            f"frame {k} of {where} does not start with a Merlin header{at} (frame 0 has a "
            f"{first.header_bytes}-byte header and {first.pixel_depth} pixels, "
            f"{first.frame_bytes} bytes per frame): the frames differ in header size or "
            f"pixel depth, or the data is damaged; frames mixing layouts cannot be read, "
            f"acquire or export them with one setting"
        )
    columns = _stable_columns(reference.tobytes())
    differs = np.flatnonzero((headers[:, columns] != reference[columns]).any(axis=1))
    if not differs.size:
        return
    variants, index = np.unique(headers[differs], axis=0, return_index=True)
    expected = first.layout_fields()
    for row, i in zip(variants, index):
        k = first_index + int(differs[i])
        other = parse_frame_header(row.tobytes(), f"frame {k} of {where}").layout_fields()
        changed = {f: (expected[f], other[f]) for f in expected if expected[f] != other[f]}
        if changed:
            what = ", ".join(f"{f} {a} in frame 0 but {b}" for f, (a, b) in changed.items())
            raise FormatError(
                f"{where} mixes frame layouts: {what} in frame {k}; the frames of one "
                f"acquisition must have one counter depth and header size: acquire or "
                f"export them with one setting (or split the file)"
            )


@functools.lru_cache(maxsize=16)
def _stable_columns(header: bytes) -> np.ndarray:
    """Byte positions of ``header`` outside the fields that change from frame to frame
    by design (sequence number and time stamps); read-only. Cached: a live receiver
    checks every batch against the same first header, and at a few hundred frames a
    second a batch is a frame (this cost 0.6 ms of its 1.1 ms check)."""
    bounds = [-1] + [i for i, c in enumerate(header) if c == ord(",")] + [len(header)]
    fields = header.split(b",")
    varying = {1, 9}
    if _EXTENSION.encode() in fields:
        varying.add(fields.index(_EXTENSION.encode()) + 1)
    keep = np.ones(len(header), bool)
    for k in varying:
        if k + 1 < len(bounds):
            keep[bounds[k] + 1 : bounds[k + 1]] = False
    columns = np.flatnonzero(keep)
    columns.flags.writeable = False
    return columns


def _count_frames(path: str, first: MibHeader) -> int:
    """Whole frames in the file; a clear error for a truncated last frame."""
    size = os.stat(path).st_size
    n_frames, rest = divmod(size, first.frame_bytes)
    if n_frames:
        _check_frames(path, first, n_frames)
    if rest:
        raise FormatError(
            f"{path!r} is {size} bytes: {n_frames} whole frames of {first.frame_bytes} "
            f"bytes ({first.header_bytes}-byte header + {first.data_bytes} bytes of "
            f"{first.width}x{first.height} {first.pixel_depth} pixels) and {rest} bytes "
            f"of a truncated last frame (an interrupted acquisition or copy?); to read "
            f"the complete frames, open a copy cut to {n_frames * first.frame_bytes} bytes "
            f"(e.g. `head -c {n_frames * first.frame_bytes} in.mib > out.mib`)"
        )
    return n_frames


# -- scan shape -------------------------------------------------------------------------------
def _scan_shape(path: str, first: MibHeader, n_frames: int, nav_shape, hdr: Optional[dict]):
    """``(nav_shape, source)`` from the option, else the ``.hdr``, else the frames'
    time stamps, else a stack."""
    if nav_shape is not None:
        nav = parse_shape("nav_shape", nav_shape, (1, 2))
        if math.prod(nav) != n_frames:
            raise DataSetError(
                f"nav_shape {nav} has {math.prod(nav)} positions but {path!r} holds "
                f"{n_frames} frames; pass nav_shape=({n_frames},) to read the frames as "
                f"a stack, or a (rows, columns) whose product is {n_frames}"
            )
        return nav, "nav_shape option"
    width = _hdr_int(hdr, "Frames per Trigger (Number)")
    # one trigger per line gives the width; one trigger for all frames is a stack
    if width is not None and 1 < width != n_frames:
        if n_frames % width:
            raise DataSetError(
                f"{path!r} holds {n_frames} frames, not a multiple of the scan width "
                f"{width} stated by its .hdr (Frames per Trigger): the last scan line is "
                f"incomplete; pass nav_shape=({n_frames},) to read the frames as a stack, "
                f"or nav_shape=(rows, columns) whose product is {n_frames}"
            )
        return (n_frames // width, width), ".hdr Frames per Trigger"
    nav, how = scan_from_times(frame_times(_frame_headers(path, first, n_frames)))
    if nav is not None:
        return nav, how
    stated = "the .hdr states no scan width" if hdr else "no .hdr beside the file"
    return (n_frames,), f"frame count (stack): {stated}, and {how}"


def _hdr_int(hdr: Optional[dict], key: str) -> Optional[int]:
    try:
        return int(hdr[key]) if hdr else None
    except (KeyError, ValueError):
        return None


def _hdr_path(path: str) -> Optional[str]:
    candidate = os.path.splitext(path)[0] + ".hdr"
    return candidate if os.path.isfile(candidate) else None


# -- the reader -------------------------------------------------------------------------------
def open_mib(path, *, nav_shape=None, native: bool = False) -> DataSet:
    """Open a Merlin ``.mib`` file (with its ``.hdr`` when it lies beside it).

    ``nav_shape`` gives the scan shape ``(rows, columns)`` or ``(n,)``; without it the
    ``.hdr`` gives the scan width when it states one (``Frames per Trigger`` > 1 and
    fewer than all frames), otherwise the frames form a stack ``(n_frames,)``. Frames
    are returned in the file's own row order: 6-bit (and Merlin's 1-bit ``U08``) as
    zero-copy ``uint8`` views, packed 1-bit decoded to ``uint8``, and 12/24-bit counts
    as zero-copy views in their stored big-endian dtype (``'>u2'``, ``'>u4'``);
    ``native=True`` decodes those to native ``uint16``/``uint32`` in a reused buffer
    instead. ``metadata["stored_dtype"]`` is the file's dtype either way.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            start = f.read(4096)
    except FileNotFoundError:
        raise DataSetNotFoundError(f"file {path!r} does not exist; check the path") from None
    first = parse_frame_header(start, repr(path))
    if first.is_raw:
        raise FormatError(
            f"{path!r} holds raw chip read-out ({first.pixel_depth} pixel depth, 'RAW' "
            f"mode): decoding raw .mib files is not supported yet; acquire with raw "
            f"output off (pixel depth U08/U16/U32) or convert the file first"
        )
    if first.pixel_depth not in _STORED_DTYPES and first.pixel_depth != _PACKED_DEPTH:
        raise FormatError(
            f"{path!r} has pixel depth {first.pixel_depth!r}, which this reader does not "
            f"know (known: U01, U08, U16, U32); please report the file's origin"
        )
    if len(start) < first.header_bytes:
        raise FormatError(
            f"{path!r} is shorter than its first frame header ({first.header_bytes} bytes)"
        )
    first = parse_frame_header(start[: first.header_bytes], repr(path))
    n_frames = _count_frames(path, first)
    if n_frames == 0:
        raise FormatError(f"{path!r} holds no complete frame")
    hdr_file = _hdr_path(path)
    hdr = read_hdr(hdr_file) if hdr_file else None
    nav, nav_source = _scan_shape(path, first, n_frames, nav_shape, hdr)

    sig_shape = (first.height, first.width)
    layout = dict(offset=first.header_bytes, n_frames=n_frames, sig_shape=sig_shape,
                  frame_stride=first.frame_bytes)
    stored_dtype = _STORED_DTYPES.get(first.pixel_depth, np.dtype("u1"))
    source: FrameSource
    if first.pixel_depth == _PACKED_DEPTH:
        source = DecodedFrameSource(path, decode="unpack_bits", stored_dtype="u1", **layout)
        read_path = "decode (numba, 1-bit packed)"
    elif native and not stored_dtype.isnative:
        source = DecodedFrameSource(path, decode="swap_bytes", stored_dtype=stored_dtype, **layout)
        read_path = "decode (byte swap into a reused buffer)"
    else:
        source = MappedFrameSource(path, dtype=stored_dtype, **layout)
        read_path = "mmap"
    counter_depth = first.counter_depth or _hdr_int(hdr, "Counter Depth (number)")
    metadata = {
        "counter_depth": counter_depth,
        "pixel_depth": first.pixel_depth,
        "stored_dtype": stored_dtype.str,
        "chips": first.n_chips,
        "sensor_layout": first.layout,
        "exposure_s": first.exposure_s,
        "header_bytes": first.header_bytes,
        "frame_stride": first.frame_bytes,
        "scan_shape_source": nav_source,
        "orientation": "file row order (no flip)",
        "read_path": read_path,
        "hdr_file": hdr_file,
    }
    if len(nav) == 1 and nav_shape is None:
        metadata["scan_shape_hint"] = nav_shape_hint(n_frames)
    if hdr:
        metadata["hdr"] = hdr
    return DataSet(source, nav, format="mib", path=path, metadata=metadata)


PLUGIN = register_reader(
    ReaderPlugin(
        name="mib",
        open=open_mib,
        suffixes=(".mib",),
        sniff=is_mib,
        description="Quantum Detectors Merlin .mib (+.hdr); 1/6/12/24 bit, single/quad",
    ),
    replace=True,
)
