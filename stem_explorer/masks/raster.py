"""Rasterise mask descriptions onto the detector, and stack them for the GEMM.

Coordinates follow :mod:`stem_explorer.masks`: the centre of detector pixel (row y,
column x) is at the integer point (y, x), and a pixel belongs to a shape when its centre
does.

Every mask is first rasterised into a :class:`MaskPatch`: the values inside a window of
the detector that holds all the pixels the mask can cover (its bounding box, clipped to
the detector). Only that window is evaluated, so a small disk on a 4096 x 4096 detector
costs as much as on a 64 x 64 one, and :func:`stack_masks` builds the sparse
``(pixels, masks)`` matrix straight from the patches.

This module reads masks only through their attributes and ``kind``; it does not import
:mod:`stem_explorer.masks.shapes` (which imports it).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ..errors import MaskError
from . import limits

__all__ = [
    "MaskPatch",
    "MaskStack",
    "check_sig_shape",
    "is_empty",
    "pixel_tests",
    "rasterize",
    "rasterize_patch",
    "squared_distance",
    "stack_masks",
]

# Distance (in pixels) within which a pixel centre counts as lying on a polygon edge.
_EDGE_TOLERANCE = 1e-9
# Pixels evaluated at once when testing a shape's inequality (bounds temporary memory).
_BLOCK_PIXELS = 1 << 18


def check_sig_shape(sig_shape) -> tuple[int, int]:
    """Return ``sig_shape`` as a tuple of two positive Python ints, or raise MaskError."""
    try:
        dims = tuple(sig_shape)
    except TypeError:
        dims = ()
    if len(dims) != 2 or not all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in dims
    ):
        raise MaskError(
            f"sig_shape must be two positive integers (sy, sx), got {sig_shape!r}; "
            "pass the detector shape, e.g. (256, 256)"
        )
    return int(dims[0]), int(dims[1])


@dataclass(frozen=True)
class MaskPatch:
    """Values of a mask inside a window of the detector; zero everywhere else.

    ``values`` (float32, shape ``(h, w)``) covers detector rows ``y0 .. y0 + h - 1`` and
    columns ``x0 .. x0 + w - 1``. An empty patch has ``h == 0`` or ``w == 0``.
    """

    y0: int
    x0: int
    values: np.ndarray

    @property
    def slices(self) -> tuple[slice, slice]:
        """The window as ``(row slice, column slice)`` into a detector frame."""
        h, w = self.values.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    @property
    def is_window_empty(self) -> bool:
        """True when the window holds no pixel at all."""
        return self.values.size == 0

    def nonzero_pixels(self, sx: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat detector indices ``y * sx + x`` (int64) and values of the nonzero pixels."""
        yy, xx = np.nonzero(self.values)
        flat = (yy.astype(np.int64) + self.y0) * sx + (xx + self.x0)
        return flat, self.values[yy, xx]


_EMPTY = MaskPatch(0, 0, np.zeros((0, 0), np.float32))


# --- bounds of a primitive shape: the float box (ymin, ymax, xmin, xmax) holding it


def _bounds(mask):
    kind = mask.kind
    if kind in ("disk", "ring"):
        r = mask.radius if kind == "disk" else mask.r_outer
        return mask.cy - r, mask.cy + r, mask.cx - r, mask.cx + r
    if kind == "rectangle":
        return mask.y0, mask.y0 + mask.height, mask.x0, mask.x0 + mask.width
    if kind == "polygon":
        ys, xs = zip(*mask.vertices)
        return min(ys), max(ys), min(xs), max(xs)
    y, x = _nearest_pixel(mask)  # point
    return y, y, x, x


def _window(box, sig_shape):
    """Integer window [y0, y1) x [x0, x1) of the detector holding every pixel centre in box.

    The window is padded by one pixel on each side so that floating-point rounding in the
    box can never drop a pixel that the shape's own inequality accepts.
    """
    sy, sx = sig_shape
    ymin, ymax, xmin, xmax = box
    y0, y1 = max(math.floor(ymin) - 1, 0), min(math.ceil(ymax) + 2, sy)
    x0, x1 = max(math.floor(xmin) - 1, 0), min(math.ceil(xmax) + 2, sx)
    if y0 >= y1 or x0 >= x1:
        return None
    return y0, y1, x0, x1


