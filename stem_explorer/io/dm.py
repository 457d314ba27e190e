"""Gatan DigitalMicrograph DM3 / DM4 image stacks and 4D-STEM data.

Layout, after the public descriptions of the DM3/DM4 tag file format (Chris
Boothroyd's "DM3 file format" notes and Gatan's DM4 notes, as summarised in the
format pages of RosettaSciIO and openNCEM):

* a file header of big-endian ``int32`` version (3 or 4), root length (``uint32`` in
  DM3, ``uint64`` in DM4) and ``int32`` byte order of the tag *data* (1: little-endian);
* a tree of tags. A group is ``uint8`` sorted, ``uint8`` open and a tag count
  (``int32`` / ``uint64``); each entry is a ``uint8`` kind (20 group, 21 data), a
  big-endian ``uint16`` name length and the name, in DM4 followed by a ``uint64`` byte
  count. A data tag is ``%%%%``, an info count and the info words (``int32`` in DM3,
  ``uint64`` in DM4, big-endian) that encode its type: a simple type code, ``18``
  strings, ``15`` structs and ``20`` arrays, then the values in the data byte order.

The images are ``ImageList`` entries; each has ``ImageData`` with ``Data`` (an array
whose bytes are mapped zero-copy), ``DataType`` and ``Dimensions``.

Axis order: ``Dimensions`` lists the fastest-varying axis first (x before y), so the
numpy shape of the stored array is the reversed list. A 3-D stack stores whole frames:
``(Dimensions[2], Dimensions[1], Dimensions[0])``, frames contiguous. 4-D STEM data
comes in two layouts, told apart by the image's tag ``ImageTags/Meta Data/Data Order
Swapped`` (the convention LiberTEM's single-file DM reader documents, and what
openNCEM issue 17 describes for STEMx files):

* ``"nav-major"`` (the tag is true; GMS 3.x STEMx with the C-ordered option):
  ``Dimensions`` = (detector x, detector y, scan x, scan y), stored C-ordered as
  ``(scan y, scan x, detector y, detector x)``: every frame contiguous, mapped
  zero-copy;
* ``"sig-major"`` (no such tag, older GMS): ``Dimensions`` = (scan x, scan y,
  detector x, detector y), stored as ``(detector y, detector x, scan y, scan x)``:
  each detector pixel's scan image is contiguous, so a frame is spread over the whole
  file. :class:`SigMajorFrameSource` gathers the frames of a tile into a reused buffer
  (correct but slow: every tile touches every detector pixel's run; convert such
  files once for repeated work).

``layout=`` overrides the tag. Either way the data set is ``(scan y, scan x,
detector y, detector x)``.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import DataSetError, DataSetNotFoundError, FormatError
from .base import DataSet, FrameReader, FrameSource
from .calibration import Calibration, axis_parts, file_calibration
from .raw import MappedFrameSource, _check_range, check_file_size, map_frames, parse_shape
from .registry import ReaderPlugin, register_reader

__all__ = ["DM_IMAGE_DTYPES", "DMArray", "LAYOUTS", "SigMajorFrameSource", "is_dm", "open_dm", "read_dm_tags"]

# tag type code -> numpy scalar type (byte order added from the file header)
_SIMPLE = {2: "i2", 3: "i4", 4: "u2", 5: "u4", 6: "f4", 7: "f8", 8: "u1", 9: "i1", 10: "u1", 11: "i8", 12: "u8"}
_STRUCT, _STRING, _ARRAY = 15, 18, 20

#: ImageData ``DataType`` -> numpy dtype (without byte order)
DM_IMAGE_DTYPES = {
    1: "i2", 2: "f4", 3: "c8", 6: "u1", 7: "i4", 9: "i1", 10: "u2", 11: "u4",
    12: "f8", 13: "c16", 14: "u1", 39: "i8", 40: "u8",
}


@dataclass(frozen=True)
class DMArray:
    """An array tag's values, left in the file: ``length`` items of ``dtype`` at
    ``offset`` (``dtype`` is None for arrays of structs)."""

    offset: int
    length: int
    dtype: Optional[np.dtype]
    nbytes: int


#: Tag groups nest a few levels in real files (ImageList/1/ImageTags/Meta Data/...);
#: deeper nesting is damage, and recursing into it would exhaust Python's stack.
_MAX_DEPTH = 64


class _TagParser:
    """Walks the tag tree of one open file into nested dicts (unnamed entries get
    their index as name); arrays become :class:`DMArray` markers.

    Every length read from the file is checked against the bytes left in it before
    anything is read or allocated, so a damaged count fails at once instead of asking
    for gigabytes."""

    def __init__(self, f, path: str, version: int, data_order: str):
        self.f, self.path, self.data_order = f, path, data_order
        self.word = ">i" if version == 3 else ">Q"
        self.size = os.fstat(f.fileno()).st_size
        self.depth = 0

    def _damaged(self, what: str) -> FormatError:
        return FormatError(
            f"DM file {self.path!r} is truncated or damaged: {what} near byte "
            f"{self.f.tell()} of {self.size}; save the file again from DigitalMicrograph"
        )

    def _bytes(self, n: int) -> bytes:
        if not 0 <= n <= self.size - self.f.tell():
            raise self._damaged(f"a tag of {n} bytes does not fit in the file")
        raw = self.f.read(n)
        if len(raw) < n:
            raise FormatError(
                f"DM file {self.path!r} is truncated: its tag tree ends at byte "
                f"{self.f.tell()} in the middle of a tag"
            )
        return raw

    def _count(self, unit: int) -> int:
        """A count read from the file, of items of at least ``unit`` bytes each."""
        n = self._read(self.word)
        if not 0 <= n * unit <= self.size - self.f.tell():
            raise self._damaged(f"a count of {n} items does not fit in the file")
        return n

    def _read(self, fmt: str):
        s = struct.Struct(fmt)
        return s.unpack(self._bytes(s.size))[0]

    def group(self) -> dict:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self._damaged(f"tag groups nested more than {_MAX_DEPTH} deep")
        self._read(">B"), self._read(">B")  # sorted, open
        out = {}
        for i in range(self._count(3)):  # an entry is at least a kind and a name length
            kind = self._read(">B")
            name = self._bytes(self._read(">H")).decode("latin-1") or str(i)
            if self.word == ">Q":
                self._read(">Q")  # the tag's byte count; the info words suffice
            if kind == 20:
                out[name] = self.group()
            elif kind == 21:
                out[name] = self.data()
            else:
                raise FormatError(
                    f"DM file {self.path!r} has an unknown tag kind {kind} at byte "
                    f"{self.f.tell() - 1}; the file is damaged"
                )
        self.depth -= 1
        return out

    def data(self):
        if self._bytes(4) != b"%%%%":
            raise FormatError(
                f"DM file {self.path!r} is damaged: a data tag lacks its '%%%%' marker "
                f"near byte {self.f.tell()}"
            )
        info = [self._read(self.word) for _ in range(self._count(struct.calcsize(self.word)))]
        try:
            return self._value(info)
        except IndexError:  # fewer info words than the type needs
            raise self._damaged(f"a data tag with too few type words {info}") from None

    def _scalar_dtype(self, code: int) -> np.dtype:
        if code not in _SIMPLE:
            raise FormatError(
                f"DM file {self.path!r} uses the unknown tag value type {code} near byte "
                f"{self.f.tell()}; the file is damaged or of a newer version"
            )
        return np.dtype(self.data_order + _SIMPLE[code])

    def _value(self, info: list):
        kind = info[0]
        if kind == _STRING:
            return self._bytes(2 * info[1]).decode("utf-16-le", "replace")
        if kind == _STRUCT:
            fields = [self._scalar_dtype(t) for t in info[4::2]]
            return tuple(np.frombuffer(self._bytes(d.itemsize), d)[0].item() for d in fields)
        if kind == _ARRAY:
            return self._array(info)
        dtype = self._scalar_dtype(kind)
        return np.frombuffer(self._bytes(dtype.itemsize), dtype)[0].item()

    def _array(self, info: list) -> DMArray:
        element, length = info[1], info[-1]
        if element == _STRUCT:
            dtype = None
            item = sum(self._scalar_dtype(t).itemsize for t in info[5:-1:2])
        else:
            dtype = self._scalar_dtype(element)
            item = dtype.itemsize
        offset = self.f.tell()
        if not 0 <= item * length <= self.size - offset:
            raise self._damaged(f"an array of {length} items of {item} bytes does not fit in the file")
        self.f.seek(offset + item * length)
        return DMArray(offset, length, dtype, item * length)


def is_dm(path) -> bool:
    """True when ``path`` starts like a DM3 or DM4 file (version and byte order)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    if len(head) < 16:
        return False
    version = struct.unpack(">i", head[:4])[0]
    order = head[8:12] if version == 3 else head[12:16]
    return version in (3, 4) and struct.unpack(">i", order)[0] in (0, 1)


