"""The physical calibration of a data set: scan step, detector pixel size, camera
length and beam energy, each with its unit and where it came from.

Readers fill in what their files store (:func:`file_calibration`); the user overrides
any part (``open_dataset(..., calibration={...})``); what neither gives stays in
pixels. Units are parsed and converted with pint, a maintained units library, so
``"0.5 nm"``, ``"5 Å"``, ``"2e-10 m"`` and ``"1.2 mrad"`` all work without a
hand-written table. Microscopy files spell a few units their own way; those are
mapped first (:data:`UNIT_SPELLINGS`: ``"A"`` is the ångström, as in py4DSTEM and
DigitalMicrograph, never the ampere).

What each part may be:

==========================  ====================================================
``scan_step`` (y, x)        a length (nm, Å, m...)
``detector_pixel`` (y, x)   an angle (mrad, rad, degree) or a reciprocal length
                            (1/nm, 1/Å); a length (the sensor's pitch, µm) with a
                            ``camera_length`` is converted to mrad
``camera_length``           a length
``beam_energy``             an energy (keV, eV) or the accelerating voltage (kV, V)
==========================  ====================================================

Angles and reciprocal lengths are converted into each other with the relativistic
electron wavelength at the beam energy ``E`` (kinetic energy; ``m0`` the electron
rest mass)::

    lambda = h * c / sqrt(E * (E + 2 * m0 * c**2))        # 1.9687 pm at 300 keV
    q = theta / lambda                                     # small-angle diffraction

so ``q`` [1/nm] = ``theta`` [mrad] / (1000 * ``lambda`` [nm]). A sensor pitch ``p`` at
camera length ``L`` subtends ``theta = p / L``.

Every part records its source: ``"file"``, ``"user"`` or ``"default"`` (pixels). A
file value outside the plausible range (:data:`PLAUSIBLE`; 0, negative, NaN, 1e30...)
is not used: that part stays in pixels and :attr:`Calibration.warnings` says why. The
same value given by the user is refused with a :class:`CalibrationError`.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import CalibrationError

__all__ = [
    "FIELDS",
    "PLAUSIBLE",
    "SOURCES",
    "UNIT_SPELLINGS",
    "Calibration",
    "Measure",
    "axis_parts",
    "electron_wavelength",
    "file_calibration",
    "parse_unit",
    "stored_calibration",
    "unit_kind",
]

#: the parts of a calibration, with the number of values each holds
FIELDS = {"scan_step": 2, "detector_pixel": 2, "camera_length": 1, "beam_energy": 1}
#: where a part came from
SOURCES = ("file", "user", "default")
#: a part's "pixels" unit when neither the file nor the user calibrates it
PIXELS = "px"

#: Unit spellings of microscopy files and packages that pint reads otherwise (or not
#: at all), mapped before parsing. Keys are compared without spaces or brackets.
UNIT_SPELLINGS = {
    "a": "angstrom",
    "å": "angstrom",
    "a^-1": "1/angstrom",
    "å^-1": "1/angstrom",
    "1/a": "1/angstrom",
    "1/å": "1/angstrom",
    "n_m": "nm",  # openNCEM / EMD 1.0
    "1/n_m": "1/nm",
    "meters": "m",  # TIA
    "1/meters": "1/m",
}
_PIXEL_SPELLINGS = {"px", "pixel", "pixels", "pix"}
#: what files write for an axis nobody calibrated (DM, HyperSpy, emdfile)
_UNCALIBRATED = _PIXEL_SPELLINGS | {"", "unknown", "<undefined>", "undefined", "none"}
_ANGLE_UNITS = ("radian", "degree", "arcminute", "arcsecond")

#: Plausible magnitudes (in the unit named) of each part, per kind; a file value
#: outside falls back to pixels with a warning, a user value is refused.
PLAUSIBLE = {
    ("scan_step", "length"): (1e-4, 1e7, "nm"),  # 0.1 pm .. 1 cm
    ("detector_pixel", "angle"): (1e-6, 1e3, "mrad"),
    ("detector_pixel", "reciprocal"): (1e-7, 1e3, "1/nm"),
    ("detector_pixel", "length"): (1e-2, 1e5, "um"),  # a sensor's pitch
    ("beam_energy", "voltage"): (1e-1, 1e5, "kV"),
    ("camera_length", "length"): (1e-4, 1e3, "m"),
    ("beam_energy", "energy"): (1e-1, 1e5, "keV"),  # 100 eV .. 100 MeV
}
#: what each part may be, for the error messages
_EXPECTED = {
    "scan_step": "a length such as '0.5 nm' or '2 Å'",
    "detector_pixel": "an angle such as '0.8 mrad' or a reciprocal length such as '0.02 1/nm' "
    "(a sensor pitch in µm needs camera_length too)",
    "camera_length": "a length such as '115 mm'",
    "beam_energy": "an energy or accelerating voltage such as '300 keV' or '200 kV'",
}


@functools.lru_cache(maxsize=1)
def _registry():
    import pint

    return pint.UnitRegistry()


def parse_unit(text: str, field: str = "unit"):
    """The pint unit of ``text`` (microscopy spellings first), or CalibrationError
    naming ``field``."""
    if not isinstance(text, str) or not text.strip():
        raise CalibrationError(f"{field}: the unit must be a non-empty string such as 'nm', got {text!r}")
    spelled = UNIT_SPELLINGS.get(_bare(text), text.strip())
    try:
        return _registry().Unit(spelled)
    except Exception as exc:  # pint raises several kinds for text it cannot read
        raise CalibrationError(
            f"{field}: unknown unit {text!r} ({type(exc).__name__}); expected "
            f"{_EXPECTED.get(field, 'a unit pint knows')}"
        ) from None


def _kind(unit) -> Optional[str]:
    """``"length"``, ``"reciprocal"``, ``"angle"``, ``"energy"``, ``"voltage"`` or None."""
    dims = unit.dimensionality
    if dims == {"[length]": 1}:
        return "length"
    if dims == {"[length]": -1}:
        return "reciprocal"
    if not dims:
        # pint's radian is dimensionless, like a plain number: only named angles count
        names = list(unit._units.items())
        if len(names) == 1 and names[0][1] == 1 and names[0][0].endswith(_ANGLE_UNITS):
            return "angle"
        return None
    if dims == {"[length]": 2, "[mass]": 1, "[time]": -2}:
        return "energy"
    if dims == {"[length]": 2, "[mass]": 1, "[time]": -3, "[current]": -1}:
        return "voltage"
    return None


def unit_kind(text: str) -> Optional[str]:
    """What ``text`` measures: ``"length"``, ``"reciprocal"`` (length), ``"angle"``,
    ``"energy"``, ``"voltage"``, or None for anything else (pixels included: pint's
    ``px`` is a printer's length); CalibrationError when pint cannot read it."""
    return None if _is_pixels(text) else _kind(parse_unit(text))


_KIND_NAMES = {
    "length": "a length",
    "reciprocal": "a reciprocal length",
    "angle": "an angle",
    "energy": "an energy",
    "voltage": "a voltage",
}
_KINDS = {
    "scan_step": ("length",),
    "detector_pixel": ("angle", "reciprocal", "length"),
    "camera_length": ("length",),
    "beam_energy": ("energy", "voltage"),
}


def _unit_text(unit) -> str:
    return format(unit, "~C")


@dataclass(frozen=True)
class Measure:
    """One part of a calibration: ``values`` (two for (y, x) parts, one for scalars)
    in ``unit``, from ``source`` (``"file"``, ``"user"`` or ``"default"``), with an
    optional ``note`` on how it was found."""

    values: tuple
    unit: str
    source: str
    note: Optional[str] = None

    def to_dict(self) -> dict:
        value = list(self.values) if len(self.values) > 1 else self.values[0]
        out = {"value": value, "unit": self.unit, "source": self.source}
        if self.note:
            out["note"] = self.note
        return out

    def to(self, unit: str) -> tuple:
        """The values converted to ``unit`` (plain length/angle/energy conversions)."""
        ureg = _registry()
        factor = ureg.Quantity(1.0, parse_unit(self.unit)).to(parse_unit(unit)).magnitude
        return tuple(v * factor for v in self.values)

    @property
    def kind(self) -> str:
        return _kind(parse_unit(self.unit))


def electron_wavelength(energy_kev: float) -> float:
    """The relativistic wavelength (nm) of electrons of kinetic energy ``energy_kev``."""
    ureg = _registry()
    energy = ureg.Quantity(energy_kev, "keV")
    rest = ureg.Quantity(1.0, "electron_mass") * ureg.Quantity(1.0, "speed_of_light") ** 2
    wavelength = ureg.Quantity(1.0, "planck_constant") * ureg.Quantity(1.0, "speed_of_light") / (
        (energy * (energy + 2 * rest)) ** 0.5
    )
    return float(wavelength.to("nm").magnitude)


class Calibration:
    """Scan step, detector pixel size, camera length and beam energy of a data set.

    Build one from a dict (``Calibration({"scan_step": "0.5 nm"})``, every part
    optional) or get it from ``dataset.calibration``. Parts accept ``"0.5 nm"``, a
    ``(y, x)`` pair of such strings, ``(value, unit)``, ``{"value": ..., "unit":
    ...}`` (the :meth:`to_dict` form) or a pint quantity. Missing parts are pixels
    (source ``"default"``). Instances are immutable; :meth:`override` returns a new
    one.
    """

    def __init__(self, parts: Optional[Mapping] = None, *, source: str = "user", warnings: Sequence[str] = ()):
        if isinstance(parts, Calibration):
            self._parts, self.warnings = dict(parts._parts), tuple(parts.warnings)
            return
        if parts is not None and not isinstance(parts, Mapping):
            raise CalibrationError(
                f"calibration must be a dict such as {{'scan_step': '0.5 nm'}}, got {type(parts).__name__}"
            )
        parts = dict(parts or {})
        unknown = sorted(set(parts) - set(FIELDS) - {"warnings"})
        if unknown:
            raise CalibrationError(
                f"calibration has unknown part(s) {', '.join(map(repr, unknown))}; the parts are "
                f"{', '.join(FIELDS)}"
            )
        self.warnings = tuple(warnings) + tuple(parts.pop("warnings", None) or ())
        given = {name: _measure(name, value, source) for name, value in parts.items()}
        self._parts = _finish(given)

    # -- the parts -------------------------------------------------------------------
    def __getitem__(self, name: str) -> Optional[Measure]:
        if name not in FIELDS:
            raise KeyError(f"no calibration part {name!r}; the parts are {', '.join(FIELDS)}")
        return self._parts.get(name)

    @property
    def scan_step(self) -> Optional[Measure]:
        return self._parts.get("scan_step")

    @property
    def detector_pixel(self) -> Optional[Measure]:
        return self._parts.get("detector_pixel")

    @property
    def camera_length(self) -> Optional[Measure]:
        return self._parts.get("camera_length")

    @property
    def beam_energy(self) -> Optional[Measure]:
        return self._parts.get("beam_energy")

    def source(self, name: str) -> str:
        """Where part ``name`` came from: ``"file"``, ``"user"`` or ``"default"``."""
        part = self[name]
        return part.source if part is not None else "default"

    @property
    def is_calibrated(self) -> bool:
        return self.scan_step is not None or self.detector_pixel is not None

    def wavelength_nm(self) -> Optional[float]:
        """The electron wavelength (nm) at the beam energy, None without one."""
        energy = self.beam_energy
        return None if energy is None else electron_wavelength(energy.to("keV")[0])

    def detector_pixel_in(self, unit: str) -> Optional[tuple]:
        """The detector pixel size (y, x) in ``unit`` (an angle or a reciprocal
        length), converting through the electron wavelength when the kinds differ;
        None when uncalibrated or when the conversion needs a beam energy the
        calibration lacks."""
        pixel = self.detector_pixel
        if pixel is None:
            return None
        target = _kind(parse_unit(unit))
        if target not in ("angle", "reciprocal"):
            raise CalibrationError(f"detector pixel sizes convert to an angle or a reciprocal length, not {unit!r}")
        if pixel.kind == target:
            return pixel.to(unit)
        wavelength = self.wavelength_nm()
        if wavelength is None:
            return None
        if target == "angle":  # theta = q * lambda
            radians = tuple(q * wavelength for q in pixel.to("1/nm"))
            return Measure(radians, "rad", pixel.source).to(unit)
        inverse_nm = tuple(t / wavelength for t in pixel.to("rad"))
        return Measure(inverse_nm, "1/nm", pixel.source).to(unit)

    def preferred_detector_unit(self) -> Optional[str]:
        """``"mrad"`` when the detector pixel converts to an angle, else ``"1/nm"``;
        None when the detector is uncalibrated."""
        if self.detector_pixel is None:
            return None
        return "mrad" if self.detector_pixel_in("mrad") is not None else "1/nm"

    # -- coordinates -----------------------------------------------------------------
    def scan_axes(self, nav_shape: Sequence[int]) -> list:
        """``[(values, unit), ...]`` per scan axis: ``index * step`` in the scan
        step's unit for a 2-D scan, else (and when uncalibrated) the index in px."""
        step = self.scan_step
        if step is None or len(nav_shape) != 2:
            return [(np.arange(n, dtype=np.float64), PIXELS) for n in nav_shape]
        return [(np.arange(n) * s, step.unit) for n, s in zip(nav_shape, step.values)]

    def detector_axes(self, sig_shape: Sequence[int]) -> list:
        """``[(values, unit), ...]`` for detector rows and columns: distances from the
        detector's geometric centre ``(n - 1) / 2`` in the pixel size's unit, or the
        pixel index in px when uncalibrated."""
        pixel = self.detector_pixel
        if pixel is None:
            return [(np.arange(n, dtype=np.float64), PIXELS) for n in sig_shape]
        return [((np.arange(n) - (n - 1) / 2) * s, pixel.unit) for n, s in zip(sig_shape, pixel.values)]

    # -- changing and serialising --------------------------------------------------
    def override(self, parts) -> "Calibration":
        """A new calibration with the parts of ``parts`` (a dict or Calibration, the
        user's) replacing these; warnings about replaced parts are dropped."""
        if parts is None:
            return self
        other = parts if isinstance(parts, Calibration) else Calibration(parts, source="user")
        given = {k: v for k, v in other._parts.items() if v.source != "default"}
        merged = Calibration()
        merged._parts = _finish({**self._parts, **given})
        merged.warnings = tuple(
            w for w in self.warnings if not any(w.startswith(f"{name}:") for name in given)
        ) + tuple(other.warnings)
        return merged

    def to_dict(self) -> dict:
        """Plain JSON: every part as ``{"value", "unit", "source"}`` (uncalibrated
        parts as ``"default"``), and the warnings."""
        out = {}
        for name, count in FIELDS.items():
            part = self._parts.get(name)
            if part is not None:
                out[name] = part.to_dict()
            elif count == 2:
                out[name] = {"value": [1.0, 1.0], "unit": PIXELS, "source": "default"}
            else:
                out[name] = {"value": None, "unit": None, "source": "default"}
        out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "user") -> "Calibration":
        """The inverse of :meth:`to_dict`: sources kept, ``source`` for parts that
        name none."""
        return cls(data, source=source)

    def describe(self) -> list:
        """One line per part and warning, for ``stem-explorer info``."""
        lines = []
        for name in FIELDS:
            part = self._parts.get(name)
            if part is None:
                text = "pixels" if FIELDS[name] == 2 else "unknown"
            else:
                values = " x ".join(f"{v:.6g}" for v in part.values)
                text = f"{values} {part.unit}" + (f" ({part.note})" if part.note else "")
            lines.append(f"{name}: {text} [{self.source(name)}]")
        wavelength = self.wavelength_nm()
        if wavelength is not None:
            lines.append(f"electron wavelength: {wavelength * 1e3:.5g} pm")
        lines += [f"warning: {w}" for w in self.warnings]
        return lines

    def __eq__(self, other) -> bool:
        return isinstance(other, Calibration) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return "<Calibration " + "; ".join(self.describe()) + ">"


