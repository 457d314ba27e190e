"""Raw binary frames, and the zero-copy mmap helper other readers reuse.

A raw file is ``offset`` header bytes, then ``n_frames`` records of
``frame_header + frame + frame_footer`` bytes, each frame C-ordered ``sig_shape`` values
of one dtype. Nothing in the file says so: the user passes the layout.

:func:`map_frames` and :class:`MappedFrameSource` serve every format whose frames sit
at a fixed offset with a fixed stride in one file: raw, ``.npy``, contiguous HDF5 and
the files of the raw partition format.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
from collections import OrderedDict
from typing import Optional, Sequence

import numpy as np

from ..errors import DataSetError, DataSetNotFoundError, FormatError
from .base import DataSet, FrameReader, FrameSource
from .registry import ReaderPlugin, register_reader

__all__ = [
    "MappedFrameReader",
    "MappedFrameSource",
    "check_file_size",
    "map_frames",
    "nav_shape_hint",
    "open_raw",
    "parse_dtype",
    "parse_shape",
]


# -- option parsing shared by the readers --------------------------------------------
def parse_shape(name: str, value, ndims: Sequence[int]) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ints) as a tuple of positive ints whose length
    is one of ``ndims``; a clear :class:`DataSetError` otherwise."""
    if isinstance(value, (int, np.integer)):
        value = (value,)
    try:
        shape = tuple(int(v) for v in value)
        if any(int(v) != v for v in value):
            raise ValueError
    except (TypeError, ValueError):
        raise DataSetError(
            f"{name} must be a tuple of positive integers, got {value!r}; pass e.g. "
            f"{name}=(256, 256)"
        ) from None
    if len(shape) not in ndims or any(n <= 0 for n in shape):
        axes = " or ".join(str(n) for n in ndims)
        raise DataSetError(
            f"{name} must have {axes} positive entries, got {shape}; pass e.g. "
            f"{name}=(256, 256)"
        )
    return shape


def nav_shape_hint(n_frames: int) -> str:
    """What to tell a user whose frames were read as a stack because nothing gave the
    scan's shape (shown by ``stem-explorer info``)."""
    return (
        f"read as a stack of {n_frames} frames; if they are a 2-D scan, pass "
        f"nav_shape=(rows, columns) whose product is {n_frames} (CLI: --nav-shape ROWS "
        f"COLUMNS)"
    )


def parse_dtype(value) -> np.dtype:
    """``value`` as a numeric numpy dtype (byte order kept); a clear error otherwise."""
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise DataSetError(
            f"dtype {value!r} is not a numpy dtype; pass e.g. dtype='<u2' (little-endian "
            f"uint16) or '>u2' (big-endian)"
        ) from None
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype:
        raise DataSetError(
            f"dtype {dtype} is not a plain numeric type; frames must be bool, integer, "
            f"float or complex values"
        )
    return dtype


