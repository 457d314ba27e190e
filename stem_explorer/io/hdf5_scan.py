"""Scan shape of HDF5 frames stored as a 3-D stack ``(frames, sy, sx)``, from metadata.

Detector master files (DECTRIS ARINA / EIGER NeXus, say) store a 4D-STEM scan as a
stack of frames; where the files say how the stack folds into a raster scan, the
reader uses it. In order, the first that applies:

1. ``nav_shape=`` given by the user;
2. a 4-D dataset: its own first two axes;
3. a ``scan_shape`` attribute ``(rows, columns)`` on the frames dataset or any group
   above it in the opened file (a user or pipeline can add one to any file); it must
   match the frame count;
4. the ``STEM Metadata`` group (attributes ``NumPixelsY``, ``NumPixelsX``) that the
   ARINA acquisition writes to ``<name>.h5`` beside ``<name>_master.h5`` (or inside
   the opened file);
5. the DECTRIS ``detectorSpecific`` fields of the NeXus master,
   ``/entry/instrument/detector/detectorSpecific/ntrigger`` and ``nimages``, when both
   are above one: one trigger per scan row of ``nimages`` positions (with one image
   per trigger, the usual ARINA setting, they say nothing about the rows);
6. otherwise a stack ``(n_frames,)``.

Metadata that disagrees with the frame count (an acquisition stopped early, a sidecar
of another scan) is not used; the stack is returned and the source says why, as it
says what was missing or unreadable when nothing applied (a sidecar that is not HDF5,
a ``STEM Metadata`` group without its attributes...), and
``metadata["scan_shape_hint"]`` says how to pass the scan shape. The source is
recorded as ``metadata["scan_shape_source"]``.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import h5py
import numpy as np

from ..errors import DataSetError
from .raw import nav_shape_hint, parse_shape

__all__ = ["SCAN_SHAPE_ATTRIBUTE", "scan_shape", "stem_metadata"]

#: Attribute (on the frames or a group above them) giving the scan as (rows, columns).
SCAN_SHAPE_ATTRIBUTE = "scan_shape"
_DECTRIS = "/entry/instrument/detector/detectorSpecific"
_STEM_METADATA = "STEM Metadata"


def scan_shape(f: h5py.File, path: str, ds_path: str, shape, nav_shape=None) -> tuple[tuple, str, dict]:
    """``(nav_shape, source, extra metadata)`` of the frames ``ds_path`` (shape
    ``shape``) in the open file ``f`` opened from ``path``."""
    if nav_shape is not None:
        return parse_shape("nav_shape", nav_shape, (1, 2)), "nav_shape option", {}
    if len(shape) == 4:
        return tuple(shape[:2]), "dataset shape", {}
    n_frames = int(shape[0])
    attribute = _attribute_shape(f, path, ds_path, n_frames)
    if attribute is not None:
        return attribute
    rejected, notes = [], []
    for found, note in (_stem_metadata(f, path), _dectris_triggers(f)):
        if found is None:
            notes.append(note)
            continue
        nav, source, extra = found
        if math.prod(nav) == n_frames:
            return nav, source, extra
        rejected.append(f"{source} gives {nav[0]}x{nav[1]} = {math.prod(nav)} positions")
    hint = {"scan_shape_hint": nav_shape_hint(n_frames)}
    if rejected:
        note = "; ".join(rejected)
        return (n_frames,), f"frame count (stack); not used: {note}, but there are {n_frames} frames", hint
    return (n_frames,), f"frame count (stack): {'; '.join(notes)}", hint


def _attribute_shape(f: h5py.File, path: str, ds_path: str, n_frames: int):
    parts = ds_path.strip("/").split("/")
    for depth in range(len(parts), -1, -1):
        where = "/" + "/".join(parts[:depth])
        value = f[where].attrs.get(SCAN_SHAPE_ATTRIBUTE)
        if value is None:
            continue
        try:
            nav = parse_shape(SCAN_SHAPE_ATTRIBUTE, [int(v) for v in np.atleast_1d(value)], (1, 2))
        except (TypeError, ValueError, DataSetError):
            raise DataSetError(
                f"the {SCAN_SHAPE_ATTRIBUTE!r} attribute of {where!r} in {path!r} is {value!r}, "
                f"not (rows, columns); fix it or pass nav_shape=..."
            ) from None
        if math.prod(nav) != n_frames:
            raise DataSetError(
                f"the {SCAN_SHAPE_ATTRIBUTE!r} attribute of {where!r} in {path!r} says the "
                f"scan is {nav} ({math.prod(nav)} positions) but {ds_path!r} holds "
                f"{n_frames} frames; fix the attribute or pass nav_shape=..."
            )
        return nav, f"{SCAN_SHAPE_ATTRIBUTE} attribute of {where}", {}
    return None


def stem_metadata(f: h5py.File, path: str) -> tuple[Optional[dict], str]:
    """``(attributes, where)`` of the ARINA ``STEM Metadata`` group in the file or in
    the sidecar ``<name>.h5`` of ``<name>_master.h5``; ``(None, why not)`` when there
    is none or it cannot be read."""
    group = f.get(_STEM_METADATA)
    if isinstance(group, h5py.Group):
        return _attributes(group, os.path.basename(path))
    stem, suffix = os.path.splitext(path)
    sidecar = stem[: -len("_master")] + suffix if stem.endswith("_master") else None
    if not sidecar or not os.path.isfile(sidecar):
        beside = f" or a {os.path.basename(sidecar)} beside it" if sidecar else ""
        return None, f"no {_STEM_METADATA!r} group in the file{beside}"
    where = os.path.basename(sidecar)
    try:
        with h5py.File(sidecar, "r") as side:
            group = side.get(_STEM_METADATA)
            if not isinstance(group, h5py.Group):
                return None, f"the sidecar {where} has no {_STEM_METADATA!r} group"
            return _attributes(group, where)
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        return None, f"the sidecar {where} cannot be read as HDF5 ({exc})"


def _attributes(group: h5py.Group, where: str) -> tuple[Optional[dict], str]:
    try:
        return dict(group.attrs), where
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        return None, f"the {_STEM_METADATA!r} attributes in {where} cannot be read ({exc})"


def _stem_metadata(f: h5py.File, path: str):
    """``(found, why not)``: ``found`` is ``(NumPixelsY x NumPixelsX, source, extra)``
    of the ``STEM Metadata`` (:func:`stem_metadata`), else None and a note saying what
    was missing."""
    attrs, where = stem_metadata(f, path)
    if attrs is None:
        return None, where
    found = _num_pixels(attrs)
    if found is None:
        return None, f"{_STEM_METADATA!r} in {where} has no positive NumPixelsY/NumPixelsX"
    source = f"{_STEM_METADATA} NumPixelsY x NumPixelsX ({where})"
    return (found, source, {"scan_metadata_file": where}), None


def _num_pixels(attrs: dict) -> Optional[tuple[int, int]]:
    try:
        ny, nx = (int(np.ravel(attrs[k])[0]) for k in ("NumPixelsY", "NumPixelsX"))
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return (ny, nx) if ny > 0 and nx > 0 else None


def _dectris_triggers(f: h5py.File):
    """``(found, why not)``: ``found`` is ``((ntrigger, nimages), source, extra)`` of a
    DECTRIS NeXus master when both exceed one, else None and a note."""
    group = f.get(_DECTRIS)
    if not isinstance(group, h5py.Group):
        return None, "no DECTRIS detectorSpecific group"
    try:
        rows, columns = (int(np.ravel(group[k][()])[0]) for k in ("ntrigger", "nimages"))
    except (KeyError, TypeError, ValueError, IndexError, OSError, RuntimeError):
        return None, "no readable DECTRIS ntrigger/nimages"
    if rows <= 1 or columns <= 1:
        return None, (
            f"DECTRIS ntrigger {rows} x nimages {columns} says nothing about scan rows "
            f"(one image per trigger)"
        )
    return ((rows, columns), "DECTRIS detectorSpecific ntrigger x nimages", {}), None