def read_dm_tags(path) -> dict:
    """The tag tree of a DM3/DM4 file as nested dicts; array values stay in the file
    as :class:`DMArray` markers. Adds ``"_version"`` and ``"_data_order"``."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataSetNotFoundError(f"file {path!r} does not exist; check the path") from None
    with f:
        head = f.read(4)
        version = struct.unpack(">i", head)[0] if len(head) == 4 else None
        if version not in (3, 4):
            raise FormatError(
                f"{path!r} is not a DM3/DM4 file this reader knows: its version field is "
                f"{version if version is not None else 'missing'} (expected 3 or 4); "
                f"pass the right format=... or save it again from DigitalMicrograph"
            )
        f.read(4 if version == 3 else 8)  # root length
        parser = _TagParser(f, path, version, "<")
        order = parser._read(">i")
        if order not in (0, 1):
            raise FormatError(f"DM file {path!r} has an invalid byte order flag {order}")
        parser.data_order = "<" if order == 1 else ">"
        tags = parser.group()
    tags["_version"], tags["_data_order"] = version, parser.data_order
    return tags


def _image_candidates(tags: dict) -> list[tuple[str, dict]]:
    found = []
    for key, image in (tags.get("ImageList") or {}).items():
        data = image.get("ImageData", {}) if isinstance(image, dict) else {}
        dims = data.get("Dimensions")
        if isinstance(data.get("Data"), DMArray) and isinstance(dims, dict):
            found.append((key, data))
    return found


def _frames_of(path: str, key: str, data: dict, order: str):
    dims = [int(v) for v in data["Dimensions"].values()]
    code = data.get("DataType")
    if code not in DM_IMAGE_DTYPES:
        raise FormatError(
            f"image {key} of DM file {path!r} has DataType {code}, which this reader does "
            f"not know (known: {sorted(DM_IMAGE_DTYPES)})"
        )
    dtype = np.dtype(order + DM_IMAGE_DTYPES[code])
    array: DMArray = data["Data"]
    if array.nbytes != math.prod(dims) * dtype.itemsize:
        raise FormatError(
            f"image {key} of DM file {path!r} holds {array.nbytes} bytes but its "
            f"Dimensions {dims} of {dtype.name} need {math.prod(dims) * dtype.itemsize}; "
            f"the file is damaged"
        )
    return dims, dtype, array


def open_dm(path, *, image: Optional[int] = None, nav_shape=None, layout: Optional[str] = None) -> DataSet:
    """Open a Gatan DM3/DM4 file holding a 3-D stack or 4-D scan of frames.

    Picks the 3-D/4-D entry of ``ImageList`` (or ``image=``, its index there). The scan
    and detector come from ``Dimensions`` and, for 4-D data, the layout from the
    ``Data Order Swapped`` tag, or ``layout=`` (``"nav-major"`` or ``"sig-major"``; see
    the module notes); ``nav_shape`` reshapes the scan. Frames are zero-copy views of a
    memory map, except in the older sig-major 4-D layout (gathered into a buffer).
    """
    path = os.fspath(path)
    tags = read_dm_tags(path)
    images = _image_candidates(tags)
    if image is not None:
        images = [(k, d) for k, d in images if k == str(image)]
        if not images:
            raise DataSetNotFoundError(
                f"DM file {path!r} has no image {image} in its ImageList; images: "
                f"{[k for k, _ in _image_candidates(tags)]}"
            )
    stacks = [(k, d) for k, d in images if len(d["Dimensions"]) in (3, 4)]
    if len(stacks) != 1:
        listed = {k: list(d["Dimensions"].values()) for k, d in images}
        what = "no 3-D/4-D image" if not stacks else "several 3-D/4-D images"
        raise DataSetError(
            f"DM file {path!r} holds {what} (ImageList entries and Dimensions: "
            f"{listed}); {'pass image=... to choose one' if stacks else 'it is not a stack or 4D-STEM data'}"
        )
    key, data = stacks[0]
    dims, dtype, array = _frames_of(path, key, data, tags["_data_order"])
    check_file_size(path, array.offset + array.nbytes, layout=f"image {key}", allow_trailing=True)
    swapped = _data_order_swapped(tags["ImageList"][key])
    if layout is None:
        layout = "sig-major" if len(dims) == 4 and not swapped else "nav-major"
    elif layout not in LAYOUTS:
        raise DataSetError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    # the data set's axes (scan..., detector y, detector x) as indices into Dimensions
    if layout == "sig-major" and len(dims) == 4:
        axes = [1, 0, 3, 2]
        source: FrameSource = SigMajorFrameSource(
            path, offset=array.offset, n_frames=dims[0] * dims[1], sig_shape=(dims[3], dims[2]), dtype=dtype
        )
        read_path = "gather (sig-major layout, copy)"
    else:
        axes = list(range(len(dims)))[::-1]
        source = MappedFrameSource(
            path, offset=array.offset, n_frames=math.prod(dims[2:]), sig_shape=(dims[1], dims[0]), dtype=dtype
        )
        read_path = "mmap"
    shape = tuple(dims[a] for a in axes)
    nav = shape[:-2] if nav_shape is None else parse_shape("nav_shape", nav_shape, (1, 2))
    calibrations = _calibrations(path, data)
    # in the data set's axis order when there is one per axis
    per_axis = [calibrations[a] for a in axes] if len(calibrations) == len(dims) else []
    metadata = {
        "dm_version": tags["_version"],
        "image": key,
        "dimensions": dims,
        "layout": layout if len(dims) == 4 else "stack",
        "data_order_swapped": swapped,
        "scan_shape_source": "Dimensions" if nav_shape is None else "nav_shape option",
        "calibrations": per_axis or calibrations,
        "read_path": read_path,
    }
    # a reshaped scan keeps the detector's calibration only
    calibration = _calibration(path, per_axis if nav_shape is None else per_axis[-2:], tags["ImageList"][key])
    return DataSet(source, nav, format="dm", path=path, metadata=metadata, calibration=calibration)


#: the layouts of 4-D data (see the module notes)
LAYOUTS = ("nav-major", "sig-major")


def _data_order_swapped(image) -> Optional[bool]:
    """The image's ``ImageTags/Meta Data/Data Order Swapped`` tag, None when absent."""
    tags = image.get("ImageTags") if isinstance(image, dict) else None
    meta = tags.get("Meta Data") if isinstance(tags, dict) else None
    value = meta.get("Data Order Swapped") if isinstance(meta, dict) else None
    return bool(value) if isinstance(value, (bool, int, float)) else None


