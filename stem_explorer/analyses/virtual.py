"""Virtual detectors: images over the scan from masks on the detector."""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.sparse

from .. import masks as mask_lib
from ..errors import AnalysisError
from .base import (
    Analysis,
    MaskColumns,
    check_point,
    detector_center,
    nav_dims,
    nav_coords,
    nav_result,
)
from ..results import ResultArray
from .params import Integer, Label, Number, Numbers, Point
from .region_params import Masks
from .registry import register


@register
class VirtualDetector(Analysis):
    """One scan image per mask: the sum of each frame weighted by the mask.

    ``masks`` is one mask, a list of masks, or a ``{name: mask}`` dict; results are
    named after the dict keys (``mask0``, ``mask1``... for a list).
    """

    label = "vd"
    title = "virtual detector"

    masks = Masks(help="The detector masks; one scan image each.",
                  examples=({"bf": {"kind": "disk", "cy": 64, "cx": 64, "radius": 12}},))
    name = Label(None, help="Label of the results (default: vd).")

    @property
    def _named(self) -> dict:
        masks = self.masks
        if isinstance(masks, dict):
            return masks
        return {f"mask{i}": m for i, m in enumerate(masks if isinstance(masks, list) else [masks])}

    def _stack(self, dataset):
        return mask_lib.stack_masks(list(self._named.values()), dataset.sig_shape)

    def validate(self, dataset):
        self._stack(dataset)

    def requests(self, dataset):
        return [MaskColumns(self._stack(dataset).sparse)]

    def compute(self, inputs, dataset):
        columns = inputs[0]
        return {
            name: nav_result(name, columns[:, i], dataset, mask=mask.to_dict())
            for i, (name, mask) in enumerate(self._named.items())
        }


@register
class RadialProfile(Analysis):
    """Mean intensity per pixel in concentric rings, at every scan position.

    Bins follow ``numpy.histogram``: ring ``i`` holds pixels whose centre distance
    ``d`` satisfies ``edges[i] <= d < edges[i+1]`` (the last ring also includes its
    outer edge). Give ``edges`` or ``n_bins`` (equal rings from 0 to ``max_radius``,
    by default the distance to the farthest detector corner). All rings are columns of
    the one mask matrix, so a profile costs one pass however many rings it has.
    """

    label = "radial"
    title = "radial profile"

    center = Point(None, help="Centre of the rings; None: the detector's centre.")
    n_bins = Integer(None, minimum=1, maximum=4096, examples=(16,), cli_aliases=("bins",),
                     help="Number of equal rings from 0 to max_radius (or give edges).")
    edges = Numbers(None, minimum=0, min_items=2, unit="px", help="Increasing ring edges (instead of n_bins).")
    max_radius = Number(None, minimum=0, exclusive_minimum=True, unit="px",
                        help="Outer edge of the n_bins rings; None: the farthest detector corner.")

    def _edges(self, dataset) -> np.ndarray:
        cy, cx = self._center(dataset)
        if self.edges is not None:
            edges = np.asarray(self.edges, dtype=np.float64)
            if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0) or edges[0] < 0:
                raise AnalysisError(f"edges must be >= 2 increasing finite non-negative radii, got {self.edges!r}")
            return edges
        if self.n_bins is None or int(self.n_bins) != self.n_bins or self.n_bins < 1:
            raise AnalysisError(f"RadialProfile needs n_bins (a positive integer) or edges, got n_bins={self.n_bins!r}")
        sy, sx = dataset.sig_shape
        far = max(math.hypot(y - cy, x - cx) for y in (0, sy - 1) for x in (0, sx - 1))
        top = far if self.max_radius is None else float(self.max_radius)
        if not math.isfinite(top) or top <= 0:
            raise AnalysisError(f"max_radius must be a positive finite number, got {self.max_radius!r}")
        return np.linspace(0.0, top, int(self.n_bins) + 1)

    def _center(self, dataset):
        return detector_center(dataset) if self.center is None else check_point("center", self.center, dataset)

    def _matrix(self, dataset):
        cy, cx = self._center(dataset)
        return _ring_matrix(tuple(dataset.sig_shape), float(cy), float(cx), tuple(self._edges(dataset).tolist()))

    def validate(self, dataset):
        self._matrix(dataset)

    def requests(self, dataset):
        return [MaskColumns(self._matrix(dataset)[0])]

    def compute(self, inputs, dataset):
        _, edges, counts = self._matrix(dataset)
        profile = inputs[0] / counts
        centres = (edges[:-1] + edges[1:]) / 2
        dims = nav_dims(dataset) + ("radius",)
        coords = dict(nav_coords(dataset), radius=centres)
        shape = dataset.nav_shape + (len(counts),)
        return {
            "profile": ResultArray("profile", profile.reshape(shape), dims, coords, {"edges": edges.tolist(), "units": "mean counts per pixel"}),
            "ring_pixels": ResultArray("ring_pixels", counts, ("radius",), {"radius": centres}),
        }


@functools.lru_cache(maxsize=32)
def _ring_matrix(sig_shape: tuple, cy: float, cx: float, edges: tuple):
    """``(matrix, edges, counts)`` of the rings ``edges[i] <= d < edges[i+1]`` (the last
    edge included) around ``(cy, cx)``; cached, because validation, planning and every
    partial result's ``compute`` ask for the same rings (treat the results as read-only)."""
    edges = np.asarray(edges)
    y, x = (a.ravel() for a in np.indices(sig_shape, dtype=np.float64))
    d = np.hypot(y - cy, x - cx)
    ring = np.searchsorted(edges, d, side="right") - 1
    ring[d == edges[-1]] = len(edges) - 2
    inside = (ring >= 0) & (ring < len(edges) - 1)
    pixels = np.flatnonzero(inside)
    matrix = scipy.sparse.csr_matrix(
        (np.ones(pixels.size, np.float32), (pixels, ring[pixels])), shape=(y.size, len(edges) - 1)
    )
    counts = np.bincount(ring[pixels], minlength=len(edges) - 1)
    if np.any(counts == 0):
        empty = np.flatnonzero(counts == 0).tolist()
        raise AnalysisError(f"rings {empty} of edges {edges.tolist()} contain no detector pixel; use fewer or wider rings")
    edges.flags.writeable = counts.flags.writeable = False
    return matrix, edges, counts
