"""Per-tile kernels: the inner loops every task runs over its frames.

All kernels take a tile as a 2-D array ``(frames, pixels)`` in the data's native dtype
and accumulate into float64 output. They never get a float copy, except on the dense
BLAS path, for float16 (numba cannot compute with it on the CPU: :func:`kernel_input`
widens it to float32) and for the centre of mass of 64-bit integers (a coordinate
times such a value can wrap). Integer sums are exact wherever a bound proves int64
cannot wrap (:func:`fits_int64`: every counting detector); 64-bit integers are summed
in float64, which rounds but never wraps.

Two habits make them fast. Every kernel takes one frame as a 1-D view (``frames[f]``)
and each run of pixels as a slice of it: numba then sees unit-stride loops of known
length and emits SIMD code, where indexing ``frames[f, p]`` in the inner loop kept it
scalar (about 3x slower). And unsigned data of at most 16 bits is summed in 32-bit
integers wherever the bound below proves that cannot overflow (:func:`fits_u32`):
narrow lanes move twice as many pixels per instruction as int64 or float64, and the
sums stay exact.

The per-pixel accumulators of the sum and std frames take four frames per pass:
their arrays (256 KiB for the float std of a 128 x 128 frame, more than L1 holds) are
then read and written a quarter as often, 1.3-1.7x faster on one core.

The sparse mask product walks only the detector pixels some mask covers: for a small
disk that is ~1% of the frame, so the kernel touches ~1% of the tile's cache lines.
"""

from __future__ import annotations

from typing import Optional

import numba
import numpy as np

_JIT = dict(nopython=True, nogil=True, cache=True)
#: fastmath lets the compiler reassociate float sums into SIMD lanes; the kernels
#: using it accumulate in float64, so the reordering changes results at float64
#: rounding level only.
_JIT_FAST = dict(_JIT, fastmath=True)

_U32_LIMIT = 2**32
_INT64_LIMIT = 2**63


def as_native_2d(tile: np.ndarray, keep_order: bool = False, scratch: Optional[list] = None) -> np.ndarray:
    """View a tile ``(n, sy, sx)`` as ``(n, sy*sx)`` in native byte order.

    Zero-copy unless the data is big-endian (numba cannot read foreign byte order) or
    a frame is not contiguous in memory. A big-endian tile is swapped a tile at a
    time (memory bounded by the tile size) into ``scratch[0]``, a buffer reused from
    tile to tile when given: dask workers hand freed memory back to the system, so a
    fresh array per tile would page-fault its way in every time. With
    ``keep_order=True`` the big-endian tile is returned as is, for ops that swap the
    bytes of the pixels they read themselves (:func:`swaps_in_kernel`).
    """
    n = tile.shape[0]
    flat = tile.reshape(n, -1)
    if not tile.dtype.isnative and not keep_order:
        native = tile.dtype.newbyteorder("=")
        if scratch is None:
            return flat.astype(native)
        if scratch[0] is None or scratch[0].size < flat.size or scratch[0].dtype != native:
            scratch[0] = np.empty(flat.size, native)
        out = scratch[0][: flat.size].reshape(flat.shape)
        out[...] = flat
        return out
    if flat.strides[-1] != flat.itemsize:
        flat = np.ascontiguousarray(flat)
    return flat


def swaps_in_kernel(dtype: np.dtype) -> bool:
    """Whether the mask kernels read ``dtype`` in its stored byte order, swapping each
    pixel they touch (big-endian unsigned 16-bit: Merlin 12-bit counts). The sparse
    and span paths then touch only the covered pixels, as for native data, instead of
    a whole-tile swap first."""
    dtype = np.dtype(dtype)
    return not dtype.isnative and dtype.kind == "u" and dtype.itemsize == 2


@numba.njit(inline="always")
def _bswap16(value):
    u = np.uint16(value)
    return np.uint16((u >> np.uint16(8)) | (u << np.uint16(8)))


def kernel_input(frames: np.ndarray) -> np.ndarray:
    """``frames`` as the numba kernels read them: float16 widened to float32 (exact;
    numba has no float16 arithmetic on the CPU), booleans viewed as uint8, other
    dtypes as they are."""
    if frames.dtype.kind == "f" and frames.dtype.itemsize == 2:
        return frames.astype(np.float32)
    if frames.dtype.kind == "b":
        return frames.view(np.uint8)
    return frames


