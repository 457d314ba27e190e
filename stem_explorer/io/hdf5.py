"""HDF5 files (NeXus, EMD, hspy, detector master files...) through h5py.

The reader finds the frames (``dataset=``, or the only 3-D/4-D numeric dataset, following
soft and external links), then picks one of three read paths per dataset, recorded as
``metadata["read_path"]``:

* ``"mmap"``: storage whose frames are one stretch of bytes (contiguous and
  unfiltered, or uncompressed chunks stored back to back in order) is mapped
  zero-copy with :func:`~stem_explorer.io.raw.map_frames`, in the file that really
  holds the bytes (the target of an external link);
* ``"mapped_chunks"``: uncompressed chunks of whole frames that are not one stretch
  (HDF5 puts B-tree nodes between some chunks; chunks lie in the order they were
  written) are mapped run by run: the chunk addresses, read once on open, are grouped
  into runs of frames stored back to back, and a read inside one run is a zero-copy
  view (:class:`Hdf5ChunkRunsSource`); tiles are cut where runs end;
* ``"chunked"``: other chunked (and compressed) storage is read by h5py into a reused
  buffer; partitions and tiles are aligned to whole chunks so no chunk is decoded
  twice. Other layouts (virtual, compact, unallocated) take the same h5py path,
  recorded as ``"h5py"``.

Every mapping is cross-checked against frames read by h5py when the file is opened.

``hdf5plugin`` is imported when available so bitshuffle, LZ4, Blosc, Zstd... filters
work; a missing filter is reported by name before any read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from itertools import pairwise
from typing import Optional

import h5py
import numpy as np

from ..errors import DataSetError, DataSetNotFoundError, FormatError, StemExplorerError
from .base import DataSet, FrameReader, FrameSource, Partition
from .hdf5_calibration import hdf5_calibration
from .hdf5_scan import scan_shape
from .hdf5_virtual import check_virtual_sources
from .raw import MappedFrameSource, _check_range, map_frames
from .registry import ReaderPlugin, register_reader

try:  # registers the compression filters of the HDF5 ecosystem with h5py
    import hdf5plugin  # noqa: F401

    HAVE_HDF5PLUGIN = True
except ImportError:  # pragma: no cover - hdf5plugin is an optional dependency
    HAVE_HDF5PLUGIN = False

__all__ = [
    "FILTER_NAMES",
    "Hdf5ChunkRunsDataSet",
    "Hdf5ChunkRunsPartition",
    "Hdf5ChunkRunsReader",
    "Hdf5ChunkRunsSource",
    "Hdf5FrameReader",
    "Hdf5FrameSource",
    "is_hdf5",
    "open_hdf5",
]

_MAGIC = b"\x89HDF\r\n\x1a\n"

#: HDF5 filter ids (https://github.com/HDFGroup/hdf5_plugins) -> readable names.
FILTER_NAMES = {
    1: "gzip",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    307: "bzip2",
    32000: "lzf",
    32001: "blosc",
    32004: "lz4",
    32008: "bitshuffle",
    32013: "zfp",
    32015: "zstd",
    32017: "sz",
    32018: "fcidecomp",
    32024: "sz3",
    32026: "blosc2",
    32028: "sperr",
    32033: "htj2k",
}
# filters that only rearrange or check bytes; the compression name skips them
_AUXILIARY_FILTERS = {2, 3}


def is_hdf5(path) -> bool:
    """True when ``path`` starts with an HDF5 superblock.

    The superblock sits at byte 0, 512, 1024, 2048, ... (a user block may precede it),
    so the signature is searched at those offsets.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            pos = 0
            while pos + len(_MAGIC) <= size:
                f.seek(pos)
                if f.read(len(_MAGIC)) == _MAGIC:
                    return True
                pos = 512 if pos == 0 else pos * 2
    except OSError:  # a directory, no permission...
        return False
    return False


# -- finding the frames -----------------------------------------------------------------
def _object_key(obj) -> tuple[int, int]:
    info = h5py.h5o.get_info(obj.id)
    return (info.fileno, info.addr)


#: what h5py raises for damaged metadata or a link it cannot follow
_H5_ERRORS = (KeyError, OSError, RuntimeError, ValueError, TypeError)


def _numeric_datasets(f: h5py.File, broken: Optional[list] = None) -> list:
    """Every ``(path, dataset)`` numeric and non-scalar reachable from ``f``, following
    soft and external links; an object reached by several paths is listed once.
    Dangling external links and entries that cannot be read (damaged metadata) are
    described in ``broken``."""
    found, seen = [], set()
    broken = [] if broken is None else broken

    def walk(group, prefix):
        try:
            names = list(group)
        except _H5_ERRORS as exc:
            broken.append(f"{prefix or '/'} (group cannot be listed: {exc})")
            return
        for name in names:
            path = f"{prefix}/{name}"
            try:
                obj = group[name]
                key = None if obj is None else _object_key(obj)
                numeric = isinstance(obj, h5py.Dataset) and _is_numeric(obj)
            except _H5_ERRORS:
                broken.append(_describe_link(group, name, path))
                continue
            if key is None or key in seen:
                continue
            seen.add(key)
            if isinstance(obj, h5py.Group):
                walk(obj, path)
            elif numeric:
                found.append((path, obj))

    walk(f, "")
    return found


