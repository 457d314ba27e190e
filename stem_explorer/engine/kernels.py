"""Per-tile kernels: the inner loops every task runs over its frames.

All kernels take a tile as a 2-D array ``(frames, pixels)`` in the data's native dtype
(never a float copy, except the dense BLAS path which needs one) and accumulate into
float64 output, so integer data sums exactly.

The sparse mask product walks only the detector pixels some mask covers: for a small
disk that is ~1% of the frame, so the kernel touches ~1% of the tile's cache lines.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(nopython=True, nogil=True, cache=True)


def as_native_2d(tile: np.ndarray) -> np.ndarray:
    """View a tile ``(n, sy, sx)`` as ``(n, sy*sx)`` in native byte order.

    Zero-copy unless the data is big-endian (numba cannot read foreign byte order; we
    swap a tile at a time, which keeps memory bounded by the tile size) or a frame is
    not contiguous in memory.
    """
    n = tile.shape[0]
    if not tile.dtype.isnative:
        tile = tile.astype(tile.dtype.newbyteorder("="))
    flat = tile.reshape(n, -1)
    if flat.strides[-1] != flat.itemsize:
        flat = np.ascontiguousarray(flat)
    return flat


@numba.jit(**_JIT)
def sparse_mask_product(frames, rows, indptr, cols, weights, out):
    """``out[f, cols[j]] += frames[f, rows[p]] * weights[j]`` for ``j`` in row ``p``.

    ``rows`` are the detector pixels covered by any mask; ``indptr``/``cols``/
    ``weights`` form a CSR matrix over those pixels (pixel-major), so each covered
    pixel is loaded once per frame whatever the number of masks touching it.
    """
    n = frames.shape[0]
    for f in range(n):
        for p in range(rows.shape[0]):
            value = np.float64(frames[f, rows[p]])
            for j in range(indptr[p], indptr[p + 1]):
                out[f, cols[j]] += value * weights[j]


@numba.jit(nopython=True, nogil=True, cache=True, fastmath=True)
def span_sums(frames, starts, stops, cols, out, zero):
    """``out[f, cols[s]] += sum(frames[f, starts[s]:stops[s]])``.

    Binary masks (weights all 1) are runs of consecutive pixels in C order (two per
    detector row for a ring); summing a run is a contiguous loop the compiler turns
    into SIMD loads. ``zero`` sets the accumulator type: ``np.int64(0)`` keeps integer
    sums exact, ``0.0`` accumulates floats in float64 (reassociated by fastmath so it
    vectorises; differences stay at float64 rounding level).
    """
    for f in range(frames.shape[0]):
        for s in range(starts.shape[0]):
            acc = zero
            for p in range(starts[s], stops[s]):
                acc += frames[f, p]
            out[f, cols[s]] += acc


@numba.jit(nopython=True, nogil=True, cache=True, fastmath=True)
def row_span_moments(frames, rows, x_start, x_stop, sx, zero, out):
    """Per frame, ``out[f] += (sum v, sum y*v, sum x*v)`` over the pixels of row spans.

    Span ``s`` covers columns ``x_start[s]:x_stop[s]`` of detector row ``rows[s]``.
    Within a span ``y`` is constant, so the three moments cost two contiguous
    accumulations; ``zero`` picks the accumulator type as in :func:`span_sums`
    (``np.int64(0)`` keeps integer moments exact).
    """
    for f in range(frames.shape[0]):
        total = zero
        first_y = zero
        first_x = zero
        for s in range(rows.shape[0]):
            base = rows[s] * sx
            row_sum = zero
            row_x = zero
            for x in range(x_start[s], x_stop[s]):
                v = frames[f, base + x]
                row_sum += v
                row_x += x * v
            total += row_sum
            first_y += rows[s] * row_sum
            first_x += row_x
        out[f, 0] += total
        out[f, 1] += first_y
        out[f, 2] += first_x


def dense_mask_product(frames: np.ndarray, dense: np.ndarray, out: np.ndarray) -> None:
    """``out += frames @ dense`` through BLAS sgemm (``dense`` is float32 ``(c, m)``)."""
    out += np.matmul(frames.astype(np.float32, copy=False), dense)


@numba.jit(**_JIT)
def accumulate_sum(frames, acc):
    """``acc[p] += sum over frames of frames[f, p]`` in float64."""
    for f in range(frames.shape[0]):
        for p in range(frames.shape[1]):
            acc[p] += frames[f, p]


@numba.jit(**_JIT)
def tile_moments(frames, mean, m2):
    """Per-pixel mean and sum of squared deviations of one tile (two passes).

    Two passes over a tile that sits in cache are cheap and avoid the cancellation of
    the sum-of-squares formula; tiles are then merged with :func:`merge_moments`.
    """
    n = frames.shape[0]
    c = frames.shape[1]
    for p in range(c):
        mean[p] = 0.0
        m2[p] = 0.0
    for f in range(n):
        for p in range(c):
            mean[p] += frames[f, p]
    for p in range(c):
        mean[p] /= n
    for f in range(n):
        for p in range(c):
            d = frames[f, p] - mean[p]
            m2[p] += d * d


@numba.jit(**_JIT)
def tile_moments_exact(frames, mean, m2, sums, squares):
    """:func:`tile_moments` in one pass for integer data of at most 16 bits.

    Sums and sums of squares are exact in int64 (``sums``/``squares`` are int64
    scratch arrays), so ``n * M2 = n * sum(x**2) - sum(x)**2`` has no cancellation
    error; callers keep ``n <= 2**15`` frames per call so it cannot overflow.
    """
    n = frames.shape[0]
    c = frames.shape[1]
    for p in range(c):
        sums[p] = 0
        squares[p] = 0
    for f in range(n):
        for p in range(c):
            v = np.int64(frames[f, p])
            sums[p] += v
            squares[p] += v * v
    for p in range(c):
        mean[p] = sums[p] / n
        m2[p] = (n * squares[p] - sums[p] * sums[p]) / n


def merge_moments(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Chan et al.'s pairwise merge of (count, mean, M2); returns the merged triple."""
    if n_a == 0:
        return n_b, mean_b.copy(), m2_b.copy()
    if n_b == 0:
        return n_a, mean_a, m2_a
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    m2 = m2_a + m2_b + delta * delta * (n_a * n_b / n)
    return n, mean, m2


@numba.jit(**_JIT)
def masked_frame_moments(frames, pixels, out):
    """Per frame, mean and variance of the pixels listed in ``pixels`` (two passes).

    ``out[f, 0]`` is the mean and ``out[f, 1]`` the population variance.
    """
    k = pixels.shape[0]
    for f in range(frames.shape[0]):
        s = 0.0
        for i in range(k):
            s += frames[f, pixels[i]]
        mean = s / k
        v = 0.0
        for i in range(k):
            d = frames[f, pixels[i]] - mean
            v += d * d
        out[f, 0] = mean
        out[f, 1] = v / k
