"""zarr stores (format v2 and v3, directory stores) through the ``zarr`` package.

Any chunking and any numcodecs compression work: the reader finds the frames
(``array=``, or the only 3-D ``(frames, sy, sx)`` / 4-D ``(ny, nx, sy, sx)`` numeric
array of a group), aligns partitions and tiles to whole chunks along the scan (the
same rule as chunked HDF5) and reads each tile into one reused buffer. Chunks of whole
frames in a directory store are read from their files and decoded with numcodecs
directly (:mod:`~stem_explorer.io.zarr_chunks`, ``read_path`` ``"chunk files"``),
seven times faster than through the zarr package's asynchronous machinery, which
serves every other layout (``read_path`` ``"zarr"``). ``zarr`` is an optional
dependency: ``pip install stem_explorer[zarr]``.

The module is named ``zarr_reader`` so that it never shadows the ``zarr`` package.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from ..errors import DataSetError, DataSetNotFoundError, FormatError
from .base import DataSet, FrameReader, FrameSource
from .hdf5 import _describe, _frame_alignment, _selection_shape, _selections
from .raw import _check_range, parse_shape
from .registry import ReaderPlugin, register_reader
from .zarr_chunks import ChunkFileReader, ChunkFiles, chunk_files

__all__ = ["ZarrFrameReader", "ZarrFrameSource", "is_zarr", "open_zarr"]

#: files that mark a directory as a zarr v2 array / group or a v3 node
_MARKERS = (".zarray", ".zgroup", "zarr.json")


def is_zarr(path) -> bool:
    """True for a directory holding zarr metadata (``.zarray``, ``.zgroup`` or
    ``zarr.json``)."""
    path = os.fspath(path)
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, m)) for m in _MARKERS)


def _zarr():
    try:
        import zarr
    except ImportError:
        raise FormatError(
            "reading zarr stores needs the `zarr` package (MIT licence): install it with "
            "`pip install stem_explorer[zarr]` (or `pip install zarr`)"
        ) from None
    return zarr


def _open_node(path: str, what: str = "zarr store"):
    zarr = _zarr()
    try:
        return zarr.open(path, mode="r")
    except FileNotFoundError:
        raise DataSetNotFoundError(f"{what} {path!r} does not exist; check the path") from None
    except Exception as exc:  # zarr raises many kinds for bad metadata
        raise FormatError(
            f"{path!r} cannot be opened as a {what} ({type(exc).__name__}: {exc}); check "
            f"that it is a zarr v2/v3 directory store and not damaged"
        ) from None


def _numeric_arrays(node) -> list:
    """``(path, array)`` of every numeric, non-scalar array in a group (or the node
    itself when it is an array)."""
    if hasattr(node, "members"):  # zarr 3
        members = node.members(max_depth=None)
        arrays = [(name, a) for name, a in members if not hasattr(a, "members")]
    elif hasattr(node, "visititems"):  # zarr 2 group
        arrays = []
        node.visititems(lambda name, obj: arrays.append((name, obj)) if hasattr(obj, "dtype") else None)
    else:
        arrays = [("", node)]
    return [(p, a) for p, a in arrays if a.ndim and np.dtype(a.dtype).kind in "biufc"]


def _select_array(node, path: str, array: Optional[str]):
    if array is not None:
        key = str(array).strip("/")
        found = dict(_numeric_arrays(node))
        if key not in found:
            candidates = [(p, a) for p, a in found.items() if a.ndim in (3, 4)]
            raise DataSetNotFoundError(
                f"zarr array {key!r} does not exist in {path!r} (or is not numeric); its "
                f"3-D/4-D arrays are: {_describe(candidates)}; pass one as array=..."
            )
        return key, found[key]
    numeric = _numeric_arrays(node)
    candidates = [(p, a) for p, a in numeric if a.ndim in (3, 4)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DataSetError(
            f"{path!r} holds no 3-D or 4-D numeric zarr array (numeric arrays: "
            f"{_describe(numeric)}); pass array=... naming the frames"
        )
    raise DataSetError(
        f"{path!r} holds several 3-D/4-D arrays: {_describe(candidates)}; pass array=... "
        f"to choose one (e.g. array={candidates[0][0]!r})"
    )


class ZarrFrameSource(FrameSource):
    """Picklable recipe: the store path, the array's path in it, shape and dtype."""

    decodes = True  # numcodecs' compressors run on the chunks' bytes

    def __init__(self, path: str, array: str, *, shape, dtype, frame_alignment: int = 1,
                 files: Optional[ChunkFiles] = None):
        self.path = os.fspath(path)
        self.array = array
        self.files = files  # set when the chunk files are read directly
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.sig_shape = self.shape[-2:]
        self.n_frames = math.prod(self.shape[:-2])
        self.frame_alignment = int(frame_alignment)

    def open(self, payload=None) -> "ZarrFrameReader":
        """Open the store lazily where the task runs."""
        return ZarrFrameReader(self)


