"""Detector masks: JSON-able shape descriptions, rasterised for the ``frames @ masks`` GEMM.

Coordinates
-----------
Detector pixel (row y, column x) has its centre at the integer point (y, x); shapes take
floating-point positions in the same pixel units, **row first** ``(y, x)`` / ``(cy, cx)``.
A pixel belongs to a shape when its centre does:

- ``Disk(cy, cx, radius)``: ``(y - cy)**2 + (x - cx)**2 <= radius**2``
- ``Ring(cy, cx, r_inner, r_outer)``: ``r_inner**2 < d2 <= r_outer**2`` (so exactly
  ``Disk(.., r_outer) - Disk(.., r_inner)``)
- ``Rectangle(y0, x0, height, width)``: ``y0 <= y < y0 + height``, ``x0 <= x < x0 + width``
  (half-open, so adjacent rectangles tile)
- ``Polygon(vertices)``: even-odd rule, centres on the boundary included
- ``Point(y, x)``: the pixel ``(floor(y + 0.5), floor(x + 0.5))``
- ``SymmetricSpots(cy, cx, distance, radius, n, angle=0)``: n disks, angles in degrees
  from +x towards +y

Annular regions follow one rule: a pixel at exactly a boundary radius belongs to the
inner region. Disks are closed, rings are open at their inner radius and closed at
their outer one, so a bright-field ``Disk(c, r)`` and an annular ``Ring(c, r, R)`` split
the detector with no pixel counted twice or lost; the rings of
``analyses.RadialProfile`` follow it too (ring ``i`` is ``Ring(c, edges[i], edges[i+1])``,
the first one a ``Disk`` when it starts at 0, so the centre pixel counts). LiberTEM's
``masks.circular`` and ``masks.ring`` draw the same pixels; py4DSTEM's circular and
annular detectors leave out both boundaries, and ``numpy.histogram`` bins are closed
at the inner edge instead.

``Union`` (``a | b``, elementwise max), ``Difference`` (``a - b``, ``base * (subtract ==
0)``), ``Scaled`` (``factor * a``) and ``Weighted`` (any float weights) combine them.

Bounds
------
Every number, count and nesting depth is bounded (:mod:`stem_explorer.masks.limits`,
stated in the schema too): coordinates and sizes within 1e6 pixels, mask values within
1e20 (float32 masks), at most 4096 shapes, 4096 polygon vertices and 32 levels of
combination, and a rasterisation may cost at most 2**31 pixel tests. Past a bound,
construction, :func:`from_dict` or rasterisation raise MaskError at once.

Serialisation
-------------
``mask.to_dict()`` / :func:`from_dict` and :func:`mask_to_json` / :func:`mask_from_json`
use plain dicts ``{"kind": ..., <fields>}`` described by the JSON Schema in
``schema.json`` (draft 2020-12); :func:`validate_mask_dict` checks a dict against it.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from ..errors import MaskError
from . import limits
from .raster import (
    MaskPatch,
    MaskStack,
    check_sig_shape,
    is_empty,
    pixel_tests,
    rasterize,
    rasterize_patch,
    squared_distance,
    stack_masks,
)
from .shapes import (
    KINDS,
    Difference,
    Disk,
    Mask,
    Point,
    Polygon,
    Rectangle,
    Ring,
    Scaled,
    SymmetricSpots,
    Union,
    Weighted,
    _from_validated,
    _quote,
    _short,
)

__all__ = [
    "KINDS",
    "Difference",
    "Disk",
    "Mask",
    "MaskPatch",
    "MaskStack",
    "Point",
    "Polygon",
    "Rectangle",
    "Ring",
    "Scaled",
    "SymmetricSpots",
    "Union",
    "Weighted",
    "check_sig_shape",
    "from_dict",
    "is_empty",
    "load_schema",
    "mask_from_json",
    "mask_to_json",
    "pixel_tests",
    "prepare_validation",
    "rasterize",
    "rasterize_patch",
    "squared_distance",
    "stack_masks",
    "validate_mask_dict",
]


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    """The mask JSON Schema (draft 2020-12) as a dict. Do not modify the returned dict."""
    text = resources.files(__name__).joinpath("schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def _validator():
    # imported here, not with the package: importing jsonschema loads its optional
    # format checkers (rfc3987-syntax builds a grammar: about a second), which dask
    # workers never need and a session should not wait for
    import jsonschema

    return jsonschema.Draft202012Validator(load_schema())


def prepare_validation() -> None:
    """Load the schema validator now (about a second, once per process), e.g. in a
    background thread while a UI starts, so the first mask dict validates at once."""
    _validator()


def _branches() -> dict[str, int]:
    """Kind -> index of its branch in the schema's ``oneOf``."""
    schema = load_schema()
    refs = [b["$ref"].rsplit("/", 1)[-1] for b in schema["$defs"]["mask"]["oneOf"]]
    return {schema["$defs"][r]["properties"]["kind"]["const"]: i for i, r in enumerate(refs)}


