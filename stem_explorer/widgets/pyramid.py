"""Multiscale pyramid of a 2-D image: send the browser only what the view can show.

Level ``k`` is the mean of the image's ``2**k`` x ``2**k`` blocks, ignoring NaN
(positions not computed yet): a block with any computed position shows their mean, so
a partly filled result still reads at every scale. Levels are built lazily, each in
one pass over the full-resolution image (four halvings in a row took 50 ms on a
5120 x 256 scan, one pass 9 ms: every partial result of a job redraws).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """A region of the image at some level: ``data`` covers full-resolution pixel rows
    ``y0..y1`` and columns ``x0..x1`` (edges, half-open); ``step`` full-resolution pixels
    make one pixel of ``data``."""

    data: np.ndarray
    y0: int
    y1: int
    x0: int
    x1: int
    step: int


def block_means(image: np.ndarray, step: int) -> np.ndarray:
    """NaN-ignoring mean of ``step`` x ``step`` blocks (ragged edges padded with NaN)."""
    h, w = image.shape
    rows, cols = -(-h // step), -(-w // step)
    if (rows * step, cols * step) != (h, w):
        padded = np.full((rows * step, cols * step), np.nan, np.float32)
        padded[:h, :w] = image
        image = padded
    finite = np.isfinite(image)
    total = np.where(finite, image, np.float32(0)).reshape(rows, step, cols, step)
    total = total.sum(axis=3, dtype=np.float64).sum(axis=1)
    count = finite.reshape(rows, step, cols, step).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


class Pyramid:
    """The image at full resolution and at halvings, built on demand."""

    def __init__(self, image: np.ndarray):
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2 or image.size == 0:
            raise ValueError(f"a pyramid needs a non-empty 2-D image, got shape {image.shape}")
        self._levels = {0: image}

    @property
    def shape(self) -> tuple:
        return self._levels[0].shape

    def level(self, k: int) -> np.ndarray:
        """The image at ``2**-k`` of its resolution."""
        if k not in self._levels:
            self._levels[k] = block_means(self._levels[0], 2**k)
        return self._levels[k]

    def tile(self, y0: float, y1: float, x0: float, x1: float, budget: int) -> Tile:
        """The region ``[y0, y1) x [x0, x1)`` (full-resolution edges, clipped to the
        image) at the finest level whose pixels of that region fit ``budget`` on both
        axes."""
        h, w = self.shape
        y0, x0 = max(0, math.floor(y0)), max(0, math.floor(x0))
        y1, x1 = min(h, math.ceil(y1)), min(w, math.ceil(x1))
        if y1 <= y0 or x1 <= x0:  # panned off the image: show it whole
            y0, y1, x0, x1 = 0, h, 0, w
        extent = max(y1 - y0, x1 - x0)
        k = max(0, math.ceil(math.log2(extent / budget))) if extent > budget else 0
        step = 2**k
        ly0, lx0 = y0 // step, x0 // step
        ly1, lx1 = -(-y1 // step), -(-x1 // step)
        data = self.level(k)[ly0:ly1, lx0:lx1]
        return Tile(data, ly0 * step, min(h, ly1 * step), lx0 * step, min(w, lx1 * step), step)