# -- building the parts ----------------------------------------------------------------
def _measure(name: str, value: Any, source: str) -> Optional[Measure]:
    """A :class:`Measure` for part ``name`` from any accepted form (None: not given)."""
    if value is None:
        return None
    if isinstance(value, Measure):
        return value
    note = None
    if isinstance(value, Mapping):
        if value.get("value") is None or value.get("unit") in (None, PIXELS):
            return None  # a default part of to_dict()
        source, note = value.get("source", source), value.get("note")
        numbers, unit = value["value"], value["unit"]
    elif hasattr(value, "magnitude") and hasattr(value, "units"):  # a pint quantity
        numbers, unit = value.magnitude, str(value.units)
    elif isinstance(value, str):
        numbers, unit = _split_quantity(name, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[1], str) and not isinstance(value[0], str):
        numbers, unit = value
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        pairs = [_split_quantity(name, v) for v in value]
        units = {parse_unit(u, name) for _n, u in pairs}
        if len(units) != 1:
            # different spellings of one unit are fine; different units are converted
            first = pairs[0][1]
            numbers = [Measure((n,), u, source).to(first)[0] for n, u in pairs]
            unit = first
        else:
            numbers, unit = [n for n, _u in pairs], pairs[0][1]
    else:
        raise CalibrationError(
            f"{name}: cannot read {value!r}; give {_EXPECTED[name]} (a string with its unit, "
            f"a (y, x) pair of them, or (value, unit))"
        )
    if source not in SOURCES:
        raise CalibrationError(f"{name}: source must be one of {SOURCES}, got {source!r}")
    values = _values(name, numbers)
    if isinstance(unit, str) and _is_pixels(unit):
        raise CalibrationError(
            f"{name}: {unit!r} is not a physical unit; leave {name} out to keep pixels, or "
            f"give {_EXPECTED[name]}"
        )
    kind = _kind(parse_unit(unit, name))
    if kind not in _KINDS[name]:
        raise CalibrationError(
            f"{name}: the unit {unit!r} is {_KIND_NAMES.get(kind, 'of another kind')}; "
            f"expected {_EXPECTED[name]}"
        )
    return Measure(values, _unit_text(parse_unit(unit, name)), source, note)


