"""Centre of mass (CoM) of each diffraction pattern: beam shift maps and their
divergence and curl (DPC imaging)."""

from __future__ import annotations

import math

import numpy as np

from ..engine import CenterOfMassMoments
from ..errors import AnalysisError
from .base import Analysis, check_point, detector_center, nav_result, pixel_grid
from .params import Boolean, Number, Point
from .registry import register


@register
class CenterOfMass(Analysis):
    """Shift of each pattern's centre of mass from ``center`` (pixels).

    Only pixels within ``radius`` of ``center`` count (all pixels when None). The
    three weight images (intensity, y-weighted, x-weighted) come from row spans of
    that support, in the run's one pass (``engine.CenterOfMassMoments``): the same
    numbers as three mask columns, without a weighted gather per pixel.

    ``flip_y`` mirrors the y component (detectors mounted upside down), then the vector is rotated by ``scan_rotation`` degrees (positive: from
    +x towards +y) to align detector axes with scan axes.

    Results: ``shift_y``, ``shift_x``, ``magnitude``, ``total`` (intensity counted)
    and, for 2-D scans, ``divergence`` and ``curl`` (per scan pixel, central
    differences). Positions with zero intensity give NaN.
    """

    label = "com"
    title = "centre of mass"

    center = Point(None, help="Centre the shifts are measured from; None: the detector's centre.")
    radius = Number(None, minimum=0, exclusive_minimum=True, unit="px",
                    help="Only pixels within this distance of the centre count; None: every pixel.")
    scan_rotation = Number(0.0, minimum=-360, maximum=360, unit="degrees", cli_aliases=("rotation",),
                           help="Rotation from detector to scan axes, positive from +x towards +y.")
    flip_y = Boolean(False, help="Mirror the y component first (detector mounted upside down).")

    def validate(self, dataset):
        self._center(dataset)

    def _center(self, dataset):
        return detector_center(dataset) if self.center is None else check_point("center", self.center, dataset)

    def requests(self, dataset):
        cy, cx = self._center(dataset)
        y, x = pixel_grid(dataset)
        if self.radius is None:
            pixels = np.arange(y.size)
        else:
            pixels = np.flatnonzero((y - cy) ** 2 + (x - cx) ** 2 <= float(self.radius) ** 2)
            if pixels.size == 0:
                raise AnalysisError(f"CoM disk at {(cy, cx)} with radius {self.radius} covers no detector pixel")
        return [CenterOfMassMoments(pixels, dataset.sig_shape, (cy, cx))]

    def compute(self, inputs, dataset):
        total, wy, wx = inputs[0].T
        with np.errstate(invalid="ignore", divide="ignore"):
            sy = np.where(total != 0, wy / total, np.nan)
            sx = np.where(total != 0, wx / total, np.nan)
        if self.flip_y:
            sy = -sy
        angle = math.radians(self.scan_rotation)
        cos, sin = math.cos(angle), math.sin(angle)
        shift_x = cos * sx - sin * sy
        shift_y = sin * sx + cos * sy
        out = {
            "shift_y": nav_result("shift_y", shift_y, dataset, units="px"),
            "shift_x": nav_result("shift_x", shift_x, dataset, units="px"),
            "magnitude": nav_result("magnitude", np.hypot(shift_y, shift_x), dataset, units="px"),
            "total": nav_result("total", total, dataset),
        }
        if len(dataset.nav_shape) == 2:
            fy = shift_y.reshape(dataset.nav_shape)
            fx = shift_x.reshape(dataset.nav_shape)
            dfy_dy, dfy_dx = _gradient(fy)
            dfx_dy, dfx_dx = _gradient(fx)
            out["divergence"] = nav_result("divergence", dfy_dy + dfx_dx, dataset, units="px per scan step")
            out["curl"] = nav_result("curl", dfy_dx - dfx_dy, dataset, units="px per scan step")
        return out


def _gradient(field: np.ndarray):
    """(d/dy, d/dx) by central differences; a length-1 axis has zero derivative."""
    grads = []
    for axis in range(2):
        if field.shape[axis] < 2:
            grads.append(np.zeros_like(field))
        else:
            grads.append(np.gradient(field, axis=axis))
    return grads
