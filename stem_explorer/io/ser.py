"""FEI / Thermo Fisher TIA series files (``.ser``, metadata in an optional ``.emi``).

Layout (little-endian), after the public "TIA Series Data (ESD) file format"
description (TIA 3.x and later):

* header: ``uint16`` byte order ``0x4949`` ("II"), ``uint16`` series id ``0x0197``,
  ``uint16`` version (``0x0210``: file offsets are ``uint32``; ``0x0220``, TIA 4.7.3
  and later: ``uint64``), ``uint32`` data type id (``0x4120`` 1-D arrays, ``0x4122``
  2-D images), ``uint32`` tag type id, ``uint32`` total and valid element counts, the
  offset of the offset arrays, ``uint32`` number of dimensions;
* the dimension array: per scan dimension a ``uint32`` size, ``float64`` calibration
  offset and delta, ``int32`` calibration element, then length-prefixed description
  and units strings;
* at the offset-array offset: the data offsets and then the tag offsets of every
  element (``uint32`` or ``uint64`` per the version);
* each 2-D element at its data offset: ``float64`` offset, ``float64`` delta and
  ``int32`` element of the x and then the y calibration, ``uint16`` data type code,
  ``uint32`` size x, ``uint32`` size y, and the values, x varying fastest.

Conventions: a frame is ``(size_y, size_x)`` with its rows in the reverse of the
stored order: TIA stores an image bottom row first, and HyperSpy (rosettasciio's tia
reader), openNCEM's ``ncempy.io.ser`` and LiberTEM (which reads through ncempy) all
flip it, and agree with each other on their real TIA test files; this reader follows
them (:class:`RowFlippedSource`, a copy into a reused buffer). The dimension array lists the scan dimensions *fastest
first*: for an area scan the first entry is x (the positions along a scan line) and
the second y (the lines), as the elements are stored x fastest; so ``nav_shape`` is
the sizes in reverse file order, ``(size of dimension 2, size of dimension 1)``
(pass ``nav_shape`` to override). This is how openNCEM's ``ncempy.io.ser`` (which
names dimension 1 "Position X" and checks it against the elements' position tags) and
HyperSpy's TIA reader (for the usual x-fastest raster, decided from those tags) read
area scans. Frames at uniform offsets are memory-mapped with that stride; otherwise
:class:`SerFrameSource` copies each frame from its own offset into a reused buffer.
Either way the rows are flipped on the way out.
"""

from __future__ import annotations

import math
import os
import struct
from typing import Optional

import numpy as np

from ..errors import CalibrationError, DataSetError, DataSetNotFoundError, FormatError
from .base import DataSet, FrameReader, FrameSource
from .calibration import Calibration, file_calibration, unit_kind
from .raw import MappedFrameSource, _check_range, parse_shape
from .registry import ReaderPlugin, register_reader

__all__ = [
    "SER_DTYPES",
    "RowFlippedSource",
    "SerFrameReader",
    "SerFrameSource",
    "is_ser",
    "open_ser",
    "read_ser_header",
]

_MAGIC = struct.pack("<HH", 0x4949, 0x0197)
#: header version -> struct code of the file offsets it uses
_OFFSET_CODES = {0x0210: "I", 0x0220: "Q"}
_IMAGE_ELEMENTS = 0x4122

#: TIA data type code -> numpy dtype
SER_DTYPES = {
    1: "<u1", 2: "<u2", 3: "<u4", 4: "<i1", 5: "<i2", 6: "<i4",
    7: "<f4", 8: "<f8", 9: "<c8", 10: "<c16",
}

# the header of each 2-D element: x and y calibrations, type code, size x, size y
_ELEMENT_HEADER = np.dtype(
    [
        ("offset_x", "<f8"), ("delta_x", "<f8"), ("element_x", "<i4"),
        ("offset_y", "<f8"), ("delta_y", "<f8"), ("element_y", "<i4"),
        ("dtype", "<u2"), ("size_x", "<u4"), ("size_y", "<u4"),
    ]
)