def _split_quantity(name: str, text: str) -> tuple:
    match = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf)\s*(.*?)\s*", text, re.I)
    if not match or not match.group(2):
        raise CalibrationError(f"{name}: {text!r} is not a number with a unit; expected {_EXPECTED[name]}")
    return float(match.group(1)), match.group(2)


def _values(name: str, numbers) -> tuple:
    count = FIELDS[name]
    try:
        flat = [float(v) for v in np.atleast_1d(np.asarray(numbers, dtype=object))]
    except (TypeError, ValueError):
        raise CalibrationError(f"{name}: {numbers!r} is not a number or a (y, x) pair of numbers") from None
    if count == 2 and len(flat) == 1:
        flat = flat * 2  # one value for both axes
    if len(flat) != count:
        what = "a (y, x) pair or one value for both" if count == 2 else "one value"
        raise CalibrationError(f"{name}: got {len(flat)} values {flat}; expected {what}")
    bad = [v for v in flat if not math.isfinite(v) or v <= 0]
    if bad:
        raise CalibrationError(
            f"{name}: {bad[0]} is not a positive finite number; a calibration must be above 0 "
            f"(give the size of one step or pixel, e.g. {_EXPECTED[name]})"
        )
    return tuple(flat)


def _finish(parts: dict) -> dict:
    """Bring a voltage to an energy and a sensor pitch to an angle, checking every
    part's magnitude (before and after); CalibrationError names the first problem."""
    parts = {k: v for k, v in parts.items() if v is not None}
    for name, part in parts.items():
        _check_plausible(name, part)
    energy = parts.get("beam_energy")
    if energy is not None and energy.kind == "voltage":  # e * U: kV -> keV
        parts["beam_energy"] = replace(energy, values=energy.to("kV"), unit="keV")
    pixel = parts.get("detector_pixel")
    if pixel is not None and pixel.kind == "length":
        length = parts.get("camera_length")
        if length is None:
            raise CalibrationError(
                f"detector_pixel: {' x '.join(f'{v:g}' for v in pixel.values)} {pixel.unit} is a "
                f"length, the sensor's pixel pitch; give camera_length too (it turns the pitch "
                f"into an angle), or give the pixel size in mrad or 1/nm"
            )
        (camera_m,) = length.to("m")
        mrad = tuple(p / camera_m * 1e3 for p in pixel.to("m"))
        note = f"sensor pitch {' x '.join(f'{v:.4g}' for v in pixel.values)} {pixel.unit} / camera length"
        parts["detector_pixel"] = Measure(mrad, "mrad", pixel.source, pixel.note or note)
        _check_plausible("detector_pixel", parts["detector_pixel"])
    return parts