def _fits(dtype: np.dtype, weight: int, limit: int) -> bool:
    """Whether ``weight`` times the largest magnitude of integer ``dtype`` is below ``limit``."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "biu":
        return False
    info = np.iinfo(np.uint8 if dtype.kind == "b" else dtype)
    return max(int(info.max), -int(info.min)) * int(weight) < limit


def fits_u32(dtype: np.dtype, weight: int) -> bool:
    """Whether sums of ``weight`` times the largest value of ``dtype`` fit in uint32.

    Only unsigned integers of at most 16 bits qualify; ``weight`` is the largest
    multiplier of one value in the sum (a count of terms, or count x coordinate).
    """
    dtype = np.dtype(dtype)
    return dtype.kind == "u" and dtype.itemsize <= 2 and _fits(dtype, weight, _U32_LIMIT)


def fits_int64(dtype: np.dtype, weight: int) -> bool:
    """Whether sums of ``weight`` times the largest magnitude of ``dtype`` fit in int64.

    True for every integer dtype of at most 32 bits on any real detector (``weight``
    as in :func:`fits_u32`); False for floats, and for 64-bit integers, whose sums
    must go through float64.
    """
    return _fits(dtype, weight, _INT64_LIMIT)


@numba.jit(**_JIT)
def sparse_mask_product(frames, rows, indptr, cols, weights, out, swap=False):
    """``out[f, cols[j]] += frames[f, rows[p]] * weights[j]`` for ``j`` in row ``p``.

    ``rows`` are the detector pixels covered by any mask; ``indptr``/``cols``/
    ``weights`` form a CSR matrix over those pixels (pixel-major), so each covered
    pixel is loaded once per frame whatever the number of masks touching it. With
    ``swap`` the uint16 ``frames`` hold big-endian bytes, swapped pixel by pixel.
    """
    for f in range(frames.shape[0]):
        frame = frames[f]
        for p in range(rows.shape[0]):
            value = np.float64(_bswap16(frame[rows[p]])) if swap else np.float64(frame[rows[p]])
            for j in range(indptr[p], indptr[p + 1]):
                out[f, cols[j]] += value * weights[j]


@numba.jit(**_JIT_FAST)
def span_sums(frames, starts, stops, cols, out, zero, swap=False):
    """``out[f, cols[s]] += sum(frames[f, starts[s]:stops[s]])``.

    Binary masks (weights all 1) are runs of consecutive pixels in C order (two per
    detector row for a ring); summing a run is a contiguous SIMD loop. ``zero`` sets
    the accumulator type: ``np.int64(0)`` keeps integer sums exact, ``0.0``
    accumulates floats in float64. With ``swap`` the uint16 ``frames`` hold
    big-endian bytes; the swap vectorises too (a byte shuffle per SIMD load).
    """
    for f in range(frames.shape[0]):
        frame = frames[f]
        for s in range(starts.shape[0]):
            out[f, cols[s]] += run_sum(frame[starts[s]:stops[s]], zero, swap)


@numba.njit(inline="always")
def run_sum(run, zero, swap):
    """``zero`` plus the values of ``run`` (big-endian uint16 swapped with ``swap``):
    the contiguous SIMD loop of :func:`span_sums`."""
    acc = zero
    if swap:
        for p in range(run.shape[0]):
            acc += _bswap16(run[p])
    else:
        for p in range(run.shape[0]):
            acc += run[p]
    return acc


@numba.njit(inline="always")
def _column_sums(frame, box, prefix, swap):
    """``prefix[y*w + x]``: the sum of ``box``'s column ``x`` over its rows ``0..y``.

    The first row is copied by its own loop: a branch on the row inside one loop
    kept LLVM from vectorising it (measured 2x slower)."""
    y0, h, x0, w, sx = box[0], box[1], box[2], box[3], box[4]
    if h == 0:
        return
    row = frame[y0 * sx + x0:y0 * sx + x0 + w]
    first = prefix[:w]
    if swap:
        for x in range(w):
            first[x] = _bswap16(row[x])
    else:
        for x in range(w):
            first[x] = row[x]
    for y in range(1, h):
        start = (y0 + y) * sx + x0
        row = frame[start:start + w]
        previous = prefix[(y - 1) * w:y * w]
        current = prefix[y * w:(y + 1) * w]
        if swap:
            for x in range(w):
                current[x] = previous[x] + _bswap16(row[x])
        else:
            for x in range(w):
                current[x] = previous[x] + row[x]


def column_prefix(dtype: np.dtype, rows: int, pixels: int) -> tuple:
    """``(scratch, zero)`` for :func:`column_run_sums` on ``dtype`` over ``rows`` rows
    of a box of ``pixels``.

    The running column sums are uint32 for unsigned data of at most 16 bits where
    ``rows`` values cannot wrap (:func:`fits_u32`), int64 for integers where neither
    they nor a mask's sum of up to ``pixels`` of them can wrap (:func:`fits_int64`),
    else float64; ``zero`` seeds the per-mask accumulator (exact int64, or float64).
    """
    if fits_u32(dtype, rows):
        return np.empty(pixels, np.uint32), np.int64(0)
    if fits_int64(dtype, rows * pixels):
        return np.empty(pixels, np.int64), np.int64(0)
    return np.empty(pixels, np.float64), 0.0


@numba.jit(**_JIT_FAST)
def column_run_sums(frames, box, prefix, plus, plus_ptr, minus, minus_ptr, cols, out, zero, swap=False):
    """Binary masks as vertical runs, summed from running column sums.

    ``box`` is ``(y0, h, x0, w, sx)``: the masks lie in rows ``y0:y0+h`` and columns
    ``x0:x0+w`` of a detector ``sx`` pixels wide. Per frame, ``prefix[y*w + x]`` is
    the sum of the box's column ``x`` over rows ``0..y`` (a unit-stride SIMD pass that
    adds each detector row to the previous one), so a run of rows ``a..b`` in one
    column is ``prefix[b, x] - prefix[a-1, x]``: mask ``j`` sums the entries
    ``plus[plus_ptr[j]:plus_ptr[j+1]]`` minus those of ``minus``, into ``out[f,
    cols[j]]``. A pixel costs one add however many masks cover it, and a mask one
    load per run end, with no data-dependent branches: 16 radial rings run at about
    twice the rate of row spans or sgemm. ``prefix`` and ``zero`` come from
    :func:`column_prefix`; ``swap`` as in :func:`span_sums`.
    """
    for f in range(frames.shape[0]):
        _column_sums(frames[f], box, prefix, swap)
        _column_run_ends(prefix, plus, plus_ptr, minus, minus_ptr, cols, out[f], zero)


@numba.njit(inline="always")
def _column_run_ends(prefix, plus, plus_ptr, minus, minus_ptr, cols, out, zero):
    """``out[cols[j]] +=`` mask ``j``'s runs from one frame's running column sums (see
    :func:`column_run_sums`)."""
    for j in range(cols.shape[0]):
        acc = zero
        for k in range(plus_ptr[j], plus_ptr[j + 1]):
            acc += prefix[plus[k]]
        for k in range(minus_ptr[j], minus_ptr[j + 1]):
            acc -= prefix[minus[k]]
        out[cols[j]] += acc


@numba.jit(**_JIT_FAST)
def row_span_moments(frames, rows, x_start, x_stop, sx, zero, out):
    """Per frame, ``out[f] += (sum v, sum y*v, sum x*v)`` over the pixels of row spans.

    Span ``s`` covers columns ``x_start[s]:x_stop[s]`` of detector row ``rows[s]``.
    Within a span ``y`` is constant, so the three moments cost two contiguous
    accumulations; ``zero`` picks the accumulator type as in :func:`span_sums`.
    """
    for f in range(frames.shape[0]):
        frame = frames[f]
        total = zero
        first_y = zero
        first_x = zero
        for s in range(rows.shape[0]):
            x0 = x_start[s]
            run = frame[rows[s] * sx + x0:rows[s] * sx + x_stop[s]]
            row_sum = zero
            row_x = zero
            for i in range(run.shape[0]):
                v = run[i]
                row_sum += v
                row_x += (x0 + i) * v
            total += row_sum
            first_y += rows[s] * row_sum
            first_x += row_x
        out[f, 0] += total
        out[f, 1] += first_y
        out[f, 2] += first_x


@numba.jit(**_JIT_FAST)
def row_span_moments_u32(frames, rows, x_start, x_stop, sx, out):
    """:func:`row_span_moments` with per-row sums in uint32 (exact, twice as fast).

    Callers check :func:`fits_u32` with weight ``sx * sx`` so that neither the row
    sum nor the row's ``sum x*v`` can wrap; rows are then added up in int64.
    """
    for f in range(frames.shape[0]):
        frame = frames[f]
        total = np.int64(0)
        first_y = np.int64(0)
        first_x = np.int64(0)
        for s in range(rows.shape[0]):
            x0 = x_start[s]
            run = frame[rows[s] * sx + x0:rows[s] * sx + x_stop[s]]
            row_sum = np.uint32(0)
            row_x = np.uint32(0)
            for i in range(run.shape[0]):
                v = np.uint32(run[i])
                row_sum = np.uint32(row_sum + v)
                row_x = np.uint32(row_x + np.uint32(np.uint32(x0 + i) * v))
            total += row_sum
            first_y += rows[s] * np.int64(row_sum)
            first_x += row_x
        out[f, 0] += total
        out[f, 1] += first_y
        out[f, 2] += first_x


#: Bytes of float32 frames the dense path converts at a time. A whole 32 MiB uint16
#: tile converted at once is a 64 MiB temporary, which glibc maps fresh (and page
#: faults in) on every tile: 1.7 GB/s for an annulus on one core, against 4.3 in
#: blocks that come from the heap.
DENSE_BLOCK_BYTES = 4 * 2**20


def dense_mask_product(frames: np.ndarray, dense: np.ndarray, out: np.ndarray) -> None:
    """``out += frames @ dense`` through BLAS sgemm (``dense`` is float32 ``(c, m)``);
    other dtypes are converted to float32 a block of frames at a time."""
    if frames.dtype == np.float32:
        out += np.matmul(frames, dense)
        return
    step = max(1, DENSE_BLOCK_BYTES // (4 * max(frames.shape[1], 1)))
    for lo in range(0, frames.shape[0], step):
        out[lo:lo + step] += np.matmul(frames[lo:lo + step].astype(np.float32), dense)


@numba.jit(**_JIT_FAST)
def bin_sums(frames, sx, binning, line, out, swap=False):
    """``out[f, b]``: the sum of frame ``f``'s pixels in detector bin ``b`` (``binning``
    x ``binning`` pixels, edge bins fewer; frames ``(n, sy * sx)``, bins in C order).

    The rows of a bin row are added into ``line`` (``sx`` accumulators: uint32 lanes
    for 16-bit counts where :func:`fits_u32` allows, else int64 or float64), a
    contiguous SIMD loop per pixel row; then each bin's ``binning`` columns of it are
    summed into ``out``, written once per bin, rounded once. With ``swap`` the uint16
    ``frames`` hold big-endian bytes."""
    sy = frames.shape[1] // sx
    bx = (sx + binning - 1) // binning
    for f in range(frames.shape[0]):
        frame = frames[f]
        for by in range((sy + binning - 1) // binning):
            line[:] = 0
            for y in range(by * binning, min(by * binning + binning, sy)):
                row = frame[y * sx:(y + 1) * sx]
                if swap:
                    for x in range(sx):
                        line[x] += _bswap16(row[x])
                else:
                    for x in range(sx):
                        line[x] += row[x]
            for j in range(bx):
                acc = line[j * binning]
                for x in range(j * binning + 1, min(j * binning + binning, sx)):
                    acc += line[x]
                out[f, by * bx + j] = acc


@numba.jit(**_JIT_FAST)
def accumulate_sum(frames, acc):
    """``acc[p] += sum over frames of frames[f, p]`` in float64, four frames a pass."""
    whole = frames.shape[0] - frames.shape[0] % 4
    for f in range(0, whole, 4):
        a, b, c, d = frames[f], frames[f + 1], frames[f + 2], frames[f + 3]
        for p in range(acc.shape[0]):
            acc[p] += (np.float64(a[p]) + np.float64(b[p])) + (np.float64(c[p]) + np.float64(d[p]))
    for f in range(whole, frames.shape[0]):
        frame = frames[f]
        for p in range(acc.shape[0]):
            acc[p] += frame[p]


@numba.jit(**_JIT)
def accumulate_sum_u32(frames, scratch):
    """``scratch[p] += sum over frames of frames[f, p]`` in uint32 (exact, about 1.5x
    faster than float64), four frames a pass; callers check :func:`fits_u32` with the
    number of frames summed into ``scratch`` before they flush it into a float64 total."""
    whole = frames.shape[0] - frames.shape[0] % 4
    for f in range(0, whole, 4):
        a, b, c, d = frames[f], frames[f + 1], frames[f + 2], frames[f + 3]
        for p in range(scratch.shape[0]):
            pair = np.uint32(np.uint32(a[p]) + np.uint32(b[p]))
            scratch[p] = np.uint32(scratch[p] + np.uint32(pair + np.uint32(np.uint32(c[p]) + np.uint32(d[p]))))
    for f in range(whole, frames.shape[0]):
        frame = frames[f]
        for p in range(scratch.shape[0]):
            scratch[p] = np.uint32(scratch[p] + np.uint32(frame[p]))


@numba.jit(**_JIT)
def accumulate_sum_u32_swapped(frames, scratch):
    """:func:`accumulate_sum_u32` of big-endian uint16 frames viewed as native: each
    pixel's bytes swapped as it is read (no swapped copy of the tile first)."""
    whole = frames.shape[0] - frames.shape[0] % 4
    for f in range(0, whole, 4):
        a, b, c, d = frames[f], frames[f + 1], frames[f + 2], frames[f + 3]
        for p in range(scratch.shape[0]):
            pair = np.uint32(np.uint32(_bswap16(a[p])) + np.uint32(_bswap16(b[p])))
            rest = np.uint32(np.uint32(_bswap16(c[p])) + np.uint32(_bswap16(d[p])))
            scratch[p] = np.uint32(scratch[p] + np.uint32(pair + rest))
    for f in range(whole, frames.shape[0]):
        frame = frames[f]
        for p in range(scratch.shape[0]):
            scratch[p] = np.uint32(scratch[p] + np.uint32(_bswap16(frame[p])))


