"""Coarse-first preview: a sparse grid of scan positions computed before the rest.

A job over a large data set first runs its per-frame ops on every ``stride``-th row
and column of the scan (every ``stride**2``-th frame of a 1-D scan), so the first
partial result already covers the whole field at coarse resolution; the partitions
then fill in the exact image. The grid is sized by a byte budget, so the time to the
full-field preview does not grow with the data set.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: Bytes of frames read for the preview (the sample's 128 x 128 uint16 frames: 484,
#: every 12th row and column; a 32 MiB grid took twice as long as a first partition).
PREVIEW_BYTES = 16 * 2**20
#: At most this many preview frames, however small the frames.
PREVIEW_FRAMES = 4096
#: A coarser grid than every 4th row and column would not save enough to be worth
#: a second set of tasks: smaller data sets get no preview.
MIN_STRIDE = 4


def auto_stride(nav_shape: Sequence[int], frame_bytes: int) -> int:
    """The preview grid's stride for a scan, or 1 when the data set gets no preview."""
    if len(nav_shape) not in (1, 2):
        return 1
    n_frames = math.prod(nav_shape)
    limit = min(PREVIEW_FRAMES, PREVIEW_BYTES // max(1, frame_bytes))
    stride = max(1, math.ceil(math.sqrt(n_frames / max(1, limit))))
    while grid_indices(nav_shape, stride).size > limit:  # edge rows and columns round up
        stride += 1
    return stride if stride >= MIN_STRIDE else 1


def grid_indices(nav_shape: Sequence[int], stride: int) -> np.ndarray:
    """Sorted flat frame indices of the preview grid."""
    if stride < 1:
        raise ValueError(f"the preview stride must be at least 1, got {stride}")
    if len(nav_shape) == 1:
        return np.arange(0, nav_shape[0], stride * stride, dtype=np.int64)
    if len(nav_shape) != 2:
        raise ValueError(f"a preview needs a 1-D or 2-D scan, not {tuple(nav_shape)}")
    rows = np.arange(0, nav_shape[0], stride, dtype=np.int64)
    cols = np.arange(0, nav_shape[1], stride, dtype=np.int64)
    return (rows[:, None] * nav_shape[1] + cols[None, :]).ravel()


def fill_from_grid(image: np.ndarray, filled: np.ndarray, stride: int) -> np.ndarray:
    """``image`` with positions not computed yet taken from the nearest grid point
    above-left of them (the grid point of their ``stride`` x ``stride`` block).

    ``image`` and ``filled`` are scan-shaped; computed positions keep their values.
    """
    image = np.asarray(image)
    if stride <= 1 or filled.all():
        return image
    if image.ndim == 1:
        step = stride * stride
        blocks = np.repeat(image[::step], step)[: image.shape[0]]
    elif image.ndim == 2:
        coarse = image[::stride, ::stride]
        blocks = np.repeat(np.repeat(coarse, stride, axis=0), stride, axis=1)
        blocks = blocks[: image.shape[0], : image.shape[1]]
    else:
        raise ValueError(f"a preview fills 1-D or 2-D scan images, not shape {image.shape}")
    return np.where(filled, image, blocks)
