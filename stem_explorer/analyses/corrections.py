"""Scan rotation and flip of a centre-of-mass field, guessed from the field itself.

The beam shift of a non-magnetic sample is an electrostatic deflection, the gradient
of the projected potential, so in scan axes it has no curl. Detector and scan axes
differ by a rotation and perhaps a mirror (:func:`.com_conventions.orient`: flip y,
then rotate), which mix curl and divergence: for the detector field ``f`` (flipped or
not) and the rotation ``a``, at every scan position

.. code-block:: text

    curl(a) = cos a * c + sin a * d        c = dfy/dx - dfx/dy
    div(a)  = cos a * d - sin a * c        d = dfy/dy + dfx/dx

so ``curl(a)**2 + div(a)**2`` does not depend on ``a``: the rotation that minimises
the summed squared curl maximises the squared divergence, and it is the eigenvector of
the smallest eigenvalue of ``[[sum c*c, sum c*d], [sum c*d, sum d*d]]`` (exact; no
search over a grid of angles). Of the two flips, the one that leaves less curl wins.

Curl does not tell ``a`` from ``a + 180``, which negates the field. As LiberTEM's
``guess_corrections`` assumes, the beam is pulled towards atoms (the shift is ``+grad
V`` with ``V`` peaked at atom columns), so the divergence has its long tail on the
negative side: of the two, the guess is the one whose divergence is negatively skewed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import AnalysisError
from .com_conventions import unorient

__all__ = ["MIN_POSITIONS", "CorrectionGuess", "guess_corrections"]

#: Scan positions with a centre of mass and all four neighbours that a guess needs.
MIN_POSITIONS = 16
#: Smallest relative difference between the two eigenvalues for which one rotation
#: fits better than the others (below it, every rotation leaves the same curl).
_DEGENERATE = 1e-9


@dataclass(frozen=True)
class CorrectionGuess:
    """The guessed orientation of a centre-of-mass field and how well it fits.

    Attributes
    ----------
    scan_rotation : float
        Degrees in (-180, 180], the ``scan_rotation`` of
        :class:`~stem_explorer.analyses.CenterOfMass`.
    flip_y : bool
        Its ``flip_y``.
    quality : float
        ``1 - curl_fraction``: 1 for a field without curl once oriented.
    curl_fraction : float
        The share of the field's derivatives left as curl at the guess,
        ``sum curl**2 / (sum curl**2 + sum div**2)``: 0 for a gradient field, about
        0.5 for a field without structure.
    other_flip_curl_fraction : float
        The same at the best rotation of the other flip: the further above
        ``curl_fraction``, the surer the flip.
    divergence_skewness : float
        The skewness of the divergence at the guess (negative by choice of ``a`` or
        ``a + 180``); near 0 the 180-degree choice is a toss-up.
    positions : int
        Scan positions that counted.
    """

    scan_rotation: float
    flip_y: bool
    quality: float
    curl_fraction: float
    other_flip_curl_fraction: float
    divergence_skewness: float
    positions: int

    def params(self) -> dict:
        """``{"scan_rotation": ..., "flip_y": ...}``: parameters of
        :class:`~stem_explorer.analyses.CenterOfMass`."""
        return {"scan_rotation": self.scan_rotation, "flip_y": self.flip_y}

    def __str__(self) -> str:
        return (
            f"scan_rotation={self.scan_rotation:.2f} deg, flip_y={self.flip_y} (quality {self.quality:.3f}; "
            f"curl share {self.curl_fraction:.3g}, other flip {self.other_flip_curl_fraction:.3g}; "
            f"divergence skewness {self.divergence_skewness:.2f}; {self.positions} positions)"
        )


def guess_corrections(com_results, *, label: Optional[str] = None, scan_rotation: float = 0.0,
                      flip_y: bool = False, scan_step: Sequence[float] = (1.0, 1.0)) -> CorrectionGuess:
    """The ``scan_rotation`` and ``flip_y`` that leave the least curl in a centre-of-mass field.

    Parameters
    ----------
    com_results : Results or (shift_y, shift_x)
        The results of a :class:`~stem_explorer.analyses.CenterOfMass` run (over a 2-D
        scan; partial results count the positions computed so far), or two 2-D arrays
        of shifts. The guess is absolute: the parameters the results were computed with
        (from their provenance) are undone first, so the guess replaces them.
    label : str, optional
        Which centre-of-mass analysis of ``com_results`` (when it holds several).
    scan_rotation, flip_y : optional
        For arrays: how they were oriented (:func:`.com_conventions.orient`).
    scan_step : (float, float), optional
        For arrays: the scan step (y, x), where it differs between the axes. Results
        take it from their calibrated scan coordinates.

    Returns
    -------
    CorrectionGuess
        The rotation (degrees), the flip and how well they fit.

    Raises
    ------
    AnalysisError
        The results hold no centre of mass over a 2-D scan, fewer than
        :data:`MIN_POSITIONS` positions have a centre of mass and four neighbours
        with one, or the field does not single out a rotation (it does not vary).
    """
    if isinstance(com_results, (tuple, list)) and len(com_results) == 2:
        field_y, field_x = (np.asarray(a, dtype=np.float64) for a in com_results)
        step = tuple(float(s) for s in scan_step)
    else:
        field_y, field_x, scan_rotation, flip_y, step = _from_results(com_results, label)
    if field_y.ndim != 2 or field_y.shape != field_x.shape:
        raise AnalysisError(
            f"guess_corrections needs two 2-D shift maps of one shape (a 2-D scan), got shapes "
            f"{field_y.shape} and {field_x.shape}"
        )
    detector_y, detector_x = unorient(field_y, field_x, scan_rotation, flip_y)
    fits = {flip: _best_rotation(*_curl_and_divergence(-detector_y if flip else detector_y, detector_x, step))
            for flip in (False, True)}
    flip = min(fits, key=lambda f: fits[f][1])
    angle, fraction, skewness, positions = fits[flip]
    return CorrectionGuess(
        scan_rotation=angle, flip_y=flip, quality=1.0 - fraction, curl_fraction=fraction,
        other_flip_curl_fraction=fits[not flip][1], divergence_skewness=skewness, positions=positions,
    )


def _from_results(results, label: Optional[str]):
    """The shifts of a CenterOfMass run, its orientation parameters and the scan step."""
    described = results.provenance.get("analyses") or []
    runs = [d for d in described if d.get("analysis") == "CenterOfMass" and (label is None or d.get("label") == label)]
    if not runs:
        found = [d.get("label") for d in described if d.get("analysis") == "CenterOfMass"]
        raise AnalysisError(
            "guess_corrections needs the results of a CenterOfMass run"
            + (f"; these have none labelled {label!r} (found {found})" if label and found else
               "; these results have none (run CenterOfMass first)")
        )
    if len(runs) > 1:
        raise AnalysisError(
            f"these results hold {len(runs)} CenterOfMass runs {[d.get('label') for d in runs]}; "
            "pass label=... to choose one"
        )
    run = runs[0]
    group = results.group(run.get("label", "com"))
    # calibrated shifts where there are some: they are right for rectangular pixels
    suffix = "_calibrated" if "shift_y_calibrated" in group else ""
    shift_y, shift_x = group[f"shift_y{suffix}"], group[f"shift_x{suffix}"]
    return (np.asarray(shift_y.data, dtype=np.float64), np.asarray(shift_x.data, dtype=np.float64),
            float(run.get("scan_rotation", 0.0)), bool(run.get("flip_y", False)), _scan_step(shift_y))


def _scan_step(array) -> tuple:
    """The (y, x) scan step of a result's calibrated coordinates, (1, 1) without."""
    steps = [array.axis_step(dim) for dim in array.dims]
    if len(steps) == 2 and None not in steps and steps[0][2] == steps[1][2]:
        return steps[0][1], steps[1][1]
    return 1.0, 1.0


