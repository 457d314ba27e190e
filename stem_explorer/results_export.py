"""How results carry their calibrated axes to other tools: NeXus ``NXdata`` groups in
the HDF5 results file, resolution tags in TIFF images.

The NeXus entry follows the NXdata conventions (``@signal``, ``@axes``,
``@<axis>_indices``, ``@units`` on the axes) that silx, h5web, nexusformat and
HyperSpy's NeXus reader follow. Its datasets are hard links to the arrays under
``/results`` and ``/coords`` (one copy of the numbers, two names).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["NEXUS_ENTRY", "tiff_resolution", "write_nexus_entry"]

#: the NXentry group of a results file
NEXUS_ENTRY = "entry"
#: the largest TIFF RATIONAL numerator (uint32): finer resolutions per centimetre do
#: not fit, and are written per the axis's own unit instead
_RATIONAL_MAX = 2**32 - 1


def write_nexus_entry(f, arrays: dict) -> None:
    """Add ``/entry`` (NXentry) to the open results file ``f``: per result ``key``
    (``"<label>/<name>"``) an NXdata group ``/entry/<label>/<name>`` whose ``data`` is
    ``/results/<key>`` and whose axes are its coordinates ``/coords/<key>/<dim>``.

    The first result is the file's default plot (``@default`` down from the root).
    """
    entry = f.create_group(NEXUS_ENTRY)
    entry.attrs["NX_class"] = "NXentry"
    f.attrs["default"] = NEXUS_ENTRY
    for key, array in arrays.items():
        *labels, name = key.split("/")
        parent = entry
        for label in labels:
            if label not in parent:
                parent.create_group(label).attrs["NX_class"] = "NXcollection"
            parent.attrs.setdefault("default", label)
            parent = parent[label]
        parent.attrs.setdefault("default", name)
        group = parent.create_group(name)
        group.attrs["NX_class"] = "NXdata"
        signal = f[f"results/{key}"]
        group["data"] = signal  # a hard link
        group.attrs["signal"] = "data"
        signal.attrs["long_name"] = key
        if isinstance(array.attrs.get("units"), str):
            signal.attrs["units"] = array.attrs["units"]
        axes = []
        for index, dim in enumerate(array.dims):
            if dim in array.coords and dim != "data":
                group[dim] = f[f"coords/{key}/{dim}"]
                group.attrs[f"{dim}_indices"] = index
                axes.append(dim)
            else:
                axes.append(".")  # NeXus: this dimension has no axis
        group.attrs["axes"] = axes


def tiff_resolution(array) -> dict:
    """``tifffile.imwrite`` keywords for a 2-D result whose two axes are evenly
    spaced in one physical unit: ``resolution`` (pixels per unit, x then y) and
    ``resolutionunit``: ``CENTIMETER`` for lengths (the TIFF standard's unit), else
    ``NONE`` with the resolution per the axes' own unit (mrad, 1/nm), which the
    description names. Empty for anything else."""
    if np.ndim(array.data) != 2:
        return {}
    steps = [array.axis_step(dim) for dim in array.dims]
    if None in steps or steps[0][2] != steps[1][2] or steps[0][2] == "px":
        return {}
    unit = steps[0][2]
    per_unit = [1 / abs(s[1]) for s in (steps[1], steps[0])]  # x, then y
    per_cm = _per_centimetre(per_unit, unit)
    if per_cm is not None and max(per_cm) <= _RATIONAL_MAX:
        return {"resolution": tuple(per_cm), "resolutionunit": "CENTIMETER"}
    if max(per_unit) <= _RATIONAL_MAX and min(per_unit) >= 1 / _RATIONAL_MAX:
        return {"resolution": tuple(per_unit), "resolutionunit": "NONE"}
    return {}


def _per_centimetre(per_unit: list, unit: str) -> Optional[list]:
    """Pixels per centimetre from pixels per ``unit``, for length units."""
    from .io.calibration import Measure, unit_kind

    if unit_kind(unit) != "length":
        return None
    (unit_in_cm,) = Measure((1.0,), unit, "file").to("cm")
    return [p / unit_in_cm for p in per_unit]
