"""The reduced copy: a binned (and, if need be, scan-subsampled) copy of a data set
kept in the workers' memory, from which a later job computes an instant preview.

While a job reads whole partitions, each task also bins its frames (the detector in
``binning`` x ``binning`` blocks, every ``scan_step``-th scan row and column) into a
part of the copy and keeps it in its worker process (a store per process, keyed by the
copy's identity and the partition's frame range). The copy lives where the data was
read: nothing travels to the client, dask does not manage it (so it never spills it
to disk or recomputes it by reading the file again), and a worker that dies simply
loses its parts. A later job sends one small task to each worker holding parts
(:func:`~stem_explorer.engine.tasks.run_reduced_preview`), which runs the job's
per-frame ops, binned (:func:`reduced_op`), on every part it holds.

A part holds each bin's *sum*. A mask is binned by summing its weights over each bin
and dividing by the bin's pixel count (the fraction of the bin it covers), so the
preview is the exact mask product on the binned data, and a mask made of whole bins
gives the exact full-resolution value.

This module holds what runs on the workers and what both sides share (the
:class:`ReducedSpec`); the client's book-keeping is :mod:`.reduced_copy`.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse

from . import kernels, preview
from .ops import CenterOfMassMoments, MaskProduct, Op


@dataclass(frozen=True)
class ReducedSpec:
    """What a reduced copy holds; travels with the tasks that build or read it.

    Attributes
    ----------
    key : str
        The copy's identity (one session's data set); parts are stored under it.
    nav_shape, sig_shape : tuple
        The data set's scan and detector shapes.
    dtype : str
        The data set's dtype (``numpy.dtype.str``, byte order included).
    binning : int
        Detector pixels per bin along each axis (edge bins may hold fewer).
    scan_step : int
        The copy holds every ``scan_step``-th scan row and column (1: every frame).
    worker_bytes : int
        The most bytes of reduced copies one worker keeps (of all copies together).
    """

    key: str
    nav_shape: tuple
    sig_shape: tuple
    dtype: str
    binning: int
    scan_step: int
    worker_bytes: int

    @property
    def binned_shape(self) -> tuple:
        """The detector shape of the copy."""
        return tuple(math.ceil(n / self.binning) for n in self.sig_shape)

    @property
    def copy_dtype(self) -> np.dtype:
        """The dtype of the copy's bin sums (:func:`sum_dtype`)."""
        return sum_dtype(self.dtype, self.binning * self.binning)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one reduced frame."""
        return math.prod(self.binned_shape) * self.copy_dtype.itemsize

    def kept(self, start: int, stop: int) -> np.ndarray:
        """Sorted flat indices of the frames in ``start:stop`` that the copy holds."""
        if self.scan_step == 1:
            return np.arange(start, stop, dtype=np.int64)
        grid = preview.grid_indices(self.nav_shape, self.scan_step)
        lo, hi = np.searchsorted(grid, [start, stop])
        return grid[lo:hi]

    @property
    def n_frames(self) -> int:
        """Frames the whole copy holds."""
        return int(self.kept(0, math.prod(self.nav_shape)).size)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole copy."""
        return self.n_frames * self.frame_bytes


def sum_dtype(dtype, terms: int) -> np.dtype:
    """The dtype of the copy's sums of ``terms`` values of ``dtype``: float32 for floats
    of at most 32 bits (float64 for float64), and for integers whose sums it holds
    exactly (below 2**24: counts of up to 16 bits in up to 16 x 16 bins), so that the
    preview's matrix product reads the copy without a conversion (uint32 sums cost
    a conversion per preview, and numba kernels of their own to compile); else a 32-
    or 64-bit integer of the same signedness, float64 beyond."""
    dtype = np.dtype(dtype).newbyteorder("=")
    if dtype.kind == "f":
        return np.dtype(np.float64 if dtype.itemsize > 4 else np.float32)
    if dtype.kind == "b":
        signed, largest = False, 1
    else:
        info = np.iinfo(dtype)
        signed, largest = dtype.kind == "i", max(abs(int(info.min)), int(info.max))
    if largest * terms <= 2**24:
        return np.dtype(np.float32)
    for bits in (32, 64):
        candidate = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
        if largest * terms <= np.iinfo(candidate).max:
            return candidate
    return np.dtype(np.float64)


