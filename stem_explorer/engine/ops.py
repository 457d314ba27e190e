"""Partition-local operations: what a task computes over its tiles, and how to merge.

An :class:`Op` is fed every tile of a partition on the worker (``start`` / ``feed`` /
``finish``) and returns a small partial result; on the client, partials are merged
into an accumulator (``empty`` / ``merge``) that is valid at every moment, so partial
results can be shown while the job runs.

Two families:

* per-frame ops (:class:`PerFrameOp`) produce ``width`` numbers per frame; the
  accumulator is ``(n_frames, width)`` with NaN where no partition has reported yet.
* reductions merge partition results into one detector-shaped (or small) value.

Ops are built once per job on the client and scattered to the workers once, so
whatever they precompute (the mask matrix in kernel layout) is shared by all tasks.
"""

from __future__ import annotations

import abc
import hashlib
from typing import Any

import numpy as np
import scipy.sparse

from . import kernels

# Cost model of the two mask-product paths, per frame, in units of "one pixel moved".
# The dense path converts every pixel to float32 and then runs sgemm; the sparse path
# pays a gather and a scattered add per non-zero. Measured on the 2-core development
# machine (see docs/performance.md); only the ratio matters.
_SPARSE_COST_PER_NONZERO = 1.0
_DENSE_COST_PER_PIXEL = 0.25
_DENSE_COST_PER_PIXEL_AND_MASK = 0.045


def choose_kernel(nnz: int, n_pixels: int, n_masks: int) -> str:
    """'sparse' or 'dense': whichever the cost model says moves fewer bytes."""
    sparse = _SPARSE_COST_PER_NONZERO * nnz
    dense = n_pixels * (_DENSE_COST_PER_PIXEL + _DENSE_COST_PER_PIXEL_AND_MASK * n_masks)
    return "sparse" if sparse <= dense else "dense"


def _digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=12).hexdigest()


class Op(abc.ABC):
    """One partition-local computation; see the module docstring for the protocol."""

    per_frame = False

    @property
    @abc.abstractmethod
    def key(self) -> tuple:
        """Identity used to share one op between analyses that ask for the same."""

    # -- on the worker ---------------------------------------------------------------
    @abc.abstractmethod
    def start(self, start: int, stop: int, n_pixels: int, dtype: np.dtype) -> Any:
        """Fresh per-partition state for frames ``start:stop``."""

    @abc.abstractmethod
    def feed(self, state: Any, start: int, frames: np.ndarray) -> None:
        """Process frames ``start:start+len(frames)``; ``frames`` is ``(n, pixels)``."""

    def finish(self, state: Any) -> Any:
        """The partition's partial result (small: it travels to the client)."""
        return state

    # -- on the client ---------------------------------------------------------------
    @abc.abstractmethod
    def empty(self, n_frames: int, n_pixels: int, dtype: np.dtype) -> Any:
        """The accumulator before any partition has reported."""

    @abc.abstractmethod
    def merge(self, acc: Any, partial: Any, start: int, stop: int) -> Any:
        """Fold one partition's partial into ``acc``; returns the new accumulator."""


class PerFrameOp(Op):
    """An op producing ``width`` float64 numbers for every frame."""

    per_frame = True
    width: int = 1

    def start(self, start, stop, n_pixels, dtype):
        return (start, np.zeros((stop - start, self.width), np.float64))

    def feed(self, state, start, frames):
        first, out = state
        self.compute(frames, out[start - first : start - first + frames.shape[0]])

    def finish(self, state):
        return state[1]

    @abc.abstractmethod
    def compute(self, frames: np.ndarray, out: np.ndarray) -> None:
        """Write (accumulate into zeros) ``out[i, :]`` for each frame ``frames[i]``."""

    def empty(self, n_frames, n_pixels, dtype):
        return np.full((n_frames, self.width), np.nan)

    def merge(self, acc, partial, start, stop):
        acc[start:stop] = partial
        return acc

    def merge_frames(self, acc, partial, indices, keep=None):
        """Fold the values of scattered frames ``indices`` (a preview) into ``acc``;
        rows where ``keep`` is False are skipped."""
        if keep is None:
            acc[indices] = partial
        else:
            acc[indices[keep]] = partial[keep]
        return acc


