"""Descan correction of the mask product: each frame's masks moved by its own shift.

:class:`ShiftedMaskProduct` wraps the :class:`~.ops.MaskProduct` of a job and
reuses its choice of paths and its layouts; per frame, the kernels of
``engine/shifted_kernels.py`` move those layouts by the frame's integer shift instead of
building shifted masks. Shifts are rounded to whole pixels (:func:`integer_shifts`):
a fractional shift would need each mask read at four offsets with bilinear weights,
four times the work, for a correction whose own error (a fitted plane, a centre of
mass on a noisy reference) is usually a fraction of a pixel anyway. Masks moved
partly off the detector are clipped: the pixels outside contribute nothing.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import kernels, shifted_kernels
from .ops import MaskProduct, PerFrameOp, _digest, _zero


def integer_shifts(shifts: np.ndarray, sig_shape) -> np.ndarray:
    """``(n, 2)`` float shifts rounded to whole pixels, half up (``floor(s + 0.5)``: a
    plane's shifts then step at evenly spaced positions), as int16.

    A shift of a whole detector or more moves every mask off it, so larger ones are
    clipped to that (the result is the same, and int16 always holds it). Callers
    reject NaN before.
    """
    limit = max(int(n) for n in sig_shape)
    rounded = np.floor(np.asarray(shifts, np.float64) + 0.5)
    return np.clip(rounded, -limit, limit).astype(np.int16)


def _row_spans(starts: np.ndarray, stops: np.ndarray, cols: np.ndarray, sx: int) -> tuple:
    """The span path's runs of flat pixels cut at detector rows, and their bounding
    box: ``(starts, stops, rows, x_start, x_stop, (y_min, y_max, x_min, x_max),
    cols)``; a run over several rows (a full-width rectangle) moves sideways row by row."""
    first_row, last_row = starts // sx, (stops - 1) // sx
    pieces = last_row - first_row + 1
    owner = np.repeat(np.arange(starts.size), pieces)
    rows = first_row[owner] + (np.arange(owner.size) - np.repeat(np.cumsum(pieces) - pieces, pieces))
    x_start = np.maximum(starts[owner], rows * sx) - rows * sx
    x_stop = np.minimum(stops[owner], (rows + 1) * sx) - rows * sx
    bounds = _bounds(rows, rows, x_start, x_stop - 1)
    return rows * sx + x_start, rows * sx + x_stop, rows, x_start, x_stop, bounds, cols[owner]


def _bounds(y_low, y_high, x_low, x_high) -> np.ndarray:
    """``(y_min, y_max, x_min, x_max)`` as int64 (zeros when empty)."""
    if not y_low.size:
        return np.zeros(4, np.int64)
    return np.array([y_low.min(), y_high.max(), x_low.min(), x_high.max()], np.int64)


def _sparse_layout(rows: np.ndarray, indptr, cols, weights, sx: int) -> tuple:
    """The sparse path's CSR with each covered pixel's row and column and their
    bounding box, for :func:`.shifted_kernels.shifted_sparse_mask_product`."""
    row_y, row_x = np.divmod(rows, sx)
    return rows, row_y, row_x, _bounds(row_y, row_y, row_x, row_x), indptr, cols, weights


#: Frames per run of equal shifts, on average over a tile, from which float32 data
#: takes one sgemm per run with moved masks rather than a shifted copy of every frame.
MIN_RUN_FRAMES = 8
#: Moved dense masks an op keeps (each the size of the unshifted ones).
MOVED_MASKS_KEPT = 64


class ShiftedMaskProduct(PerFrameOp):
    """A :class:`~.ops.MaskProduct` whose masks move by ``shifts[f]`` in frame ``f``.

    ``shifts`` are whole detector pixels ``(dy, dx)`` per frame (:func:`integer_shifts`),
    flat in scan order; frame ``f`` then gives ``sum_p frame[p] * mask(p - shifts[f])``
    over the detector's pixels. Every path of the product (spans, columns, sparse,
    dense) runs its shifted kernel, with the paths the product chose.
    """

    def __init__(self, product: MaskProduct, shifts: np.ndarray):
        shifts = np.asarray(shifts)
        if shifts.ndim != 2 or shifts.shape[1] != 2 or shifts.dtype != np.int16:
            raise ValueError(f"shifts must be int16 of shape (frames, 2) (integer_shifts()); got {shifts.dtype} {shifts.shape}")
        self.product, self.shifts = product, shifts
        self.width, self.sig_shape = product.width, product.sig_shape
        self._shifted = None
        self._moved = OrderedDict()  # (dy, dx) -> dense masks moved by it

    @property
    def kernel(self) -> str:
        """The product's paths, e.g. 'spans+sparse'."""
        return self.product.kernel

    @property
    def key(self):
        return ("shifted_mask_product", self.product.key, _digest(self.shifts))

    def __getstate__(self):
        return {"product": self.product, "shifts": self.shifts}

    def __setstate__(self, state):
        self.__init__(state["product"], state["shifts"])

    def reads_stored_order(self, dtype) -> bool:
        return self.product.reads_stored_order(dtype)

    def _layouts(self) -> list:
        """The product's layouts in the shifted kernels' form, built once per process."""
        if self._shifted is None:
            sx = self.sig_shape[1]
            converted = {"spans": lambda layout: _row_spans(*layout, sx),
                         "sparse": lambda layout: _sparse_layout(*layout, sx)}
            self._shifted = [(name, converted.get(name, lambda layout: layout)(layout))
                             for name, layout in self.product._layout()]
        return self._shifted

    def feed(self, state, start, frames):
        first, out = state
        n = frames.shape[0]
        self.compute(frames, out[start - first:start - first + n], self.shifts[start:start + n])

    def feed_at(self, state, indices, frames):
        self.compute(frames, state[1], self.shifts[indices])

    def compute(self, frames, out, shifts=None):
        """Accumulate the shifted products of ``frames`` into ``out``; ``shifts`` (one
        row per frame) default to none, the product unshifted."""
        if shifts is None:
            self.product.compute(frames, out)
            return
        swap = not frames.dtype.isnative  # big-endian uint16: the kernels swap, as MaskProduct's
        readable = kernels.kernel_input(frames.view(frames.dtype.newbyteorder("=")) if swap else frames)
        sig = np.asarray(self.sig_shape, np.int64)
        for name, layout in self._layouts():
            if name == "spans":
                zero = _zero(readable.dtype, self.sig_shape[1])  # a span is at most one detector row
                shifted_kernels.shifted_span_sums(readable, shifts, *layout, sig, out, zero, swap)
            elif name == "columns":
                box = layout[0]
                prefix, zero = kernels.column_prefix(readable.dtype, int(box[1]), int(box[1] * box[3]))
                shifted_kernels.shifted_column_run_sums(readable, shifts, sig[0], box, prefix, *layout[1:], out, zero,
                                                        swap)
            elif name == "sparse":
                shifted_kernels.shifted_sparse_mask_product(readable, shifts, *layout, sig, out, swap)
            else:
                self._dense(readable, shifts, *layout, sig, out, swap)

    def _dense(self, frames, shifts, cols, dense, sig, out, swap):
        """The dense path. Float32 frames in runs of equal shifts (a plane's) keep
        their zero-copy sgemm: one per run, with the masks moved once per shift. Any
        other data is read through the shifts into float32 blocks, the conversion the
        unshifted path makes anyway, then one sgemm per block with the masks as they are."""
        if frames.dtype == np.float32 and not swap and not dense_copies(shifts):
            bounds = _equal_shift_runs(shifts)
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                out[lo:hi, cols] += np.matmul(frames[lo:hi], self._moved_dense(dense, shifts[lo]))
            return
        step = max(1, kernels.DENSE_BLOCK_BYTES // (4 * max(frames.shape[1], 1)))
        buffer = np.empty((min(step, frames.shape[0]), frames.shape[1]), np.float32)
        for lo in range(0, frames.shape[0], step):
            block = buffer[:frames[lo:lo + step].shape[0]]
            shifted_kernels.shifted_frames_float32(frames[lo:lo + step], shifts[lo:lo + step], sig, block, swap)
            out[lo:lo + step, cols] += np.matmul(block, dense)

    def _moved_dense(self, dense: np.ndarray, shift) -> np.ndarray:
        """The dense masks moved by ``shift`` (zero where nothing moves in), kept for
        the next runs with that shift (up to :data:`MOVED_MASKS_KEPT` of them)."""
        key = (int(shift[0]), int(shift[1]))
        moved = self._moved.pop(key, None)
        if moved is None:
            moved = _move(dense.reshape(self.sig_shape + (-1,)), *key).reshape(dense.shape)
        self._moved[key] = moved  # most recently used last
        while len(self._moved) > MOVED_MASKS_KEPT:
            self._moved.pop(next(iter(self._moved)))
        return moved


def dense_copies(shifts: np.ndarray) -> bool:
    """Whether the dense path copies float32 frames for these integer ``shifts``: their
    runs of equal shifts are shorter than :data:`MIN_RUN_FRAMES` on average (for
    :class:`~.ops.MaskProduct`'s ``dense_copies``)."""
    return shifts.shape[0] < MIN_RUN_FRAMES * (_equal_shift_runs(shifts).size - 1)


def _equal_shift_runs(shifts: np.ndarray) -> np.ndarray:
    """Where runs of consecutive frames with one shift start, and the end."""
    change = np.flatnonzero(np.any(shifts[1:] != shifts[:-1], axis=1)) + 1
    return np.concatenate([[0], change, [shifts.shape[0]]])


def _move(masks: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``masks`` ``(sy, sx, m)`` moved by ``(dy, dx)`` pixels; what leaves the detector is lost."""
    sy, sx = masks.shape[:2]
    moved = np.zeros_like(masks)
    if abs(dy) < sy and abs(dx) < sx:
        moved[max(dy, 0):sy + min(dy, 0), max(dx, 0):sx + min(dx, 0)] = \
            masks[max(-dy, 0):sy - max(dy, 0), max(-dx, 0):sx - max(dx, 0)]
    return moved
