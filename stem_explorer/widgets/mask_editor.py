"""MaskEditor: draw detector masks over a diffraction pattern in Jupyter.

The editor shows a detector image and lets the user draw disks, rings, rectangles,
polygons, points and symmetric spots over it, each adding to the mask or cutting out of
it. Shapes are the mask dicts of :mod:`stem_explorer.masks` (row first, pixel centres at
integer coordinates) plus the editor key ``"op"``; :meth:`MaskEditor.mask` combines them
into one :class:`~stem_explorer.masks.Mask`. The front end is ``js/src/mask_editor.js``
(an anywidget ES module), built into ``stem_explorer/static/``.

The kernel has the last word on shapes: a shape the masks layer rejects, or one that
covers no pixel of the detector, is dropped from ``shapes`` with a ``hint`` saying why.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import anywidget
import numpy as np
import traitlets

from ..errors import MaskError, WidgetError
from ..masks import Difference, Mask, Union, from_dict, is_empty
from ._bundle import esm_path
from .limits import robust_limits
from .scale import STYLES

__all__ = ["COLORMAPS", "EDITABLE_KINDS", "OPS", "TOOLS", "MaskEditor"]

#: Tools of the editor's toolbar (``"spots"`` draws symmetric_spots).
TOOLS = ("select", "disk", "ring", "rectangle", "polygon", "point", "spots")
#: How a shape combines with the others.
OPS = ("add", "subtract")
#: Colour maps of the editor: those of colormaps.json (shared with js/src/colormaps.js).
COLORMAPS = tuple(
    name
    for name in json.loads(resources.files(__package__).joinpath("colormaps.json").read_text("utf-8"))
    if not name.startswith("_")
)
#: Mask kinds the editor draws and edits.
EDITABLE_KINDS = ("disk", "ring", "rectangle", "polygon", "point", "symmetric_spots")

@functools.lru_cache(maxsize=256)
def _covers_no_pixel(mask: Mask, sig_shape: tuple[int, int]) -> bool:
    return is_empty(mask, sig_shape)


def _check_shape(item, sig_shape) -> dict:
    """The normalised shape dict of ``item``; MaskError saying why if the editor refuses it."""
    if not isinstance(item, dict):
        raise MaskError(f"a shape must be a mask dict with an 'op', got {item!r}")
    op = item.get("op", "add")
    if op not in OPS:
        raise MaskError(f"op must be 'add' or 'subtract', got {op!r}")
    description = {k: v for k, v in item.items() if k != "op"}
    kind = description.get("kind")
    if kind not in EDITABLE_KINDS:
        raise MaskError(
            f"{kind!r} shapes cannot be edited here; the editor takes {', '.join(EDITABLE_KINDS)}"
        )
    vertices = description.get("vertices")
    if kind == "polygon" and isinstance(vertices, list) and len(vertices) < 3:
        raise MaskError(f"a polygon needs at least 3 points, got {len(vertices)}")
    mask = from_dict(description)
    if sig_shape is not None and _covers_no_pixel(mask, sig_shape):
        rows, cols = sig_shape
        raise MaskError(
            f"{kind} covers no pixel of the {rows} x {cols} detector (it lies outside it, or "
            "between pixel centres)"
        )
    return {**mask.to_dict(), "op": op}


def _float32_image(array) -> np.ndarray:
    image = np.asarray(array)
    if image.ndim != 2 or image.size == 0 or image.dtype.kind not in "biuf":
        raise WidgetError(
            f"the MaskEditor shows a non-empty 2-D real array (rows, cols), got "
            f"{image.dtype} of shape {image.shape}; pass one detector frame, e.g. the mean "
            "pattern or data[y, x]"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(image, dtype="<f4")


class MaskEditor(anywidget.AnyWidget):
    """Draw a detector mask over an image; ``mask()`` is the result.

    ``MaskEditor(image, **traits)`` shows ``image`` (any 2-D real array, see
    :meth:`set_image`). Every trait below is synced with the browser and can be watched
    with ``editor.observe(callback, names=[...])``.

    Attributes
    ----------
    shapes : list of dict
        The shapes, in drawing order: mask dicts of :mod:`stem_explorer.masks` (kinds
        disk, ring, rectangle, polygon, point, symmetric_spots) plus ``"op"``: ``"add"``
        or ``"subtract"``. Refused shapes are dropped (see ``hint``).
    selected : int
        Index of the selected shape, -1 for none.
    tool : str
        One of :data:`TOOLS`.
    op : str
        ``"add"`` or ``"subtract"``: what new shapes do.
    spots_n : int
        Number of spots of new symmetric spots.
    image, image_shape : bytes, [rows, cols]
        The detector image as little-endian float32 bytes in C order (a binary buffer
        on the wire); set both through :meth:`set_image`.
    vmin, vmax : float
        Colour limits in data units (also with ``log``).
    log : bool
        Colour by ``log1p(max(value, 0))``.
    colormap : str
        One of :data:`COLORMAPS`.
    dragging : bool
        True while the user moves or resizes a shape (``shapes`` then changes up to once
        per animation frame); False again with the final ``shapes`` on release. A shape
        being drawn reaches ``shapes`` only when it is complete.
    hint : str
        Message shown under the image, e.g. why a shape was refused.
    size : int
        Longest side of the canvas in CSS pixels; the other follows the detector's
        aspect ratio.
    pixel_size, pixel_unit : [float, float], str
        The detector's pixel size (y, x) in ``pixel_unit`` (e.g. ``"mrad"``); ``[]``:
        uncalibrated. The readout then shows coordinates from the detector's centre,
        and the canvas rulers or a scale bar (``scale_style``).
    value_unit : str
        The unit of the image's values, shown in the readout.
    scale_style : str
        ``"axes"`` (rulers along the left and bottom edges) or ``"scale bar"``.
    """

    _esm = traitlets.Unicode().tag(sync=True)
    shapes = traitlets.List(traitlets.Dict()).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    tool = traitlets.Enum(TOOLS, default_value="select").tag(sync=True)
    op = traitlets.Enum(OPS, default_value="add").tag(sync=True)
    spots_n = traitlets.Int(6, min=1, max=64).tag(sync=True)
    image = traitlets.Bytes(b"").tag(sync=True)
    image_shape = traitlets.List(traitlets.Int(), default_value=[], maxlen=2).tag(sync=True)
    vmin = traitlets.Float(0.0).tag(sync=True)
    vmax = traitlets.Float(1.0).tag(sync=True)
    log = traitlets.Bool(False).tag(sync=True)
    colormap = traitlets.Enum(COLORMAPS, default_value="viridis").tag(sync=True)
    dragging = traitlets.Bool(False).tag(sync=True)
    hint = traitlets.Unicode("").tag(sync=True)
    size = traitlets.Int(420, min=120).tag(sync=True)
    pixel_size = traitlets.List(traitlets.Float(), default_value=[], maxlen=2).tag(sync=True)
    pixel_unit = traitlets.Unicode("").tag(sync=True)
    value_unit = traitlets.Unicode("").tag(sync=True)
    scale_style = traitlets.Enum(STYLES, default_value="axes").tag(sync=True)

    def __init__(self, image=None, **traits):
        """Show ``image`` (optional; ``vmin``/``vmax`` as in :meth:`set_image`).

        Raises :class:`~stem_explorer.widgets.BundleError` when the JavaScript bundle is
        not built or is stale.
        """
        esm = esm_path("mask_editor.js").read_text(encoding="utf-8")
        limits = {k: traits.pop(k) for k in ("vmin", "vmax") if k in traits} if image is not None else {}
        super().__init__(_esm=esm, **traits)
        if image is not None:
            self.set_image(image, **limits)

    # --- image

    def set_image(self, array, vmin: float | None = None, vmax: float | None = None) -> None:
        """Show ``array`` (2-D, real; any dtype or byte order) as the detector image.

        Colour limits not given default to ``robust_limits`` (percentiles 0.5 and
        99.5 of the finite values, taken in the log domain when ``log`` is on). NaN and
        infinite pixels are shown transparent. Shapes that cover no pixel of a detector
        of the new shape are dropped.
        """
        image = _float32_image(array)
        lo, hi = robust_limits(image, self.log) if vmin is None or vmax is None else (0.0, 0.0)
        with self.hold_sync():
            self.image_shape = [int(n) for n in image.shape]
            self.image = image.tobytes()
            self.vmin = float(lo if vmin is None else vmin)
            self.vmax = float(hi if vmax is None else vmax)

    def _sig_shape(self):
        return tuple(self.image_shape) if len(self.image_shape) == 2 else None

    @traitlets.observe("image_shape")
    def _recheck_shapes(self, change):
        self.shapes = list(self.shapes)

    # --- shapes

    @traitlets.validate("shapes")
    def _validate_shapes(self, proposal):
        kept, problems, new_index = [], [], {}
        sig_shape = self._sig_shape()
        for i, item in enumerate(proposal.value):
            try:
                shape = _check_shape(item, sig_shape)
            except MaskError as exc:
                problems.append(f"shape {i + 1} ignored: {exc}")
                continue
            new_index[i] = len(kept)
            kept.append(shape)
        self.hint = "; ".join(problems)
        if self.selected >= 0:
            self.selected = new_index.get(self.selected, -1)
        return kept

    def add_shape(self, shape, op: str | None = None) -> int:
        """Append a shape and return its index.

        ``shape`` is a :class:`~stem_explorer.masks.Mask` of an editable kind or its dict
        (which may hold ``"op"``); ``op`` (``"add"`` or ``"subtract"``) overrides, default
        ``"add"``. Raises MaskError when the editor would refuse the shape.
        """
        item = shape.to_dict() if isinstance(shape, Mask) else dict(shape)
        if op is not None:
            item["op"] = op
        normalised = _check_shape(item, self._sig_shape())
        self.shapes = [*self.shapes, normalised]
        return len(self.shapes) - 1

    def clear(self) -> None:
        """Remove every shape."""
        with self.hold_sync():
            self.selected = -1
            self.shapes = []

    def masks(self) -> list[Mask]:
        """The shapes as masks, in drawing order (without their ops)."""
        return [from_dict({k: v for k, v in s.items() if k != "op"}) for s in self.shapes]

    def mask(self) -> Mask | None:
        """Union of the "add" shapes minus the union of the "subtract" shapes.

        None when there is no "add" shape.
        """
        shape_masks = self.masks()
        added = [m for s, m in zip(self.shapes, shape_masks) if s["op"] == "add"]
        subtracted = [m for s, m in zip(self.shapes, shape_masks) if s["op"] == "subtract"]
        if not added:
            return None
        base = added[0] if len(added) == 1 else Union(added)
        if not subtracted:
            return base
        return Difference(base, subtracted[0] if len(subtracted) == 1 else Union(subtracted))