def _calibrations(path: str, data: dict) -> list:
    """Scale, origin and units per entry of ``Dimensions`` (file order), where the file
    has them."""
    dims = (data.get("Calibrations") or {}).get("Dimension") or {}
    return [
        {"scale": d.get("Scale"), "origin": d.get("Origin"), "units": _text(path, d.get("Units"))}
        for d in dims.values()
        if isinstance(d, dict)
    ]


#: the longest array of characters read as a tag's text (units, short names)
_MAX_TEXT = 256


def _text(path: str, value) -> Optional[str]:
    """A text tag's value: DM stores short texts (units...) as arrays of uint16
    characters, left in the file by the parser; None for anything else."""
    if isinstance(value, str):
        return value
    if not isinstance(value, DMArray) or value.dtype is None or value.dtype.itemsize != 2:
        return None
    if value.length > _MAX_TEXT:
        return None
    codes = np.fromfile(path, value.dtype, count=value.length, offset=value.offset)
    return "".join(map(chr, codes.tolist()))


def _calibration(path: str, axes: list, image: dict) -> Calibration:
    """Scan step and detector pixel size from the ``Calibrations`` of the data set's
    axes (``axes``: scan y, scan x, detector y, detector x, or the detector's two),
    beam energy (``Voltage``, V) and camera length (``STEM Camera Length``, mm) from
    ``ImageTags/Microscope Info``."""
    parts = axis_parts([(c["scale"], c["units"]) for c in axes])
    tags = image.get("ImageTags") if isinstance(image, dict) else None
    info = tags.get("Microscope Info") if isinstance(tags, dict) else None
    if isinstance(info, dict):
        for name, key, unit in (("beam_energy", "Voltage", "V"), ("camera_length", "STEM Camera Length", "mm")):
            if isinstance(info.get(key), (int, float)):
                parts[name] = (info[key], unit)
    return file_calibration(repr(os.path.basename(path)), parts)


