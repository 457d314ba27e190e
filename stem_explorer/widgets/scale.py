"""Calibrated coordinates in the views: axis maps, scale bar lengths, readout text.

Pure functions of plain values, shared by the navigation view (bqplot) and the
Explorer's wiring, so they are tested without a browser. The detector view draws its
own canvas and does the same in ``js/src/scalebar.js``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

#: The unit of an uncalibrated axis (as in :mod:`stem_explorer.io.calibration`).
PIXELS = "px"
#: How the views show calibrated coordinates: ticks along the axes, or a scale bar.
STYLES = ("axes", "scale bar")
#: The longest a scale bar may be, as a share of the visible width.
SCALE_BAR_SHARE = 0.3


@dataclass(frozen=True)
class AxisMap:
    """A view axis: the coordinate of pixel ``i`` (centred on ``i``) is
    ``origin + step * i`` in ``unit``; :data:`PIXELS` with ``(0, 1)`` when uncalibrated."""

    origin: float = 0.0
    step: float = 1.0
    unit: str = PIXELS

    @property
    def calibrated(self) -> bool:
        return self.unit != PIXELS

    def to_data(self, edge: float) -> float:
        """The axis coordinate of ``edge`` in the views' pixel-edge coordinates (pixel
        ``i`` spans ``i .. i + 1`` there); uncalibrated axes keep those coordinates."""
        if not self.calibrated:
            return float(edge)
        return self.origin + self.step * (edge - 0.5)

    def to_edge(self, value: float) -> float:
        """The inverse of :meth:`to_data`."""
        if not self.calibrated:
            return float(value)
        return (value - self.origin) / self.step + 0.5

    @classmethod
    def of(cls, array, dim: str) -> "AxisMap":
        """The map of dimension ``dim`` of a :class:`~stem_explorer.results.ResultArray`:
        calibrated where its coordinates are evenly spaced with a physical unit."""
        found = array.axis_step(dim) if dim in getattr(array, "dims", ()) else None
        if found is None or found[2] == PIXELS:
            return cls()
        return cls(*found)


def nice_length(limit: float) -> float:
    """The longest of 1, 2 and 5 times a power of ten that is at most ``limit`` (> 0)."""
    if not (limit > 0 and math.isfinite(limit)):
        raise ValueError(f"a scale bar needs a positive finite width, got {limit!r}")
    power = 10.0 ** math.floor(math.log10(limit))
    for factor in (5.0, 2.0, 1.0):
        if factor * power <= limit * (1 + 1e-12):
            return factor * power
    return power  # unreachable: limit >= power


def format_number(value: float, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits, without trailing zeros."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def format_length(value: float, unit: str) -> str:
    """A scale bar's label, e.g. ``"20 nm"``."""
    return f"{format_number(value)} {unit}"


def readout(row: int, col: int, value: Optional[float], y: AxisMap, x: AxisMap, value_unit: str = "") -> str:
    """The hover text of pixel ``(row, col)``: its calibrated coordinates (where the
    axes have them), its indices and the value with its unit."""
    parts = []
    if y.calibrated or x.calibrated:
        parts.append(
            f"y {format_number(y.origin + y.step * row)} {y.unit}, x {format_number(x.origin + x.step * col)} {x.unit}"
        )
    parts.append(f"(row {row}, col {col})")
    if value is not None:
        shown = "not computed" if math.isnan(value) else format_number(value) + (f" {value_unit}" if value_unit else "")
        parts.append(f"= {shown}")
    return " ".join(parts)


def colour_bar_label(name: str, unit: Optional[str], log: bool) -> str:
    """The colour bar's title: what is shown and its unit, ``log(1 + ...)`` when log."""
    what = name + (f" ({unit})" if unit else "")
    return f"log(1 + {what})" if log else what