class ZarrFrameReader(FrameReader):
    """Reads chunk-aligned frame ranges into one reused buffer."""

    def __init__(self, source: ZarrFrameSource):
        self.source = source
        self._array = None
        self._buffer: Optional[np.ndarray] = None
        self._files = ChunkFileReader(source.files, source.dtype) if source.files else None

    def _zarr_array(self):
        if self._array is None:
            s = self.source
            where = os.path.join(s.path, s.array) if s.array else s.path
            self._array = _open_node(where, "zarr array")
        return self._array

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop``, a view of the reader's buffer (valid until the next
        read)."""
        s = self.source
        _check_range(start, stop, s.n_frames)
        if self._buffer is None or len(self._buffer) < stop - start:
            self._buffer = np.empty((stop - start,) + s.sig_shape, s.dtype)
        out = self._buffer[: stop - start]
        if start == stop:
            return out
        if self._files is not None:
            self._files.read_into(out, start, stop)
            return out
        arr = self._zarr_array()
        for selection, lo, hi in _selections(s.shape, start, stop):
            dest = out[lo - start : hi - start]
            if len(s.shape) == 4:
                dest = dest.reshape(_selection_shape(selection) + s.sig_shape)
            dest[...] = arr[selection]
        return out

    def close(self) -> None:
        """Drop the array handle and the buffer."""
        self._array = self._buffer = None


def open_zarr(path, *, array: Optional[str] = None, nav_shape=None) -> DataSet:
    """Open frames stored in a zarr v2 or v3 directory store.

    ``array`` is the frames' path inside a group; without it the reader picks the only
    3-D ``(frames, sy, sx)`` or 4-D ``(ny, nx, sy, sx)`` numeric array. ``nav_shape``
    reshapes the scan (its product must equal the number of frames).
    """
    path = os.fspath(path)
    node = _open_node(path)
    key, arr = _select_array(node, path, array)
    shape = tuple(arr.shape)
    if len(shape) not in (3, 4) or math.prod(shape) == 0:
        raise DataSetError(
            f"zarr array {key!r} in {path!r} has shape {shape}; frames must be a non-empty "
            f"3-D (frames, sig_y, sig_x) or 4-D (scan_y, scan_x, sig_y, sig_x) array"
        )
    chunks = tuple(arr.chunks)
    files = chunk_files(os.path.join(path, key) if key else path)
    source = ZarrFrameSource(
        path, key, shape=shape, dtype=arr.dtype, frame_alignment=_frame_alignment(shape, chunks),
        files=files if isinstance(files, ChunkFiles) else None,
    )
    compressors = getattr(arr, "compressors", None)  # zarr 3; () when uncompressed
    if compressors is None:  # zarr 2
        compressors = [arr.compressor]
    compressors = [c for c in compressors if c is not None]
    metadata = {
        "array": key,
        "zarr_format": getattr(getattr(arr, "metadata", None), "zarr_format", 2),
        "zarr_shape": list(shape),
        "chunks": list(chunks),
        "compression": [type(c).__name__ for c in compressors] or None,
        "read_path": "chunk files" if source.files else "zarr",
        "frame_alignment": source.frame_alignment,
    }
    if not source.files:
        metadata["read_path_reason"] = files
    nav = shape[:-2] if nav_shape is None else parse_shape("nav_shape", nav_shape, (1, 2))
    return DataSet(source, nav, format="zarr", path=path, metadata=metadata)


PLUGIN = register_reader(
    ReaderPlugin(
        name="zarr",
        open=open_zarr,
        suffixes=(".zarr",),
        sniff=is_zarr,
        description="zarr v2/v3 directory stores (any chunking/numcodecs; needs zarr)",
    ),
    replace=True,
)
