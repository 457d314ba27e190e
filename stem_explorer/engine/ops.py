"""Partition-local operations: what a task computes over its tiles, and how to merge.

An :class:`Op` is fed every tile of a partition on the worker (``start`` / ``feed`` /
``finish``) and returns a small partial result; on the client, partials are merged
into an accumulator (``empty`` / ``merge``) that is valid at every moment, so partial
results can be shown while the job runs.

Two families:

* per-frame ops (:class:`PerFrameOp`) produce ``width`` numbers per frame; the
  accumulator is ``(n_frames, width)`` with NaN where no partition has reported yet.
* reductions merge partition results into one detector-shaped (or small) value.

Ops are built once per job on the client and travel inside every task of the job
(a :class:`~stem_explorer.engine.tasks.PlanParcel`, unpickled once per worker process),
so whatever they precompute (the mask matrix in kernel layout) is shared by all tasks.
"""

from __future__ import annotations

import abc
import hashlib
from typing import Any

import numpy as np
import scipy.sparse

from . import kernels

# Cost model of the mask-product paths: nanoseconds per frame on one core, measured
# single-threaded on the 2-core development machine through the page cache
# (``python -m benchmarks --kernels``; the calibration is in docs/performance.md,
# "Choosing the mask kernel"). Spans pay per run and per covered pixel; column runs
# per pixel and row of their bounding box and per run end, plus a penalty for the
# box's pixels that no mask covers (one core measures them cheap, but on every core
# at once the memory bus is shared and spans skip those bytes: an annulus on uint16
# ran at 9.8 GB/s on spans and 8.5-8.9 on column runs); dense pays per pixel
# (reading it, plus the float32 conversion unless the data is float32), more per
# pixel once there are two masks or more (one mask is a matrix-vector product, which
# BLAS runs twice as fast as a skinny matrix product), and a little per pixel and
# mask; sparse pays a gather and a scattered add per non-zero.
_SPAN_NS = {"native": 2.3, "float32": 5.0}
_SPAN_PIXEL_NS = {"native": 0.43, "float32": 0.57}
_DENSE_PIXEL_NS = {"native": 0.48, "float32": 0.36}
_GEMM_PIXEL_NS = {"native": 0.37, "float32": 0.44}
_DENSE_PIXEL_MASK_NS = 0.003
_COLUMN_PIXEL_NS = {"native": 0.25, "float32": 0.32}
_COLUMN_ROW_NS = {"native": 6.0, "float32": 9.0}
_COLUMN_EVENT_NS = {"native": 0.34, "float32": 0.68}
_COLUMN_UNCOVERED_NS = {"native": 0.15, "float32": 0.3}
_SPARSE_NONZERO_NS = 2.5


def _cost_class(dtype) -> str:
    """'float32' when the dense path reads the data as is, else 'native' (converted)."""
    return "float32" if dtype is not None and np.dtype(dtype).newbyteorder("=") == np.float32 else "native"


def choose_kernel(nnz: int, n_pixels: int, n_masks: int, dtype=None) -> str:
    """'sparse' or 'dense' for weighted masks: whichever the cost model says is faster."""
    return "sparse" if _sparse_ns(nnz) <= _dense_ns(n_pixels, n_masks, dtype) else "dense"


def _sparse_ns(nnz: int) -> float:
    return _SPARSE_NONZERO_NS * nnz


def _dense_ns(n_pixels: int, n_masks: int, dtype) -> float:
    kind = _cost_class(dtype)
    gemm = _GEMM_PIXEL_NS[kind] if n_masks > 1 else 0.0
    return n_pixels * (_DENSE_PIXEL_NS[kind] + gemm + _DENSE_PIXEL_MASK_NS * n_masks)


def _spans_ns(n_spans: int, covered: int, dtype) -> float:
    kind = _cost_class(dtype)
    return _SPAN_NS[kind] * n_spans + _SPAN_PIXEL_NS[kind] * covered