def _fields_hint(kind: str) -> str:
    branch = load_schema()["$defs"][kind]
    fields = [
        f + ("" if f in branch["required"] else " (optional)")
        for f in branch["properties"] if f != "kind"
    ]
    return f"a '{kind}' mask has fields {', '.join(fields)} (see stem_explorer/masks/schema.json)"


def _schema_error(error) -> MaskError:
    """Turn a jsonschema error into a MaskError about the branch matching the dict's kind."""
    branches = _branches()
    known = ", ".join(branches)
    kind = None
    # oneOf reports every branch's complaints; follow only the branch named by "kind".
    while error.validator == "oneOf" and error.context:
        inst, path = error.instance, error.json_path
        if not isinstance(inst, dict):
            return MaskError(
                f"mask description at {path} must be an object with a 'kind', got "
                f"{_quote(inst)}; pass e.g. {{'kind': 'disk', 'cy': 128, 'cx': 128, 'radius': 10}}"
            )
        if "kind" not in inst:
            return MaskError(f"mask description at {path} has no 'kind'; add \"kind\": one of {known}")
        if not isinstance(inst["kind"], str) or inst["kind"] not in branches:
            return MaskError(
                f"unknown mask kind {_quote(inst['kind'])} at {path}; use one of: {known}"
            )
        kind = inst["kind"]
        error = next(e for e in error.context if e.relative_schema_path[0] == branches[kind])
    if error.validator in _BOUNDS:
        hint = "pass a value within that bound (why each bound: stem_explorer.masks.limits)"
    else:
        hint = _fields_hint(kind) if kind else "see stem_explorer/masks/schema.json"
    return MaskError(f"invalid {kind or 'mask'} description at {error.json_path}: {_short(error.message)}; {hint}")


_BOUNDS = {"minimum", "maximum", "exclusiveMinimum", "maxItems"}


def validate_mask_dict(d) -> None:
    """Check ``d`` against the mask JSON Schema; raise MaskError naming the JSON path.

    Only the structure is checked here (kinds, fields, types, signs); :func:`from_dict`
    also applies the checks of the mask classes (e.g. ``r_inner < r_outer``).
    """
    error = next(iter(_validator().iter_errors(d)), None)
    if error is not None:
        raise _schema_error(error) from None


def from_dict(d) -> Mask:
    """Build a mask from its ``to_dict()`` form, validating it first (MaskError if invalid)."""
    _check_nesting(d)
    validate_mask_dict(d)
    return _from_validated(d)


# Containers on the way down one mask level: two for a union (its object, the parts
# list), one for difference and scaled; a leaf adds at most two (polygon vertices).
_MOST_CONTAINERS = 2 * limits.MAX_DEPTH + 3


def _check_nesting(d) -> None:
    """MaskError for a description nested deeper than any mask within
    :data:`limits.MAX_DEPTH` can be, found layer by layer without recursion: the schema
    validator and the builders recurse, and deep JSON took them past Python's recursion
    limit. (The mask classes then check the exact depth.)"""
    layer, depth = [d], 1
    while layer:
        if depth > _MOST_CONTAINERS:
            raise MaskError(
                f"mask description is nested more than {_MOST_CONTAINERS} containers deep, but "
                f"masks nest at most {limits.MAX_DEPTH} levels; flatten it (one union with many "
                "parts instead of unions of unions)"
            )
        layer = [
            child
            for value in layer
            for child in (value.values() if isinstance(value, dict) else value if isinstance(value, list) else ())
            if isinstance(child, (dict, list))
        ]
        depth += 1


def mask_to_json(mask: Mask, **json_kwargs) -> str:
    """``json.dumps(mask.to_dict(), **json_kwargs)``."""
    if not isinstance(mask, Mask):
        raise MaskError(f"mask_to_json expects a mask, got {mask!r}; pass e.g. Disk(128, 128, 10)")
    return json.dumps(mask.to_dict(), allow_nan=False, **json_kwargs)


def mask_from_json(text) -> Mask:
    """Inverse of :func:`mask_to_json`."""
    try:
        d = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise MaskError(f"mask JSON could not be parsed ({exc}); pass the string written by "
                        "mask_to_json()") from None
    return from_dict(d)