class SigMajorFrameSource(FrameSource):
    """Frames of 4-D data stored detector pixel by detector pixel: the file holds
    ``(sig_y, sig_x, n_frames)`` in C order (older DM 4D-STEM); reads gather the frames
    of a range into one reused buffer."""

    def __init__(self, path: str, *, offset: int, n_frames: int, sig_shape, dtype):
        self.path = os.fspath(path)
        self.offset = int(offset)
        self.n_frames = int(n_frames)
        self.sig_shape = tuple(int(n) for n in sig_shape)
        self.dtype = np.dtype(dtype)

    def open(self, payload=None) -> "SigMajorFrameReader":
        return SigMajorFrameReader(self)


class SigMajorFrameReader(FrameReader):
    """Gathers frames from the pixel-major mapping into a reused buffer."""

    def __init__(self, source: SigMajorFrameSource):
        self.source = source
        self._pixels: Optional[np.ndarray] = None
        self._buffer: Optional[np.ndarray] = None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` (a view of the buffer, valid until the next read)."""
        s = self.source
        _check_range(start, stop, s.n_frames)
        if self._pixels is None:  # (pixels, frames): one row per detector pixel
            self._pixels = map_frames(
                s.path, offset=s.offset, n_frames=math.prod(s.sig_shape), sig_shape=(1, s.n_frames), dtype=s.dtype
            )[:, 0, :]
        n = stop - start
        if self._buffer is None or len(self._buffer) < n:
            self._buffer = np.empty((n,) + s.sig_shape, s.dtype)
        out = self._buffer[:n]
        out.reshape(n, -1)[...] = self._pixels[:, start:stop].T
        return out

    def close(self) -> None:
        self._pixels = self._buffer = None


PLUGIN = register_reader(
    ReaderPlugin(
        name="dm",
        open=open_dm,
        suffixes=(".dm3", ".dm4"),
        sniff=is_dm,
        description="Gatan DigitalMicrograph DM3/DM4 stacks and 4D-STEM (mmap)",
    ),
    replace=True,
)