class MaskProduct(PerFrameOp):
    """All masks of a job as one ``(pixels, masks)`` matrix: ``frames @ matrix``.

    Each column goes down one of three paths:

    * ``spans``: binary masks (every weight 1) as runs of consecutive pixels, summed
      by contiguous loops over the native dtype (exact for integers);
    * ``sparse``: weighted masks as CSR over the covered pixels (numba, native dtype);
    * ``dense``: the tile converted to float32 and one sgemm.

    ``kernel='auto'`` sends binary columns to ``spans`` and the others to ``sparse``
    or ``dense`` by the cost model; ``'sparse'`` or ``'dense'`` force every column
    through that path (tests compare the paths with each other).
    """

    def __init__(self, matrix: scipy.sparse.spmatrix, kernel: str = "auto"):
        if kernel not in ("auto", "sparse", "dense"):
            raise ValueError(f"kernel must be 'auto', 'sparse' or 'dense', got {kernel!r}")
        matrix = scipy.sparse.csc_matrix(matrix, dtype=np.float32)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        self.matrix = matrix.tocsr()
        n_pixels, self.width = matrix.shape
        binary = np.array([np.all(matrix.data[matrix.indptr[j]:matrix.indptr[j + 1]] == 1) for j in range(self.width)], bool)
        if kernel == "auto":
            other = np.flatnonzero(~binary)
            rest = "dense" if other.size and choose_kernel(matrix[:, other].nnz, n_pixels, other.size) == "dense" else "sparse"
            self.paths = {"spans": np.flatnonzero(binary), rest: other}
        else:
            self.paths = {kernel: np.arange(self.width)}
        self.paths = {name: cols for name, cols in self.paths.items() if cols.size}
        self._prepared = None

    @property
    def kernel(self) -> str:
        """The paths in use, e.g. 'spans+sparse'."""
        return "+".join(sorted(self.paths)) or "none"

    @property
    def key(self):
        m = self.matrix
        return ("mask_product", self.kernel, m.shape, _digest(m.indptr), _digest(m.indices), _digest(m.data))

    def __getstate__(self):
        return {"matrix": self.matrix, "paths": self.paths, "width": self.width}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._prepared = None

    def _layout(self) -> list:
        """``(path, arrays)`` in each kernel's layout, built once per process."""
        if self._prepared is None:
            self._prepared = [(name, _PREPARE[name](self.matrix, cols)) for name, cols in self.paths.items()]
        return self._prepared

    def compute(self, frames, out):
        for name, layout in self._layout():
            if name == "spans":
                kernels.span_sums(frames, *layout, out, _zero(frames.dtype))
            elif name == "sparse":
                kernels.sparse_mask_product(frames, *layout, out)
            else:
                cols, dense = layout
                product = np.zeros((frames.shape[0], dense.shape[1]), np.float64)
                kernels.dense_mask_product(frames, dense, product)
                out[:, cols] += product


def _zero(dtype) -> Any:
    """The accumulator seed of the span kernels: exact int64 for integers, else float64."""
    return 0.0 if np.dtype(dtype).kind == "f" else np.int64(0)


def _prepare_spans(matrix, cols):
    """Runs of consecutive covered pixels of each binary column: (starts, stops, cols)."""
    csc = matrix.tocsc()
    starts, stops, owners = [], [], []
    for j in cols:
        pixels = np.sort(csc.indices[csc.indptr[j]:csc.indptr[j + 1]])
        breaks = np.flatnonzero(np.diff(pixels) != 1) + 1
        starts.append(pixels[np.concatenate([[0], breaks])])
        stops.append(pixels[np.concatenate([breaks - 1, [pixels.size - 1]])] + 1)
        owners.append(np.full(breaks.size + 1, j))
    return tuple(np.concatenate(a).astype(np.int64) for a in (starts, stops, owners))


def _prepare_sparse(matrix, cols):
    """CSR over the covered pixels of ``cols`` (rows, indptr, cols, weights)."""
    sub = scipy.sparse.csr_matrix(matrix[:, cols])
    counts = np.diff(sub.indptr)
    rows = np.flatnonzero(counts).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts[rows])]).astype(np.int64)
    return rows, indptr, np.asarray(cols, np.int64)[sub.indices], sub.data.astype(np.float64)