def _grid(window):
    y0, y1, x0, x1 = window
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    xs = np.arange(x0, x1, dtype=np.float64)[None, :]
    return ys, xs


def _nearest_pixel(point):
    return math.floor(point.y + 0.5), math.floor(point.x + 0.5)


# --- primitive shapes: boolean "centre inside" tests on the window grid


def squared_distance(ys, xs, cy: float, cx: float):
    """``(ys - cy)**2 + (xs - cx)**2`` (float64): the one formula behind every round
    shape and radial bin, compared with a radius squared as ``r**2``, so a Ring and the
    ring of a radial profile with the same radii hold the same pixels to the last bit."""
    return (ys - cy) ** 2 + (xs - cx) ** 2


def _inside_disk(mask, ys, xs):
    return squared_distance(ys, xs, mask.cy, mask.cx) <= mask.radius**2


def _inside_ring(mask, ys, xs):
    d2 = squared_distance(ys, xs, mask.cy, mask.cx)
    return (mask.r_inner**2 < d2) & (d2 <= mask.r_outer**2)


def _inside_rectangle(mask, ys, xs):
    rows = (ys >= mask.y0) & (ys < mask.y0 + mask.height)
    cols = (xs >= mask.x0) & (xs < mask.x0 + mask.width)
    return rows & cols


def _inside_point(mask, ys, xs):
    y, x = _nearest_pixel(mask)
    return (ys == y) & (xs == x)


def _inside_polygon(mask, ys, xs):
    """Even-odd rule, plus every centre within _EDGE_TOLERANCE of an edge."""
    inside = np.zeros(np.broadcast_shapes(ys.shape, xs.shape), dtype=bool)
    on_edge = np.zeros_like(inside)
    vertices = mask.vertices
    for (ya, xa), (yb, xb) in zip(vertices, vertices[1:] + vertices[:1]):
        dy, dx = yb - ya, xb - xa
        if dy == 0 and dx == 0:
            continue
        if dy != 0:
            # The edge crosses the row through the centre (half-open in y so a vertex is
            # counted once) to the right of the centre: flip parity.
            crosses_row = (ys >= min(ya, yb)) & (ys < max(ya, yb))
            x_cross = xa + (ys - ya) * (dx / dy)
            inside ^= crosses_row & (xs < x_cross)
        length = math.hypot(dy, dx)
        tol = _EDGE_TOLERANCE * length
        along = (ys - ya) * dy + (xs - xa) * dx
        across = (ys - ya) * dx - (xs - xa) * dy
        on_edge |= (np.abs(across) <= tol) & (along >= -tol) & (along <= length**2 + tol)
    return inside | on_edge


_INSIDE = {
    "disk": _inside_disk,
    "ring": _inside_ring,
    "rectangle": _inside_rectangle,
    "point": _inside_point,
    "polygon": _inside_polygon,
}