def _columns_ns(box: np.ndarray, n_events: int, covered: int, dtype) -> float:
    kind = _cost_class(dtype)
    rows, width = int(box[1]), int(box[3])
    box_ns = _COLUMN_PIXEL_NS[kind] * rows * width + _COLUMN_ROW_NS[kind] * rows
    return box_ns + _COLUMN_EVENT_NS[kind] * n_events + _COLUMN_UNCOVERED_NS[kind] * (rows * width - covered)


def _digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=12).hexdigest()


class Op(abc.ABC):
    """One partition-local computation; see the module docstring for the protocol."""

    per_frame = False

    @property
    @abc.abstractmethod
    def key(self) -> tuple:
        """Identity used to share one op between analyses that ask for the same."""

    def frames_needed(self):
        """The sorted flat indices of the only frames this op reads, or None when it
        needs every frame (the default). A plan whose every op names its frames reads
        only those (:mod:`stem_explorer.engine.roi`): a picked frame costs its own bytes, not a pass."""
        return None

    # -- on the worker ---------------------------------------------------------------
    def reads_stored_order(self, dtype: np.dtype) -> bool:
        """Whether :meth:`feed` accepts tiles of ``dtype`` in their stored (non-native)
        byte order; when every op of a plan does, tiles are not swapped first."""
        return False

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

    def feed_at(self, state, indices: np.ndarray, frames: np.ndarray) -> None:
        """Process scattered frames (a preview's gathered tile): ``frames[i]`` is frame
        ``indices[i]`` and ``state`` came from ``start(0, len(indices), ...)``. Ops whose
        work depends on the frame's position (a descan shift) override it."""
        self.feed(state, 0, frames)

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

    Each column goes down one of four paths:

    * ``spans``: binary masks (every weight 1) as runs of consecutive pixels along
      detector rows, summed by contiguous loops over the native dtype (exact for
      integers); touches only the covered pixels, best for one compact mask;
    * ``columns``: binary masks as runs along detector columns, summed from running
      column sums over their bounding box (one add per pixel however many masks
      share it, one load per run end; best for many masks tiling the detector, such
      as radial rings); needs ``sig_shape``;
    * ``sparse``: weighted masks as CSR over the covered pixels (numba, native dtype);
    * ``dense``: the tile converted to float32 and one sgemm.

    ``kernel='auto'`` picks by the cost model for the data's ``dtype``: binary columns
    to ``spans`` or ``columns`` and the others to ``sparse`` or ``dense``, or every
    column to ``dense`` when one sgemm is cheaper (a large mask on float32 data, whose
    dense path needs no conversion). ``'sparse'`` or ``'dense'`` force every column
    through that path; ``'spans'`` or ``'columns'`` force the binary columns through
    it and send weighted ones to ``sparse`` (tests compare the paths).

    ``dense_copies=True`` tells the cost model that the dense path will copy every
    frame even where the data is float32 (a descan correction whose shifts change
    from frame to frame: :mod:`.descan`), so it costs what a conversion costs.
    """

    KERNELS = ("auto", "spans", "columns", "sparse", "dense")

    def __init__(self, matrix: scipy.sparse.spmatrix, kernel: str = "auto", dtype=None, sig_shape=None,
                 dense_copies: bool = False):
        if kernel not in self.KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(map(repr, self.KERNELS))}; got {kernel!r}")
        matrix = scipy.sparse.csc_matrix(matrix, dtype=np.float32)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        n_pixels, self.width = matrix.shape
        self.sig_shape = (1, n_pixels) if sig_shape is None else tuple(int(n) for n in sig_shape)
        if int(np.prod(self.sig_shape)) != n_pixels:
            raise ValueError(f"sig_shape {self.sig_shape} does not hold the matrix's {n_pixels} pixels")
        binary = np.array([np.all(matrix.data[matrix.indptr[j]:matrix.indptr[j + 1]] == 1) for j in range(self.width)], bool)
        self.matrix = matrix.tocsr()
        self._built = {}  # layouts made while choosing the paths, reused by _layout
        if kernel == "auto":
            self.paths = self._auto_paths(matrix, binary, dtype, None if dense_copies else dtype)
        elif kernel in ("spans", "columns"):
            self.paths = {kernel: np.flatnonzero(binary), "sparse": np.flatnonzero(~binary)}
        else:
            self.paths = {kernel: np.arange(self.width)}
        self.paths = {name: cols for name, cols in self.paths.items() if cols.size}
        self._prepared = None

    def _auto_paths(self, csc: scipy.sparse.csc_matrix, binary_mask: np.ndarray, dtype, dense_dtype) -> dict:
        """The cheapest of (binary columns as spans or column runs + the rest sparse
        or dense) and (every column dense), by the cost model; the dense path costs
        what it does on ``dense_dtype`` (None: converted, whatever ``dtype`` is)."""
        n_pixels = csc.shape[0]
        binary, other = np.flatnonzero(binary_mask), np.flatnonzero(~binary_mask)
        split, cost = {}, 0.0
        if binary.size:
            spans = _prepare_spans(csc, binary, self.sig_shape)
            starts, stops, _ = spans
            covered = int((stops - starts).sum())
            columns = _prepare_columns(csc, binary, self.sig_shape)
            box, plus, _, minus, _, _ = columns
            costs = {"spans": _spans_ns(starts.size, covered, dtype),
                     "columns": _columns_ns(box, plus.size + minus.size, covered, dtype)}
            best = min(costs, key=costs.get)  # spans on a tie
            split[best], self._built[best] = binary, {"spans": spans, "columns": columns}[best]
            cost += costs[best]
        if other.size:
            rest = choose_kernel(csc[:, other].nnz, n_pixels, other.size, dense_dtype)
            split[rest] = other
            cost += _sparse_ns(csc[:, other].nnz) if rest == "sparse" else _dense_ns(n_pixels, other.size, dense_dtype)
        if _dense_ns(n_pixels, self.width, dense_dtype) < cost:
            return {"dense": np.arange(self.width)}
        return split

    @property
    def kernel(self) -> str:
        """The paths in use, e.g. 'spans+sparse'."""
        return "+".join(sorted(self.paths)) or "none"

    @property
    def key(self):
        m = self.matrix
        return ("mask_product", self.kernel, self.sig_shape, _digest(m.indptr), _digest(m.indices), _digest(m.data))

    def __getstate__(self):
        # workers need only the kernels' layouts, and the plan travels with every
        # task: a ring's spans are a few KiB where its CSR matrix is 150 KiB; dense
        # columns travel sparse and are expanded on arrival
        if self.matrix is None:  # unpickled here: pass on what arrived
            return self._packed
        return {"width": self.width, "sig_shape": self.sig_shape, "paths": self.paths, "layouts": [
            (name, _compact(layout) if name != "dense" else (layout[0], self.matrix[:, layout[0]].tocsc()))
            for name, layout in self._layout()
        ]}

    def __setstate__(self, state):
        self.width, self.sig_shape, self.paths = state["width"], state["sig_shape"], state["paths"]
        self.matrix, self._packed = None, state
        self._prepared = [
            (name, _widen(layout) if name != "dense" else (layout[0], np.asarray(layout[1].toarray(), np.float32)))
            for name, layout in state["layouts"]
        ]

    def _layout(self) -> list:
        """``(path, arrays)`` in each kernel's layout, built once per process."""
        if self._prepared is None:
            self._prepared = [
                (name, self._built[name] if name in self._built else _PREPARE[name](self.matrix, cols, self.sig_shape))
                for name, cols in self.paths.items()
            ]
        return self._prepared

    def reads_stored_order(self, dtype) -> bool:
        return kernels.swaps_in_kernel(dtype)

    def compute(self, frames, out):
        swap = not frames.dtype.isnative  # big-endian uint16: the kernels swap (see kernels)
        readable = kernels.kernel_input(frames.view(frames.dtype.newbyteorder("=")) if swap else frames)
        for name, layout in self._layout():
            if name == "spans":
                # a run can cover the whole frame (a full-width rectangle)
                zero = _zero(readable.dtype, readable.shape[1])
                kernels.span_sums(readable, *layout, out, zero, swap)
            elif name == "columns":
                box = layout[0]
                prefix, zero = kernels.column_prefix(readable.dtype, int(box[1]), int(box[1] * box[3]))
                kernels.column_run_sums(readable, box, prefix, *layout[1:], out, zero, swap)
            elif name == "sparse":
                kernels.sparse_mask_product(readable, *layout, out, swap)
            else:
                cols, dense = layout
                product = np.zeros((frames.shape[0], dense.shape[1]), np.float64)
                kernels.dense_mask_product(frames if swap else readable, dense, product)  # astype swaps
                out[:, cols] += product


