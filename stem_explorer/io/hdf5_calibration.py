"""Calibration stored in HDF5 files: HyperSpy ``.hspy``, EMD 1.0 (py4DSTEM, emdfile),
and DECTRIS ARINA / NeXus master files.

Each layout gives what it has, in this order of preference per part:

* hspy: the ``axis-<i>`` groups beside ``/Experiments/<name>/data`` (attributes
  ``scale`` and ``units``, one group per array axis), and
  ``metadata/Acquisition_instrument/TEM`` (``beam_energy`` in keV, ``camera_length``
  in mm);
* EMD 1.0: the ``dim<i>`` datasets beside the frames (``dim0``... as emdfile /
  py4DSTEM write them, ``dim1``... in older EMD files): the step is ``dim[1] -
  dim[0]``, the unit the ``units`` attribute (``"A"`` is the ångström, ``"pixels"``
  and ``"unknown"`` mean uncalibrated);
* ARINA: the ``STEM Metadata`` group (see :mod:`~stem_explorer.io.hdf5_scan`):
  ``Pixel Size`` (the scan step, nm, as py4DSTEM and openNCEM read it), ``Camera
  Length`` (m), ``High Tension`` (V);
* NeXus (NXmx, DECTRIS masters): ``/entry/instrument/detector`` ``x_pixel_size`` /
  ``y_pixel_size`` (the sensor pitch, turned into an angle with the camera length),
  ``detector_distance`` when above 0 (DECTRIS writes 0 when it is not set) and
  ``detectorSpecific/photon_energy`` (for electron detectors, the beam energy).
"""

from __future__ import annotations

import os
from typing import Optional

import h5py
import numpy as np

from .calibration import Calibration, axis_parts, file_calibration
from .hdf5_scan import stem_metadata

__all__ = ["hdf5_calibration"]

_DETECTOR = "/entry/instrument/detector"
_ERRORS = (KeyError, OSError, RuntimeError, ValueError, TypeError, IndexError)


def hdf5_calibration(f: h5py.File, path: str, ds_path: str, axes: tuple) -> Calibration:
    """The calibration of the frames ``ds_path`` in the open file ``f``.

    ``axes`` are the indices of the dataset's axes that are the data set's
    ``(scan y, scan x, detector y, detector x)`` (a stack: ``(detector y, detector
    x)`` only).
    """
    parts: dict = {}
    for found in (_hspy(f, ds_path, axes), _emd(f, ds_path, axes), _arina(f, path), _nexus(f)):
        for name, value in found.items():
            parts.setdefault(name, value)
    return file_calibration(repr(os.path.basename(path)), parts)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.reshape(-1)[0])
    return str(value)


def _number(value) -> Optional[float]:
    try:
        return float(np.ravel(value)[0])
    except (TypeError, ValueError, IndexError):
        return None


def _hspy(f: h5py.File, ds_path: str, axes: tuple) -> dict:
    parent, name = os.path.split(ds_path.rstrip("/"))
    if name != "data" or not parent.startswith("/Experiments/"):
        return {}
    try:
        group = f[parent]
        per_axis = []
        for i in range(max(axes) + 1):
            attrs = group[f"axis-{i}"].attrs if f"axis-{i}" in group else {}
            scale, units = attrs.get("scale"), attrs.get("units")
            per_axis.append(None if scale is None or units is None else (_number(scale), _text(units)))
        parts = axis_parts([per_axis[a] for a in axes])
        tem = group.get("metadata/Acquisition_instrument/TEM")
        if isinstance(tem, h5py.Group):
            for part, key, unit in (("beam_energy", "beam_energy", "keV"), ("camera_length", "camera_length", "mm")):
                if key in tem.attrs:
                    parts[part] = (_number(tem.attrs[key]), unit)
        return parts
    except _ERRORS:
        return {}


def _emd(f: h5py.File, ds_path: str, axes: tuple) -> dict:
    parent, name = os.path.split(ds_path.rstrip("/"))
    try:
        group = f[parent or "/"]
        if name != "data" or "emd_group_type" not in group.attrs:
            return {}
        first = 0 if "dim0" in group else 1
        per_axis = []
        for i in range(max(axes) + 1):
            dim = group.get(f"dim{i + first}")
            if not isinstance(dim, h5py.Dataset) or dim.shape[0] < 2 or "units" not in dim.attrs:
                per_axis.append(None)
                continue
            values = dim[:2]
            per_axis.append((float(values[1] - values[0]), _text(dim.attrs["units"])))
        return axis_parts([per_axis[a] for a in axes])
    except _ERRORS:
        return {}


def _arina(f: h5py.File, path: str) -> dict:
    attrs, where = stem_metadata(f, path)
    if attrs is None:
        return {}
    parts = {}
    step = _number(attrs.get("Pixel Size"))
    if step is not None:
        nominal = _number(attrs.get("IsPixelSizeCalibrated")) == 0
        note = f"STEM Metadata of {where}" + (" (nominal: IsPixelSizeCalibrated is 0)" if nominal else "")
        parts["scan_step"] = ([step, step], "nm", note)
    for part, key, unit in (("camera_length", "Camera Length", "m"), ("beam_energy", "High Tension", "V")):
        value = _number(attrs.get(key))
        if value is not None:
            parts[part] = (value, unit)
    return parts


def _nexus(f: h5py.File) -> dict:
    detector = f.get(_DETECTOR)
    if not isinstance(detector, h5py.Group):
        return {}
    parts = {}
    try:
        pitch = [detector.get(f"{axis}_pixel_size") for axis in ("y", "x")]
        if all(isinstance(p, h5py.Dataset) for p in pitch):
            units = {_text(p.attrs.get("units", "m")) for p in pitch}
            if len(units) == 1:
                parts["detector_pixel"] = ([_number(p[()]) for p in pitch], units.pop(),
                                           "NeXus sensor pitch / camera length")
        distance = detector.get("detector_distance")
        if isinstance(distance, h5py.Dataset) and (_number(distance[()]) or 0) > 0:
            parts["camera_length"] = (_number(distance[()]), _text(distance.attrs.get("units", "m")))
        energy = detector.get("detectorSpecific/photon_energy")
        if isinstance(energy, h5py.Dataset):
            parts["beam_energy"] = (_number(energy[()]), _text(energy.attrs.get("units", "eV")))
    except _ERRORS:
        return {}
    return parts
