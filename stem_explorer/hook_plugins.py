"""Two event-hook plugins that come with the package (:mod:`stem_explorer.engine.hooks`).

* :class:`PreviewPNG` (``"preview-png"``): on ``on_result``, a grey-scale PNG of each
  scan image of the results (one pixel per scan position), next to the results file
  (``scan.h5`` -> ``scan.vd_bf.png``) or in a folder of your choice;
* :class:`JsonlLog` (``"jsonl-log"``): one JSON line per event appended to a log file.

Both are registered under the entry-point group ``stem_explorer.hooks``; since they
write files they run only when asked for, by name (``Session(..., hooks=["jsonl-log"])``)
or as objects (``hooks=[JsonlLog("run.jsonl")]``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
import numpy as np

from ._atomic import atomic_write, check_writable, check_writable_folder
from ._json import jsonable
from .engine.hooks import HookEvent
from .errors import OptionError

logger = logging.getLogger(__name__)

#: The scan dimensions of an image :class:`PreviewPNG` writes.
SCAN_IMAGE_DIMS = ("scan_y", "scan_x")

#: Percentiles mapped to black and white in a preview (hot pixels do not wash it out).
PREVIEW_PERCENTILES = (0.5, 99.5)

#: Where :class:`JsonlLog` appends when given no path (in the working folder).
DEFAULT_LOG = "stem_explorer-events.jsonl"


class PreviewPNG:
    """Writes a PNG of each scan image of a finished input's results.

    Parameters
    ----------
    folder : str or path, optional
        Where to write when the event names no results file (``output`` in its data:
        batches do; ``Session.run`` jobs do not). Without either, nothing is written.

    Raises
    ------
    OptionError
        Pillow is not installed.
    SaveError
        ``folder`` cannot be written.
    """

    def __init__(self, folder=None):
        try:
            import PIL.Image  # noqa: F401  (a missing Pillow should show now, not per input)
        except ImportError:
            raise OptionError("the preview-png hook needs Pillow: pip install pillow "
                              "(or stem_explorer[widgets])") from None
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            check_writable_folder(self.folder)
        #: the PNG files written so far
        self.written: list = []

    def on_result(self, event: HookEvent) -> None:
        output = event.data.get("output")
        if output is not None:
            folder, stem = Path(output).parent, Path(output).stem
        elif self.folder is not None:
            folder, stem = self.folder, Path(event.input).stem if event.input else f"job{event.job_id}"
        else:
            logger.debug("preview-png: event %s names no results file and no folder was given", event.name)
            return
        results = event.data["results"]
        for key in results:
            array = results[key]
            if tuple(array.dims) == SCAN_IMAGE_DIMS:
                self.written.append(write_preview(folder / f"{stem}.{key.replace('/', '_')}.png", array.data))


def write_preview(path, image) -> Path:
    """``image`` (2-D) as an 8-bit grey-scale PNG at ``path``, written atomically; the
    :data:`PREVIEW_PERCENTILES` of its finite values map to black and white, NaN to
    black."""
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, PREVIEW_PERCENTILES) if finite.size else (0.0, 1.0)
    scaled = np.clip((values - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    grey = np.where(np.isfinite(scaled), scaled * 255, 0).round().astype(np.uint8)
    path = Path(path)
    with atomic_write(path) as tmp:
        Image.fromarray(grey).save(tmp, format="PNG")
    return path


class JsonlLog:
    """Appends one JSON line per event to ``path``.

    Each line is a JSON object: ``event``, ``time``, ``job_id``, ``input`` and the
    event's data (results as their keys, stats as their resource figures, an error as
    its type and message). Lines are appended with one ``write`` on a file opened with
    ``O_APPEND``, so processes logging to the same file never interleave within a line.

    Parameters
    ----------
    path : str or path, optional
        The log file (created if absent); default :data:`DEFAULT_LOG` in the working
        folder.

    Raises
    ------
    SaveError
        ``path`` is a folder or its folder cannot be written.
    """

    def __init__(self, path=None):
        self.path = Path(os.path.abspath(path if path is not None else DEFAULT_LOG))
        check_writable(self.path)
        self._lock = threading.Lock()  # one line at a time from this process's threads

    def _append(self, event: HookEvent) -> None:
        line = json.dumps(event_record(event), separators=(",", ":")) + "\n"
        data = line.encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                written = os.write(fd, data)
            finally:
                os.close(fd)
        if written != len(data):  # a full file system: say so rather than leave half a line unnoticed
            raise OSError(f"only {written} of {len(data)} bytes of an event line reached {self.path}")

    on_submit = on_schedule = on_partition = on_result = on_error = on_complete = _append


def event_record(event: HookEvent) -> dict:
    """``event`` as a plain JSON object (what :class:`JsonlLog` writes)."""
    record = {"event": event.name, "time": event.time, "job_id": event.job_id, "input": event.input}
    for name, value in event.data.items():
        record[name] = _plain(value)
    return record


def _plain(value):
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if callable(getattr(value, "usage", None)):  # JobStats
        return value.usage()
    if hasattr(value, "provenance") and hasattr(value, "keys"):  # Results
        return {"keys": list(value.keys()), "complete": value.provenance.get("complete")}
    return jsonable(value)