def _prepare_dense(matrix, cols):
    return np.asarray(cols), np.ascontiguousarray(matrix[:, cols].toarray(), dtype=np.float32)


_PREPARE = {"spans": _prepare_spans, "sparse": _prepare_sparse, "dense": _prepare_dense}


class CenterOfMassMoments(PerFrameOp):
    """Per frame, intensity and first moments about ``center`` inside a binary support.

    Width 3: ``(sum v, sum (y - cy) v, sum (x - cx) v)``. Equal to three mask columns
    (ones, y - cy, x - cx) of the job's matrix, but computed from row spans: the
    support of a disk or the whole detector is a few contiguous runs per row, so the
    moments need two running sums per run instead of a weighted gather per pixel.
    """

    width = 3

    def __init__(self, pixels: np.ndarray, sig_shape, center):
        self.pixels = np.unique(np.asarray(pixels, dtype=np.int64))
        self.sig_shape = tuple(int(n) for n in sig_shape)
        self.center = tuple(float(c) for c in center)
        self._spans = None

    @property
    def key(self):
        return ("com_moments", self.sig_shape, self.center, _digest(self.pixels))

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_spans"}

    def __setstate__(self, state):
        self.__dict__.update(state, _spans=None)

    def _row_spans(self):
        if self._spans is None:
            sx = self.sig_shape[1]
            y, x = np.divmod(self.pixels, sx)
            breaks = np.flatnonzero((np.diff(x) != 1) | (np.diff(y) != 0)) + 1
            first = np.concatenate([[0], breaks])
            last = np.concatenate([breaks - 1, [self.pixels.size - 1]])
            self._spans = (y[first], x[first], x[last] + 1)
        return self._spans

    def compute(self, frames, out):
        sx = self.sig_shape[1]
        if kernels.fits_u32(frames.dtype, sx * sx):
            kernels.row_span_moments_u32(frames, *self._row_spans(), sx, out)
        else:
            kernels.row_span_moments(frames, *self._row_spans(), sx, _zero(frames.dtype), out)
        cy, cx = self.center
        out[:, 1] -= cy * out[:, 0]
        out[:, 2] -= cx * out[:, 0]


class MaskedMoments(PerFrameOp):
    """Per frame, mean and variance of the pixels inside a boolean detector mask."""

    width = 2

    def __init__(self, pixels: np.ndarray):
        self.pixels = np.unique(np.asarray(pixels, dtype=np.int64))
        if self.pixels.size == 0:
            raise ValueError("MaskedMoments needs at least one pixel")

    @property
    def key(self):
        return ("masked_moments", _digest(self.pixels))

    def compute(self, frames, out):
        kernels.masked_frame_moments(frames, self.pixels, out)


class FrameSum(Op):
    """Sum of all frames (float64, exact for integer data)."""

    @property
    def key(self):
        return ("frame_sum",)

    #: frames per uint32 block: 2**16 values of at most 16 bits cannot wrap
    _NARROW_BLOCK = 2**16

    def start(self, start, stop, n_pixels, dtype):
        scratch = np.empty(n_pixels, np.uint32) if kernels.fits_u32(dtype, self._NARROW_BLOCK) else None
        return np.zeros(n_pixels, np.float64), scratch

    def feed(self, state, start, frames):
        acc, scratch = state
        if scratch is None:
            kernels.accumulate_sum(frames, acc)
            return
        for lo in range(0, frames.shape[0], self._NARROW_BLOCK):
            kernels.accumulate_sum_u32(frames[lo : lo + self._NARROW_BLOCK], acc, scratch)

    def finish(self, state):
        return state[0]

    def empty(self, n_frames, n_pixels, dtype):
        return np.zeros(n_pixels, np.float64)

    def merge(self, acc, partial, start, stop):
        return acc + partial