def _zero(dtype, weight: int) -> Any:
    """The accumulator seed of the span kernels for sums of ``weight`` times a value of
    ``dtype`` (:func:`kernels.fits_int64`): exact int64 where that cannot wrap, else
    float64 (floats, 64-bit integers)."""
    return np.int64(0) if kernels.fits_int64(dtype, weight) else 0.0


def _compact(arrays: tuple) -> tuple:
    """A layout's integer arrays as int32 and float64 weights as float32 (lossless:
    pixel indices are below 2**31 and the weights came from a float32 matrix)."""
    return tuple(a.astype(np.int32) if a.dtype == np.int64 else a.astype(np.float32) for a in arrays)


def _widen(arrays: tuple) -> tuple:
    """Undo :func:`_compact`: the int64 and float64 arrays the kernels take."""
    return tuple(a.astype(np.int64) if a.dtype == np.int32 else a.astype(np.float64) for a in arrays)


def _covered_pixels(matrix, cols) -> tuple:
    """``(owner, pixel)`` of every non-zero of the columns ``cols`` (``owner`` indexes
    ``cols``)."""
    csc = matrix.tocsc()
    owner = np.repeat(np.arange(len(cols)), np.diff(csc.indptr)[cols])
    pixels = [csc.indices[csc.indptr[j]:csc.indptr[j + 1]] for j in cols]
    return owner, np.concatenate(pixels + [np.zeros(0, np.int64)]).astype(np.int64)


