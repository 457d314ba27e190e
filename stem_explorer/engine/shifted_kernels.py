"""The mask-product kernels with every mask moved by an integer shift per frame.

A descan error moves the whole diffraction pattern of frame ``f`` by ``(dy, dx) =
shifts[f]`` detector pixels, so each mask ``M`` must be read at ``M(p - s)``: pixel
``p`` of the frame counts with the weight the mask has at ``p - s``. None of these
kernels builds a shifted mask. Each moves the layout its unshifted twin in
:mod:`.kernels` walks, per frame, by a few integer operations: a row span's row and
columns (clipped to the detector), the bounding box of column runs, the CSR's pixel
indices (an offset, checked against the detector only when the shifted bounding box
leaves it), or, for the dense path, which source pixel each float32 value of the
conversion buffer is copied from. Pixels a shift moves outside the detector
contribute nothing.
"""

from __future__ import annotations

import numba
import numpy as np

from .kernels import _JIT, _JIT_FAST, _bswap16, _column_run_ends, _column_sums, run_sum


@numba.jit(**_JIT_FAST)
def shifted_span_sums(frames, shifts, starts, stops, rows, x_start, x_stop, bounds, cols, sig_shape, out, zero,
                      swap=False):
    """:func:`.kernels.span_sums` with every span moved by ``shifts[f]`` in frame ``f``.

    Span ``s`` is flat pixels ``starts[s]:stops[s]``, within detector row
    ``rows[s]`` at columns ``x_start[s]:x_stop[s]``. While the spans' bounding box
    ``bounds = (y_min, y_max, x_min, x_max)`` stays inside the detector
    ``sig_shape``, a shift is one offset added to every span; otherwise each span is
    clipped to the detector (:func:`_clipped_span_sums`), and one moved off it adds
    nothing.
    """
    sy, sx = sig_shape[0], sig_shape[1]
    scratch = np.empty(2 * rows.shape[0], np.int64)
    for f in range(frames.shape[0]):
        frame = frames[f]
        dy, dx = shifts[f, 0], shifts[f, 1]
        if not (bounds[0] + dy >= 0 and bounds[1] + dy < sy and bounds[2] + dx >= 0 and bounds[3] + dx < sx):
            _clipped_span_sums(frame, dy, dx, rows, x_start, x_stop, cols, sy, sx, out[f], zero, swap, scratch)
            continue
        offset = dy * sx + dx
        for s in range(starts.shape[0]):
            out[f, cols[s]] += run_sum(frame[starts[s] + offset:stops[s] + offset], zero, swap)


@numba.jit(**_JIT_FAST)
def _clipped_span_sums(frame, dy, dx, rows, x_start, x_stop, cols, sy, sx, out, zero, swap, scratch):
    """One frame of :func:`shifted_span_sums` whose spans reach outside the detector.

    The spans are clipped first into ``scratch`` (flat starts, then stops; one moved
    off the detector is empty), then summed by the same loop as the spans inside:
    a branch per span in the summing loop cost 8 ns a span. A function of its own,
    so the common case's loops stay as simple as the unshifted kernel's.
    """
    n = rows.shape[0]
    for s in range(n):
        y, a, b = rows[s] + dy, max(x_start[s] + dx, 0), min(x_stop[s] + dx, sx)
        inside = 0 <= y < sy and b > a
        scratch[s] = y * sx + a if inside else 0
        scratch[n + s] = y * sx + b if inside else 0
    for s in range(n):
        out[cols[s]] += run_sum(frame[scratch[s]:scratch[n + s]], zero, swap)


@numba.jit(**_JIT_FAST)
def _clipped_column_sums(frame, box, dy, dx, sy, prefix, swap):
    """:func:`.kernels._column_sums` of ``box`` moved by ``(dy, dx)`` where part of it
    lies outside the detector: rows and columns outside count as zeros. Box rows
    ``top:bottom`` and columns ``left:right`` are inside; each row inside is one
    pass over its columns inside, as in the unshifted kernel (the first one a copy)."""
    y0, h, x0, w, sx = box[0] + dy, box[1], box[2] + dx, box[3], box[4]
    left = max(0, -x0)
    right = max(left, min(w, sx - x0))
    top = min(h, max(0, -y0))
    bottom = max(top, min(h, sy - y0))
    for p in range(top * w):
        prefix[p] = 0
    for y in range(top, bottom):
        for x in range(left):
            prefix[y * w + x] = 0
        for x in range(right, w):
            prefix[y * w + x] = 0
    if bottom > top:  # the first row inside is copied by a loop of its own (see kernels._column_sums)
        start = (y0 + top) * sx + x0
        row = frame[start + left:start + right]
        first = prefix[top * w + left:top * w + right]
        for x in range(right - left):
            first[x] = _bswap16(row[x]) if swap else row[x]
    for y in range(top + 1, bottom):
        start = (y0 + y) * sx + x0
        row = frame[start + left:start + right]
        previous = prefix[(y - 1) * w + left:(y - 1) * w + right]
        current = prefix[y * w + left:y * w + right]
        if swap:
            for x in range(right - left):
                current[x] = previous[x] + _bswap16(row[x])
        else:
            for x in range(right - left):
                current[x] = previous[x] + row[x]
    for y in range(bottom, h):  # below the detector the sums stay (zero if no row was inside)
        for x in range(w):
            prefix[y * w + x] = prefix[(y - 1) * w + x] if y else 0


