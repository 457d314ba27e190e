"""The DataSet contract every reader implements, and partitioning.

A reader turns a file (or array) into a :class:`DataSet`: shapes, dtype and a
:class:`FrameSource`, a *small picklable recipe* that a dask worker uses to open the
data itself. The engine never ships frames; it ships :class:`Partition` descriptors
(a frame range plus the source) and each task reads its own frames, tile by tile.

Frames are addressed by their flat index in C order over ``nav_shape``; a partition is
a contiguous range of flat indices.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from .._json import jsonable
from ..errors import DataSetError, FormatError
from .calibration import Calibration

#: Default partition size in bytes of native data. Big enough to amortise task
#: overhead, small enough to stream partial results and balance two to a few hundred
#: workers.
DEFAULT_PARTITION_BYTES = 256 * 2**20


class FrameReader(abc.ABC):
    """An open handle on frames, living on the worker for the duration of one task."""

    @abc.abstractmethod
    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` as an array ``(n, sig_y, sig_x)`` in the native dtype.

        Readers return a zero-copy view (of an mmap) where the format allows, otherwise
        a view of an internal buffer that is reused: the array is valid until the next
        ``read`` or ``close``. Callers that keep frames must copy them.
        """

    def take(self, indices: np.ndarray, out: np.ndarray) -> None:
        """Copy the frames at the sorted flat ``indices`` into ``out`` (``(n, sig_y,
        sig_x)`` or ``(n, pixels)``, the source's dtype or native). The default reads
        frame by frame; readers that map the file gather in one numpy call."""
        flat = out.reshape(len(indices), -1)
        for row, index in enumerate(indices):
            flat[row] = self.read(int(index), int(index) + 1).reshape(-1)

    def will_need(self, ranges: Sequence[tuple[int, int]]) -> None:
        """A hint that frames ``start:stop`` of each of ``ranges`` are read next (a scan
        ROI's blocks): readers of files may start reading them all at once. The
        default does nothing."""

    def close(self) -> None:
        """Release files and buffers."""

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameSource(abc.ABC):
    """Picklable description of where frames live; opened where the work runs.

    Subclasses hold only small values (paths, offsets, shapes), never frame data:
    instances travel to every task. ``frame_alignment`` is the number of frames that
    are stored together (an HDF5 chunk's frame count, say): partitions and tiles start
    at multiples of it so no chunk is decoded twice.
    """

    dtype: np.dtype
    sig_shape: tuple[int, int]
    n_frames: int
    frame_alignment: int = 1
    #: Whether a few scattered frames read for about their own bytes (no chunk of other
    #: frames to decode, no network hop): the client then computes a job's coarse
    #: preview itself instead of sending it to a worker.
    random_access: bool = False
    #: Whether reading runs native decoders (compression filters) over the file's
    #: bytes: a corrupt chunk can crash the reading process outright (SIGSEGV), so the
    #: user's process reads such frames only through :mod:`.isolated`, never itself.
    decodes: bool = False
    #: Largest tile a task reads at once, in bytes, when smaller than the job's tile
    #: size (None: the job's). Sources that decode into the tile set it so that the
    #: decoded frames are still in the CPU's cache when the kernels read them.
    tile_bytes_limit: Optional[int] = None

    @abc.abstractmethod
    def open(self, payload: Any = None) -> FrameReader:
        """Open the data for reading. ``payload`` is the partition's in-memory block
        for sources that have one (see :meth:`DataSet.payloads`), else None."""

    def locations(self, start: int, stop: int) -> Optional[tuple[str, ...]]:
        """Hosts that hold frames ``start:stop`` locally, or None when unknown."""
        return None

    def __getstate__(self):
        # the dtype travels as its string: small and independent of numpy's pickling
        state = dict(self.__dict__)
        if "dtype" in state:
            state["dtype"] = np.dtype(state["dtype"]).str
        return state

    def __setstate__(self, state):
        if "dtype" in state:
            state["dtype"] = np.dtype(state["dtype"])
        self.__dict__.update(state)


