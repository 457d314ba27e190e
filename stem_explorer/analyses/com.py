"""Centre of mass (CoM) of each diffraction pattern: beam shift maps and their
divergence and curl (DPC imaging)."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse

from ..engine import CenterOfMassMoments
from ..engine.descan import integer_shifts
from ..errors import AnalysisError
from .base import Analysis, MaskColumns, check_point, detector_center, nav_result, pixel_grid
from .com_conventions import orient
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
    +x towards +y) to align detector axes with scan axes (:func:`.com_conventions.orient`,
    LiberTEM's convention; :mod:`.com_conventions` converts to and from the peers').

    Results: ``shift_y``, ``shift_x``, ``magnitude`` (pixels), ``total`` (intensity
    counted) and, for 2-D scans, ``divergence`` and ``curl`` (pixels per scan pixel,
    central differences). Where the data set's detector is calibrated, also
    ``shift_y_calibrated``, ``shift_x_calibrated`` and ``magnitude_calibrated`` in mrad
    (or in 1/nm when the pixel size is a reciprocal length and no beam energy converts
    it): each component is scaled by its detector axis's pixel size before the flip and
    rotation, so rectangular pixels come out right.

    A position with zero intensity has no centre of mass: its shifts, magnitude,
    divergence and curl are NaN. Its neighbours keep theirs: a derivative skips a
    missing neighbour the way ``numpy.gradient`` treats the edge of the scan (a
    one-sided difference with the neighbour on the other side), and is NaN only where
    both neighbours along that axis are missing. Positions not computed yet in a
    partial result count as missing too.
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

    def _support(self, dataset):
        """The detector pixels that count (flat indices) and their (y, x)."""
        cy, cx = self._center(dataset)
        y, x = pixel_grid(dataset)
        if self.radius is None:
            return np.arange(y.size), y, x
        pixels = np.flatnonzero((y - cy) ** 2 + (x - cx) ** 2 <= float(self.radius) ** 2)
        if pixels.size == 0:
            raise AnalysisError(f"CoM disk at {(cy, cx)} with radius {self.radius} covers no detector pixel")
        return pixels, y[pixels], x[pixels]

    def requests(self, dataset):
        return [CenterOfMassMoments(self._support(dataset)[0], dataset.sig_shape, self._center(dataset))]

    def requests_with_descan(self, dataset, shifts):
        """With a radius the support disk follows the pattern: its three moments go as
        mask columns (ones, y - cy, x - cx), which the engine moves by the rounded
        shift. The whole detector (no radius) stays where it is."""
        if self.radius is None:
            return self.requests(dataset)
        cy, cx = self._center(dataset)
        pixels, y, x = self._support(dataset)
        weights = np.stack([np.ones_like(y), y - cy, x - cx], axis=1)
        rows, cols = np.repeat(pixels, 3), np.tile(np.arange(3), pixels.size)
        n_pixels = math.prod(dataset.sig_shape)
        return [MaskColumns(scipy.sparse.csr_matrix((weights.ravel(), (rows, cols)), shape=(n_pixels, 3)))]

    def compute(self, inputs, dataset):
        return self._results(inputs[0], dataset, None)

    def compute_with_descan(self, inputs, dataset, shifts):
        """The moments are about the centre moved by the rounded shift (a radius: the
        support moved, see :meth:`requests_with_descan`) or about the centre (no
        radius); what is left of the shift is subtracted from the centre of mass."""
        moved = integer_shifts(shifts, dataset.sig_shape) if self.radius is not None else 0
        return self._results(inputs[0], dataset, shifts - moved)

    def _results(self, moments, dataset, residual):
        """The results from the moments ``(total, sum dy*v, sum dx*v)`` per position,
        minus the descan shift ``residual`` (``(n, 2)`` pixels) where given."""
        total, wy, wx = moments.T
        with np.errstate(invalid="ignore", divide="ignore"):
            sy = np.where(total != 0, wy / total, np.nan)
            sx = np.where(total != 0, wx / total, np.nan)
        if residual is not None:
            sy, sx = sy - residual[:, 0], sx - residual[:, 1]
        shift_y, shift_x = orient(sy, sx, self.scan_rotation, self.flip_y)
        out = {
            "shift_y": nav_result("shift_y", shift_y, dataset, units="px"),
            "shift_x": nav_result("shift_x", shift_x, dataset, units="px"),
            "magnitude": nav_result("magnitude", np.hypot(shift_y, shift_x), dataset, units="px"),
            "total": nav_result("total", total, dataset),
        }
        unit = dataset.calibration.preferred_detector_unit()
        if unit is not None:
            size_y, size_x = dataset.calibration.detector_pixel_in(unit)
            cal_y, cal_x = orient(sy * size_y, sx * size_x, self.scan_rotation, self.flip_y)
            out["shift_y_calibrated"] = nav_result("shift_y_calibrated", cal_y, dataset, units=unit)
            out["shift_x_calibrated"] = nav_result("shift_x_calibrated", cal_x, dataset, units=unit)
            out["magnitude_calibrated"] = nav_result("magnitude_calibrated", np.hypot(cal_y, cal_x), dataset, units=unit)
        if len(dataset.nav_shape) == 2:
            fy = shift_y.reshape(dataset.nav_shape)
            fx = shift_x.reshape(dataset.nav_shape)
            dfy_dy, dfy_dx = _gradient(fy)
            dfx_dy, dfx_dx = _gradient(fx)
            out["divergence"] = nav_result("divergence", dfy_dy + dfx_dx, dataset, units="px per scan step")
            out["curl"] = nav_result("curl", dfy_dx - dfx_dy, dataset, units="px per scan step")
        return out


def _gradient(field: np.ndarray):
    """(d/dy, d/dx) by central differences, as ``numpy.gradient``, where NaN positions
    are missing: next to one, the one-sided difference with the other neighbour (what
    ``numpy.gradient`` does at the scan's edge); NaN at a missing position and where
    both neighbours are missing. A length-1 axis has zero derivative."""
    grads = []
    for axis in range(2):
        if field.shape[axis] < 2:
            grads.append(np.zeros_like(field))
            continue
        f = np.moveaxis(field, axis, 0)
        after, before = np.full_like(f, np.nan), np.full_like(f, np.nan)
        after[:-1], before[1:] = f[1:], f[:-1]
        central, forward, backward = (after - before) / 2, after - f, f - before
        grad = np.where(np.isnan(central), np.where(np.isnan(forward), backward, forward), central)
        grads.append(np.moveaxis(np.where(np.isnan(f), np.nan, grad), 0, axis))
    return grads