@numba.jit(**_JIT)
def accumulate_moments_u32(frames, sums, squares):
    """Per pixel, ``sums += x`` (uint32) and ``squares += x**2`` (uint64), exactly,
    four frames a pass.

    For unsigned data of at most 16 bits; callers check :func:`fits_u32` with the
    number of frames accumulated (squares of 16-bit values then fit in uint64 too).
    """
    whole = frames.shape[0] - frames.shape[0] % 4
    for f in range(0, whole, 4):
        a, b, c, d = frames[f], frames[f + 1], frames[f + 2], frames[f + 3]
        for p in range(sums.shape[0]):
            va, vb, vc, vd = np.uint32(a[p]), np.uint32(b[p]), np.uint32(c[p]), np.uint32(d[p])
            sums[p] = np.uint32(sums[p] + np.uint32(np.uint32(va + vb) + np.uint32(vc + vd)))
            squares[p] += np.uint64(va * va) + np.uint64(vb * vb) + np.uint64(vc * vc) + np.uint64(vd * vd)
    for f in range(whole, frames.shape[0]):
        frame = frames[f]
        for p in range(sums.shape[0]):
            v = np.uint32(frame[p])
            sums[p] = np.uint32(sums[p] + v)
            squares[p] += np.uint64(v * v)


@numba.jit(**_JIT)
def moments_from_u32(n, sums, squares, mean, m2):
    """Mean and M2 of ``n`` frames from exact sums: ``M2 = sum x**2 - (sum x)**2 / n``
    is evaluated in integers up to the last division, so it has no cancellation."""
    count = np.uint64(n)
    for p in range(sums.shape[0]):
        s = np.uint64(sums[p])
        whole = (s * s) // count
        rest = s * s - whole * count
        mean[p] = np.float64(s) / n
        m2[p] = np.float64(squares[p] - whole) - np.float64(rest) / n