@numba.jit(**_JIT_FAST)
def shifted_column_run_sums(frames, shifts, sy, box, prefix, plus, plus_ptr, minus, minus_ptr, cols, out, zero,
                            swap=False):
    """:func:`.kernels.column_run_sums` with the box moved by ``shifts[f]`` in frame
    ``f`` (detector ``sy`` rows high). The runs' loads index the box, so they stay as
    they are; a box wholly inside the detector takes the unshifted prefix pass."""
    moved = box.copy()
    h, w, sx = box[1], box[3], box[4]
    for f in range(frames.shape[0]):
        dy, dx = shifts[f, 0], shifts[f, 1]
        moved[0], moved[2] = box[0] + dy, box[2] + dx
        if moved[0] >= 0 and moved[0] + h <= sy and moved[2] >= 0 and moved[2] + w <= sx:
            _column_sums(frames[f], moved, prefix, swap)
        else:
            _clipped_column_sums(frames[f], box, dy, dx, sy, prefix, swap)
        _column_run_ends(prefix, plus, plus_ptr, minus, minus_ptr, cols, out[f], zero)


@numba.jit(**_JIT)
def shifted_sparse_mask_product(frames, shifts, rows, row_y, row_x, bounds, indptr, cols, weights, sig_shape, out,
                                swap=False):
    """:func:`.kernels.sparse_mask_product` with the covered pixels ``rows`` (at
    ``row_y``, ``row_x``; their bounding box ``bounds = (y_min, y_max, x_min,
    x_max)``) moved by ``shifts[f]`` in frame ``f``. Inside the detector a shift is
    one offset for every pixel; a box reaching outside checks each pixel."""
    sy, sx = sig_shape[0], sig_shape[1]
    for f in range(frames.shape[0]):
        frame = frames[f]
        dy, dx = shifts[f, 0], shifts[f, 1]
        inside = bounds[0] + dy >= 0 and bounds[1] + dy < sy and bounds[2] + dx >= 0 and bounds[3] + dx < sx
        offset = dy * sx + dx
        for p in range(rows.shape[0]):
            if inside:
                pixel = rows[p] + offset
            else:
                y, x = row_y[p] + dy, row_x[p] + dx
                if y < 0 or y >= sy or x < 0 or x >= sx:
                    continue
                pixel = y * sx + x
            value = np.float64(_bswap16(frame[pixel])) if swap else np.float64(frame[pixel])
            for j in range(indptr[p], indptr[p + 1]):
                out[f, cols[j]] += value * weights[j]


@numba.jit(**_JIT)
def shifted_frames_float32(frames, shifts, sig_shape, out, swap=False):
    """``out[f, q] = frames[f, q + shifts[f]]`` as float32, zero where ``q + shifts[f]``
    lies outside the detector: the dense path's conversion buffer, from which one
    sgemm with the unshifted masks gives the shifted masks' products."""
    sy, sx = sig_shape[0], sig_shape[1]
    for f in range(frames.shape[0]):
        frame, target = frames[f], out[f]
        dy, dx = shifts[f, 0], shifts[f, 1]
        left, right = max(0, -dx), min(sx, sx - dx)
        for y in range(sy):
            row = target[y * sx:(y + 1) * sx]
            if y + dy < 0 or y + dy >= sy or right <= left:
                row[:] = 0
                continue
            row[:left] = 0
            row[right:] = 0
            source = frame[(y + dy) * sx + dx + left:(y + dy) * sx + dx + right]
            inside = row[left:right]
            if swap:
                for x in range(right - left):
                    inside[x] = np.float32(_bswap16(source[x]))
            else:
                for x in range(right - left):
                    inside[x] = np.float32(source[x])