def _primitive_patch(mask, sig_shape):
    window = _window(_bounds(mask), sig_shape)
    if window is None:
        return _EMPTY
    y0, y1, x0, x1 = window
    inside = _INSIDE[mask.kind]
    values = np.empty((y1 - y0, x1 - x0), np.float32)
    # Evaluate in blocks of rows so that the float64 temporaries stay small.
    step = max(1, _BLOCK_PIXELS // (x1 - x0))
    for r0 in range(y0, y1, step):
        r1 = min(r0 + step, y1)
        values[r0 - y0 : r1 - y0] = inside(mask, *_grid((r0, r1, x0, x1)))
    return MaskPatch(y0, x0, values)


# --- combinations


def _place(patch, window):
    """The patch's values inside ``window`` (zeros where the patch does not reach)."""
    y0, y1, x0, x1 = window
    out = np.zeros((y1 - y0, x1 - x0), np.float32)
    if not patch.is_window_empty:
        rows, cols = patch.slices
        oy0, oy1 = max(rows.start, y0), min(rows.stop, y1)
        ox0, ox1 = max(cols.start, x0), min(cols.stop, x1)
        if oy0 < oy1 and ox0 < ox1:
            out[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0] = patch.values[
                oy0 - rows.start : oy1 - rows.start, ox0 - cols.start : ox1 - cols.start
            ]
    return out


def _union_patch(parts, sig_shape):
    """Elementwise max of the parts' full rasters, evaluated on their joint window."""
    patches = [_patch(p, sig_shape) for p in parts]
    covered = [p for p in patches if not p.is_window_empty]
    if not covered:
        return _EMPTY
    y0 = min(p.y0 for p in covered)
    x0 = min(p.x0 for p in covered)
    y1 = max(p.slices[0].stop for p in covered)
    x1 = max(p.slices[1].stop for p in covered)
    values = np.full((y1 - y0, x1 - x0), -np.inf, np.float32)
    reached = np.zeros(values.shape, np.int32)  # how many parts' windows reach a pixel
    for p in covered:
        rows, cols = p.slices
        region = (slice(rows.start - y0, rows.stop - y0), slice(cols.start - x0, cols.stop - x0))
        np.maximum(values[region], p.values, out=values[region])
        reached[region] += 1
    # A part is zero outside its window, so 0 joins the max wherever some part is absent.
    np.maximum(values, 0, out=values, where=reached < len(patches))
    return MaskPatch(y0, x0, values)


def _difference_patch(mask, sig_shape):
    base = _patch(mask.base, sig_shape)
    if base.is_window_empty:
        return base
    rows, cols = base.slices
    subtract = _place(_patch(mask.subtract, sig_shape), (rows.start, rows.stop, cols.start, cols.stop))
    return MaskPatch(base.y0, base.x0, base.values * (subtract == 0))


def _weighted_patch(mask, sig_shape):
    if tuple(mask.weights.shape) != tuple(sig_shape):
        raise MaskError(
            f"Weighted mask has weights of shape {tuple(mask.weights.shape)} but the detector "
            f"has shape {tuple(sig_shape)}; pass one weight per detector pixel, "
            f"an array of shape {tuple(sig_shape)}"
        )
    return MaskPatch(0, 0, mask.weights)


def _patch(mask, sig_shape):
    kind = getattr(mask, "kind", None)
    if kind in _INSIDE:
        return _primitive_patch(mask, sig_shape)
    if kind == "union":
        return _union_patch(mask.parts, sig_shape)
    if kind == "symmetric_spots":
        return _union_patch(mask.disks(), sig_shape)
    if kind == "difference":
        return _difference_patch(mask, sig_shape)
    if kind == "scaled":
        inner = _patch(mask.mask, sig_shape)
        return MaskPatch(inner.y0, inner.x0, inner.values * np.float32(mask.factor))
    if kind == "weighted":
        return _weighted_patch(mask, sig_shape)
    raise MaskError(
        f"{mask!r} is not a mask; pass a Disk, Ring, Rectangle, Polygon, Point, "
        "SymmetricSpots, Union, Difference, Scaled or Weighted from stem_explorer.masks"
    )


# --- the support: what a mask covers before Difference removes pixels or weights apply


def _has_support(mask, sig_shape):
    kind = mask.kind
    if kind in ("union", "symmetric_spots"):
        parts = mask.parts if kind == "union" else mask.disks()
        return any(_has_support(p, sig_shape) for p in parts)
    if kind == "difference":
        return _has_support(mask.base, sig_shape)
    if kind == "scaled":
        return _has_support(mask.mask, sig_shape)
    if kind == "weighted":
        return True
    return bool(_primitive_patch(mask, sig_shape).values.any())


def _touches(mask, sig_shape):
    """Whether the shapes of ``mask`` reach the area between the detector's pixel centres."""
    kind = mask.kind
    if kind in ("union", "symmetric_spots"):
        parts = mask.parts if kind == "union" else mask.disks()
        return any(_touches(p, sig_shape) for p in parts)
    if kind in ("difference", "scaled"):
        return _touches(mask.base if kind == "difference" else mask.mask, sig_shape)
    if kind == "weighted":
        return True
    ymin, ymax, xmin, xmax = _bounds(mask)
    sy, sx = sig_shape
    return math.ceil(ymin) <= sy - 1 and math.floor(ymax) >= 0 and (
        math.ceil(xmin) <= sx - 1 and math.floor(xmax) >= 0
    )


def _raise_uncovered(mask, sig_shape):
    sy, sx = sig_shape
    if not _touches(mask, sig_shape):
        raise MaskError(
            f"mask {mask!r} lies outside the detector of shape ({sy}, {sx}); move it onto the "
            f"detector (pixel centres span 0 <= y <= {sy - 1}, 0 <= x <= {sx - 1}, row first)"
        )
    raise MaskError(
        f"mask {mask!r} covers no pixel centre of the detector of shape ({sy}, {sx}); pixel "
        "centres are at integer (y, x): make the shape larger or move it, or use Point(y, x) "
        "for a single pixel"
    )


# --- what a rasterisation costs, known before any pixel is evaluated


def pixel_tests(mask, sig_shape) -> int:
    """Pixel tests rasterising ``mask`` costs: the pixels of each shape's window on the
    detector, times the edges of a polygon (it tests every pixel against every edge)."""
    kind = getattr(mask, "kind", None)
    if kind in _INSIDE:
        window = _window(_bounds(mask), sig_shape)
        if window is None:
            return 0
        y0, y1, x0, x1 = window
        return (y1 - y0) * (x1 - x0) * (len(mask.vertices) if kind == "polygon" else 1)
    if kind in ("union", "symmetric_spots"):
        parts = mask.parts if kind == "union" else mask.disks()
        return sum(pixel_tests(p, sig_shape) for p in parts)
    if kind == "difference":
        return pixel_tests(mask.base, sig_shape) + pixel_tests(mask.subtract, sig_shape)
    if kind == "scaled":
        return pixel_tests(mask.mask, sig_shape)
    return sig_shape[0] * sig_shape[1] if kind == "weighted" else 0


def _check_cost(masks, sig_shape, what):
    """MaskError when rasterising ``masks`` would cost more than
    :data:`limits.MAX_PIXEL_TESTS` (minutes of work, or a giant stack)."""
    tests = sum(pixel_tests(m, sig_shape) for m in masks)
    if tests > limits.MAX_PIXEL_TESTS:
        raise MaskError(
            f"rasterising {what} on a detector of shape {sig_shape} would take about {tests:.3g} "
            f"pixel tests, more than {limits.MAX_PIXEL_TESTS:.3g} (minutes of work); use fewer "
            "or smaller shapes, polygons with fewer vertices, or fewer masks"
        )


def rasterize_patch(mask, sig_shape) -> MaskPatch:
    """Rasterise ``mask`` inside its bounding window only (see :class:`MaskPatch`).

    Raises MaskError when the mask covers no pixel of the detector (see
    :func:`rasterize`), or would cost more than :data:`limits.MAX_PIXEL_TESTS`.
    """
    sig_shape = check_sig_shape(sig_shape)
    _check_cost([mask], sig_shape, "this mask")
    patch = _patch(mask, sig_shape)
    # Any nonzero pixel proves support; only all-zero results need the slower check.
    if not patch.values.any() and not _has_support(mask, sig_shape):
        _raise_uncovered(mask, sig_shape)
    return patch


def rasterize(mask, sig_shape) -> np.ndarray:
    """Rasterise ``mask`` to a float32 array of shape ``sig_shape``.

    Geometric shapes give 0/1, Union the elementwise max of its parts, Difference
    ``base * (subtract == 0)``, Scaled ``factor * mask`` and Weighted its weights.
    A shape partly off the detector is clipped. A mask whose shapes cover no pixel of the
    detector raises MaskError; a mask that covers pixels and then removes them all (a
    Difference) rasterises to zeros, see :func:`is_empty`.
    """
    patch = rasterize_patch(mask, sig_shape)
    out = np.zeros(check_sig_shape(sig_shape), np.float32)
    if not patch.is_window_empty:
        out[patch.slices] = patch.values
    return out


def is_empty(mask, sig_shape) -> bool:
    """True when ``mask`` has no nonzero pixel on a detector of ``sig_shape``.

    Unlike :func:`rasterize`, a mask outside the detector is simply empty here.
    """
    sig_shape = check_sig_shape(sig_shape)
    _check_cost([mask], sig_shape, "this mask")
    return not _patch(mask, sig_shape).values.any()


# --- stacks of masks: the (pixels x masks) matrix of the GEMM


class MaskStack:
    """``m`` masks as the ``(c, m)`` matrix of ``frames (n, c) @ masks (c, m)``.

    Rows are detector pixels in C order (row ``y * sx + x``), columns are masks in the
    order given. ``sparse`` is a float32 ``scipy.sparse.csr_matrix``; ``dense`` is built
    from it on first use and cached. Pickling keeps only the nonzero entries, so a stack
    of small masks pickles to a few kB even for a 4096 x 4096 detector.
    """

    def __init__(self, sparse_matrix, sig_shape, names=None):
        """Wrap a ``(sy * sx, m)`` sparse matrix; ``names`` is None or m strings."""
        self.sig_shape = check_sig_shape(sig_shape)
        matrix = sparse.csr_matrix(sparse_matrix, dtype=np.float32)
        c = self.sig_shape[0] * self.sig_shape[1]
        if matrix.shape[0] != c or matrix.shape[1] < 1:
            raise MaskError(
                f"a mask stack for sig_shape {self.sig_shape} needs shape ({c}, m >= 1), "
                f"got {matrix.shape}; build it with stack_masks(masks, sig_shape)"
            )
        matrix.sum_duplicates()
        self.sparse = matrix
        self.names = _check_names(names, matrix.shape[1])
        self._dense = None

    @property
    def n_masks(self) -> int:
        """Number of masks (columns)."""
        return self.sparse.shape[1]

    @property
    def nnz(self) -> int:
        """Number of stored nonzero entries over all masks."""
        return int(self.sparse.nnz)

    @property
    def density(self) -> float:
        """Fraction of nonzero entries, ``nnz / (c * m)``."""
        return self.nnz / (self.sparse.shape[0] * self.sparse.shape[1])

    @property
    def dense(self) -> np.ndarray:
        """The float32 ``(c, m)`` matrix as a C-ordered numpy array (built once, cached)."""
        if self._dense is None:
            self._dense = self.sparse.toarray()
        return self._dense

    def __repr__(self):
        return (
            f"MaskStack(n_masks={self.n_masks}, sig_shape={self.sig_shape}, nnz={self.nnz}, "
            f"density={self.density:.3g})"
        )

    def __getstate__(self):
        coo = self.sparse.tocoo()
        row_dtype = np.int32 if coo.shape[0] < 2**31 else np.int64
        return {
            "sig_shape": self.sig_shape,
            "n_masks": self.n_masks,
            "names": self.names,
            "rows": coo.row.astype(row_dtype),
            "cols": coo.col.astype(np.int32),
            "data": coo.data.astype(np.float32),
        }

    def __setstate__(self, state):
        sy, sx = state["sig_shape"]
        shape = (sy * sx, state["n_masks"])
        matrix = sparse.csr_matrix((state["data"], (state["rows"], state["cols"])), shape=shape)
        self.__init__(matrix, state["sig_shape"], state["names"])


def _check_names(names, m):
    if names is None:
        return None
    names = tuple(names)
    if len(names) != m or not all(isinstance(n, str) for n in names):
        raise MaskError(
            f"names must be {m} strings, one per mask, got {names!r}; pass one name per "
            "mask or names=None"
        )
    return names


def stack_masks(masks, sig_shape, names=None) -> MaskStack:
    """Rasterise ``masks`` (a sequence, or a mapping name -> mask) into a :class:`MaskStack`.

    The sparse matrix is assembled from each mask's bounding-window raster, so the dense
    ``(c, m)`` matrix is never built unless ``MaskStack.dense`` is asked for.
    """
    sig_shape = check_sig_shape(sig_shape)
    if hasattr(masks, "keys") and "kind" in masks:
        raise MaskError("stack_masks got one mask description (a dict with 'kind'); pass a "
                        "list of masks, e.g. [from_dict(d)]")
    if hasattr(masks, "keys"):
        names, masks = (list(masks.keys()) if names is None else names), list(masks.values())
    elif hasattr(masks, "kind") or not hasattr(masks, "__iter__"):
        raise MaskError(f"stack_masks expects a sequence of masks, got {masks!r}; wrap it in a list")
    masks = list(masks)
    if not masks:
        raise MaskError("stack_masks needs at least one mask; pass a non-empty list of masks")
    _check_cost(masks, sig_shape, f"{len(masks)} masks")
    rows, cols, data = [], [], []
    for i, mask in enumerate(masks):
        try:
            flat, values = rasterize_patch(mask, sig_shape).nonzero_pixels(sig_shape[1])
        except MaskError as exc:
            raise MaskError(f"masks[{i}]: {exc}") from exc
        rows.append(flat)
        cols.append(np.full(flat.shape, i, np.int64))
        data.append(values)
    shape = (sig_shape[0] * sig_shape[1], len(masks))
    matrix = sparse.csr_matrix(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
        shape=shape, dtype=np.float32,
    )
    return MaskStack(matrix, sig_shape, names)