def _runs(group: np.ndarray, position: np.ndarray) -> tuple:
    """Runs of consecutive ``position`` values within each ``group``: the inputs sorted
    by (group, position), and boolean marks of where runs start and end."""
    order = np.lexsort((position, group))
    group, position = group[order], position[order]
    first = np.ones(group.size, bool)
    first[1:] = (group[1:] != group[:-1]) | (position[1:] != position[:-1] + 1)
    last = np.ones(group.size, bool)
    last[:-1] = first[1:]
    return group, position, first, last


def _prepare_spans(matrix, cols, sig_shape):
    """Runs of consecutive covered pixels (in C order) of each binary column:
    ``(starts, stops, cols)``."""
    owner, pixels, first, last = _runs(*_covered_pixels(matrix, cols))
    return pixels[first], pixels[last] + 1, np.asarray(cols, np.int64)[owner[first]]


def _prepare_sparse(matrix, cols, sig_shape):
    """CSR over the covered pixels of ``cols`` (rows, indptr, cols, weights)."""
    sub = scipy.sparse.csr_matrix(matrix[:, cols])
    counts = np.diff(sub.indptr)
    rows = np.flatnonzero(counts).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts[rows])]).astype(np.int64)
    return rows, indptr, np.asarray(cols, np.int64)[sub.indices], sub.data.astype(np.float64)


def _prepare_dense(matrix, cols, sig_shape):
    return np.asarray(cols), np.ascontiguousarray(matrix[:, cols].toarray(), dtype=np.float32)