def _check_plausible(name: str, part: Measure) -> None:
    low, high, unit = PLAUSIBLE[(name, part.kind)]
    values = part.to(unit)
    if not all(low <= v <= high for v in values):
        shown = " x ".join(f"{v:g}" for v in part.values)
        raise CalibrationError(
            f"{name}: {shown} {part.unit} is implausible (expected between {low:g} and "
            f"{high:g} {unit}); check the value and its unit"
        )


def file_calibration(where: str, parts: Mapping) -> Calibration:
    """The calibration a reader found in ``where`` (a file, for the messages).

    ``parts`` maps part names to ``(values, unit)`` or ``(values, unit, note)`` (None
    or a missing key: not stored; a unit that spells pixels: not calibrated). A part
    whose unit cannot be read or is of the wrong kind, or whose value is implausible,
    is left out with a warning that names the file and says how to set the part.
    """
    found, warnings = {}, []

    def drop(name: str, problem: Exception) -> None:
        fix = "; it stays in pixels" if FIELDS[name] == 2 else ""
        why = str(problem).removeprefix(f"{name}: ")
        warnings.append(
            f"{name}: the value stored in {where} is not used ({why}){fix}; pass "
            f"calibration={{'{name}': ...}} to set it"
        )

    for name, given in parts.items():
        if given is None:
            continue
        values, unit, *note = given
        if isinstance(unit, str) and _uncalibrated(unit):
            continue
        try:
            measure = _measure(name, {"value": values, "unit": unit, "source": "file",
                                      "note": note[0] if note else None}, "file")
            found[name] = _in_nanometres(measure) if FIELDS[name] == 2 else measure
            _check_plausible(name, found[name])
        except CalibrationError as exc:
            found.pop(name, None)
            drop(name, exc)
    try:
        resolved = _finish(found)
    except CalibrationError as exc:  # a pitch without a camera length, or out of range
        found.pop("detector_pixel")
        drop("detector_pixel", exc)
        resolved = _finish(found)
    calibration = Calibration()
    calibration._parts = resolved
    calibration.warnings = tuple(warnings)
    return calibration


