"""Fallback reader through RosettaSciIO (``rsciio``) for formats without a native one.

``open_dataset(path, format="rsciio")`` opens the file with rsciio's lazy reader for
its suffix and hands the resulting dask array to the in-memory reader
(:func:`~stem_explorer.io.memory.open_memory`): frames are computed on the cluster
partition by partition. It is never picked by suffix or magic bytes, so a format with
a native reader always gets that one.

rsciio is an optional extra (``pip install stem_explorer[rsciio]``) and is licensed
under the GPL-3.0: installing it brings GPL code into the environment, so it is not a
dependency of stem_explorer.
"""

from __future__ import annotations

import importlib
import os
from typing import Optional

from ..errors import DataSetError, FormatError
from .calibration import Calibration, axis_parts, file_calibration
from .memory import InMemoryDataSet, is_dask_array, open_memory
from .registry import ReaderPlugin, register_reader

__all__ = ["open_rsciio", "rsciio_calibration"]

_MISSING = (
    "format='rsciio' needs RosettaSciIO, which is not installed; install the optional "
    "extra with `pip install stem_explorer[rsciio]` (note: rsciio is licensed under the "
    "GPL-3.0), or use a native reader (see `stem-explorer formats`)"
)


def _rsciio():
    try:
        return importlib.import_module("rsciio")
    except ImportError:
        raise FormatError(_MISSING) from None


def _plugin_for(rsciio, path: str, reader: Optional[str]) -> dict:
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    for plugin in rsciio.IO_PLUGINS:
        names = {plugin.get("name", "").lower()} | {n.lower() for n in plugin.get("name_aliases", [])}
        if reader is not None and reader.lower() in names:
            return plugin
        if reader is None and suffix in {e.lower() for e in plugin.get("file_extensions", [])}:
            return plugin
    raise FormatError(
        f"RosettaSciIO has no reader for {path!r}"
        + (f" named {reader!r}" if reader else f" (suffix .{suffix})")
        + "; pass reader=... with one of its plugin names"
    )


def open_rsciio(path, *, reader: Optional[str] = None, nav_shape=None) -> InMemoryDataSet:
    """Open ``path`` lazily with RosettaSciIO (the plugin for its suffix, or ``reader``)
    and wrap the first 3-D/4-D signal as an in-memory dask data set."""
    rsciio = _rsciio()
    path = os.fspath(path)
    plugin = _plugin_for(rsciio, path, reader)
    api = importlib.import_module(plugin["api"])
    signals = api.file_reader(path, lazy=True)
    for signal in signals:
        data = signal.get("data")
        if data is not None and getattr(data, "ndim", 0) in (3, 4):
            if not is_dask_array(data):
                import dask.array as da

                data = da.from_array(data)
            ds = open_memory(data, nav_shape=nav_shape)
            ds.path = path
            ds.metadata.update(
                {"reader": "rsciio", "rsciio_plugin": plugin.get("name"),
                 "original_metadata_keys": sorted(signal.get("original_metadata", {}))}
            )
            ds.calibration = rsciio_calibration(signal, path, reshaped=nav_shape is not None)
            return ds
    raise DataSetError(
        f"RosettaSciIO read {path!r} but found no 3-D/4-D signal among "
        f"{[getattr(s.get('data'), 'shape', None) for s in signals]}"
    )


def rsciio_calibration(signal: dict, path: str, *, reshaped: bool = False) -> Calibration:
    """Scan step and detector pixel size from the ``axes`` of an rsciio signal
    dictionary (one per array axis, in array order: ``scale`` and ``units``), beam
    energy (keV) and camera length (mm) from ``metadata/Acquisition_instrument/TEM``;
    a scan reshaped by ``nav_shape`` keeps the detector's only."""
    axes = [(a.get("scale"), a.get("units")) if isinstance(a, dict) else None for a in signal.get("axes") or []]
    parts = axis_parts(axes[-2:] if reshaped else axes)
    tem = ((signal.get("metadata") or {}).get("Acquisition_instrument") or {}).get("TEM") or {}
    for name, key, unit in (("beam_energy", "beam_energy", "keV"), ("camera_length", "camera_length", "mm")):
        if isinstance(tem.get(key), (int, float)):
            parts[name] = (tem[key], unit)
    return file_calibration(repr(os.path.basename(path)), parts)


PLUGIN = register_reader(
    ReaderPlugin(
        name="rsciio",
        open=open_rsciio,
        suffixes=(),
        description="fallback via RosettaSciIO lazy readers (extra `rsciio`, GPL-3.0)",
    ),
    replace=True,
)