@dataclass(frozen=True)
class Partition:
    """A contiguous range of frames: the unit of work of one task."""

    index: int
    start: int
    stop: int
    source: FrameSource = field(repr=False)
    locations: Optional[tuple[str, ...]] = None

    @property
    def n_frames(self) -> int:
        return self.stop - self.start

    def tile_ranges(self, tile_frames: int) -> list[tuple[int, int]]:
        """Split into tiles of ``tile_frames`` frames aligned to the source's chunks."""
        align = self.source.frame_alignment
        step = max(align, tile_frames // align * align)
        bounds = list(range(self.start, self.stop, step)) + [self.stop]
        return list(zip(bounds[:-1], bounds[1:]))


def plan_partitions(
    n_frames: int,
    frame_bytes: int,
    *,
    alignment: int = 1,
    n_workers: int = 1,
    target_bytes: int = DEFAULT_PARTITION_BYTES,
) -> list[tuple[int, int]]:
    """Frame ranges for partitions of about ``target_bytes`` each.

    The count is a multiple of ``n_workers`` (so every worker gets the same share) where
    the data allows, and boundaries fall on multiples of ``alignment`` frames. The
    first ``n_workers`` partitions each give their first quarter to a partition of
    its own, so every worker's first task (and the job's first partial result) comes
    back after a quarter of the work of the large partitions the rest of the job uses
    to keep per-task overhead low.
    """
    if n_frames <= 0:
        return []
    n_units = math.ceil(n_frames / alignment)
    wanted = max(1, math.ceil(n_frames * frame_bytes / max(1, target_bytes)))
    wanted = math.ceil(wanted / n_workers) * n_workers
    count = min(wanted, n_units)
    # spread units evenly: the first `extra` partitions get one unit more
    base, extra = divmod(n_units, count)
    ranges, unit = [], 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        start, stop = unit * alignment, min(n_frames, (unit + size) * alignment)
        ranges.append((start, stop))
        unit += size
    return _split_first(ranges, alignment, n_workers)


def _split_first(ranges: list, alignment: int, n_workers: int) -> list:
    """Split a quarter (whole alignment units, at least one) off the front of each of
    the first ``n_workers`` ranges that has at least four units."""
    out = []
    for i, (start, stop) in enumerate(ranges):
        units = -(-(stop - start) // alignment)
        if i < n_workers and len(ranges) > n_workers and units >= 4:
            cut = start + units // 4 * alignment
            out += [(start, cut), (cut, stop)]
        else:
            out.append((start, stop))
    return out


class DataSet:
    """A 4D-STEM data set: ``nav_shape`` scan positions of ``sig_shape`` frames.

    Readers construct it; users get it from :func:`stem_explorer.open_dataset`.
    ``nav_shape`` may have one axis (a line scan, a list of positions, a frame stack)
    or two (a raster scan). :attr:`calibration` holds the physical scan step and
    detector pixel size (pixels where neither the file nor the user gives them).
    """

    def __init__(
        self,
        source: FrameSource,
        nav_shape: Sequence[int],
        *,
        format: str,
        path: Optional[str] = None,
        metadata: Optional[dict] = None,
        calibration: Optional[Calibration] = None,
    ):
        nav_shape = tuple(int(n) for n in nav_shape)
        if not nav_shape or any(n <= 0 for n in nav_shape):
            raise DataSetError(f"nav_shape must be positive integers, got {nav_shape}")
        dtype = np.dtype(source.dtype)
        if dtype.kind not in "biuf":  # the kernels sum real numbers (complex failed in numba)
            raise FormatError(
                f"{path or 'the data'} holds {dtype.name} values (dtype {dtype.str!r}), but "
                f"stem_explorer analyses real-valued frames; convert them first, e.g. "
                f"np.abs(frames) or frames.real, and open that array or file"
            )
        if math.prod(nav_shape) != source.n_frames:
            raise DataSetError(
                f"nav_shape {nav_shape} has {math.prod(nav_shape)} positions but "
                f"{path or 'the data'} holds {source.n_frames} frames; pass a nav_shape "
                f"whose product is {source.n_frames}"
            )
        self.source = source
        self.nav_shape = nav_shape
        self.format = format
        self.path = path
        self.metadata = dict(metadata or {})
        self.calibration = calibration

    # -- calibration -------------------------------------------------------------------
    @property
    def calibration(self) -> Calibration:
        """Scan step, detector pixel size, camera length and beam energy, each with
        its source (see :mod:`stem_explorer.io.calibration`)."""
        return self._calibration

    @calibration.setter
    def calibration(self, value) -> None:
        value = value if isinstance(value, Calibration) else Calibration(value)
        self._calibration = value
        # a file calibration that was not used is shown where the metadata is (views, info)
        if value.warnings:
            self.metadata["calibration_warnings"] = list(value.warnings)
        else:
            self.metadata.pop("calibration_warnings", None)

    # -- shape ---------------------------------------------------------------------
    @property
    def sig_shape(self) -> tuple[int, int]:
        return tuple(self.source.sig_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.nav_shape + self.sig_shape

    @property
    def n_frames(self) -> int:
        return self.source.n_frames

    @property
    def frame_bytes(self) -> int:
        return math.prod(self.sig_shape) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.n_frames * self.frame_bytes

    # -- partitions ------------------------------------------------------------------
    def partitions(
        self, n_workers: int = 1, target_bytes: Optional[int] = None
    ) -> list[Partition]:
        """Partitions of about ``target_bytes`` (default 256 MiB), a multiple of
        ``n_workers`` in count, aligned to the storage's chunks."""
        ranges = plan_partitions(
            self.n_frames,
            self.frame_bytes,
            alignment=self.source.frame_alignment,
            n_workers=max(1, int(n_workers)),
            target_bytes=target_bytes or DEFAULT_PARTITION_BYTES,
        )
        return [
            Partition(i, a, b, self.source, self.source.locations(a, b))
            for i, (a, b) in enumerate(ranges)
        ]

    def payloads(self, client, partitions: Sequence[Partition]) -> list:
        """Per-partition task inputs for data that lives in memory (dask futures), or
        ``[None, ...]`` for files, which tasks open themselves."""
        return [None] * len(partitions)

    # -- convenient client-side access (small reads) ---------------------------------
    @property
    def random_access_here(self) -> bool:
        """Whether this process reads scattered frames for about their own bytes
        (:attr:`FrameSource.random_access`)."""
        return self.source.random_access

    def read_frames(self, start: int, stop: int) -> np.ndarray:
        """A copy of frames ``start:stop`` (flat indices), read in this process, or in
        a separate one where reading decodes (:attr:`FrameSource.decodes`): a corrupt
        chunk then raises a :class:`~stem_explorer.errors.FormatError` naming its frame
        instead of crashing this process."""
        if not 0 <= start <= stop <= self.n_frames:
            raise DataSetError(
                f"frame range {start}:{stop} is outside 0:{self.n_frames}"
            )
        if start == stop:
            return np.empty((0,) + self.sig_shape, self.dtype)
        if self.source.decodes:
            from .isolated import chunk_ranges, read_isolated

            ranges = chunk_ranges(self.source, start, stop)
            return np.concatenate(read_isolated(self.source, ranges, payload=self.local_payload(start, stop)))
        with self.source.open(self.local_payload(start, stop)) as reader:
            return np.array(reader.read(start, stop), copy=True)

    def local_payload(self, start: int, stop: int) -> Any:
        """What ``source.open`` takes to read frames ``start:stop`` in this process
        (None for files; see :meth:`payloads` for the cluster's)."""
        return None

    def flat_index(self, position: Sequence[int]) -> int:
        """Flat frame index of a scan position given as a tuple of ``len(nav_shape)``."""
        position = tuple(int(p) for p in np.atleast_1d(position))
        if len(position) != len(self.nav_shape) or any(
            not 0 <= p < n for p, n in zip(position, self.nav_shape)
        ):
            raise DataSetError(
                f"scan position {position} is outside the scan of shape {self.nav_shape}"
            )
        return int(np.ravel_multi_index(position, self.nav_shape))

    def describe(self) -> dict:
        """Plain-JSON description used in provenance and ``stem-explorer info``."""
        return {
            "path": self.path,
            "format": self.format,
            "nav_shape": list(self.nav_shape),
            "sig_shape": list(self.sig_shape),
            "dtype": self.dtype.str,
            "nbytes": self.nbytes,
            "calibration": self.calibration.to_dict(),
            "metadata": jsonable(self.metadata),
        }

    def __repr__(self) -> str:
        where = f" {self.path!r}" if self.path else ""
        return (
            f"<DataSet {self.format}{where} nav={self.nav_shape} sig={self.sig_shape} "
            f"dtype={self.dtype.str} {self.nbytes / 2**30:.2f} GiB>"
        )
