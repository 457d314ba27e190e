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
    nav_axes,
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

    Rings follow the masks' rule for annular regions (see :mod:`stem_explorer.masks`):
    ring ``i`` holds the pixels whose centre distance ``d`` satisfies
    ``edges[i] < d <= edges[i+1]``, exactly the pixels of ``Ring(cy, cx, edges[i],
    edges[i+1])``; a first ring starting at 0 also holds ``d == 0``, so it is
    ``Disk(cy, cx, edges[1])`` and the centre pixel counts. Give ``edges`` or
    ``n_bins`` (equal rings from 0 to ``max_radius``, by default the distance to the
    farthest detector corner). All rings are columns of the one mask matrix, so a
    profile costs one pass however many rings it has.
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
        if self.n_bins > sy * sx:  # checked before the edges are allocated
            raise AnalysisError(f"n_bins={self.n_bins!r} is more rings than the detector's {sy * sx} pixels; "
                                "use fewer rings (every ring needs a pixel)")
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
        radius, unit, attrs = _radius_axis(dataset, (edges[:-1] + edges[1:]) / 2)
        coords, units = nav_axes(dataset)
        dims = nav_dims(dataset) + ("radius",)
        shape = dataset.nav_shape + (len(counts),)
        attrs.update(edges=edges.tolist(), edges_units="px")
        return {
            "profile": ResultArray("profile", profile.reshape(shape), dims, dict(coords, radius=radius),
                                   dict(attrs, units="mean counts per pixel"), dict(units, radius=unit)),
            "ring_pixels": ResultArray("ring_pixels", counts, ("radius",), {"radius": radius}, dict(attrs),
                                       {"radius": unit}),
        }


def _radius_axis(dataset, centres: np.ndarray) -> tuple:
    """``(radii, unit, attrs)``: the rings' mid radii in the detector calibration's
    unit where its pixels are square, else in pixels (with a note why)."""
    pixel = dataset.calibration.detector_pixel
    if pixel is None:
        return centres, "px", {}
    size_y, size_x = pixel.values
    if not math.isclose(size_y, size_x, rel_tol=1e-6):
        note = (f"the detector pixels are not square ({size_y:g} x {size_x:g} {pixel.unit}), so a ring of "
                f"pixels has no single calibrated radius: radii are in pixels")
        return centres, "px", {"radius_note": note}
    return centres * size_y, pixel.unit, {}


@functools.lru_cache(maxsize=32)
def _ring_matrix(sig_shape: tuple, cy: float, cx: float, edges: tuple):
    """``(matrix, edges, counts)`` of the rings ``edges[i] < d <= edges[i+1]`` around
    ``(cy, cx)`` (the first also ``d == 0`` when it starts at 0); cached, because
    validation, planning and every partial result's ``compute`` ask for the same rings
    (treat the results as read-only)."""
    y, x = (a.ravel() for a in np.indices(sig_shape, dtype=np.float64))
    # the arithmetic of masks.Ring (squared distances against r**2 of Python floats),
    # so ring i and Ring(cy, cx, edges[i], edges[i+1]) agree on every boundary pixel
    d2 = mask_lib.squared_distance(y, x, cy, cx)
    ring = np.searchsorted(np.array([float(e) ** 2 for e in edges]), d2, side="left") - 1
    if edges[0] == 0:
        ring[d2 == 0] = 0
    edges = np.asarray(edges)
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