def check_file_size(
    path: str, needed: int, *, layout: str, allow_trailing: bool = False
) -> int:
    """Raise :class:`FormatError` unless ``path`` holds exactly ``needed`` bytes (or at
    least that many with ``allow_trailing``). ``layout`` describes what needs them."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataSetNotFoundError(
            f"file {path!r} does not exist; check the path"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise DataSetError(
            f"{path!r} is a folder or special file, not a regular file: {layout} is read "
            f"from a file; pass the data file's path"
        )
    size = info.st_size
    if size < needed:
        raise FormatError(
            f"file {path!r} is {size} bytes but {layout} needs {needed} bytes: it is "
            f"truncated or the layout is wrong; check nav_shape/sig_shape/dtype or the "
            f"header offset"
        )
    if size > needed and not allow_trailing:
        raise FormatError(
            f"file {path!r} is {size} bytes but {layout} needs only {needed} bytes "
            f"({size - needed} bytes left over); check nav_shape/sig_shape/dtype or the "
            f"header offset, or pass allow_trailing=True to ignore the extra bytes"
        )
    return size


# -- the zero-copy helper ---------------------------------------------------------------
def map_frames(
    path: str,
    *,
    offset: int,
    n_frames: int,
    sig_shape: Sequence[int],
    dtype,
    frame_stride: Optional[int] = None,
) -> np.ndarray:
    """A read-only zero-copy view ``(n_frames, sig_y, sig_x)`` of frames in ``path``.

    Frame ``i`` starts at byte ``offset + i * frame_stride`` (``frame_stride`` defaults
    to the frame size, i.e. frames back to back); within a frame values are C-ordered.
    The array's ``base`` chain ends in a :class:`numpy.memmap` of the whole file, which
    stays mapped as long as any view of it lives. The dtype is kept as stored
    (big-endian stays big-endian).
    """
    dtype = np.dtype(dtype)
    sy, sx = (int(n) for n in sig_shape)
    frame_bytes = sy * sx * dtype.itemsize
    stride = frame_bytes if frame_stride is None else int(frame_stride)
    if stride < frame_bytes:
        raise DataSetError(
            f"frame stride {stride} bytes is smaller than a frame ({frame_bytes} bytes); "
            f"check the frame header/footer sizes"
        )
    needed = offset + (n_frames - 1) * stride + frame_bytes if n_frames else offset
    stat = os.stat(path)
    size = stat.st_size
    if size < needed:
        raise FormatError(
            f"file {path!r} is {size} bytes but {n_frames} frames of {sig_shape} "
            f"{dtype} at offset {offset} need {needed} bytes; the file is truncated"
        )
    if n_frames == 0:
        return np.empty((0, sy, sx), dtype)
    mm = _mapping(path, stat)
    return np.ndarray(
        (n_frames, sy, sx),
        dtype=dtype,
        buffer=mm,
        offset=offset,
        strides=(stride, sx * dtype.itemsize, dtype.itemsize),
    )


_MAPPINGS: "OrderedDict[tuple, np.memmap]" = OrderedDict()
_MAX_MAPPINGS = 256


def _mapping(path: str, stat: os.stat_result) -> np.memmap:
    """A read-only memmap of the whole file, shared by every task of this process.

    Mapping afresh in each task means a page fault on first touch of every 4 KiB page,
    which costs more than the kernels themselves (measured: 1 GB/s through a fresh
    mapping against 3.2 GB/s through a populated one for an ADF ring on one core).
    Keeping the mapping makes every job after the first one fault-free. The key
    includes inode, size and mtime, so a replaced file is mapped anew (and the old
    mapping dropped, so a deleted file's blocks are not held).
    """
    key = (path, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    mm = _MAPPINGS.get(key)
    if mm is None:
        for stale in [k for k in _MAPPINGS if k[0] == path]:  # the file was replaced
            del _MAPPINGS[stale]
        mm = _MAPPINGS[key] = np.memmap(path, dtype=np.uint8, mode="r")
        while len(_MAPPINGS) > _MAX_MAPPINGS:
            _MAPPINGS.popitem(last=False)
    else:
        _MAPPINGS.move_to_end(key)
    return mm


#: A mapped file up to this share of the process's memory budget keeps its pages
#: mapped between tasks (repeat jobs then read without a page fault); a larger one
#: gives back the byte range of each read-through when its reader closes.
KEEP_MAPPED_FRACTION = 0.25


def _memory_budget() -> int:
    """The dask worker's memory limit, or physical RAM outside dask (or without one)."""
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ImportError, ValueError, AttributeError):
        limit = None
    return int(limit) if limit else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def release_mapped_range(path: str, start: int, stop: int) -> bool:
    """Drop this process's mapping of bytes ``start:stop`` of ``path`` if the file is
    too large to keep mapped (:data:`KEEP_MAPPED_FRACTION`); returns whether it did.

    The pages stay in the page cache (nothing is re-read from disk while they are
    there); they only stop counting in the process's resident memory, which a dask
    worker compares with its memory limit: a 40 GiB file streamed through a
    worker that kept its mapping would look like 20 GiB of worker memory and get the
    worker paused or restarted.
    """
    mm = next((m for key, m in reversed(_MAPPINGS.items()) if key[0] == path), None)
    if mm is None or mm.size <= KEEP_MAPPED_FRACTION * _memory_budget():
        return False
    page = mmap.PAGESIZE
    first = start // page * page
    last = min(mm.size, -(-stop // page) * page)
    handle = getattr(mm, "_mmap", None)  # numpy's mmap object behind the memmap
    if handle is None or last <= first:
        return False
    handle.madvise(mmap.MADV_DONTNEED, first, last - first)
    return True


class MappedFrameSource(FrameSource):
    """Frames at a fixed ``offset`` and ``frame_stride`` in one file (picklable)."""

    random_access = True

    def __init__(
        self,
        path: str,
        *,
        offset: int,
        n_frames: int,
        sig_shape: Sequence[int],
        dtype,
        frame_stride: Optional[int] = None,
    ):
        self.path = os.fspath(path)
        self.offset = int(offset)
        self.n_frames = int(n_frames)
        self.sig_shape = tuple(int(n) for n in sig_shape)
        self.dtype = np.dtype(dtype)
        self.frame_stride = None if frame_stride is None else int(frame_stride)

    def open(self, payload=None) -> "MappedFrameReader":
        """Map the file (on the worker); reads return views of the mapping."""
        return MappedFrameReader(self)


    def __repr__(self) -> str:
        return (
            f"MappedFrameSource({self.path!r}, offset={self.offset}, "
            f"n_frames={self.n_frames}, sig_shape={self.sig_shape}, "
            f"dtype={self.dtype.str!r}, frame_stride={self.frame_stride})"
        )


class MappedFrameReader(FrameReader):
    """Reads of a :class:`MappedFrameSource`: zero-copy views of one mmap."""

    def __init__(self, source: MappedFrameSource):
        self.source = source
        self._frames: Optional[np.ndarray] = None
        self._read = [None, None]  # lowest and highest frame read

    def _mapped(self) -> np.ndarray:
        if self._frames is None:
            s = self.source
            try:
                self._frames = map_frames(
                    s.path,
                    offset=s.offset,
                    n_frames=s.n_frames,
                    sig_shape=s.sig_shape,
                    dtype=s.dtype,
                    frame_stride=s.frame_stride,
                )
            except FileNotFoundError:
                raise DataSetNotFoundError(
                    f"file {s.path!r} does not exist (on this machine); check that "
                    f"every worker sees the same path"
                ) from None
        return self._frames

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` as a read-only view of the mapped file."""
        _check_range(start, stop, self.source.n_frames)
        lo, hi = self._read
        self._read = [start if lo is None else min(lo, start), stop if hi is None else max(hi, stop)]
        return self._mapped()[start:stop]

    def take(self, indices: np.ndarray, out: np.ndarray) -> None:
        """Gather the frames at ``indices`` from the mapping in one numpy call."""
        if len(indices):
            _check_range(int(indices[0]), int(indices[-1]) + 1, self.source.n_frames)
            frames, dest = self._mapped(), out.reshape((len(indices),) + self.source.sig_shape)
            if frames.flags.c_contiguous:
                np.take(frames, indices, axis=0, out=dest, mode="clip")
            else:  # frames with headers between them: np.take would copy the whole file first
                dest[...] = frames[indices]

    def will_need(self, ranges) -> None:
        """Ask the kernel to read the byte ranges of these frames now, all at once
        (``POSIX_FADV_WILLNEED``): touching a cold mapping faults the pages in one
        read-ahead window after another, so the scattered runs of a scan ROI would
        otherwise be read one small request at a time."""
        s = self.source
        frame_bytes = math.prod(s.sig_shape) * s.dtype.itemsize
        stride = s.frame_stride or frame_bytes
        try:
            fd = os.open(s.path, os.O_RDONLY)
        except OSError:
            return  # a hint only: the read reports a missing file
        try:
            for start, stop in ranges:
                os.posix_fadvise(fd, s.offset + start * stride, (stop - start) * stride, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Drop this reader's reference to the mapping (views keep it alive); for a
        file too large to keep mapped, give back the pages of what was read
        (:func:`release_mapped_range`; views stay valid and fault back in)."""
        lo, hi = self._read
        if self._frames is not None and lo is not None and hi > lo:
            s = self.source
            frame_bytes = math.prod(s.sig_shape) * s.dtype.itemsize
            stride = s.frame_stride or frame_bytes
            release_mapped_range(s.path, s.offset + lo * stride, s.offset + (hi - 1) * stride + frame_bytes)
        self._frames = None
        self._read = [None, None]


def _check_range(start: int, stop: int, n_frames: int) -> None:
    if not 0 <= start <= stop <= n_frames:
        raise DataSetError(f"frame range {start}:{stop} is outside 0:{n_frames}")


# -- the raw reader -------------------------------------------------------------------
def open_raw(
    path,
    *,
    nav_shape=None,
    sig_shape=None,
    dtype=None,
    offset: int = 0,
    frame_header: int = 0,
    frame_footer: int = 0,
    allow_trailing: bool = False,
) -> DataSet:
    """Open a raw binary file of frames.

    ``nav_shape``, ``sig_shape`` and ``dtype`` are required (a raw file does not
    describe itself). ``offset`` bytes of file header are skipped, and every frame may
    be wrapped in ``frame_header`` / ``frame_footer`` bytes. The file must hold exactly
    the frames described, or more with ``allow_trailing=True``.
    """
    path = os.fspath(path)
    missing = [
        name
        for name, value in (
            ("nav_shape", nav_shape),
            ("sig_shape", sig_shape),
            ("dtype", dtype),
        )
        if value is None
    ]
    if missing:
        needed = ", ".join(m + "=..." for m in missing)
        raise DataSetError(
            f"a raw file does not describe its layout: pass {needed} "
            f"to open {path!r} (e.g. open_dataset(path, format='raw', nav_shape=(256, 256), "
            f"sig_shape=(256, 256), dtype='<u2'))"
        )
    nav_shape = parse_shape("nav_shape", nav_shape, (1, 2))
    sig_shape = parse_shape("sig_shape", sig_shape, (2,))
    dtype = parse_dtype(dtype)
    sizes = {"offset": offset, "frame_header": frame_header, "frame_footer": frame_footer}
    for name, value in sizes.items():
        if int(value) != value or value < 0:
            raise DataSetError(f"{name} must be a whole number of bytes >= 0, got {value!r}")
    offset, frame_header, frame_footer = int(offset), int(frame_header), int(frame_footer)

    n_frames = math.prod(nav_shape)
    frame_bytes = math.prod(sig_shape) * dtype.itemsize
    stride = frame_header + frame_bytes + frame_footer
    extras = []
    if offset:
        extras.append(f"{offset} header bytes")
    if frame_header or frame_footer:
        extras.append(f"{frame_header}+{frame_footer} bytes around each frame")
    layout = f"nav_shape {nav_shape} x sig_shape {sig_shape} x {dtype.name}" + (
        f" ({dtype.str})" if dtype.byteorder == ">" else ""
    ) + (f" with {' and '.join(extras)}" if extras else "")
    check_file_size(path, offset + n_frames * stride, layout=layout, allow_trailing=allow_trailing)

    source = MappedFrameSource(
        path,
        offset=offset + frame_header,
        n_frames=n_frames,
        sig_shape=sig_shape,
        dtype=dtype,
        frame_stride=stride,
    )
    return DataSet(
        source,
        nav_shape,
        format="raw",
        path=path,
        metadata={
            "offset": offset,
            "frame_header": frame_header,
            "frame_footer": frame_footer,
            "read_path": "mmap",
        },
    )


PLUGIN = register_reader(
    ReaderPlugin(
        name="raw",
        open=open_raw,
        suffixes=(".raw", ".bin", ".dat"),
        description="raw binary frames; needs nav_shape, sig_shape, dtype",
    ),
    replace=True,
)
