"""Plain-numpy reference implementations the engine's results are checked against.

Written for clarity, not speed: every function takes the full 4-D (or 3-D) array in
memory and loops or broadcasts the obvious way.
"""

import numpy as np


def frames(data: np.ndarray, sig_ndim: int = 2) -> np.ndarray:
    """float64 copy as (n_frames, sy, sx)."""
    return data.reshape((-1,) + data.shape[-sig_ndim:]).astype(np.float64)


def disk(sig_shape, cy, cx, r):
    y, x = np.indices(sig_shape)
    return ((y - cy) ** 2 + (x - cx) ** 2 <= r**2).astype(np.float64)


def ring(sig_shape, cy, cx, ri, ro):
    y, x = np.indices(sig_shape)
    d2 = (y - cy) ** 2 + (x - cx) ** 2
    return ((d2 > ri**2) & (d2 <= ro**2)).astype(np.float64)


def virtual_image(data, mask):
    f = frames(data)
    return np.array([(frame * mask).sum() for frame in f]).reshape(data.shape[:-2])


def center_of_mass(data, cy, cx, radius=None):
    f = frames(data)
    y, x = np.indices(f.shape[1:])
    weight = np.ones(f.shape[1:]) if radius is None else disk(f.shape[1:], cy, cx, radius)
    total = np.array([(fr * weight).sum() for fr in f])
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN where a frame has no counts
        sy = np.array([(fr * weight * (y - cy)).sum() for fr in f]) / total
        sx = np.array([(fr * weight * (x - cx)).sum() for fr in f]) / total
    nav = data.shape[:-2]
    return sy.reshape(nav), sx.reshape(nav), total.reshape(nav)


def radial_profile(data, cy, cx, edges):
    """Ring i: edges[i] < d <= edges[i+1], the first also d == 0 when it starts at 0."""
    f = frames(data)
    y, x = np.indices(f.shape[1:])
    d2 = (y - cy) ** 2 + (x - cx) ** 2
    out = np.zeros((len(f), len(edges) - 1))
    for i in range(len(edges) - 1):
        sel = (d2 > edges[i] ** 2) & (d2 <= edges[i + 1] ** 2)
        if i == 0 and edges[0] == 0:
            sel |= d2 == 0
        out[:, i] = f[:, sel].mean(axis=1)
    return out.reshape(data.shape[:-2] + (len(edges) - 1,))


def ring_moments(data, mask):
    f = frames(data)
    sel = mask > 0
    values = f[:, sel]
    return values.mean(axis=1).reshape(data.shape[:-2]), values.var(axis=1).reshape(data.shape[:-2])


def gradient_skipping_missing(field, axis):
    """d/d(axis) of a 2-D field whose NaN entries are missing, one position at a time:
    central difference where both neighbours are known, the one-sided difference with
    the known one otherwise (numpy.gradient at an edge), NaN at a missing position or
    where both neighbours are missing."""
    f = np.moveaxis(np.asarray(field, np.float64), axis, 0)
    out = np.full(f.shape, np.nan)
    n = f.shape[0]
    for i in range(n):
        for j in range(f.shape[1]):
            if np.isnan(f[i, j]):
                continue
            before = f[i - 1, j] if i > 0 else np.nan
            after = f[i + 1, j] if i < n - 1 else np.nan
            if not np.isnan(before) and not np.isnan(after):
                out[i, j] = (after - before) / 2
            elif not np.isnan(after):
                out[i, j] = after - f[i, j]
            elif not np.isnan(before):
                out[i, j] = f[i, j] - before
    return np.moveaxis(out, 0, axis)


def rounded_shifts(shifts) -> np.ndarray:
    """Descan shifts ``(..., 2)`` rounded half up to whole pixels, as the engine does."""
    return np.floor(np.asarray(shifts, np.float64) + 0.5).astype(np.int64)


def moved_mask(mask, dy, dx):
    """``mask`` moved by ``(dy, dx)`` pixels, zero where nothing moves in (no wrap)."""
    out = np.zeros_like(mask)
    sy, sx = mask.shape
    if abs(dy) >= sy or abs(dx) >= sx:
        return out
    out[max(dy, 0):sy + min(dy, 0), max(dx, 0):sx + min(dx, 0)] = mask[max(-dy, 0):sy - max(dy, 0),
                                                                        max(-dx, 0):sx - max(dx, 0)]
    return out


def descanned_virtual_image(data, mask, shifts):
    """Per frame, the sum of the frame times ``mask`` moved by the frame's rounded shift
    (``shifts`` of shape ``nav + (2,)``)."""
    f = frames(data)
    moves = rounded_shifts(shifts).reshape(-1, 2)
    values = [(frame * moved_mask(mask, dy, dx)).sum() for frame, (dy, dx) in zip(f, moves)]
    return np.array(values).reshape(data.shape[:-2])


def binned(data, b):
    """Bin sums over ``b`` x ``b`` detector pixels (float64; edge bins hold fewer),
    by zero padding and reshaping."""
    sy, sx = data.shape[-2:]
    pad = [(0, 0)] * (data.ndim - 2) + [(0, -sy % b), (0, -sx % b)]
    padded = np.pad(data.astype(np.float64), pad)
    by, bx = padded.shape[-2] // b, padded.shape[-1] // b
    return padded.reshape(data.shape[:-2] + (by, b, bx, b)).sum(axis=(-3, -1))


def binned_mask(mask, b):
    """A detector mask on ``b`` x ``b`` bins: its weights summed per bin over the bin's
    pixel count (the fraction of the bin it covers, for a binary mask)."""
    return binned(mask, b) / binned(np.ones(mask.shape), b)
