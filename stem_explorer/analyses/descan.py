"""Descan correction: the per-position shift of the whole diffraction pattern.

An imperfectly descanned beam moves the pattern on the detector as it scans: the
bright-field disk drifts, typically linearly with the scan position. A
:class:`Descan` holds that shift, ``(dy, dx)`` detector pixels per scan position,
relative to where the masks were drawn; ``Session.run(..., descan=d)`` then moves
every mask of the run with the pattern (rounded to whole pixels, clipped at the
detector's edge: :mod:`stem_explorer.engine.descan`) and subtracts the shift from
centre-of-mass results.

Make one from a plane (:meth:`~stem_explorer.analyses.Descan.plane`), from any map
(:meth:`~stem_explorer.analyses.Descan.from_map`), or measure it
(:meth:`~stem_explorer.analyses.Descan.estimate`) from the centre of mass of a reference scan
(vacuum, or the sample's own bright-field disk), optionally fitted by a plane.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import OptionError
from ..io.base import DataSet
from ..results import Results

#: How :meth:`Descan.estimate` reduces the measured map: a fitted plane, or the map.
FITS = ("plane", "map")


def _scan_coordinates(nav_shape) -> tuple[np.ndarray, np.ndarray]:
    """Flat (row, column) index of every scan position; a 1-D scan is one row."""
    if len(nav_shape) == 1:
        return np.zeros(nav_shape[0]), np.arange(nav_shape[0], dtype=np.float64)
    iy, ix = np.indices(nav_shape, dtype=np.float64)
    return iy.ravel(), ix.ravel()


def _pair(name: str, value) -> tuple[float, float]:
    try:
        y, x = (float(v) for v in value)
    except (TypeError, ValueError):
        raise OptionError(f"descan: {name} must be a (dy, dx) pair of numbers, got {value!r}") from None
    if not (math.isfinite(y) and math.isfinite(x)):
        raise OptionError(f"descan: {name} must be finite, got {(y, x)}")
    return y, x


class Descan:
    """The descan error: shift ``(dy, dx)`` in detector pixels of the pattern at each
    scan position, relative to where the masks are drawn.

    Build one with :meth:`plane`, :meth:`from_map` or :meth:`estimate`; a run applies
    it with ``Session.run(..., descan=d)`` (or ``session.descan = d`` for every run).
    A mask then counts pixel ``p`` of the frame at position ``i`` with its own value at
    ``p - shift[i]``, the shift rounded half up to whole pixels (bilinear weights would
    read every mask four times); mask pixels moved off the detector count nothing.
    Centre-of-mass results have the (unrounded) shift subtracted.
    """

    def __init__(self, *, plane: Optional[tuple] = None, shifts: Optional[np.ndarray] = None,
                 source: Optional[dict] = None):
        if (plane is None) == (shifts is None):
            raise OptionError("descan: give either a plane or a map of shifts; use Descan.plane() or Descan.from_map()")
        self._plane = plane
        self._map = shifts
        self.source = dict(source or {})

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def plane(cls, offset=(0.0, 0.0), per_row=(0.0, 0.0), per_column=(0.0, 0.0)) -> "Descan":
        """A shift linear in the scan position: ``offset + row * per_row + column *
        per_column`` (each a ``(dy, dx)`` pair in detector pixels; a 1-D scan's
        positions are columns of row 0)."""
        return cls(plane=(_pair("offset", offset), _pair("per_row", per_row), _pair("per_column", per_column)))

    @classmethod
    def from_map(cls, shifts) -> "Descan":
        """A shift per position: ``shifts`` has the scan's shape plus a last axis of
        two, ``(dy, dx)`` in detector pixels (e.g. ``(ny, nx, 2)``); NaN is refused."""
        try:
            shifts = np.array(shifts, dtype=np.float64)
        except (TypeError, ValueError):
            raise OptionError("descan: the map must be an array of numbers of shape (scan..., 2)") from None
        if shifts.ndim < 2 or shifts.shape[-1] != 2 or shifts.ndim > 3:
            raise OptionError(f"descan: the map must have shape (ny, nx, 2) or (n, 2), (dy, dx) per scan position; "
                              f"got shape {shifts.shape}")
        bad = ~np.isfinite(shifts)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0][:-1])
            raise OptionError(f"descan: the map has {int(bad.any(axis=-1).sum())} positions without a finite shift "
                              f"(NaN or infinite; the first at scan position {where}); fill them, or fit a plane "
                              "with Descan.estimate(..., fit='plane')")
        return cls(shifts=shifts)

    @classmethod
    def estimate(cls, source: Union[Results, DataSet], *, fit: str = "plane", reference="mean",
                 radius: Optional[float] = None, label: Optional[str] = None) -> "Descan":
        """The descan error measured by the centre of mass of a reference scan.

        Parameters
        ----------
        source : Results or DataSet
            Results of a :class:`~stem_explorer.analyses.CenterOfMass` run (its
            rotation and flip are undone: the shift is on the detector), or a data set
            on which the centre of mass is computed here, in this process (a small
            vacuum reference scan).
        fit : {'plane', 'map'}
            A least-squares plane through the measured shifts (robust to noise and
            to positions without intensity), or the measured map as it is.
        reference : 'mean', 'center' or (row, column)
            Where the shift is zero: the mean over the scan (masks drawn on the sum or
            mean frame), ``'center'`` (the CoM's centre: masks drawn around it), or
            a scan position (masks drawn on that frame).
        radius : float, optional
            With a data set: the CoM counts only pixels this close to the detector's
            centre (the bright-field disk).
        label : str, optional
            With results: the label of the CoM analysis when there are several.
        """
        if fit not in FITS:
            raise OptionError(f"descan: fit must be one of {', '.join(map(repr, FITS))}; got {fit!r}")
        if isinstance(source, DataSet):
            source = _com_of(source, radius)
        elif not isinstance(source, Results):
            raise OptionError(f"descan: estimate() takes CenterOfMass results or a data set, got {type(source).__name__}")
        measured, nav_shape, com = _measured_shifts(source, label)
        valid = np.isfinite(measured).all(axis=1)
        if fit == "plane":
            coefficients = _fit_plane(measured, valid, nav_shape)
            shifts = _plane_shifts(coefficients, nav_shape)
        elif not valid.all():
            raise OptionError(f"descan: {int((~valid).sum())} scan positions have no centre of mass (no intensity); "
                              "estimate with fit='plane', which needs none of them")
        else:
            shifts = measured
        shifts = shifts - _reference_shift(shifts, reference, nav_shape)
        origin = {"estimated_from": com, "fit": fit, "reference": list(reference) if isinstance(reference, tuple)
                  else reference}
        if fit == "plane":
            offset = tuple(shifts[0])  # the plane's value at position (0, 0), after the reference
            plane = (offset, coefficients[1], coefficients[2])
            return cls(plane=tuple(tuple(float(v) for v in c) for c in plane), source=origin)
        return cls(shifts=shifts.reshape(tuple(nav_shape) + (2,)), source=origin)

    @classmethod
    def load(cls, path) -> "Descan":
        """A descan from a file: ``.npy`` (a map, as :meth:`from_map` takes) or
        ``.json`` (a :meth:`to_dict` description, e.g. a results file's
        ``provenance["descan"]``); OptionError naming the file otherwise."""
        path = Path(path)
        try:
            if path.suffix.lower() == ".npy":
                return cls.from_map(np.load(path, allow_pickle=False))
            if path.suffix.lower() == ".json":
                return cls.from_dict(json.loads(path.read_text()))
        except OptionError as error:
            raise OptionError(f"{path}: {error}") from None
        except (OSError, ValueError) as error:  # missing, unreadable, not .npy, not JSON
            raise OptionError(f"descan: cannot read {path} ({error}); give a .npy map of shape (ny, nx, 2) "
                              "or a .json description (Descan.to_dict())") from None
        raise OptionError(f"descan: {path} is neither .npy (a map of shape (ny, nx, 2)) nor .json (Descan.to_dict())")

    # -- use -------------------------------------------------------------------------------
    def shifts_for(self, nav_shape) -> np.ndarray:
        """``(n_positions, 2)`` float64 shifts for a scan of ``nav_shape`` (flat, scan
        order); OptionError when a map does not match the scan."""
        nav_shape = tuple(int(n) for n in nav_shape)
        if self._plane is not None:
            return _plane_shifts(self._plane, nav_shape)
        if self._map.shape[:-1] != nav_shape:
            raise OptionError(f"descan: the map is for a scan of shape {self._map.shape[:-1]}, but the data set's scan "
                              f"is {nav_shape}; measure it on a scan of the same shape, or fit a plane")
        return self._map.reshape(-1, 2)

    # -- description ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON: ``{"kind": "plane", "offset", "per_row", "per_column"}`` or
        ``{"kind": "map", "shape", "shifts"}`` (little-endian float64, base64), plus
        ``"source"`` when estimated; :meth:`from_dict` is the inverse."""
        if self._plane is not None:
            d = {"kind": "plane", **{k: list(v) for k, v in zip(("offset", "per_row", "per_column"), self._plane)}}
        else:
            data = base64.b64encode(np.ascontiguousarray(self._map, "<f8").tobytes()).decode("ascii")
            d = {"kind": "map", "shape": list(self._map.shape), "shifts": data}
        if self.source:
            d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Descan":
        """The descan a :meth:`to_dict` description stands for; OptionError if it is not one."""
        kind = d.get("kind") if isinstance(d, dict) else None
        try:
            if kind == "plane":
                descan = cls.plane(d["offset"], d["per_row"], d["per_column"])
            elif kind == "map":
                shape = tuple(int(n) for n in d["shape"])
                raw = base64.b64decode(d["shifts"], validate=True)
                if len(raw) != 8 * math.prod(shape):
                    raise ValueError("the data does not match the shape")
                descan = cls.from_map(np.frombuffer(raw, "<f8").reshape(shape))
            else:
                raise ValueError("'kind' must be 'plane' or 'map'")
        except (KeyError, TypeError, ValueError) as error:
            raise OptionError(f"descan: not a descan description ({error}); write one with Descan.to_dict()") from None
        descan.source = dict(d.get("source") or {})
        return descan

    def __eq__(self, other):
        if not isinstance(other, Descan):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None

    def __repr__(self) -> str:
        if self._plane is not None:
            offset, per_row, per_column = self._plane
            return f"Descan.plane(offset={offset}, per_row={per_row}, per_column={per_column})"
        return f"Descan.from_map(<shifts of shape {self._map.shape}>)"


def _plane_shifts(plane, nav_shape) -> np.ndarray:
    offset, per_row, per_column = (np.asarray(c, np.float64) for c in plane)
    iy, ix = _scan_coordinates(nav_shape)
    return offset + iy[:, None] * per_row + ix[:, None] * per_column


def _fit_plane(measured: np.ndarray, valid: np.ndarray, nav_shape) -> tuple:
    """Least-squares ``(offset, per_row, per_column)`` through the valid shifts."""
    iy, ix = _scan_coordinates(nav_shape)
    two_d = len(nav_shape) == 2 and nav_shape[0] > 1
    columns = [np.ones_like(ix), iy, ix] if two_d else [np.ones_like(ix), ix]
    needed = len(columns)
    if valid.sum() < needed or (nav_shape[-1] < 2 and not two_d):
        raise OptionError(f"descan: a plane needs at least {needed} scan positions with a centre of mass "
                          f"(not all in one row or column); {int(valid.sum())} have one")
    design = np.stack(columns, axis=1)[valid]
    solution, _, rank, _ = np.linalg.lstsq(design, measured[valid], rcond=None)
    if rank < needed:
        raise OptionError("descan: the positions with a centre of mass lie on one line; a plane through them is "
                          "undetermined: use fit='map'")
    if not two_d:
        solution = np.stack([solution[0], np.zeros(2), solution[1]])
    return tuple(tuple(float(v) for v in row) for row in solution)


def _reference_shift(shifts: np.ndarray, reference, nav_shape) -> np.ndarray:
    if isinstance(reference, str) and reference == "mean":
        return shifts.mean(axis=0)
    if isinstance(reference, str) and reference == "center":
        return np.zeros(2)
    try:
        index = np.ravel_multi_index(tuple(int(v) for v in reference), nav_shape)
    except (TypeError, ValueError):
        raise OptionError(f"descan: reference must be 'mean', 'center' or a scan position inside {tuple(nav_shape)}, "
                          f"got {reference!r}") from None
    return shifts[index]


def _measured_shifts(results: Results, label: Optional[str]) -> tuple:
    """``(shifts (n, 2) on the detector, nav_shape, description)`` from CoM results."""
    from .com_conventions import unorient

    described = [a for a in results.provenance.get("analyses", []) if a.get("analysis") == "CenterOfMass"]
    if label is not None:
        described = [a for a in described if a.get("label") == label]
    if len(described) != 1:
        found = ", ".join(repr(a.get("label")) for a in described) or "none"
        raise OptionError(f"descan: estimate() needs the results of exactly one CenterOfMass analysis (found {found}); "
                          "pass label= to pick one")
    com = described[0]
    names = [f"{com['label']}/shift_y", f"{com['label']}/shift_x"]
    missing = [n for n in names if n not in results]
    if missing:
        raise OptionError(f"descan: the results lack {', '.join(missing)}")
    y, x = (results[n].data for n in names)
    dy, dx = unorient(y.ravel(), x.ravel(), com.get("scan_rotation", 0.0), com.get("flip_y", False))
    return np.stack([dy, dx], axis=1), y.shape, {k: com[k] for k in ("center", "radius") if k in com}


def _com_of(dataset: DataSet, radius: Optional[float]) -> Results:
    """CenterOfMass of ``dataset`` computed in this process."""
    from ..engine import run_local
    from .com import CenterOfMass
    from .plan import build_plan

    plan, finalize = build_plan([CenterOfMass(radius=radius)], dataset)
    accumulators = run_local(dataset.partitions(1), plan)
    return finalize(accumulators, np.ones(dataset.n_frames, bool))
