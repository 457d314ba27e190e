"""NanoMegas ASTAR blockfiles (``.blo``): uint8 diffraction patterns of a raster scan.

Layout (little-endian; learnt from the RosettaSciIO format documentation of the
ASTAR blockfile):

* a file header: the 6 ASCII bytes ``IMGBLO``, a ``uint16`` format magic ``0x0102``,
  ``uint32`` offsets of the virtual bright-field image (``NX * NY`` bytes) and of the
  first frame record, a ``uint32`` of flags, then ``uint16`` detector size ``DP_SZ``
  (frames are square), detector rotation, scan size ``NX`` and ``NY``, scan rotation,
  ``float64`` scan step ``SX`` / ``SY`` [nm], ``uint32`` beam energy [V], ``uint16``
  reciprocal pixel size, ``uint32`` camera length [0.1 mm], ``float64`` acquisition
  time (serial date), and centring / distortion coefficients;
* ``NX * NY`` frame records, row by row: 6 bytes of frame header (``0x55 0xAA`` and
  a ``uint32`` frame number) followed by ``DP_SZ * DP_SZ`` ``uint8`` values.

Frames are mapped zero-copy with the record size as the frame stride. The scan is
``(NY, NX)`` in numpy order (rows of ``NX`` positions).
"""

from __future__ import annotations

import os
import struct

from ..errors import DataSetNotFoundError, FormatError
from .base import DataSet
from .calibration import file_calibration
from .raw import MappedFrameSource, check_file_size, parse_shape
from .registry import ReaderPlugin, register_reader

__all__ = ["BLOCKFILE_MAGIC", "is_blockfile", "open_blockfile", "read_blockfile_header"]

#: The first bytes of every blockfile.
BLOCKFILE_MAGIC = b"IMGBLO"
#: The only header version known: the ``uint16`` after the identifier.
HEADER_VERSION = 0x0102
#: Bytes before each frame: ``0x55 0xAA`` and a ``uint32`` frame number.
FRAME_HEADER_BYTES = 6

# field name, struct code: the fixed part of the header up to the acquisition time
_HEADER_FIELDS = (
    ("ID", "6s"),
    ("MAGIC", "H"),
    ("Data_offset_1", "I"),
    ("Data_offset_2", "I"),
    ("UNKNOWN1", "I"),
    ("DP_SZ", "H"),
    ("DP_rotation", "H"),
    ("NX", "H"),
    ("NY", "H"),
    ("Scan_rotation", "H"),
    ("SX", "d"),
    ("SY", "d"),
    ("Beam_energy", "I"),
    ("SDP", "H"),
    ("Camera_length", "I"),
    ("Acquisition_time", "d"),
)
_HEADER = struct.Struct("<" + "".join(code for _n, code in _HEADER_FIELDS))


def is_blockfile(path) -> bool:
    """True when ``path`` starts with the blockfile identifier ``IMGBLO``."""
    try:
        with open(path, "rb") as f:
            return f.read(len(BLOCKFILE_MAGIC)) == BLOCKFILE_MAGIC
    except OSError:
        return False


def read_blockfile_header(path) -> dict:
    """The fixed header fields of a blockfile as a dict (``ID`` excluded).

    Raises :class:`FormatError` for a file that is not a blockfile, too short to hold
    a header, or of an unknown header version.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
    except FileNotFoundError:
        raise DataSetNotFoundError(f"file {path!r} does not exist; check the path") from None
    if not head.startswith(BLOCKFILE_MAGIC):
        raise FormatError(
            f"{path!r} is not a NanoMegas blockfile: it starts with {head[:6]!r}, not "
            f"{BLOCKFILE_MAGIC!r}; pass the right format=... for this file"
        )
    if len(head) < _HEADER.size:
        raise FormatError(
            f"blockfile {path!r} is truncated: {len(head)} bytes, shorter than its "
            f"{_HEADER.size}-byte header"
        )
    values = dict(zip((n for n, _c in _HEADER_FIELDS), _HEADER.unpack(head)))
    del values["ID"]
    if values["MAGIC"] != HEADER_VERSION:
        raise FormatError(
            f"blockfile {path!r} has header version 0x{values['MAGIC']:04x}; only "
            f"0x{HEADER_VERSION:04x} is known, so its layout cannot be trusted; convert "
            f"it with the ASTAR software or report the version"
        )
    return values


def open_blockfile(path, *, nav_shape=None) -> DataSet:
    """Open a NanoMegas blockfile (``.blo``).

    The scan shape ``(NY, NX)`` and square detector size come from the header;
    ``nav_shape`` reshapes the scan (its product must be ``NX * NY``). Frames are
    ``uint8`` views of a memory map of the file.
    """
    path = os.fspath(path)
    header = read_blockfile_header(path)
    size, nx, ny = header["DP_SZ"], header["NX"], header["NY"]
    if not (size and nx and ny):
        raise FormatError(
            f"blockfile {path!r} declares an empty scan or detector (NX={nx}, NY={ny}, "
            f"DP_SZ={size}); the header is damaged"
        )
    stride = FRAME_HEADER_BYTES + size * size
    start = header["Data_offset_2"]
    check_file_size(
        path,
        start + nx * ny * stride,
        layout=f"its header (scan {ny}x{nx}, {size}x{size} frames from byte {start})",
        allow_trailing=True,
    )
    source = MappedFrameSource(
        path,
        offset=start + FRAME_HEADER_BYTES,
        n_frames=nx * ny,
        sig_shape=(size, size),
        dtype="uint8",
        frame_stride=stride,
    )
    nav = (ny, nx) if nav_shape is None else parse_shape("nav_shape", nav_shape, (1, 2))
    metadata = {
        "scan_shape_source": "header" if nav_shape is None else "nav_shape option",
        "scan_step_nm": [header["SY"], header["SX"]],
        "beam_energy_V": header["Beam_energy"],
        "camera_length_mm": header["Camera_length"] / 10,
        "scan_rotation_deg": header["Scan_rotation"] / 100,
        "detector_rotation": header["DP_rotation"],
        "acquisition_time_serial_date": header["Acquisition_time"],
        "read_path": "mmap",
    }
    calibration = file_calibration(repr(os.path.basename(path)), {
        "scan_step": ([header["SY"], header["SX"]], "nm") if nav_shape is None else None,
        "beam_energy": (header["Beam_energy"], "V"),
        "camera_length": (header["Camera_length"] / 10, "mm"),  # stored in 0.1 mm
    })
    return DataSet(source, nav, format="blockfile", path=path, metadata=metadata, calibration=calibration)


PLUGIN = register_reader(
    ReaderPlugin(
        name="blockfile",
        open=open_blockfile,
        suffixes=(".blo",),
        sniff=is_blockfile,
        description="NanoMegas ASTAR blockfile (uint8 frames, scan from the header)",
    ),
    replace=True,
)
