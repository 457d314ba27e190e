"""The batch summary: one row per input in ``summary.csv`` and ``summary.json``.

Both files are written atomically (a reader or a killed batch never sees part of
one) as rows complete, at most every :data:`WRITE_INTERVAL_S` seconds and once at
the end: the results files are the record a re-run trusts, the summary is their
table. Rewriting it costs time in proportion to its rows (and two ``fsync``s), so a
big batch's summary is rewritten less often: writing it takes at most
:data:`WRITE_SHARE` of the batch's time. The CSV has fixed columns first, then the mean of every result array
(``mean vd/bf``...), so it opens in a spreadsheet and plots directly.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .._atomic import atomic_write
from .._json import jsonable

#: The fixed columns of the summary, in order.
COLUMNS = (
    "input", "output", "status", "error", "scan_shape", "detector_shape", "dtype", "bytes", "seconds", "gbps",
    "workers", "cpu_seconds", "peak_rss_bytes", "task_inputs",
)
#: Statuses of a row.
DONE, KEPT, FAILED, CANCELLED = "done", "kept", "failed", "cancelled"
#: Seconds between rewrites of the summary while rows complete (at least).
WRITE_INTERVAL_S = 0.5
#: The share of the time that rewriting the summary may take while rows complete.
WRITE_SHARE = 0.05


def scalar_summaries(results) -> dict:
    """``{"mean <key>": value}``: the mean of each result array's finite values
    (None for an array with none)."""
    means = {}
    for key in results:
        data = np.asarray(results[key].data)
        if data.dtype.kind not in "biuf" or data.size == 0:
            continue
        finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
        means[f"mean {key}"] = float(finite.mean()) if finite.size else None
    return means


def _shape(shape) -> str:
    return "x".join(str(int(n)) for n in shape) if shape is not None else ""


def dataset_columns(described: dict) -> dict:
    """The summary's columns describing a data set, from its ``describe()`` (also
    kept in a results file's provenance as ``"dataset"``)."""
    return {
        "scan_shape": _shape(described.get("nav_shape")), "detector_shape": _shape(described.get("sig_shape")),
        "dtype": np.dtype(described["dtype"]).name if "dtype" in described else "",
        "bytes": int(described.get("nbytes", 0)),
    }


def figure_columns(stats, task_inputs: int = 1) -> dict:
    """The summary's columns from a job's :class:`~stem_explorer.engine.JobStats`;
    ``task_inputs``: how many inputs shared the task (a group of small files: its
    stats are then its own part of the task, see :mod:`stem_explorer.engine.grouped`)."""
    workers = tuple(stats.workers) or tuple(sorted(stats.tasks_per_worker))
    return {
        "seconds": round(stats.elapsed, 6), "gbps": round(stats.gbps, 6), "workers": " ".join(map(str, workers)),
        "cpu_seconds": round(float(stats.cpu_seconds), 6), "peak_rss_bytes": int(stats.peak_rss_bytes),
        "task_inputs": int(task_inputs),
    }


class Summary:
    """The rows of a batch, in input order, written to ``out_dir`` as they change."""

    def __init__(self, out_dir: Path, inputs: list):
        self.out_dir = Path(out_dir)
        self._rows: dict[str, dict] = {str(i.path): {"input": str(i.path), "output": i.output_name} for i in inputs}
        self._written = 0.0
        self._interval = WRITE_INTERVAL_S

    def add_inputs(self, inputs: list) -> None:
        """Rows for inputs found later (a watched folder's new files)."""
        for i in inputs:
            self._rows.setdefault(str(i.path), {"input": str(i.path), "output": i.output_name})

    def set(self, row: dict) -> None:
        """Replace the row of ``row["input"]`` and rewrite the files when due."""
        self._rows[row["input"]] = row
        if time.monotonic() - self._written >= self._interval:
            self.write()

    @property
    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def count(self, status: str) -> int:
        return sum(r.get("status") == status for r in self._rows.values())

    def columns(self) -> list[str]:
        extra: dict[str, None] = {}
        for row in self._rows.values():
            extra.update(dict.fromkeys(k for k in row if k not in COLUMNS))
        return [*COLUMNS, *extra]

    def write(self) -> None:
        """Write ``summary.csv`` and ``summary.json`` (atomically)."""
        started = time.monotonic()
        columns = self.columns()
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, restval="", lineterminator="\n")
        writer.writeheader()
        for row in self._rows.values():
            writer.writerow({k: _cell(v) for k, v in row.items()})
        for name, content in (("summary.csv", text.getvalue()),
                              ("summary.json", json.dumps(jsonable(self.rows), indent=1, allow_nan=False))):
            with atomic_write(self.out_dir / name) as tmp:
                Path(tmp).write_text(content)
        self._written = time.monotonic()
        self._interval = max(WRITE_INTERVAL_S, (self._written - started) / WRITE_SHARE)


def _cell(value) -> Optional[object]:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value