def _prepare_columns(matrix, cols, sig_shape):
    """Vertical runs of each binary column in :func:`kernels.column_run_sums`'s layout:
    ``(box, plus, plus_ptr, minus, minus_ptr, cols)``, the box being the covered
    pixels' bounding box ``(y0, h, x0, w, sx)`` and the events flat indices into it."""
    owner, pixels = _covered_pixels(matrix, cols)
    y, x = np.divmod(pixels, sig_shape[1])
    y0, x0 = (y.min(), x.min()) if pixels.size else (0, 0)
    h, w = (y.max() + 1 - y0, x.max() + 1 - x0) if pixels.size else (0, 0)
    column, y, first, last = _runs(owner * w + x - x0, y - y0)  # one group per mask and detector column
    owner, x = np.divmod(column, max(w, 1))
    starts_below = first & (y > 0)

    def by_mask(at, who):
        order = np.lexsort((at, who))  # each mask's loads in memory order
        return at[order], np.concatenate([[0], np.cumsum(np.bincount(who, minlength=len(cols)))]).astype(np.int64)

    plus, plus_ptr = by_mask(y[last] * w + x[last], owner[last])
    minus, minus_ptr = by_mask((y[starts_below] - 1) * w + x[starts_below], owner[starts_below])
    box = np.array([y0, h, x0, w, sig_shape[1]], np.int64)
    return box, plus, plus_ptr, minus, minus_ptr, np.asarray(cols, np.int64)


_PREPARE = {"spans": _prepare_spans, "columns": _prepare_columns, "sparse": _prepare_sparse, "dense": _prepare_dense}


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
        # the row spans (a few KiB) travel instead of the support's pixel list
        return {"sig_shape": self.sig_shape, "center": self.center, "spans": _compact(self._row_spans())}

    def __setstate__(self, state):
        self.sig_shape, self.center = state["sig_shape"], state["center"]
        self.pixels, self._spans = None, _widen(state["spans"])

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
        frames = kernels.kernel_input(frames)
        sx, longest = self.sig_shape[1], max(self.sig_shape)
        if kernels.fits_u32(frames.dtype, sx * sx):
            kernels.row_span_moments_u32(frames, *self._row_spans(), sx, out)
        else:
            if frames.dtype.kind in "iu" and not kernels.fits_int64(frames.dtype, longest):
                frames = frames.astype(np.float64)  # a coordinate times a value would wrap
            # each moment sums a coordinate times a value over up to every pixel
            zero = _zero(frames.dtype, frames.shape[1] * longest)
            kernels.row_span_moments(frames, *self._row_spans(), sx, zero, out)
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
        kernels.masked_frame_moments(kernels.kernel_input(frames), self.pixels, out)


class FrameSum(Op):
    """Sum of all frames (float64, exact for integer data).

    Unsigned data of at most 16 bits is summed into a uint32 row across tiles and
    flushed into the float64 total every ``2**16`` frames (before it could wrap).
    Big-endian uint16 tiles (Merlin's 12-bit counts) are read as stored, each pixel
    swapped in the kernel: the whole-tile swap before cost a live job's thread about a
    third of its time.
    """

    _NARROW_BLOCK = 2**16

    @property
    def key(self):
        return ("frame_sum",)

    def reads_stored_order(self, dtype) -> bool:
        return kernels.swaps_in_kernel(dtype)

    def start(self, start, stop, n_pixels, dtype):
        narrow = kernels.fits_u32(dtype, self._NARROW_BLOCK)
        return {"total": np.zeros(n_pixels), "block": np.zeros(n_pixels, np.uint32) if narrow else None, "n": 0,
                "flushed": False}

    def feed(self, state, start, frames):
        swap = not frames.dtype.isnative  # big-endian uint16 as stored (reads_stored_order)
        frames = kernels.kernel_input(frames.view(frames.dtype.newbyteorder("=")) if swap else frames)
        block = state["block"]
        if block is None:
            kernels.accumulate_sum(frames, state["total"])
            return
        accumulate = kernels.accumulate_sum_u32_swapped if swap else kernels.accumulate_sum_u32
        for lo in range(0, frames.shape[0], self._NARROW_BLOCK):
            part = frames[lo : lo + self._NARROW_BLOCK]
            if state["n"] + part.shape[0] > self._NARROW_BLOCK:
                self._flush(state)
            accumulate(part, block)
            state["n"] += part.shape[0]

    @staticmethod
    def _flush(state):
        state["total"] += state["block"]
        state["block"][:] = 0
        state["n"] = 0
        state["flushed"] = True

    def finish(self, state):
        """The partial: the float64 total, or the uint32 row itself when it holds every
        frame (exact; no flush, and half the bytes to send: a live job's small chunks
        spent a tenth of their time flushing)."""
        if state["block"] is None:
            return state["total"]
        if not state["flushed"]:
            return state["block"]
        self._flush(state)
        return state["total"]

    def empty(self, n_frames, n_pixels, dtype):
        return np.zeros(n_pixels, np.float64)

    def merge(self, acc, partial, start, stop):
        return acc + partial


