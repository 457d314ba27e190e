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
    sy = np.array([(fr * weight * (y - cy)).sum() for fr in f]) / total
    sx = np.array([(fr * weight * (x - cx)).sum() for fr in f]) / total
    nav = data.shape[:-2]
    return sy.reshape(nav), sx.reshape(nav), total.reshape(nav)


def radial_profile(data, cy, cx, edges):
    f = frames(data)
    y, x = np.indices(f.shape[1:])
    d = np.hypot(y - cy, x - cx)
    out = np.zeros((len(f), len(edges) - 1))
    for i in range(len(edges) - 1):
        last = i == len(edges) - 2
        sel = (d >= edges[i]) & ((d <= edges[i + 1]) if last else (d < edges[i + 1]))
        out[:, i] = f[:, sel].mean(axis=1)
    return out.reshape(data.shape[:-2] + (len(edges) - 1,))


def ring_moments(data, mask):
    f = frames(data)
    sel = mask > 0
    values = f[:, sel]
    return values.mean(axis=1).reshape(data.shape[:-2]), values.var(axis=1).reshape(data.shape[:-2])