def is_ser(path) -> bool:
    """True when ``path`` starts with the TIA series magic (``II`` + ``0x0197``)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == _MAGIC
    except OSError:
        return False


class _Cursor:
    """Sequential little-endian reads from header bytes, failing clearly at the end."""

    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def take(self, code: str):
        fmt = struct.Struct("<" + code)
        if self.pos + fmt.size > len(self.data):
            raise FormatError(
                f"TIA series file {self.path!r} is truncated: its header ends at byte "
                f"{len(self.data)} before the field at byte {self.pos}"
            )
        values = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return values if len(values) > 1 else values[0]

    def text(self) -> str:
        n = self.take("I")
        raw = self.take(f"{n}s") if n else b""
        return raw.decode("latin-1")


def read_ser_header(path) -> dict:
    """The header and dimension array of a ``.ser`` file as a dict.

    Raises :class:`FormatError` for a file that is not a TIA series, truncated, or of
    an unknown version.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except FileNotFoundError:
        raise DataSetNotFoundError(f"file {path!r} does not exist; check the path") from None
    if head[:4] != _MAGIC:
        raise FormatError(
            f"{path!r} is not a TIA series file: it starts with {head[:4]!r}, not "
            f"{_MAGIC!r}; pass the right format=... for this file"
        )
    cur = _Cursor(head, path)
    cur.take("HH")
    version = cur.take("H")
    if version not in _OFFSET_CODES:
        raise FormatError(
            f"TIA series file {path!r} has version 0x{version:04x}; only versions "
            f"0x0210 and 0x0220 are known; convert it with TIA or report the version"
        )
    header = {"version": version}
    header["data_type_id"], header["tag_type_id"] = cur.take("II")
    header["total_elements"], header["valid_elements"] = cur.take("II")
    header["offset_array_offset"] = cur.take(_OFFSET_CODES[version])
    dims = []
    for _ in range(cur.take("I")):
        size, offset, delta, element = cur.take("Iddi")
        dims.append(
            {"size": size, "offset": offset, "delta": delta, "element": element,
             "description": cur.text(), "units": cur.text()}
        )
    header["dimensions"] = dims
    return header


#: element headers gathered per numpy call (an index array of this many x 38 int64s)
_GATHER = 65536


def _element_headers(path: str, header: dict) -> tuple[np.ndarray, np.ndarray]:
    """Data offsets and element headers of the valid elements, read in one pass."""
    code = "<u4" if header["version"] == 0x0210 else "<u8"
    n, at = header["valid_elements"], header["offset_array_offset"]
    size = os.stat(path).st_size
    if n == 0 or n > header["total_elements"]:
        raise FormatError(
            f"TIA series file {path!r} holds {n} valid of {header['total_elements']} "
            f"elements (frames); there is nothing consistent to read"
        )
    # the data offsets and then the tag offsets of all elements
    if at + 2 * header["total_elements"] * np.dtype(code).itemsize > size:
        raise FormatError(
            f"TIA series file {path!r} is truncated: its offset arrays at byte {at} "
            f"run past the end of the file ({size} bytes)"
        )
    mm = np.memmap(path, np.uint8, mode="r")
    stored = mm[at : at + n * np.dtype(code).itemsize].view(code)
    # offsets past 2**63 would turn negative as int64 and index from the file's end
    if int(stored.max()) > size - _ELEMENT_HEADER.itemsize:
        raise FormatError(
            f"TIA series file {path!r} is truncated or damaged: its offset array points "
            f"to element headers beyond its {size} bytes"
        )
    offsets = stored.astype(np.int64)
    headers = np.empty(n, _ELEMENT_HEADER)
    span = np.arange(_ELEMENT_HEADER.itemsize)
    for lo in range(0, n, _GATHER):  # bounded index arrays, however many elements
        rows = mm[offsets[lo : lo + _GATHER, None] + span]
        headers[lo : lo + _GATHER] = rows.view(_ELEMENT_HEADER)[:, 0]
    return offsets, headers


def _frame_layout(path: str, elements: np.ndarray) -> tuple[np.dtype, tuple[int, int]]:
    first = elements[0]
    same = (elements["dtype"] == first["dtype"]) & (elements["size_x"] == first["size_x"])
    same &= elements["size_y"] == first["size_y"]
    if not same.all():
        bad = int(np.argmin(same))
        raise FormatError(
            f"TIA series file {path!r} mixes element layouts: element 0 is "
            f"{first['size_y']}x{first['size_x']} of type {first['dtype']} but element "
            f"{bad} differs; such series cannot be read as one 4D data set"
        )
    code = int(first["dtype"])
    if code not in SER_DTYPES:
        raise FormatError(
            f"TIA series file {path!r} uses data type code {code}, which is not one of "
            f"the known codes {sorted(SER_DTYPES)}"
        )
    return np.dtype(SER_DTYPES[code]), (int(first["size_y"]), int(first["size_x"]))