def _curl_and_divergence(fy: np.ndarray, fx: np.ndarray, step: tuple) -> tuple:
    """``c`` and ``d`` (module docstring) by central differences at the positions whose
    four neighbours and themselves have a shift; the others are left out."""
    if min(fy.shape) < 3:
        raise AnalysisError(
            f"guess_corrections needs a 2-D scan of at least 3 x 3 positions, got {fy.shape[0]} x {fy.shape[1]}"
        )
    hy, hx = step

    def d_dy(f):
        return (f[2:, 1:-1] - f[:-2, 1:-1]) / (2 * hy)

    def d_dx(f):
        return (f[1:-1, 2:] - f[1:-1, :-2]) / (2 * hx)

    curl = d_dx(fy) - d_dy(fx)
    divergence = d_dy(fy) + d_dx(fx)
    valid = np.isfinite(curl) & np.isfinite(divergence) & np.isfinite(fy[1:-1, 1:-1]) & np.isfinite(fx[1:-1, 1:-1])
    count = int(valid.sum())
    if count < MIN_POSITIONS:
        raise AnalysisError(
            f"guess_corrections: only {count} scan positions have a centre of mass with all four "
            f"neighbours having one; at least {MIN_POSITIONS} are needed for a rotation (wait for "
            "more of the scan, or choose a CoM region with intensity at more positions)"
        )
    return curl[valid], divergence[valid]


def _best_rotation(c: np.ndarray, d: np.ndarray) -> tuple:
    """``(angle in degrees, curl fraction, divergence skewness, positions)`` of the
    rotation with the least summed squared curl."""
    matrix = np.array([[c @ c, c @ d], [c @ d, d @ d]])
    total = float(np.trace(matrix))
    values, vectors = np.linalg.eigh(matrix)  # ascending
    if not total > 0 or (values[1] - values[0]) <= _DEGENERATE * total:
        raise AnalysisError(
            "guess_corrections: every scan rotation leaves the same curl in this centre-of-mass "
            "field (it does not vary over the scan, or varies without structure); use a region "
            "with atoms or edges, or set scan_rotation by hand"
        )
    cos, sin = vectors[:, 0]
    divergence = cos * d - sin * c
    skewness = _skewness(divergence)
    if skewness > 0:  # the other of a and a + 180: the beam is pulled towards atoms
        cos, sin, divergence, skewness = -cos, -sin, -divergence, -skewness
    angle = math.degrees(math.atan2(sin, cos))
    return (180.0 if angle == -180.0 else angle + 0.0), max(0.0, float(values[0]) / total), skewness, c.size


def _skewness(values: np.ndarray) -> float:
    centred = values - values.mean()
    spread = float(np.mean(centred**2))
    return float(np.mean(centred**3) / spread**1.5) if spread > 0 else 0.0
