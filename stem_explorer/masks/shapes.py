"""Mask descriptions: small, frozen, JSON-able dataclasses.

Coordinates are detector pixel coordinates, row first: the centre of pixel (row y,
column x) is the integer point (y, x), and shapes take floating-point positions in the
same units. A pixel belongs to a shape when its centre does; see each class for the
exact inequality. Rasterisation lives in :mod:`stem_explorer.masks.raster`.

Every numeric field is validated on construction (finite, within the bounds of
:mod:`stem_explorer.masks.limits`, and positive where a size is meant) and stored as a
Python float, so equal descriptions compare and hash equal and survive a JSON round
trip unchanged.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import numbers
import reprlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import MaskError
from . import limits, raster

__all__ = [
    "Difference",
    "Disk",
    "KINDS",
    "Mask",
    "Point",
    "Polygon",
    "Rectangle",
    "Ring",
    "Scaled",
    "SymmetricSpots",
    "Union",
    "Weighted",
]


def _number(owner, name, value, minimum=None, strict=True, limit=limits.MAX_EXTENT, units=" pixels"):
    """Validate one numeric field: finite, at most ``limit`` in magnitude, and with a
    ``minimum``, ``value > minimum`` (``>=`` unless ``strict``)."""
    what = "finite number"
    if minimum == 0:
        what = "positive finite number" if strict else "non-negative finite number"
    got = _quote(value)
    if not isinstance(value, bool) and isinstance(value, numbers.Real):
        try:
            value = float(value)
        except OverflowError:  # an int beyond the float range
            value = math.inf
        ok = math.isfinite(value) and abs(value) <= limit and (
            minimum is None or value > minimum or (not strict and value == minimum)
        )
        if ok:
            return value
    if minimum is None:
        bound, fix = f"between -{limit:g} and {limit:g}{units}", f"-{limit:g} <= {name} <= {limit:g}"
    else:
        bound, fix = f"of at most {limit:g}{units}", f"{name} {'>' if strict else '>='} {minimum} and <= {limit:g}"
    raise MaskError(f"{owner} {name} must be a {what} {bound}, got {got}; pass {fix}")


def _short(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, for messages."""
    return text if len(text) <= limit else text[:limit] + "..."


_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 60


def _quote(value) -> str:
    """A repr of user input for messages, short however large the input (the full
    repr of a 5-million-vertex list took seconds and 40 MB)."""
    return _QUOTE.repr(value)


def _set(obj, name, value):
    object.__setattr__(obj, name, value)


def _combine(obj, owner, children, peak):
    """Record the bookkeeping of a combination of ``children`` on ``obj``, refusing
    one past :data:`limits.MAX_DEPTH` or :data:`limits.MAX_SHAPES`."""
    depth = 1 + max(child._depth for child in children)
    shapes = sum(child._shapes for child in children)
    if depth > limits.MAX_DEPTH:
        raise MaskError(
            f"{owner} nests masks {depth} levels deep, more than {limits.MAX_DEPTH}; flatten "
            "the description (a | b | c is one Union of three parts)"
        )
    if shapes > limits.MAX_SHAPES:
        raise MaskError(
            f"{owner} holds {shapes} shapes, more than {limits.MAX_SHAPES}; use fewer shapes "
            "(Union parts, SymmetricSpots n)"
        )
    _set(obj, "_depth", depth)
    _set(obj, "_shapes", shapes)
    _set(obj, "_peak", peak)


def _check_mask(owner, name, value):
    if not isinstance(value, Mask):
        raise MaskError(
            f"{owner} {name} must be a mask (Disk, Ring, ...), got {value!r}; build it with "
            "stem_explorer.masks or from_dict()"
        )
    return value