class FrameMoments(Op):
    """Count, mean and M2 per pixel, merged pairwise (numerically stable variance).

    Frames are accumulated across tiles into per-pixel sums of ``x`` and ``x**2``:
    exact integers (uint32 / uint64) for unsigned data of at most 16 bits, float64
    sums of values shifted by the block's first frame otherwise. Each block (at most
    ``2**16`` or ``2**20`` frames, so nothing wraps or loses exactness) becomes a
    (count, mean, M2) triple; blocks and partitions are merged with Chan's update.
    """

    _NARROW_BLOCK = 2**16
    _WIDE_BLOCK = 2**20

    @property
    def key(self):
        return ("frame_moments",)

    def start(self, start, stop, n_pixels, dtype):
        narrow = kernels.fits_u32(dtype, self._NARROW_BLOCK)
        return {
            "merged": (0, np.zeros(n_pixels), np.zeros(n_pixels)),
            "narrow": narrow,
            "n": 0,
            "sums": np.zeros(n_pixels, np.uint32 if narrow else np.float64),
            "squares": np.zeros(n_pixels, np.uint64 if narrow else np.float64),
            "shift": None,
        }

    def feed(self, state, start, frames):
        frames = kernels.kernel_input(frames)
        limit = self._NARROW_BLOCK if state["narrow"] else self._WIDE_BLOCK
        lo = 0
        while lo < frames.shape[0]:
            part = frames[lo : lo + limit - state["n"]]
            if state["narrow"]:
                kernels.accumulate_moments_u32(part, state["sums"], state["squares"])
            else:
                if state["shift"] is None:
                    state["shift"] = part[0].astype(np.float64)
                kernels.accumulate_moments_shifted(part, state["shift"], state["sums"], state["squares"])
            state["n"] += part.shape[0]
            lo += part.shape[0]
            if state["n"] == limit:
                self._flush(state)

    @staticmethod
    def _flush(state):
        n = state["n"]
        if n == 0:
            return
        mean, m2 = np.empty_like(state["merged"][1]), np.empty_like(state["merged"][2])
        if state["narrow"]:
            kernels.moments_from_u32(n, state["sums"], state["squares"], mean, m2)
        else:
            kernels.moments_from_shifted(n, state["shift"], state["sums"], state["squares"], mean, m2)
            state["shift"] = None
        state["merged"] = kernels.merge_moments(*state["merged"], n, mean, m2)
        state["sums"][:] = 0
        state["squares"][:] = 0
        state["n"] = 0

    def finish(self, state):
        self._flush(state)
        return state["merged"]

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

    def frames_needed(self):
        return self.indices

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

    def frames_needed(self):
        return self.indices

    def start(self, start, stop, n_pixels, dtype):
        return [np.zeros(n_pixels), 0]

    def feed(self, state, start, frames):
        lo, hi = np.searchsorted(self.indices, [start, start + frames.shape[0]])
        if hi > lo:
            selected = kernels.kernel_input(frames[self.indices[lo:hi] - start])
            kernels.accumulate_sum(selected, state[0])
            state[1] += hi - lo

    def finish(self, state):
        return tuple(state)

    def empty(self, n_frames, n_pixels, dtype):
        return (np.zeros(n_pixels), 0)

    def merge(self, acc, partial, start, stop):
        return (acc[0] + partial[0], acc[1] + partial[1])