def _is_numeric(dset: h5py.Dataset) -> bool:
    return (
        dset.shape is not None
        and dset.ndim >= 1
        and dset.dtype.kind in "biufc"
        and dset.dtype.fields is None
    )


def _describe_link(group, name: str, path: str) -> str:
    try:
        link = group.get(name, getlink=True)
    except _H5_ERRORS:
        link = None
    if isinstance(link, h5py.ExternalLink):
        return f"{path} -> missing file {link.filename}:{link.path}"
    if isinstance(link, h5py.SoftLink):
        return f"{path} -> missing {link.path}"
    return f"{path} (unreadable)"


def _broken_hint(broken: list) -> str:
    if not broken:
        return ""
    return (
        f"; entries that cannot be read: {'; '.join(broken)} (put the linked data files "
        f"beside the master file; anything else is damage to the file)"
    )


def _describe(candidates) -> str:
    return "; ".join(f"{p} {tuple(d.shape)} {d.dtype}" for p, d in candidates) or "none"


def _frame_candidates(f: h5py.File, broken: Optional[list] = None):
    all_numeric = _numeric_datasets(f, broken)
    return [(p, d) for p, d in all_numeric if d.ndim in (3, 4, 5)], all_numeric


def _select_dataset(f: h5py.File, path: str, dataset: Optional[str]):
    if dataset is not None:
        key = "/" + str(dataset).strip("/")
        try:
            obj = f[key]
        except (KeyError, OSError, RuntimeError, ValueError):
            obj = None
        if not isinstance(obj, h5py.Dataset):
            broken: list = []
            candidates, _ = _frame_candidates(f, broken)
            if isinstance(obj, h5py.Group):
                what = "is a group, not a dataset"
            else:
                what = "does not exist"
                parent, _, name = key.rpartition("/")
                try:
                    group = f[parent or "/"]
                except (KeyError, OSError, RuntimeError, ValueError):
                    group = None
                if isinstance(group, h5py.Group) and name in group:
                    what = f"cannot be opened ({_describe_link(group, name, key)})"
            raise DataSetNotFoundError(
                f"HDF5 path {key!r} in {path!r} {what}; its 3-D/4-D datasets are: "
                f"{_describe(candidates)}; pass one of them as dataset=...{_broken_hint(broken)}"
            )
        return key, obj
    broken = []
    candidates, all_numeric = _frame_candidates(f, broken)
    candidates = _prefer_known_layouts(f, path, candidates)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DataSetError(
            f"{path!r} holds no 3-D or 4-D numeric dataset to read frames from "
            f"(numeric datasets: {_describe(all_numeric)}); pass dataset=... naming the "
            f"frames{_broken_hint(broken)}"
        )
    raise DataSetError(
        f"{path!r} holds several 3-D/4-D datasets: {_describe(candidates)}; pass "
        f"dataset=... to choose one (e.g. dataset={candidates[0][0]!r})"
    )


def _prefer_known_layouts(f: h5py.File, path: str, candidates: list) -> list:
    """Narrow ambiguous candidates by the layouts of known writers; the axis order of
    all of them is already numpy's ``(scan_y, scan_x, det_y, det_x)``:

    * fpd: ``/fpd_expt/fpd_data/data`` (beside 3-D per-position ``Exposure`` /
      ``Threshold`` data), 4-D or 5-D ``(y, x, channels, det_y, det_x)``;
    * HyperSpy ``.hspy``: ``/Experiments/<name>/data`` (navigation axes first);
    * EMD 1.0 (py4DSTEM, Prismatic): a ``data`` dataset in a group with an
      ``emd_group_type`` attribute, 4-D datacubes before 3-D slices (Prismatic's
      ``realslices`` of annular detector images beside its ``CBED_array`` datacube).

    Of the rest, 3-D/4-D datasets go before 5-D ones.
    """
    if len(candidates) < 2:
        return candidates

    def rank(item) -> int:
        name, dset = item
        if name == "/fpd_expt/fpd_data/data":
            return 3
        if name.startswith("/Experiments/") and name.count("/") == 3 and name.endswith("/data"):
            return 3
        if name.endswith("/data") and "emd_group_type" in dset.parent.attrs:
            return 1 + (dset.ndim == 4)
        return -1 if dset.ndim == 5 else 0

    best = max(rank(c) for c in candidates)
    return [c for c in candidates if rank(c) == best]


# -- filters --------------------------------------------------------------------------------
def _filters(dset: h5py.Dataset) -> list[tuple[int, tuple, str]]:
    dcpl = dset.id.get_create_plist()
    out = []
    for i in range(dcpl.get_nfilters()):
        code, _flags, values, name = dcpl.get_filter(i)
        label = FILTER_NAMES.get(code) or name.decode("ascii", "replace").split(";")[0]
        out.append((int(code), tuple(values), label or "unknown"))
    return out


