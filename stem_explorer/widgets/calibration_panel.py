"""The Explorer's calibration editor: scan step and detector pixel size with units, the
camera length and beam energy, and the detector pixel size measured from a known
spacing (two points drawn on the detector across Bragg disks).

What is typed is checked by :class:`~stem_explorer.io.calibration.Calibration`, so the
editor refuses what ``open_dataset(calibration=...)`` refuses, with the same message;
what it applies has the source ``"user"``.
"""

from __future__ import annotations

import html
import math
from typing import Callable, Optional

import ipywidgets as widgets

from ..errors import CalibrationError
from ..io.calibration import Calibration

#: Units offered first (any unit pint reads may be typed).
SCAN_UNITS = ("nm", "Å", "pm", "µm")
DETECTOR_UNITS = ("mrad", "1/nm", "1/Å")

_NARROW = {"width": "150px"}
_UNIT = {"width": "90px"}


def _pair(description: str, unit: str, options: tuple) -> tuple:
    y = widgets.FloatText(description=f"{description} y", layout=_NARROW, style={"description_width": "initial"})
    x = widgets.FloatText(description="x", layout={"width": "110px"}, style={"description_width": "initial"})
    units = widgets.Combobox(value=unit, options=list(options), ensure_option=False, layout=_UNIT)
    return y, x, units


def spacing_pixel_size(spacing: str, distance_px: float) -> tuple:
    """``(size, unit)``: the detector pixel size that makes ``distance_px`` pixels
    equal ``spacing``: a reciprocal length or an angle (``"5.1 1/nm"``, ``"12 mrad"``),
    or a lattice spacing ``d`` in real space (``"0.196 nm"``), whose disks are ``1/d``
    apart."""
    if not (distance_px > 0 and math.isfinite(distance_px)):
        raise CalibrationError(
            "detector_pixel: draw two points on the detector (point tool) on the centres of two "
            "Bragg disks, then type their spacing"
        )
    try:
        measured = Calibration({"detector_pixel": spacing}).detector_pixel  # checks the unit
    except CalibrationError as refused:
        try:  # a lattice spacing d in real space: the disks are 1/d apart
            d = Calibration({"scan_step": spacing}).scan_step
        except CalibrationError:
            raise refused from None
        return 1.0 / d.values[0] / distance_px, f"1/{d.unit}"
    return measured.values[0] / distance_px, measured.unit


class CalibrationPanel(widgets.VBox):
    """Edit a data set's calibration; ``on_apply(calibration)`` receives the
    :class:`~stem_explorer.io.calibration.Calibration` of what was typed (source
    ``"user"``), ``measure()`` returns the distance in pixels of the two points to
    measure a spacing between (0 when there are not two)."""

    def __init__(self, on_apply: Callable[[Calibration], None], measure: Callable[[], float]):
        self._on_apply, self._measure = on_apply, measure
        self.scan_y, self.scan_x, self.scan_unit = _pair("scan step", "nm", SCAN_UNITS)
        self.pixel_y, self.pixel_x, self.pixel_unit = _pair("detector pixel", "mrad", DETECTOR_UNITS)
        self.camera_length = widgets.Text(description="camera length", placeholder="e.g. 115 mm", layout={"width": "230px"},
                                          style={"description_width": "initial"})
        self.beam_energy = widgets.Text(description="beam energy", placeholder="e.g. 300 keV", layout={"width": "230px"},
                                        style={"description_width": "initial"})
        self.apply_button = widgets.Button(description="apply", icon="check", layout={"width": "80px"},
                                           tooltip="use these values (source 'user') and recompute")
        self.apply_button.on_click(lambda _: self.apply())
        self.spacing = widgets.Text(description="spacing of the 2 points", placeholder="e.g. 4.9 1/nm",
                                    layout={"width": "300px"}, style={"description_width": "initial"})
        self.measure_button = widgets.Button(description="measure", icon="arrows-h", layout={"width": "100px"},
                                             tooltip="detector pixel size = this spacing / the distance between the "
                                                     "last two points drawn on the detector")
        self.measure_button.on_click(lambda _: self.measure_spacing())
        self.message = widgets.HTML()
        super().__init__([
            widgets.HBox([self.scan_y, self.scan_x, self.scan_unit]),
            widgets.HBox([self.pixel_y, self.pixel_x, self.pixel_unit]),
            widgets.HBox([self.camera_length, self.beam_energy, self.apply_button]),
            widgets.HBox([self.spacing, self.measure_button]),
            self.message,
        ])
        self.add_class("se-calibration")

    def show(self, calibration: Calibration) -> None:
        """Fill the fields with ``calibration`` (0 where a part is in pixels)."""
        for (y, x, unit), part in (((self.scan_y, self.scan_x, self.scan_unit), calibration.scan_step),
                                   ((self.pixel_y, self.pixel_x, self.pixel_unit), calibration.detector_pixel)):
            y.value, x.value = part.values if part is not None else (0.0, 0.0)
            if part is not None:
                unit.value = part.unit
        for field, part in ((self.camera_length, calibration.camera_length), (self.beam_energy, calibration.beam_energy)):
            field.value = f"{part.values[0]:g} {part.unit}" if part is not None else ""
        notes = [f"{html.escape(name)}: {calibration.source(name)}" for name in ("scan_step", "detector_pixel")]
        warnings = "".join(f"<br><span style='color:#8a6d00'>{html.escape(w)}</span>" for w in calibration.warnings)
        self.message.value = f"<small>source: {', '.join(notes)}</small>{warnings}"

    def parts(self) -> dict:
        """The typed parts as ``open_dataset(calibration=...)`` takes them; a pair left
        at 0 and a blank text are left out (they keep what the data set has)."""
        parts = {}
        for name, y, x, unit in (("scan_step", self.scan_y, self.scan_x, self.scan_unit),
                                 ("detector_pixel", self.pixel_y, self.pixel_x, self.pixel_unit)):
            if y.value or x.value:
                parts[name] = {"value": [y.value, x.value], "unit": unit.value.strip(), "source": "user"}
        for name, field in (("camera_length", self.camera_length), ("beam_energy", self.beam_energy)):
            if field.value.strip():
                parts[name] = field.value.strip()
        return parts

    def apply(self) -> Optional[Calibration]:
        """Check the typed values and hand them to ``on_apply``; a refused value is
        shown with the reason (and None returned)."""
        try:
            calibration = Calibration(self.parts(), source="user")
        except CalibrationError as exc:
            self.message.value = f"<span class='se-error' style='color:#c62828'>{html.escape(str(exc))}</span>"
            return None
        self._on_apply(calibration)
        return calibration

    def measure_spacing(self) -> Optional[Calibration]:
        """Set the detector pixel size from the spacing typed and the two points drawn."""
        try:
            size, unit = spacing_pixel_size(self.spacing.value, self._measure())
        except CalibrationError as exc:
            self.message.value = f"<span class='se-error' style='color:#c62828'>{html.escape(str(exc))}</span>"
            return None
        self.pixel_y.value = self.pixel_x.value = size
        self.pixel_unit.value = unit
        return self.apply()