def open_ser(path, *, nav_shape=None) -> DataSet:
    """Open a TIA series of 2-D images (``.ser``).

    The scan shape comes from the dimension array (fastest dimension first, so
    ``nav_shape`` is its sizes reversed);
    ``nav_shape`` overrides it, and is needed when an acquisition was stopped early
    (fewer valid elements than the scan holds). A ``.emi`` file beside the series is
    recorded in the metadata.
    """
    path = os.fspath(path)
    header = read_ser_header(path)
    if header["data_type_id"] != _IMAGE_ELEMENTS:
        raise FormatError(
            f"TIA series file {path!r} holds elements of type "
            f"0x{header['data_type_id']:04x} (0x4120 = spectra); only series of 2-D "
            f"images (0x4122) are 4D-STEM data"
        )
    offsets, elements = _element_headers(path, header)
    dtype, sig_shape = _frame_layout(path, elements)
    n_frames = len(offsets)
    frame_bytes = math.prod(sig_shape) * dtype.itemsize
    starts = offsets + _ELEMENT_HEADER.itemsize
    if starts.max() + frame_bytes > os.stat(path).st_size:
        raise FormatError(
            f"TIA series file {path!r} is truncated: its last frame ends past the end "
            f"of the file"
        )
    steps = np.diff(starts)
    stored: FrameSource
    if n_frames == 1 or (steps.min() == steps.max() and steps[0] >= frame_bytes):
        stride = int(steps[0]) if n_frames > 1 else frame_bytes
        stored = MappedFrameSource(
            path, offset=int(starts[0]), n_frames=n_frames, sig_shape=sig_shape,
            dtype=dtype, frame_stride=stride,
        )
        read_path = "mmap, rows flipped into a reused buffer"
    else:
        code = "<u4" if header["version"] == 0x0210 else "<u8"
        stored = SerFrameSource(
            path, offset_array=header["offset_array_offset"], offset_dtype=code,
            n_frames=n_frames, sig_shape=sig_shape, dtype=dtype,
        )
        read_path = "copy from each frame's offset, rows flipped"
    source = RowFlippedSource(stored)
    dims = header["dimensions"]
    nav = _nav_shape(path, header, n_frames, nav_shape)
    first = elements[0]
    metadata = {
        "ser_version": f"0x{header['version']:04x}",
        "scan_shape_source": "dimension array" if nav_shape is None else "nav_shape option",
        # numpy order of the scan axes (slowest first): the dimension array reversed
        "scan_calibration": [
            {k: d[k] for k in ("offset", "delta", "units", "description")} for d in reversed(dims)
        ],
        "orientation": "rows flipped (the file's first row is the frame's last), as HyperSpy and LiberTEM",
        "pixel_size": [float(first["delta_y"]), float(first["delta_x"])],
        "valid_elements": header["valid_elements"],
        "total_elements": header["total_elements"],
        "emi_file": _emi_beside(path),
        "read_path": read_path,
    }
    calibration = _calibration(path, dims if nav_shape is None else [], first)
    return DataSet(source, nav, format="ser", path=path, metadata=metadata, calibration=calibration)


def _calibration(path: str, dims: list, first) -> Calibration:
    """Scan step from the dimension array (an area scan in a length unit) and, for
    such a scan, the frames' pixel size: TIA stores no unit for the element
    calibration, and frames over a spatial scan are diffraction patterns, which TIA
    calibrates in 1/m (HyperSpy reads STEM camera series so)."""
    units = {d["units"] for d in dims}
    if len(dims) != 2 or len(units) != 1 or _kind_of(units.pop()) != "length":
        return file_calibration(repr(os.path.basename(path)), {})
    scan = [d["delta"] for d in reversed(dims)]
    pixel = [float(first["delta_y"]), float(first["delta_x"])]
    return file_calibration(repr(os.path.basename(path)), {
        "scan_step": (scan, dims[0]["units"]),
        "detector_pixel": (pixel, "1/m", "unit inferred: a spatial scan of frames is diffraction"),
    })


def _kind_of(unit: str) -> Optional[str]:
    try:
        return unit_kind(unit)
    except CalibrationError:
        return None


def _nav_shape(path: str, header: dict, n_frames: int, nav_shape) -> tuple[int, ...]:
    if nav_shape is not None:
        return parse_shape("nav_shape", nav_shape, (1, 2))
    # the dimension array is fastest first (x, then y): numpy order is its reverse
    dims = tuple(d["size"] for d in reversed(header["dimensions"])) or (n_frames,)
    if math.prod(dims) != n_frames or len(dims) > 2:
        raise DataSetError(
            f"TIA series file {path!r} describes a scan of {dims} but holds "
            f"{n_frames} valid frames (of {header['total_elements']}); the acquisition "
            f"may have stopped early: pass nav_shape=... whose product is {n_frames}"
        )
    return dims


def _emi_beside(path: str) -> Optional[str]:
    """TIA writes ``name.emi`` beside ``name_1.ser``, ``name_2.ser``..."""
    stem = os.path.splitext(path)[0]
    for candidate in (stem.rsplit("_", 1)[0] + ".emi", stem + ".emi"):
        if os.path.isfile(candidate):
            return candidate
    return None