def _compression_name(filters) -> Optional[str]:
    names = []
    for code, values, label in filters:
        if code in _AUXILIARY_FILTERS:
            continue
        if code == 32008 and len(values) >= 5:  # bitshuffle's 5th value: 2 lz4, 3 zstd
            label += {2: "-lz4", 3: "-zstd"}.get(values[4], "")
        names.append(label)
    return "+".join(names) or None


def _check_filters_available(filters, dataset_name: str, path: str) -> None:
    for code, _values, label in filters:
        if not h5py.h5z.filter_avail(code):
            fix = "install the HDF5 filters with `pip install hdf5plugin`"
            if HAVE_HDF5PLUGIN:
                fix += (
                    " (hdf5plugin is installed but lacks this one: upgrade it with "
                    "`pip install -U hdf5plugin`, or install the filter's HDF5 plugin and "
                    "point HDF5_PLUGIN_PATH at it)"
                )
            raise FormatError(
                f"dataset {dataset_name!r} in {path!r} is compressed with the HDF5 filter "
                f"{label!r} (filter id {code}), which is not available here; {fix}"
            )


def _frame_alignment(shape: tuple[int, ...], chunks: Optional[tuple[int, ...]]) -> int:
    """Frames stored together along the flat scan: a range that starts and stops on
    multiples of this covers whole chunks."""
    if chunks is None:
        return 1
    nav, nav_chunks = tuple(shape[:-2]), tuple(chunks[:-2])
    if len(nav) == 1:
        return int(nav_chunks[0])
    inner = math.prod(nav[1:])
    if nav_chunks[0] == 1:
        per_chunk = _frame_alignment(nav[1:] + (0, 0), nav_chunks[1:] + (0, 0))
        if inner % per_chunk == 0:
            return per_chunk  # one index of the outer axis per chunk, split evenly
    return int(nav_chunks[0]) * inner  # whole groups of chunks[0] outer indices


# -- the chunked / h5py read path ----------------------------------------------------------
class Hdf5FrameSource(FrameSource):
    """Picklable recipe for reading frames of one HDF5 dataset with h5py.

    Holds the path of the file that contains the dataset (an external link's target,
    resolved when the data set was opened) and the dataset's path in it; the file is
    opened on the worker. ``shape`` is the dataset's; for 5-D data ``(y, x, channels,
    det_y, det_x)`` a ``channel`` reads that one frame per position, and without one
    the frames are every ``(y, x, channel)`` in C order.
    """

    decodes = True  # HDF5's filters (hdf5plugin's among them) run on the chunks' bytes

    def __init__(
        self,
        path: str,
        dataset: str,
        *,
        shape: tuple[int, ...],
        dtype,
        frame_alignment: int = 1,
        channel: Optional[int] = None,
    ):
        self.path = os.fspath(path)
        self.dataset = dataset
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.channel = None if channel is None else int(channel)
        self.sig_shape = self.shape[-2:]
        self.n_frames = math.prod(self.nav_axes)
        self.frame_alignment = int(frame_alignment)

    @property
    def nav_axes(self) -> tuple[int, ...]:
        """The dataset's axes that frames are indexed by (the channel axis is not one
        when a channel is picked)."""
        return self.shape[:2] if self.channel is not None else self.shape[:-2]

    def open(self, payload=None) -> "Hdf5FrameReader":
        """Open the HDF5 file lazily (on first read) where the task runs."""
        return Hdf5FrameReader(self)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, {self.dataset!r}, shape={self.shape}, "
            f"dtype={self.dtype.str!r}, {self._repr_layout()}frame_alignment={self.frame_alignment})"
        )

    def _repr_layout(self) -> str:
        """What the repr adds before the alignment (ends with ', ')."""
        return "" if self.channel is None else f"channel={self.channel}, "