@numba.jit(**_JIT_FAST)
def accumulate_moments_shifted(frames, shift, sums, squares):
    """Per pixel, ``sums += d`` and ``squares += d**2`` in float64 with ``d = x - shift``,
    four frames a pass.

    Shifting by a value close to the mean (the first frame of the block) keeps
    :func:`moments_from_shifted` free of the cancellation of the textbook formula;
    for integers of at most 16 bits every term is exact below 2**53 (callers keep
    blocks under 2**20 frames).
    """
    whole = frames.shape[0] - frames.shape[0] % 4
    for f in range(0, whole, 4):
        a, b, c, d = frames[f], frames[f + 1], frames[f + 2], frames[f + 3]
        for p in range(sums.shape[0]):
            s = shift[p]
            da, db = np.float64(a[p]) - s, np.float64(b[p]) - s
            dc, dd = np.float64(c[p]) - s, np.float64(d[p]) - s
            sums[p] += (da + db) + (dc + dd)
            squares[p] += (da * da + db * db) + (dc * dc + dd * dd)
    for f in range(whole, frames.shape[0]):
        frame = frames[f]
        for p in range(sums.shape[0]):
            d = np.float64(frame[p]) - shift[p]
            sums[p] += d
            squares[p] += d * d


@numba.jit(**_JIT)
def moments_from_shifted(n, shift, sums, squares, mean, m2):
    """Mean and M2 of ``n`` frames from :func:`accumulate_moments_shifted`'s sums."""
    for p in range(sums.shape[0]):
        mean[p] = shift[p] + sums[p] / n
        m2[p] = max(squares[p] - sums[p] * sums[p] / n, 0.0)


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
        frame = frames[f]
        s = 0.0
        for i in range(k):
            s += frame[pixels[i]]
        mean = s / k
        v = 0.0
        for i in range(k):
            d = frame[pixels[i]] - mean
            v += d * d
        out[f, 0] = mean
        out[f, 1] = v / k
