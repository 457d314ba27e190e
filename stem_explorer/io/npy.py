"""NumPy ``.npy`` files, memory-mapped like ``np.load(path, mmap_mode="r")``.

The header is parsed with :mod:`numpy.lib.format`; the data that follows is mapped with
the raw reader's :func:`~stem_explorer.io.raw.map_frames` helper.
"""

from __future__ import annotations

import math
import os
from tokenize import TokenError

import numpy as np
from numpy.lib import format as npformat

from ..errors import DataSetError, FormatError
from .base import DataSet
from .raw import MappedFrameSource, check_file_size, parse_shape
from .registry import ReaderPlugin, register_reader

__all__ = ["open_npy", "read_npy_header"]

_MAGIC = b"\x93NUMPY"


def read_npy_header(path: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data_offset)`` of the ``.npy`` file ``path``."""
    with open(path, "rb") as f:
        try:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npformat.read_array_header_2_0(f)
            else:  # 3.0 (utf-8 field names) has no public header reader
                return _header_via_np_load(path)
        except (ValueError, OSError, SyntaxError, TokenError, TypeError, RecursionError) as exc:
            raise FormatError(
                f"{path!r} is not a valid .npy file ({exc}); check the file, or pass "
                f"format='raw' with its layout if it is raw binary"
            ) from None
        return tuple(shape), bool(fortran), np.dtype(dtype), f.tell()


def _header_via_np_load(path: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    mapped = np.load(path, mmap_mode="r")
    fortran = mapped.flags.f_contiguous and not mapped.flags.c_contiguous
    return tuple(mapped.shape), bool(fortran), mapped.dtype, int(mapped.offset)


def _sniff_npy(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(6) == _MAGIC
    except OSError:
        return False


def open_npy(path, *, nav_shape=None) -> DataSet:
    """Open a 3-D ``(frames, sy, sx)`` or 4-D ``(ny, nx, sy, sx)`` ``.npy`` array.

    The file is memory-mapped, not loaded. ``nav_shape`` reshapes the scan (its product
    must equal the number of frames).
    """
    path = os.fspath(path)
    shape, fortran, dtype, data_offset = read_npy_header(path)
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.hasobject:
        raise DataSetError(
            f"{path!r} holds {dtype} values, not numbers; save the frames as an integer "
            f"or float array"
        )
    if len(shape) not in (3, 4):
        raise DataSetError(
            f"{path!r} holds a {len(shape)}-D array of shape {shape}; 4D-STEM data must be "
            f"3-D (frames, sig_y, sig_x) or 4-D (scan_y, scan_x, sig_y, sig_x); reshape it "
            f"before saving"
        )
    if fortran and math.prod(shape[:-1]) > 1:
        raise DataSetError(
            f"{path!r} stores its array in Fortran order, which cannot be read frame by "
            f"frame; save it with np.save(path, np.ascontiguousarray(array))"
        )
    nav = shape[:-2]
    sig_shape = shape[-2:]
    n_frames = math.prod(nav)
    check_file_size(
        path,
        data_offset + n_frames * math.prod(sig_shape) * dtype.itemsize,
        layout=f"the .npy header (shape {shape}, {dtype.str}, data at byte {data_offset})",
        allow_trailing=True,
    )
    if nav_shape is not None:
        nav = parse_shape("nav_shape", nav_shape, (1, 2))
    source = MappedFrameSource(
        path, offset=data_offset, n_frames=n_frames, sig_shape=sig_shape, dtype=dtype
    )
    return DataSet(
        source,
        nav,
        format="npy",
        path=path,
        metadata={"npy_shape": list(shape), "read_path": "mmap"},
    )


PLUGIN = register_reader(
    ReaderPlugin(
        name="npy",
        open=open_npy,
        suffixes=(".npy",),
        sniff=_sniff_npy,
        description="NumPy .npy arrays (3-D or 4-D), memory-mapped",
    ),
    replace=True,
)