def bin_frames(frames: np.ndarray, sig_shape, binning: int, out: np.ndarray) -> None:
    """Write the bin sums of ``frames`` (``(n, pixels)``, native or big-endian uint16
    as stored) into ``out`` (``(n, binned pixels)``): integers summed exactly, floats
    in float64 and rounded once (``kernels.bin_sums``)."""
    swap = kernels.swaps_in_kernel(frames.dtype)
    if swap:
        frames = frames.view(frames.dtype.newbyteorder("="))
    elif not frames.dtype.isnative:
        frames = frames.astype(frames.dtype.newbyteorder("="))
    frames = kernels.kernel_input(frames)
    if frames.dtype.kind == "f":
        accumulate = np.float64
    else:
        accumulate = np.uint32 if kernels.fits_u32(frames.dtype, binning * binning) else np.int64
    kernels.bin_sums(frames, sig_shape[1], binning, np.empty(sig_shape[1], accumulate), out, swap)


def bin_matrix(matrix, sig_shape, binning: int) -> scipy.sparse.csr_matrix:
    """A ``(pixels, k)`` mask matrix on the binned detector: each bin's weight is the
    sum of its pixels' weights divided by its pixel count (module notes)."""
    sy, sx = sig_shape
    by, bx = math.ceil(sy / binning), math.ceil(sx / binning)
    y, x = np.divmod(np.arange(sy * sx), sx)
    bins = (y // binning) * bx + x // binning
    counts = np.bincount(bins, minlength=by * bx)
    pool = scipy.sparse.csr_matrix((1.0 / counts[bins], (bins, np.arange(sy * sx))), shape=(by * bx, sy * sx))
    return (pool @ scipy.sparse.csr_matrix(matrix, dtype=np.float64)).tocsr()


def reduced_op(op: Op, spec: ReducedSpec) -> Optional[Op]:
    """``op`` on the reduced copy, or None when it cannot be computed from it.

    Linear per-frame ops can: a :class:`~.ops.MaskProduct` (virtual detectors,
    radial profiles) with its masks binned, and the centre of mass's moments as the
    three columns they equal (ones, y - cy, x - cx over the support). Others
    cannot: the variance within a mask (FEM) changes when pixels are summed, a
    descan shifts masks by whole pixels from frame to frame, and user-defined ops
    compute anything.
    """
    if type(op) is MaskProduct:
        matrix = op.matrix
    elif type(op) is CenterOfMassMoments and op.pixels is not None:
        matrix = moment_columns(op.pixels, op.sig_shape, op.center)
    else:
        return None
    binned = bin_matrix(matrix, spec.sig_shape, spec.binning)
    return MaskProduct(binned, kernel="auto", dtype=spec.copy_dtype, sig_shape=spec.binned_shape)


def moment_columns(pixels: np.ndarray, sig_shape, center) -> scipy.sparse.csc_matrix:
    """The ``(pixels, 3)`` matrix of a centre of mass's moments: ones, ``y - cy`` and
    ``x - cx`` over its support."""
    y, x = np.divmod(pixels, sig_shape[1])
    columns = [np.ones(pixels.size), y - center[0], x - center[1]]
    rows = np.concatenate([pixels] * 3)
    cols = np.repeat(np.arange(3), pixels.size)
    return scipy.sparse.csc_matrix((np.concatenate(columns), (rows, cols)), shape=(math.prod(sig_shape), 3))


# -- the worker side ---------------------------------------------------------------------


class _Store:
    """This process's parts of reduced copies: ``(key, start, stop)`` ->
    ``(frame indices, bin sums)``, oldest first."""

    def __init__(self):
        self.lock = threading.Lock()
        self.parts: "OrderedDict[tuple, tuple]" = OrderedDict()

    def nbytes(self, key: Optional[str] = None) -> int:
        with self.lock:
            return sum(data.nbytes for (k, _a, _b), (_i, data) in self.parts.items() if key in (None, k))

    def held(self, key: str, start: int, stop: int) -> Optional[int]:
        """Bytes of the part ``start:stop`` of ``key`` held here (None: not held)."""
        with self.lock:
            part = self.parts.get((key, start, stop))
            return None if part is None else part[1].nbytes

    def keep(self, spec: ReducedSpec, start: int, stop: int, indices: np.ndarray, data: np.ndarray) -> Optional[int]:
        """Keep a part within ``spec.worker_bytes``: overlapping parts of the same copy
        (a changed partition layout) go first, then the oldest parts of other copies;
        a part that still does not fit is not kept. Returns the bytes kept (None: not
        kept; 0 for a part of a scan-subsampled copy that holds none of its frames)."""
        with self.lock:
            for k, a, b in list(self.parts):
                if k == spec.key and a < stop and start < b:
                    del self.parts[(k, a, b)]
            total = sum(part[1].nbytes for part in self.parts.values())
            for k, a, b in list(self.parts):
                if total + data.nbytes <= spec.worker_bytes:
                    break
                if k != spec.key:
                    total -= self.parts.pop((k, a, b))[1].nbytes
            if total + data.nbytes > spec.worker_bytes:
                return None
            self.parts[(spec.key, start, stop)] = (indices, data)
            return data.nbytes

    def parts_of(self, key: str) -> list:
        """``(indices, data)`` of every part of ``key`` held here, in frame order."""
        with self.lock:
            found = sorted(((a, part) for (k, a, _b), part in self.parts.items() if k == key), key=lambda x: x[0])
            for (k, a, b) in [p for p in self.parts if p[0] == key]:
                self.parts.move_to_end((k, a, b))  # in use: evicted last
        return [part for _start, part in found]

    def drop(self, key: str) -> int:
        with self.lock:
            gone = [p for p in self.parts if p[0] == key]
            return sum(self.parts.pop(p)[1].nbytes for p in gone)


#: This worker process's parts of reduced copies.
_store = _Store()


def drop_copy(key: str) -> int:
    """Free this process's parts of the copy ``key``; returns the bytes freed (run on
    every worker by :meth:`.reduced_copy.ReducedCopy.drop`)."""
    return _store.drop(key)


def held_bytes(key: Optional[str] = None) -> int:
    """Bytes of reduced copies this process holds (of ``key`` only, when given)."""
    return _store.nbytes(key)


class PartBinner:
    """Bins a partition's frames into its part of a reduced copy as its tiles are read."""

    def __init__(self, spec: ReducedSpec, start: int, stop: int):
        self.spec, self.start, self.stop = spec, start, stop
        self.indices = spec.kept(start, stop)
        self.data = np.empty((self.indices.size, math.prod(spec.binned_shape)), spec.copy_dtype)

    def add(self, first: int, tile: np.ndarray) -> None:
        """Bin the frames of ``tile`` (frames ``first:first+len(tile)``) that the copy holds."""
        lo, hi = np.searchsorted(self.indices, [first, first + tile.shape[0]])
        if hi == lo:
            return
        frames = tile[lo - (first - self.start) : hi - (first - self.start)] if self.spec.scan_step == 1 \
            else tile[self.indices[lo:hi] - first]
        bin_frames(frames, self.spec.sig_shape, self.spec.binning, self.data[lo:hi])

    def keep(self) -> Optional[int]:
        """Keep the finished part in this process; returns its bytes (None: over budget)."""
        return _store.keep(self.spec, self.start, self.stop, self.indices, self.data)


def binner_for(spec: Optional[ReducedSpec], start: int, stop: int) -> tuple:
    """``(binner, bytes held)`` for a task reading frames ``start:stop`` whole: a
    :class:`PartBinner` when the copy wants that part and this process does not hold
    it yet, else None and the bytes already held (None: no copy wanted)."""
    if spec is None:
        return None, None
    held = _store.held(spec.key, start, stop)
    return (None, held) if held is not None else (PartBinner(spec, start, stop), None)


def parts_held(key: str) -> list:
    """``(start, stop, frame indices, bin sums)`` of this process's parts of the copy
    ``key`` (run on every worker when the client fetches the copy)."""
    with _store.lock:
        return [(a, b, *part) for (k, a, b), part in _store.parts.items() if k == key]


def keep_part(spec: ReducedSpec, start: int, stop: int, indices: np.ndarray, data: np.ndarray) -> Optional[int]:
    """Keep a fetched part in this process (:meth:`_Store.keep`); its bytes, or None."""
    return _store.keep(spec, start, stop, indices, data)


def held_parts(key: str) -> list:
    """``(frame indices, bin sums)`` of this process's parts of the copy ``key``."""
    return _store.parts_of(key)