class Mask:
    """Base class of all mask descriptions.

    Masks combine with ``a | b`` (:class:`Union`), ``a - b`` (:class:`Difference`) and
    ``factor * a`` (:class:`Scaled`).
    """

    __slots__ = ()
    kind: ClassVar[str] = ""
    __array_ufunc__ = None  # so that numpy scalars defer to __rmul__
    # Bookkeeping for the limits (stem_explorer.masks.limits), kept per instance by the
    # combinations so that checking a new one never walks the whole tree: nesting
    # depth, number of primitive shapes, and largest |value| of the raster.
    _depth = 1
    _shapes = 1
    _peak = 1.0

    def rasterize(self, sig_shape) -> np.ndarray:
        """Float32 array of shape ``sig_shape``; see :func:`stem_explorer.masks.rasterize`."""
        return raster.rasterize(self, sig_shape)

    def is_empty(self, sig_shape) -> bool:
        """True when the mask has no nonzero pixel on a detector of ``sig_shape``."""
        return raster.is_empty(self, sig_shape)

    def to_dict(self) -> dict:
        """Plain JSON-able dict: ``{"kind": ..., <field>: <value>, ...}``."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"kind": self.kind, **fields}

    @classmethod
    def _from_fields(cls, fields: dict):
        """Build from the fields of a validated dict (without ``kind``)."""
        return cls(**fields)

    def __or__(self, other):
        if not isinstance(other, Mask):
            return NotImplemented
        return Union(_parts(self) + _parts(other))

    def __sub__(self, other):
        if not isinstance(other, Mask):
            return NotImplemented
        return Difference(self, other)

    def __mul__(self, factor):
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
            return NotImplemented
        return Scaled(self, factor)

    __rmul__ = __mul__


def _parts(mask):
    return mask.parts if isinstance(mask, Union) else (mask,)


@dataclass(frozen=True)
class Disk(Mask):
    """Pixels whose centre satisfies ``(y - cy)**2 + (x - cx)**2 <= radius**2``."""

    kind: ClassVar[str] = "disk"
    cy: float
    cx: float
    radius: float

    def __post_init__(self):
        _set(self, "cy", _number("Disk", "cy", self.cy))
        _set(self, "cx", _number("Disk", "cx", self.cx))
        _set(self, "radius", _number("Disk", "radius", self.radius, minimum=0))


@dataclass(frozen=True)
class Ring(Mask):
    """Pixels with ``r_inner**2 < d2 <= r_outer**2``, ``d2 = (y - cy)**2 + (x - cx)**2``.

    So ``Ring(cy, cx, a, b)`` rasterises exactly like ``Disk(cy, cx, b) - Disk(cy, cx, a)``.
    ``r_inner`` may be 0, which still leaves out a pixel centred exactly on (cy, cx); use a
    :class:`Disk` for a full disk.
    """

    kind: ClassVar[str] = "ring"
    cy: float
    cx: float
    r_inner: float
    r_outer: float

    def __post_init__(self):
        _set(self, "cy", _number("Ring", "cy", self.cy))
        _set(self, "cx", _number("Ring", "cx", self.cx))
        _set(self, "r_inner", _number("Ring", "r_inner", self.r_inner, minimum=0, strict=False))
        _set(self, "r_outer", _number("Ring", "r_outer", self.r_outer, minimum=0))
        if self.r_inner >= self.r_outer:
            raise MaskError(
                f"Ring r_inner must be smaller than r_outer, got r_inner={self.r_inner}, "
                f"r_outer={self.r_outer}; pass 0 <= r_inner < r_outer"
            )


@dataclass(frozen=True)
class Rectangle(Mask):
    """Pixels with ``y0 <= y < y0 + height`` and ``x0 <= x < x0 + width``.

    Half-open, so rectangles placed side by side tile the detector without overlap.
    """

    kind: ClassVar[str] = "rectangle"
    y0: float
    x0: float
    height: float
    width: float

    def __post_init__(self):
        _set(self, "y0", _number("Rectangle", "y0", self.y0))
        _set(self, "x0", _number("Rectangle", "x0", self.x0))
        _set(self, "height", _number("Rectangle", "height", self.height, minimum=0))
        _set(self, "width", _number("Rectangle", "width", self.width, minimum=0))


@dataclass(frozen=True)
class Polygon(Mask):
    """Pixels whose centre is inside the polygon by the even-odd rule, or on its boundary.

    ``vertices`` is a sequence of ``(y, x)`` points (closed implicitly: the last joins
    the first). A centre within 1e-9 pixel of an edge counts as inside, so the polygon is
    a closed set: a square with corners at (2, 3) and (6, 8) covers rows 2..6 and columns
    3..8. Put vertices on half-integers (e.g. 1.5) to avoid centres on the boundary.
    Self-intersecting polygons are allowed (even-odd leaves out doubly-covered areas).
    """

    kind: ClassVar[str] = "polygon"
    vertices: tuple

    def __post_init__(self):
        try:
            points = [tuple(v) for v in self.vertices]
        except TypeError:
            points = None
        if points is None or isinstance(self.vertices, (str, bytes)) or any(len(p) != 2 for p in points):
            raise MaskError(
                f"Polygon vertices must be a sequence of (y, x) pairs, got {_quote(self.vertices)}; "
                "pass e.g. [(0, 0), (0, 10), (10, 5)]"
            )
        if len(points) > limits.MAX_VERTICES:
            raise MaskError(
                f"Polygon has {len(points)} vertices, more than {limits.MAX_VERTICES}; simplify "
                "it (e.g. skimage.measure.approximate_polygon)"
            )
        vertices = tuple(
            (_number("Polygon", f"vertices[{i}] y", y), _number("Polygon", f"vertices[{i}] x", x))
            for i, (y, x) in enumerate(points)
        )
        if len(set(vertices)) < 3:
            raise MaskError(
                f"Polygon needs at least 3 distinct vertices, got {len(set(vertices))}: "
                f"{list(vertices)}; add vertices (for a line or a point use a thin Rectangle "
                "or a Point)"
            )
        twice_area = sum(
            ya * xb - yb * xa for (ya, xa), (yb, xb) in zip(vertices, vertices[1:] + vertices[:1])
        )
        if twice_area == 0:
            raise MaskError(
                f"Polygon vertices are collinear (zero area): {list(vertices)}; pass vertices "
                "that enclose an area"
            )
        _set(self, "vertices", vertices)

    def to_dict(self) -> dict:
        """``{"kind": "polygon", "vertices": [[y, x], ...]}``."""
        return {"kind": self.kind, "vertices": [list(v) for v in self.vertices]}


@dataclass(frozen=True)
class Point(Mask):
    """The single pixel nearest to (y, x): row ``floor(y + 0.5)``, column ``floor(x + 0.5)``.

    Halves round up (towards +y / +x), e.g. ``Point(2.5, -0.5)`` is pixel (3, 0).
    """

    kind: ClassVar[str] = "point"
    y: float
    x: float

    def __post_init__(self):
        _set(self, "y", _number("Point", "y", self.y))
        _set(self, "x", _number("Point", "x", self.x))


@dataclass(frozen=True)
class SymmetricSpots(Mask):
    """Union of ``n`` disks of ``radius`` at ``distance`` from (cy, cx), e.g. Bragg disks.

    Disk k sits at angle ``angle + k * 360 / n`` degrees, measured from the +x axis
    towards +y (down the rows): its centre is
    ``(cy + distance * sin(theta), cx + distance * cos(theta))``.
    """

    kind: ClassVar[str] = "symmetric_spots"
    cy: float
    cx: float
    distance: float
    radius: float
    n: int
    angle: float = 0.0

    def __post_init__(self):
        name = "SymmetricSpots"
        _set(self, "cy", _number(name, "cy", self.cy))
        _set(self, "cx", _number(name, "cx", self.cx))
        _set(self, "distance", _number(name, "distance", self.distance, minimum=0, strict=False))
        _set(self, "radius", _number(name, "radius", self.radius, minimum=0))
        _set(self, "angle", _number(name, "angle", self.angle, units=" degrees"))
        n = self.n
        if isinstance(n, bool) or not isinstance(n, numbers.Real) or not (
            math.isfinite(n) and float(n).is_integer() and 1 <= n <= limits.MAX_SHAPES
        ):
            raise MaskError(
                f"SymmetricSpots n must be a positive integer of at most {limits.MAX_SHAPES}, "
                f"got {_quote(n)}; pass 1 <= n <= {limits.MAX_SHAPES}"
            )
        _set(self, "n", int(n))
        _set(self, "_shapes", self.n)

    def disks(self) -> tuple[Disk, ...]:
        """The ``n`` :class:`Disk` masks making up the spots, in angle order."""
        out = []
        for k in range(self.n):
            theta = math.radians(self.angle + k * 360.0 / self.n)
            cy = self.cy + self.distance * math.sin(theta)
            cx = self.cx + self.distance * math.cos(theta)
            out.append(Disk(cy, cx, self.radius))
        return tuple(out)


@dataclass(frozen=True)
class Union(Mask):
    """Elementwise maximum of the parts (for 0/1 shapes: a pixel in any part)."""

    kind: ClassVar[str] = "union"
    parts: tuple

    def __post_init__(self):
        if isinstance(self.parts, Mask) or not hasattr(self.parts, "__iter__"):
            raise MaskError(f"Union parts must be a sequence of masks, got {self.parts!r}; "
                            "pass e.g. Union([disk1, disk2]) or disk1 | disk2")
        parts = tuple(_check_mask("Union", f"parts[{i}]", p) for i, p in enumerate(self.parts))
        if not parts:
            raise MaskError("Union needs at least one part, got none; pass a list of masks")
        _combine(self, "Union", parts, max(p._peak for p in parts))
        _set(self, "parts", parts)

    def to_dict(self) -> dict:
        """``{"kind": "union", "parts": [<mask dict>, ...]}``."""
        return {"kind": self.kind, "parts": [p.to_dict() for p in self.parts]}

    @classmethod
    def _from_fields(cls, fields):
        return cls(tuple(_from_validated(p) for p in fields["parts"]))


@dataclass(frozen=True)
class Difference(Mask):
    """``base`` with every pixel where ``subtract`` is nonzero set to 0.

    Raster: ``base * (subtract == 0)``.
    """

    kind: ClassVar[str] = "difference"
    base: Mask
    subtract: Mask

    def __post_init__(self):
        _check_mask("Difference", "base", self.base)
        _check_mask("Difference", "subtract", self.subtract)
        _combine(self, "Difference", (self.base, self.subtract), self.base._peak)

    def to_dict(self) -> dict:
        """``{"kind": "difference", "base": <mask dict>, "subtract": <mask dict>}``."""
        return {"kind": self.kind, "base": self.base.to_dict(), "subtract": self.subtract.to_dict()}

    @classmethod
    def _from_fields(cls, fields):
        return cls(_from_validated(fields["base"]), _from_validated(fields["subtract"]))


@dataclass(frozen=True)
class Scaled(Mask):
    """``factor`` times ``mask`` (computed in float32); any finite factor."""

    kind: ClassVar[str] = "scaled"
    mask: Mask
    factor: float

    def __post_init__(self):
        _check_mask("Scaled", "mask", self.mask)
        factor = _number("Scaled", "factor", self.factor, limit=limits.MAX_WEIGHT, units="")
        peak = abs(factor) * self.mask._peak
        if peak > limits.MAX_WEIGHT or 0 < peak < limits.MIN_WEIGHT:
            raise MaskError(
                f"Scaled factor {factor!r} makes mask values of magnitude {peak:g}, outside "
                f"[{limits.MIN_WEIGHT:g}, {limits.MAX_WEIGHT:g}] (float32 masks overflow above, "
                "vanish below); pass a factor that keeps |factor| times the mask's largest "
                "value in that range, or 0"
            )
        _combine(self, "Scaled", (self.mask,), peak)
        _set(self, "factor", factor)

    def to_dict(self) -> dict:
        """``{"kind": "scaled", "mask": <mask dict>, "factor": f}``."""
        return {"kind": self.kind, "mask": self.mask.to_dict(), "factor": self.factor}

    @classmethod
    def _from_fields(cls, fields):
        return cls(_from_validated(fields["mask"]), fields["factor"])


@dataclass(frozen=True, eq=False)
class Weighted(Mask):
    """An arbitrary weight per detector pixel: a 2-D array of shape ``sig_shape``.

    The weights are stored as a read-only float32 copy (bool and integer arrays are
    accepted). In JSON they travel as
    ``{"shape": [sy, sx], "dtype": "float32", "data_b64": <base64 little-endian bytes>}``.
    Two Weighted masks are equal when their arrays are.
    """

    kind: ClassVar[str] = "weighted"
    weights: np.ndarray

    def __post_init__(self):
        arr = np.asarray(self.weights)
        if arr.dtype.kind not in "biuf":
            raise MaskError(f"Weighted weights must be a real numeric array, got dtype "
                            f"{arr.dtype}; pass float weights, e.g. weights.astype(np.float32)")
        if arr.ndim != 2 or arr.size == 0:
            raise MaskError(f"Weighted weights must be a non-empty 2-D array (sy, sx), got shape "
                            f"{arr.shape}; pass one weight per detector pixel")
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.array(arr, dtype=np.float32, order="C")
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise MaskError(f"Weighted weights contain {bad} non-finite values (NaN, inf or "
                            "beyond float32 range); replace them, e.g. with np.nan_to_num")
        peak = float(np.abs(arr).max())
        if peak > limits.MAX_WEIGHT:
            raise MaskError(f"Weighted weights reach {peak:g}, more than {limits.MAX_WEIGHT:g} in "
                            "magnitude (the float32 mask product would overflow); rescale them")
        _set(self, "_peak", peak)
        arr.setflags(write=False)
        _set(self, "weights", arr)

    def __eq__(self, other):
        if not isinstance(other, Weighted):
            return NotImplemented
        return self.weights.shape == other.weights.shape and bool(
            np.array_equal(self.weights, other.weights)
        )

    def __hash__(self):
        return hash((self.weights.shape, self.weights.tobytes()))

    def __repr__(self):
        return f"Weighted(weights=<float32 array of shape {self.weights.shape}>)"

    def to_dict(self) -> dict:
        """``{"kind": "weighted", "weights": {"shape", "dtype", "data_b64"}}``."""
        data = self.weights.astype("<f4").tobytes()
        return {
            "kind": self.kind,
            "weights": {
                "shape": list(self.weights.shape),
                "dtype": "float32",
                "data_b64": base64.b64encode(data).decode("ascii"),
            },
        }

    @classmethod
    def _from_fields(cls, fields):
        spec = fields["weights"]
        shape = tuple(spec["shape"])
        try:
            data = base64.b64decode(spec["data_b64"], validate=True)
        except ValueError as exc:
            raise MaskError(f"Weighted data_b64 is not valid base64 ({exc}); pass the string "
                            "written by Weighted.to_dict()") from exc
        need = 4 * math.prod(shape)
        if len(data) != need:
            raise MaskError(f"Weighted data_b64 holds {len(data)} bytes but shape {shape} of "
                            f"float32 needs {need}; pass matching shape and data")
        return cls(np.frombuffer(data, dtype="<f4").reshape(shape))


KINDS: dict[str, type[Mask]] = {
    cls.kind: cls
    for cls in (Disk, Ring, Rectangle, Polygon, Point, SymmetricSpots, Union, Difference,
                Scaled, Weighted)
}
"""Mask classes by their ``kind`` string."""


def _from_validated(d: dict) -> Mask:
    """Build a mask from a dict already validated against the schema."""
    fields = {k: v for k, v in d.items() if k != "kind"}
    return KINDS[d["kind"]]._from_fields(fields)