class SerFrameSource(FrameSource):
    """Frames of a series at arbitrary offsets: the offsets are read on the worker
    from the file's offset array, so the source stays a few values in size."""

    def __init__(self, path, *, offset_array, offset_dtype, n_frames, sig_shape, dtype):
        self.path = os.fspath(path)
        self.offset_array = int(offset_array)
        self.offset_dtype = str(offset_dtype)
        self.n_frames = int(n_frames)
        self.sig_shape = tuple(int(n) for n in sig_shape)
        self.dtype = np.dtype(dtype)

    def open(self, payload=None) -> "SerFrameReader":
        """Map the file where the task runs; reads copy frames into a reused buffer."""
        return SerFrameReader(self)


class SerFrameReader(FrameReader):
    """Copies each frame from its own offset into one reused buffer."""

    def __init__(self, source: SerFrameSource):
        self.source = source
        self._mm: Optional[np.memmap] = None
        self._offsets: Optional[np.ndarray] = None
        self._buffer: Optional[np.ndarray] = None

    def _map(self) -> tuple[np.memmap, np.ndarray]:
        if self._mm is None:
            s = self.source
            try:
                self._mm = np.memmap(s.path, np.uint8, mode="r")
            except FileNotFoundError:
                raise DataSetNotFoundError(
                    f"file {s.path!r} does not exist (on this machine); check that every "
                    f"worker sees the same path"
                ) from None
            width = np.dtype(s.offset_dtype).itemsize
            table = self._mm[s.offset_array : s.offset_array + s.n_frames * width]
            self._offsets = table.view(s.offset_dtype) + _ELEMENT_HEADER.itemsize
        return self._mm, self._offsets

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` copied into the reader's buffer (valid until the next
        read)."""
        s = self.source
        _check_range(start, stop, s.n_frames)
        n = stop - start
        if self._buffer is None or len(self._buffer) < n:
            self._buffer = np.empty((n,) + s.sig_shape, s.dtype)
        out = self._buffer[:n]
        if n:
            mm, offsets = self._map()
            nbytes = out[0].nbytes
            flat = out.reshape(n, -1).view(np.uint8)
            for i, at in enumerate(offsets[start:stop]):
                flat[i] = mm[int(at) : int(at) + nbytes]
        return out

    def close(self) -> None:
        """Drop the mapping and the buffer."""
        self._mm = self._offsets = self._buffer = None


class RowFlippedSource(FrameSource):
    """The frames of ``stored`` with their rows in reverse order.

    A flipped view (a negative row stride) would make the engine copy every tile into
    a fresh array; the reader copies into one buffer it reuses instead.
    """

    def __init__(self, stored: FrameSource):
        self.stored = stored
        self.n_frames = stored.n_frames
        self.sig_shape = tuple(stored.sig_shape)
        self.dtype = np.dtype(stored.dtype)
        self.frame_alignment = stored.frame_alignment
        self.random_access = stored.random_access

    def open(self, payload=None) -> "RowFlippedReader":
        """Open ``stored``; reads flip into a buffer the reader reuses."""
        return RowFlippedReader(self.stored.open(payload), self.sig_shape)

    def __repr__(self) -> str:
        return f"RowFlippedSource({self.stored!r})"


class RowFlippedReader(FrameReader):
    """Reads of a :class:`RowFlippedSource`."""

    def __init__(self, stored: FrameReader, sig_shape: tuple[int, int]):
        self._stored = stored
        self._sig_shape = tuple(sig_shape)
        self._buffer: Optional[np.ndarray] = None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` flipped, a view of the buffer (valid until the next
        read)."""
        frames = self._stored.read(start, stop)
        n = len(frames)
        if self._buffer is None or len(self._buffer) < n:
            self._buffer = np.empty(frames.shape, frames.dtype)
        out = self._buffer[:n]
        np.copyto(out, frames[:, ::-1])
        return out

    def take(self, indices: np.ndarray, out: np.ndarray) -> None:
        """Gather as ``stored`` does, then flip the rows in place."""
        self._stored.take(indices, out)
        frames = out.reshape((len(indices),) + self._sig_shape)
        frames[...] = frames[:, ::-1]  # numpy buffers overlapping assignments

    def close(self) -> None:
        """Close ``stored`` and drop the buffer."""
        self._stored.close()
        self._buffer = None


PLUGIN = register_reader(
    ReaderPlugin(
        name="ser",
        open=open_ser,
        suffixes=(".ser",),
        sniff=is_ser,
        description="FEI TIA series of 2-D images (scan from the dimension array)",
    ),
    replace=True,
)