class Hdf5FrameReader(FrameReader):
    """Reads frames with ``Dataset.read_direct`` into one reused buffer."""

    def __init__(self, source: Hdf5FrameSource):
        self.source = source
        self._file: Optional[h5py.File] = None
        self._dset: Optional[h5py.Dataset] = None
        self._buffer: Optional[np.ndarray] = None

    def _dataset(self) -> h5py.Dataset:
        if self._dset is None:
            s = self.source
            try:
                self._file = h5py.File(s.path, "r")
                self._dset = self._file[s.dataset]
            except FileNotFoundError:
                raise DataSetNotFoundError(
                    f"HDF5 file {s.path!r} does not exist (on this machine); check that "
                    f"every worker sees the same path"
                ) from None
            except _H5_ERRORS as exc:
                raise FormatError(
                    f"HDF5 file {s.path!r} cannot be read any more ({exc}): it was "
                    f"truncated, replaced or damaged after it was opened; restore the "
                    f"file and open it again"
                ) from None
        return self._dset

    def _frames_buffer(self, n: int) -> np.ndarray:
        if self._buffer is None or len(self._buffer) < n:
            self._buffer = np.empty((n,) + self.source.sig_shape, self.source.dtype)
        return self._buffer[:n]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop``, a view of the reader's buffer (valid until the next
        read)."""
        _check_range(start, stop, self.source.n_frames)
        out = self._frames_buffer(stop - start)
        self.read_into(out, start, stop)
        return out

    def read_into(self, out: np.ndarray, start: int, stop: int) -> None:
        """Fill ``out`` (C-contiguous, ``(stop - start, sig_y, sig_x)``, the dataset's
        dtype) with frames ``start:stop``."""
        s = self.source
        if start == stop:
            return
        dset = self._dataset()
        picked = () if s.channel is None else (s.channel,)
        try:
            for source_sel, lo, hi in _selections(s.nav_axes + s.sig_shape, start, stop):
                dest = out[lo - start : hi - start]
                dest = dest.reshape(_selection_shape(source_sel) + s.sig_shape)
                dset.read_direct(dest, source_sel + picked)
        except OSError as exc:
            raise FormatError(
                f"cannot read frames {start}:{stop} of {s.dataset!r} in {s.path!r}: "
                f"{exc}; if a compression filter is missing, `pip install hdf5plugin`, "
                f"otherwise the file may be damaged"
            ) from exc

    def close(self) -> None:
        """Close the HDF5 file and drop the buffer."""
        self._dset = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self._buffer = None


def _selections(shape, start: int, stop: int) -> list:
    """Hyperslabs ``(selection, flat_start, flat_stop)`` that read flat frames
    ``start:stop`` of a dataset of frames ``shape`` (scan axes, then the frame's two):
    each selection is a tuple of one slice per scan axis. Per axis, at most a partial
    first block, a block of whole ones and a partial last block (a 4-D scan: a partial
    first row, whole rows, a partial last row)."""
    return list(_nav_blocks(tuple(shape[:-2]), start, stop))


def _nav_blocks(nav: tuple, start: int, stop: int):
    if len(nav) == 1:
        yield (slice(start, stop),), start, stop
        return
    inner = math.prod(nav[1:])
    r0, c0 = divmod(start, inner)
    r1, c1 = divmod(stop, inner)

    def within(row: int, lo: int, hi: int):
        for sel, a, b in _nav_blocks(nav[1:], lo, hi):
            yield (slice(row, row + 1),) + sel, row * inner + a, row * inner + b

    if r0 == r1:
        yield from within(r0, c0, c1)
        return
    if c0:
        yield from within(r0, c0, inner)
        r0 += 1
    if r1 > r0:
        yield (slice(r0, r1),) + tuple(slice(0, n) for n in nav[1:]), r0 * inner, r1 * inner
    if c1:
        yield from within(r1, 0, c1)


def _selection_shape(sel) -> tuple[int, ...]:
    return tuple(s.stop - s.start for s in sel)


# -- zero-copy maps of uncompressed storage --------------------------------------------------
#: Without ``H5Dchunk_iter`` (h5py < 3.8 or an old HDF5) chunk addresses come from one
#: look-up each, whose cost grows with the chunk's position (measured: 4 us for the
#: first, 1.8 ms for the last of 65536 chunks; 0.2 s for all of 4096, 60 s for 65536).
#: Past this many chunks the file is read through h5py rather than opened slowly.
_MAX_CHUNK_LOOKUPS = 4096
#: Runs cross-checked against h5py when a data set is opened (evenly spread, first and
#: last included), first and last frame of each.
_CHECKED_RUNS = 8


def _mapped_runs(dset: h5py.Dataset) -> Optional[np.ndarray]:
    """Where ``dset``'s frames lie in its file, for storage that can be mapped as it is.

    Rows ``(first frame, stop frame, byte offset)`` (int64, in frame order, never
    overlapping) of *runs*: consecutive flat frames whose bytes lie back to back in the
    file. A contiguous dataset is one run. An uncompressed chunked dataset whose chunks
    hold whole frames consecutive in the flat scan order (3-D ``(k, sy, sx)``; 4-D
    ``(1, k, sy, sx)`` or ``(k, scan_x, sy, sx)``) has one run per stretch of chunks
    written back to back: HDF5 puts B-tree nodes between some chunks, stores chunks
    in the order they were written, pads edge chunks past the scan and allocates no
    chunk that was never written; those frames are in no run. None when nothing can
    be mapped (filters, external storage, other chunk shapes, no data written).
    """
    dcpl = dset.id.get_create_plist()
    if dcpl.get_external_count() or dcpl.get_nfilters() or dset.dtype.kind not in "biufc":
        return None
    n_frames = math.prod(dset.shape[:-2])
    try:
        layout = dcpl.get_layout()
        if layout == h5py.h5d.CONTIGUOUS:
            offset = dset.id.get_offset()  # None while no data was ever written
            return None if offset is None else np.array([[0, n_frames, offset]], np.int64)
        if layout == h5py.h5d.CHUNKED:
            return _chunk_runs(dset)
    except Exception:  # pragma: no cover - drivers without offsets
        return None
    return None


def _chunk_runs(dset: h5py.Dataset) -> Optional[np.ndarray]:
    """The runs of :func:`_mapped_runs` for a chunked, unfiltered dataset."""
    shape, chunks = tuple(dset.shape), tuple(dset.chunks)
    if len(shape) not in (3, 4):
        return None  # 5-D data is read through h5py unless it is contiguous
    if chunks[-2:] != shape[-2:]:
        return None  # a chunk holds parts of frames
    if len(shape) == 4 and chunks[0] != 1 and chunks[1] != shape[1]:
        return None  # a chunk's frames are not consecutive in the flat scan
    table = _chunk_table(dset)
    if table is None or not len(table):
        return None
    frame_bytes = math.prod(shape[-2:]) * dset.dtype.itemsize
    if np.any(table[:, -1] != math.prod(chunks) * dset.dtype.itemsize):
        return None  # a stored size that is not the raw chunk's
    offset = table[:, -2]
    if len(shape) == 3:
        first = table[:, 0]
        count = np.minimum(chunks[0], shape[0] - first)
    else:
        (ny, nx), row, col = shape[:2], table[:, 0], table[:, 1]
        first = row * nx + col
        if chunks[0] == 1:
            count = np.minimum(chunks[1], nx - col)
        else:  # whole scan rows per chunk
            count = np.minimum(chunks[0], ny - row) * nx
    keep = count > 0  # chunks left beyond a shrunk extent hold no frames
    order = np.argsort(first[keep], kind="stable")
    first, count, offset = first[keep][order], count[keep][order], offset[keep][order]
    if not len(first):
        return None
    starts_run = np.ones(len(first), bool)
    starts_run[1:] = (first[1:] != first[:-1] + count[:-1]) | (
        offset[1:] != offset[:-1] + count[:-1] * frame_bytes
    )
    heads = np.flatnonzero(starts_run)
    tails = np.append(heads[1:], len(first)) - 1
    return np.stack([first[heads], first[tails] + count[tails], offset[heads]], axis=1)


def _chunk_table(dset: h5py.Dataset, *, iterate: bool = True) -> Optional[np.ndarray]:
    """Every allocated chunk as a row ``(*nav coordinates, byte offset, stored size)``
    (int64); None when the addresses cannot be had cheaply. ``iterate=False`` skips
    ``chunk_iter`` (tests of the fallback)."""
    nav = dset.ndim - 2
    rows: list = []

    def visit(info) -> None:
        rows.append(info.chunk_offset[:nav] + (info.byte_offset, info.size))

    # one walk of the chunk index (h5py >= 3.8 on HDF5 >= 1.12.3): 4096 chunks in 9 ms,
    # 65536 in 0.1 s, where get_chunk_info(i) costs O(i) each (2 ms at 65536 chunks)
    chunk_iter = getattr(dset.id, "chunk_iter", None) if iterate else None
    if chunk_iter is not None:
        try:
            chunk_iter(visit)
            return np.array(rows, np.int64).reshape(-1, nav + 2)
        except (NotImplementedError, RuntimeError):  # HDF5 built without H5Dchunk_iter
            rows.clear()
    grid = [math.ceil(n / c) for n, c in zip(dset.shape[:nav], dset.chunks[:nav])]
    if math.prod(grid) > _MAX_CHUNK_LOOKUPS:
        return None
    for index in np.ndindex(*grid):
        coord = tuple(i * c for i, c in zip(index, dset.chunks)) + (0, 0)
        info = dset.id.get_chunk_info_by_coord(coord)
        if info.byte_offset is not None:  # None: never written
            visit(info)
    return np.array(rows, np.int64).reshape(-1, nav + 2)


def _runs_match(dset: h5py.Dataset, data_file: str, runs: np.ndarray) -> bool:
    """Cross-check the first and last frames of some runs read by h5py against the
    mapping, so an address the HDF5 library reports differently (a file driver, a
    user block, say) never yields wrong frames."""
    frame_bytes = math.prod(dset.shape[-2:]) * dset.dtype.itemsize
    try:
        size = os.stat(data_file).st_size
    except OSError:
        return False
    if int(np.max(runs[:, 2] + (runs[:, 1] - runs[:, 0]) * frame_bytes)) > size:
        return False
    nav = dset.shape[:-2]
    picks = np.unique(np.linspace(0, len(runs) - 1, min(len(runs), _CHECKED_RUNS)).round())
    for first, stop, offset in runs[picks.astype(int)]:
        try:
            mapped = map_frames(
                data_file, offset=int(offset), n_frames=int(stop - first),
                sig_shape=dset.shape[-2:], dtype=dset.dtype,
            )
        except (OSError, DataSetError):
            return False
        for flat in {int(first), int(stop) - 1}:
            frame = np.asarray(dset[np.unravel_index(flat, nav)], dtype=dset.dtype)
            if mapped[flat - first].tobytes() != frame.tobytes():
                return False
    return True


class Hdf5ChunkRunsSource(Hdf5FrameSource):
    """Picklable recipe for frames of an uncompressed chunked dataset mapped run by
    run (see :func:`_mapped_runs`): reads inside one run are zero-copy views of the
    file's mmap; frames in no run (chunks never written) are read by h5py.

    A partition's source keeps only the runs of its own frames
    (:meth:`subset`), so descriptors stay small however many chunks the file has.
    """

    decodes = False  # uncompressed: chunks are mapped, unwritten ones are fill values

    def __init__(
        self,
        path: str,
        dataset: str,
        *,
        shape: tuple[int, ...],
        dtype,
        runs,
        frame_alignment: int = 1,
    ):
        super().__init__(path, dataset, shape=shape, dtype=dtype, frame_alignment=frame_alignment)
        self.runs = np.array(runs, np.int64).reshape(-1, 3)

    def subset(self, start: int, stop: int) -> "Hdf5ChunkRunsSource":
        """The same source keeping only the runs' parts within frames ``start:stop``
        (other frames still read right, through h5py)."""
        lo = np.searchsorted(self.runs[:, 1], start, side="right")
        hi = np.searchsorted(self.runs[:, 0], stop, side="left")
        runs = self.runs[lo:hi].copy()
        frame_bytes = math.prod(self.sig_shape) * self.dtype.itemsize
        cut = np.maximum(start - runs[:, 0], 0)
        runs[:, 0] += cut
        runs[:, 2] += cut * frame_bytes
        runs[:, 1] = np.minimum(runs[:, 1], stop)
        sub = Hdf5ChunkRunsSource.__new__(Hdf5ChunkRunsSource)
        sub.__dict__.update(self.__dict__)
        sub.runs = runs[runs[:, 0] < runs[:, 1]]
        return sub

    def breaks(self, start: int, stop: int) -> np.ndarray:
        """Frames strictly inside ``start:stop`` where a run starts or stops: a read
        that does not cross one is a single view (or a single h5py read)."""
        edges = self.runs[:, :2].ravel()  # sorted: runs are ordered and disjoint
        lo = np.searchsorted(edges, start, side="right")
        hi = np.searchsorted(edges, stop, side="left")
        return np.unique(edges[lo:hi])

    def open(self, payload=None) -> "Hdf5ChunkRunsReader":
        """Map the file lazily (on first read) where the task runs."""
        return Hdf5ChunkRunsReader(self)

    def _repr_layout(self) -> str:
        return f"runs={len(self.runs)}, "


class Hdf5ChunkRunsReader(FrameReader):
    """Reads of a :class:`Hdf5ChunkRunsSource`: a zero-copy view when the frames lie in
    one run, else a reused buffer filled run by run (copies) and by h5py (frames of
    chunks never written)."""

    def __init__(self, source: Hdf5ChunkRunsSource):
        self.source = source
        self._views: dict[int, np.ndarray] = {}
        self._h5py: Optional[Hdf5FrameReader] = None
        self._buffer: Optional[np.ndarray] = None

    def _run(self, frame: int) -> int:
        """Index of the run holding ``frame``, or -1."""
        runs = self.source.runs
        i = int(np.searchsorted(runs[:, 0], frame, side="right")) - 1
        return i if i >= 0 and frame < runs[i, 1] else -1

    def _view(self, i: int) -> np.ndarray:
        view = self._views.get(i)
        if view is None:
            s = self.source
            first, stop, offset = (int(v) for v in s.runs[i])
            try:
                view = map_frames(
                    s.path, offset=offset, n_frames=stop - first, sig_shape=s.sig_shape, dtype=s.dtype
                )
            except FileNotFoundError:
                raise DataSetNotFoundError(
                    f"HDF5 file {s.path!r} does not exist (on this machine); check that "
                    f"every worker sees the same path"
                ) from None
            self._views[i] = view
        return view

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop``: a read-only view of the mapped file when they lie in
        one run, else a view of the reader's buffer (valid until the next read)."""
        s = self.source
        _check_range(start, stop, s.n_frames)
        i = self._run(start)
        if i >= 0 and stop <= s.runs[i, 1]:
            first = int(s.runs[i, 0])
            return self._view(i)[start - first : stop - first]
        if self._buffer is None or len(self._buffer) < stop - start:
            self._buffer = np.empty((stop - start,) + s.sig_shape, s.dtype)
        out = self._buffer[: stop - start]
        bounds = [start, *(int(b) for b in s.breaks(start, stop)), stop]
        for a, b in pairwise(bounds):
            i = self._run(a)
            if i >= 0:
                first = int(s.runs[i, 0])
                out[a - start : b - start] = self._view(i)[a - first : b - first]
            else:
                if self._h5py is None:
                    self._h5py = Hdf5FrameReader(
                        Hdf5FrameSource(s.path, s.dataset, shape=s.shape, dtype=s.dtype)
                    )
                self._h5py.read_into(out[a - start : b - start], a, b)
        return out

    def close(self) -> None:
        """Drop the views (views handed out keep the mapping alive) and close h5py."""
        self._views.clear()
        if self._h5py is not None:
            self._h5py.close()
            self._h5py = None
        self._buffer = None


#: A tile crossing more run edges than this is copied into one buffer rather than cut
#: into pieces (runs of a chunk or two, e.g. chunks written in shuffled order, would
#: make tiles too small to amortise the per-tile work).
_MAX_TILE_CUTS = 2


@dataclass(frozen=True)
class Hdf5ChunkRunsPartition(Partition):
    """A partition whose tiles also stop where a run of mapped chunks does, so that
    (nearly) every tile is one zero-copy view."""

    def tile_ranges(self, tile_frames: int) -> list[tuple[int, int]]:
        tiles = super().tile_ranges(tile_frames)
        edges = self.source.breaks(self.start, self.stop)
        if not len(edges):
            return tiles
        out = []
        for a, b in tiles:
            lo, hi = np.searchsorted(edges, [a, b])
            cuts = [int(e) for e in edges[lo:hi] if a < e < b]
            if len(cuts) > _MAX_TILE_CUTS:
                cuts = []
            bounds = [a, *cuts, b]
            out.extend(pairwise(bounds))
        return out


class Hdf5ChunkRunsDataSet(DataSet):
    """A data set read through :class:`Hdf5ChunkRunsSource`: each partition's source
    keeps only its own runs."""

    source: Hdf5ChunkRunsSource

    def partitions(
        self, n_workers: int = 1, target_bytes: Optional[int] = None
    ) -> list[Partition]:
        """As :meth:`DataSet.partitions`, with per-partition run tables and tiles cut at
        run edges."""
        out = []
        for p in super().partitions(n_workers, target_bytes):
            sub = self.source.subset(p.start, p.stop)
            out.append(Hdf5ChunkRunsPartition(p.index, p.start, p.stop, sub, p.locations))
        return out


# -- the reader -------------------------------------------------------------------------------
def open_hdf5(
    path, *, dataset: Optional[str] = None, nav_shape=None, channel: Optional[int] = None
) -> DataSet:
    """Open frames stored in an HDF5 file.

    ``dataset`` is the path of the frames inside the file; without it the reader picks
    the only 3-D ``(frames, sy, sx)`` or 4-D ``(ny, nx, sy, sx)`` numeric dataset,
    following external links (a detector master file's link to its data file). 5-D
    data ``(ny, nx, channels, sy, sx)`` (fpd files: one frame per Merlin colour
    channel) with one channel opens as 4-D; with several, ``channel=`` picks one, or
    a ``nav_shape`` of all ``ny * nx * channels`` frames reads every frame.
    ``nav_shape`` reshapes the scan (its product must equal the number of frames);
    without it a 3-D stack takes its scan shape from the file's metadata where there
    is any (:mod:`stem_explorer.io.hdf5_scan`: a ``scan_shape`` attribute, the ARINA
    ``STEM Metadata``, DECTRIS ``ntrigger`` x ``nimages``), recorded in
    ``metadata["scan_shape_source"]``.
    """
    path = os.fspath(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise DataSetNotFoundError(f"file {path!r} does not exist; check the path") from None
    except OSError as exc:
        raise FormatError(
            f"{path!r} cannot be opened as HDF5 ({exc}); check that it is an HDF5 file "
            f"and not damaged, or pass the right format=..."
        ) from None
    with f:
        try:
            return _open_frames(f, path, dataset, nav_shape, channel)
        except StemExplorerError:
            raise
        except _H5_ERRORS as exc:
            # damaged metadata met past the dataset search (attributes, chunk index...)
            raise FormatError(
                f"{path!r} is a damaged HDF5 file: reading its metadata failed ({exc}); "
                f"restore the file from its source, or pass dataset=... naming frames "
                f"outside the damaged part"
            ) from None


def _open_frames(f: h5py.File, path: str, dataset, nav_shape, channel) -> DataSet:
    """:func:`open_hdf5` on the open file ``f``."""
    ds_path, dset = _select_dataset(f, path, dataset)
    shape = tuple(dset.shape)
    if len(shape) not in (3, 4, 5):
        candidates, _ = _frame_candidates(f)
        raise DataSetError(
            f"dataset {ds_path!r} in {path!r} has shape {shape} ({len(shape)}-D); "
            f"frames must be 3-D (frames, sig_y, sig_x), 4-D (scan_y, scan_x, sig_y, "
            f"sig_x) or 5-D (scan_y, scan_x, channels, sig_y, sig_x); pass "
            f"dataset=... naming such a dataset (candidates: {_describe(candidates)})"
        )
    if dset.dtype.kind not in "biufc" or dset.dtype.fields is not None:
        raise DataSetError(
            f"dataset {ds_path!r} in {path!r} holds {dset.dtype} values, not numbers; "
            f"pass dataset=... naming the frames"
        )
    if math.prod(shape) == 0:
        raise DataSetError(f"dataset {ds_path!r} in {path!r} is empty (shape {shape})")
    virtual_sources = check_virtual_sources(dset, ds_path, path)
    dtype = dset.dtype
    data_file = os.path.abspath(dset.file.filename)
    filters = _filters(dset)
    _check_filters_available(filters, ds_path, path)
    channel = _channel(path, ds_path, shape, channel, nav_shape)
    stored = _frame_axes(shape, channel)
    alignment = _frame_alignment(stored, dset.chunks and _frame_axes(dset.chunks, channel))
    n_frames = math.prod(stored[:-2])
    sig_shape = shape[-2:]
    runs = _mapped_runs(dset)
    if runs is not None and not _runs_match(dset, data_file, runs):
        runs = None
    source: FrameSource
    dataset_class = DataSet
    all_frames = math.prod(shape[:-2])
    if runs is not None and len(runs) == 1 and tuple(runs[0, :2]) == (0, all_frames):
        # contiguous, or every chunk back to back in order: one plain mapping (of
        # every channels-th frame when a channel is picked)
        frame_bytes = math.prod(sig_shape) * dtype.itemsize
        picked, stride = (0, None) if channel is None else (channel, shape[2] * frame_bytes)
        source = MappedFrameSource(
            data_file, offset=int(runs[0, 2]) + picked * frame_bytes, n_frames=n_frames,
            sig_shape=sig_shape, dtype=dtype, frame_stride=stride,
        )
        read_path = "mmap"
    elif runs is not None:
        source = Hdf5ChunkRunsSource(
            data_file, dset.name, shape=shape, dtype=dtype, runs=runs,
            frame_alignment=alignment,
        )
        dataset_class = Hdf5ChunkRunsDataSet
        read_path = "mapped_chunks"
    else:
        source = Hdf5FrameSource(
            data_file, dset.name, shape=shape, dtype=dtype, frame_alignment=alignment,
            channel=channel,
        )
        read_path = "chunked" if dset.chunks is not None else "h5py"
    metadata = {
        "dataset": ds_path,
        "data_file": data_file,
        "data_path": dset.name,
        "hdf5_shape": list(shape),
        "chunks": list(dset.chunks) if dset.chunks else None,
        "compression": _compression_name(filters),
        "filters": [label for _c, _v, label in filters],
        "read_path": read_path,
        "frame_alignment": source.frame_alignment,
    }
    if read_path == "mapped_chunks":
        metadata["mapped_runs"] = len(runs)
        metadata["mapped_frames"] = int(np.sum(runs[:, 1] - runs[:, 0]))
    if len(shape) == 5:
        metadata["channel"] = channel
    if virtual_sources is not None:
        metadata["virtual_sources"] = virtual_sources
    # every frame of several channels goes on the user's nav_shape, like a stack
    frames = stored if len(stored) < 5 else (n_frames,) + sig_shape
    nav, metadata["scan_shape_source"], extra = scan_shape(f, path, ds_path, frames, nav_shape)
    metadata.update(extra)
    # the dataset's axes that are the data set's: scan axes only where they are the scan
    scan_axes = (0, 1) if len(stored) == 4 and tuple(nav) == tuple(shape[:2]) else ()
    calibration = hdf5_calibration(f, path, ds_path, scan_axes + (len(shape) - 2, len(shape) - 1))
    return dataset_class(source, nav, format="hdf5", path=path, metadata=metadata, calibration=calibration)


def _frame_axes(axes: tuple, channel: Optional[int]) -> tuple:
    """``axes`` (a dataset's shape or chunk shape) over the axes frames are indexed
    by: a picked channel's axis is not one of them."""
    return tuple(axes) if channel is None else tuple(axes[:2]) + tuple(axes[3:])


def _channel(path: str, ds_path: str, shape: tuple, channel, nav_shape) -> Optional[int]:
    """The channel of 5-D data ``(ny, nx, channels, sy, sx)`` to read, or None for all
    frames (or for data that has no channel axis)."""
    if len(shape) != 5:
        if channel is not None:
            raise DataSetError(
                f"channel={channel!r} picks one frame per position of 5-D data (scan_y, "
                f"scan_x, channels, sig_y, sig_x), but {ds_path!r} in {path!r} is "
                f"{len(shape)}-D {shape}; leave channel out"
            )
        return None
    ny, nx, count = shape[:3]
    if channel is not None:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < count:
            raise DataSetError(
                f"channel={channel!r} is outside 0..{count - 1}: {ds_path!r} in {path!r} "
                f"holds {count} frames per scan position"
            )
        return int(channel)
    if count == 1:
        return 0  # the singleton axis is squeezed
    if nav_shape is not None and math.prod(np.atleast_1d(nav_shape)) == ny * nx * count:
        return None
    raise DataSetError(
        f"{ds_path!r} in {path!r} is 5-D {shape}: {count} frames per scan position (fpd: "
        f"one per Merlin colour channel / counter); pass channel=0 (up to {count - 1}) to "
        f"read one frame per position, or nav_shape=({ny}, {nx * count}) to read every "
        f"frame, each scan row holding {nx} positions x {count} channels"
    )



PLUGIN = register_reader(
    ReaderPlugin(
        name="hdf5",
        open=open_hdf5,
        suffixes=(".h5", ".hdf5", ".hdf", ".nxs", ".emd", ".hspy"),
        sniff=is_hdf5,
        description="HDF5 / NeXus / EMD / hspy via h5py (+hdf5plugin filters)",
    ),
    replace=True,
)