class FrameMoments(Op):
    """Count, mean and M2 per pixel, merged pairwise (numerically stable variance).

    Each block of frames gets its moments in one pass: exact integer sums for unsigned
    data of at most 16 bits, float64 sums of values shifted by the block's first frame
    otherwise; blocks and partitions are merged with Chan's update.
    """

    #: frames per block: uint32 sums of 16-bit values cannot wrap; float64 sums of
    #: squared 16-bit differences stay exact
    _NARROW_BLOCK = 2**16
    _WIDE_BLOCK = 2**20

    @property
    def key(self):
        return ("frame_moments",)

    def start(self, start, stop, n_pixels, dtype):
        if kernels.fits_u32(dtype, self._NARROW_BLOCK):
            scratch = (np.empty(n_pixels, np.uint32), np.empty(n_pixels, np.uint64))
        else:
            scratch = (np.empty(n_pixels), np.empty(n_pixels))
        return [0, np.zeros(n_pixels), np.zeros(n_pixels), np.empty(n_pixels), np.empty(n_pixels), scratch]

    def feed(self, state, start, frames):
        n, mean, m2, tile_mean, tile_m2, scratch = state
        narrow = scratch[0].dtype == np.uint32
        kernel = kernels.tile_moments_u32 if narrow else kernels.tile_moments_shifted
        step = self._NARROW_BLOCK if narrow else self._WIDE_BLOCK
        for lo in range(0, frames.shape[0], step):
            block = frames[lo : lo + step]
            kernel(block, tile_mean, tile_m2, *scratch)
            n, mean, m2 = kernels.merge_moments(n, mean, m2, block.shape[0], tile_mean, tile_m2)
        state[:3] = n, mean, m2

    def finish(self, state):
        return tuple(state[:3])

    def empty(self, n_frames, n_pixels, dtype):
        return (0, np.zeros(n_pixels), np.zeros(n_pixels))

    def merge(self, acc, partial, start, stop):
        return kernels.merge_moments(*acc, *partial)


class FrameMax(Op):
    """Per-pixel maximum over frames, in the native dtype (NaN-ignoring for floats)."""

    @property
    def key(self):
        return ("frame_max",)

    def start(self, start, stop, n_pixels, dtype):
        return [None]

    def feed(self, state, start, frames):
        tile_max = np.fmax.reduce(frames, axis=0)
        state[0] = tile_max if state[0] is None else np.fmax(state[0], tile_max)

    def finish(self, state):
        return state[0]

    def empty(self, n_frames, n_pixels, dtype):
        return None

    def merge(self, acc, partial, start, stop):
        if partial is None:
            return acc
        return partial.copy() if acc is None else np.fmax(acc, partial)


class PickFrames(Op):
    """Copies of the frames at the given flat indices, in native dtype."""

    def __init__(self, indices):
        self.indices = np.unique(np.asarray(indices, dtype=np.int64))

    @property
    def key(self):
        return ("pick", tuple(self.indices.tolist()))

    def start(self, start, stop, n_pixels, dtype):
        return {}

    def feed(self, state, start, frames):
        lo, hi = np.searchsorted(self.indices, [start, start + frames.shape[0]])
        for index in self.indices[lo:hi]:
            state[int(index)] = frames[index - start].copy()

    def empty(self, n_frames, n_pixels, dtype):
        return {}

    def merge(self, acc, partial, start, stop):
        acc.update(partial)
        return acc


class NavMaskedSum(Op):
    """Sum of the frames at the given flat indices (a scan-space region of interest)."""

    def __init__(self, indices):
        self.indices = np.unique(np.asarray(indices, dtype=np.int64))

    @property
    def key(self):
        return ("nav_masked_sum", _digest(self.indices))

    def start(self, start, stop, n_pixels, dtype):
        return [np.zeros(n_pixels), 0]

    def feed(self, state, start, frames):
        lo, hi = np.searchsorted(self.indices, [start, start + frames.shape[0]])
        if hi > lo:
            selected = frames[self.indices[lo:hi] - start]
            kernels.accumulate_sum(selected, state[0])
            state[1] += hi - lo

    def finish(self, state):
        return tuple(state)

    def empty(self, n_frames, n_pixels, dtype):
        return (np.zeros(n_pixels), 0)

    def merge(self, acc, partial, start, stop):
        return (acc[0] + partial[0], acc[1] + partial[1])