def _in_nanometres(part: Measure) -> Measure:
    """Scan steps and pixel sizes in metres or 1/m (TIA, NeXus) as nm and 1/nm, the
    scale of 4D-STEM, as HyperSpy shows them."""
    for si, nano in (("m", "nm"), ("1/m", "1/nm")):
        if part.unit == si:
            return replace(part, values=part.to(nano), unit=nano)
    return part


def _bare(unit: str) -> str:
    return re.sub(r"[\s\[\]]", "", unit).lower()


def _is_pixels(unit: str) -> bool:
    return _bare(unit) in _PIXEL_SPELLINGS


def _uncalibrated(unit: str) -> bool:
    return _bare(unit) in _UNCALIBRATED


def axis_parts(per_axis: Sequence) -> dict:
    """``scan_step`` and ``detector_pixel`` parts for :func:`file_calibration` from one
    ``(scale, unit)`` (or None) per axis of the data set: ``(scan y, scan x, detector
    y, detector x)``, or the detector's two. A pair whose axes differ in unit, or lack
    one, is left out (not calibrated)."""
    parts = {}
    pairs = {"scan_step": per_axis[:2] if len(per_axis) == 4 else [], "detector_pixel": per_axis[-2:]}
    for name, pair in pairs.items():
        if len(pair) == 2 and None not in pair and pair[0][1] == pair[1][1] and isinstance(pair[0][1], str):
            parts[name] = ([pair[0][0], pair[1][0]], pair[0][1])
    return parts


def stored_calibration(metadata: Mapping, where: str) -> Calibration:
    """The calibration a data set written by this package keeps in its metadata
    (``metadata["calibration"]``, the :meth:`Calibration.to_dict` form); one that
    cannot be read gives pixels and a warning naming ``where``."""
    stored = metadata.get("calibration")
    if stored is None:
        return Calibration()
    try:
        return Calibration.from_dict(stored, source="file")
    except CalibrationError as exc:
        return Calibration(warnings=[
            f"calibration: the one stored in {where} is not used ({exc}); the data set is in "
            f"pixels unless you pass calibration={{...}}"
        ])
