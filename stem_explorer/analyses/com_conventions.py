"""Centre-of-mass results in the conventions of the peers: LiberTEM, py4DSTEM, pyxem.

Every convention is a function of the same quantity, the absolute centre of mass of a
frame in pixel coordinates ``(row, col)`` (pixel ``i`` spans ``i - 0.5 .. i + 0.5``,
as in all three peers), so each conversion goes through it:

=========================  =====================================================
stem_explorer              ``orient(com - center)``: ``center`` defaults to the
                           geometric centre ``((H - 1) / 2, (W - 1) / 2)``;
                           ``orient`` flips y (``flip_y``), then rotates by
                           ``scan_rotation`` degrees (:func:`orient`)
LiberTEM ``CoMUDF``        ``field_y, field_x``: the same ``orient`` (same sign,
                           same flip-then-rotate order), around ``(cy, cx)`` that
                           default to ``(H // 2, W // 2)``
py4DSTEM                   ``com_x, com_y``: the absolute centre of mass, ``x`` the
                           detector *row*; its DPC rotation ``force_com_rotation=t``
                           is ``scan_rotation=-t``, and ``force_com_transpose``
                           (swap, then rotate) is ``flip_y=True`` with
                           ``scan_rotation=90 - t``
pyxem ``BeamShift``        ``(x_shift, y_shift) = (W / 2 - col, H / 2 - row)``
                           (``get_direct_beam_position(method="center_of_mass")``):
                           the shift that centres the beam, opposite in sign,
                           around ``(W / 2, H / 2)``, x first
=========================  =====================================================

Results rotated by any of them are converted exactly; a position without intensity
(NaN here) stays NaN (LiberTEM reports its centre there, pyxem and py4DSTEM NaN).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "absolute_com",
    "from_absolute_com",
    "from_libertem",
    "from_py4dstem",
    "from_py4dstem_rotation",
    "from_pyxem",
    "orient",
    "to_libertem",
    "to_py4dstem",
    "to_py4dstem_rotation",
    "to_pyxem",
    "unorient",
]


def orient(dy, dx, scan_rotation: float = 0.0, flip_y: bool = False) -> tuple:
    """Detector shifts ``(dy, dx)`` to scan axes: y flipped if ``flip_y``, then
    rotated by ``scan_rotation`` degrees (positive: from +x towards +y).

    As a matrix on ``(y, x)``: ``R @ F`` with ``R = [[cos, sin], [-sin, cos]]`` and
    ``F = diag(-1, 1)`` when flipping (LiberTEM's ``apply_correction``)."""
    if flip_y:
        dy = -np.asarray(dy)
    angle = math.radians(scan_rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    return sin * dx + cos * dy, cos * dx - sin * dy


def unorient(shift_y, shift_x, scan_rotation: float = 0.0, flip_y: bool = False) -> tuple:
    """The inverse of :func:`orient`: scan-axis shifts back to detector shifts."""
    dy, dx = orient(shift_y, shift_x, -scan_rotation)
    return (-np.asarray(dy), dx) if flip_y else (dy, dx)


def _center(sig_shape: Sequence[int], center: Optional[Sequence[float]]) -> tuple:
    if center is not None:
        return float(center[0]), float(center[1])
    return (sig_shape[0] - 1) / 2, (sig_shape[1] - 1) / 2


def absolute_com(shift_y, shift_x, *, sig_shape, center=None, scan_rotation=0.0, flip_y=False) -> tuple:
    """``(row, col)`` centre of mass in detector pixels from this package's
    ``shift_y, shift_x`` (computed with ``center``, ``scan_rotation``, ``flip_y``)."""
    cy, cx = _center(sig_shape, center)
    dy, dx = unorient(shift_y, shift_x, scan_rotation, flip_y)
    return dy + cy, dx + cx


def from_absolute_com(row, col, *, sig_shape, center=None, scan_rotation=0.0, flip_y=False) -> tuple:
    """This package's ``shift_y, shift_x`` from the ``(row, col)`` centre of mass."""
    cy, cx = _center(sig_shape, center)
    return orient(np.asarray(row) - cy, np.asarray(col) - cx, scan_rotation, flip_y)


# -- LiberTEM --------------------------------------------------------------------------------
def _libertem_center(sig_shape, libertem_center) -> tuple:
    return tuple(libertem_center) if libertem_center is not None else (sig_shape[0] // 2, sig_shape[1] // 2)


def to_libertem(shift_y, shift_x, *, sig_shape, center=None, scan_rotation=0.0, flip_y=False,
                libertem_center=None) -> tuple:
    """``(field_y, field_x)`` that LiberTEM's ``CoMUDF.with_params(cy=..., cx=...,
    scan_rotation=scan_rotation, flip_y=flip_y)`` reports for the same data;
    ``libertem_center`` is its ``(cy, cx)``, by default ``(H // 2, W // 2)``."""
    row, col = absolute_com(shift_y, shift_x, sig_shape=sig_shape, center=center,
                            scan_rotation=scan_rotation, flip_y=flip_y)
    return from_absolute_com(row, col, sig_shape=sig_shape, center=_libertem_center(sig_shape, libertem_center),
                             scan_rotation=scan_rotation, flip_y=flip_y)


def from_libertem(field_y, field_x, *, sig_shape, center=None, scan_rotation=0.0, flip_y=False,
                  libertem_center=None) -> tuple:
    """This package's ``shift_y, shift_x`` (around ``center``) from LiberTEM's
    ``field_y, field_x`` computed with the same ``scan_rotation`` and ``flip_y``."""
    row, col = absolute_com(field_y, field_x, sig_shape=sig_shape, center=_libertem_center(sig_shape, libertem_center),
                            scan_rotation=scan_rotation, flip_y=flip_y)
    return from_absolute_com(row, col, sig_shape=sig_shape, center=center, scan_rotation=scan_rotation, flip_y=flip_y)


# -- py4DSTEM --------------------------------------------------------------------------------
def to_py4dstem(shift_y, shift_x, *, sig_shape, center=None, scan_rotation=0.0, flip_y=False) -> tuple:
    """py4DSTEM's measured centre of mass ``(com_x, com_y)`` in pixels: ``com_x`` is
    the detector row, ``com_y`` the column."""
    return absolute_com(shift_y, shift_x, sig_shape=sig_shape, center=center,
                        scan_rotation=scan_rotation, flip_y=flip_y)


def from_py4dstem(com_x, com_y, *, sig_shape, center=None, scan_rotation=0.0, flip_y=False) -> tuple:
    """This package's ``shift_y, shift_x`` from py4DSTEM's measured ``com_x``
    (row) and ``com_y`` (column)."""
    return from_absolute_com(com_x, com_y, sig_shape=sig_shape, center=center,
                             scan_rotation=scan_rotation, flip_y=flip_y)


def to_py4dstem_rotation(scan_rotation: float, flip_y: bool) -> tuple:
    """``(force_com_rotation, force_com_transpose)`` of py4DSTEM's DPC and ptychography
    that orient as ``scan_rotation`` and ``flip_y`` do here (angles in (-180, 180])."""
    angle = 90.0 - scan_rotation if flip_y else -scan_rotation
    return _wrap(angle), bool(flip_y)


def from_py4dstem_rotation(force_com_rotation: float, force_com_transpose: bool) -> tuple:
    """``(scan_rotation, flip_y)`` equal to py4DSTEM's ``force_com_rotation`` (degrees)
    and ``force_com_transpose``."""
    angle = 90.0 - force_com_rotation if force_com_transpose else -force_com_rotation
    return _wrap(angle), bool(force_com_transpose)


def _wrap(degrees: float) -> float:
    wrapped = math.remainder(float(degrees), 360.0)
    return 180.0 if wrapped == -180.0 else wrapped + 0.0


# -- pyxem -----------------------------------------------------------------------------------
def to_pyxem(shift_y, shift_x, *, sig_shape, center=None, scan_rotation=0.0, flip_y=False) -> tuple:
    """pyxem's ``(x_shift, y_shift)``, the components of
    ``get_direct_beam_position(method="center_of_mass")``: ``(W / 2 - col, H / 2 - row)``."""
    row, col = absolute_com(shift_y, shift_x, sig_shape=sig_shape, center=center,
                            scan_rotation=scan_rotation, flip_y=flip_y)
    return sig_shape[1] / 2 - col, sig_shape[0] / 2 - row


def from_pyxem(x_shift, y_shift, *, sig_shape, center=None, scan_rotation=0.0, flip_y=False) -> tuple:
    """This package's ``shift_y, shift_x`` from pyxem's ``x_shift, y_shift``."""
    row, col = sig_shape[0] / 2 - np.asarray(y_shift), sig_shape[1] / 2 - np.asarray(x_shift)
    return from_absolute_com(row, col, sig_shape=sig_shape, center=center, scan_rotation=scan_rotation, flip_y=flip_y)
