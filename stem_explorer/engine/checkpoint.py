"""Checkpoints of long jobs: a killed run resumes where it stopped.

A :class:`~stem_explorer.engine.Job` given a :class:`Checkpoint` saves its merged accumulators and the
indices of its finished partitions to the checkpoint file (:mod:`~stem_explorer.engine.checkpoint_file`)
every ``every`` seconds in which partitions finished, and once more when it fails
(workers or the scheduler lost, a task's error). The job's own thread writes it,
between merges: the client is the only writer, and no write ever holds up a merge
for longer than the write itself.

A job started with a checkpoint file made for the same work takes the partition
layout, the accumulators and the finished partitions from it and computes only the
missing partitions. "The same work" is the checkpoint's *identity*: the data set (its
path, format, shapes, dtype, metadata, and the size and modification time of its file,
or of the files of its folder), the plan (each op's identity, the tile size) and the
caller's context (``Session.run`` passes the analyses' ``to_dict()``). The partition
layout is stored, not compared: a re-run with another worker count resumes too.

A checkpoint that was made for other work, or that is damaged, is never mixed in: a
:class:`~stem_explorer.errors.CheckpointWarning` says why, the job starts from the
beginning and its saves replace the file. A file at the checkpoint path that is not a
checkpoint is never touched: :class:`~stem_explorer.errors.CheckpointError`. The file
is removed only by :meth:`Checkpoint.remove` (``Job.save`` calls it once the results
file is written), and only when it is a checkpoint this object wrote or read.

What a resumed job's results equal: every per-frame value (virtual images, centre of
mass) and every sum of integer data (sum and mean frames: float64 sums of integers,
exact up to ``2**53``) is bit for bit that of an uninterrupted run, as is a maximum.
Float reductions that depend on the order partitions merge in (the std frame's
moments, sums of float data) agree to rounding, as two uninterrupted runs do (their
partitions also merge in the order they finish).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .._atomic import check_writable
from .._json import jsonable
from .._options import seconds
from ..errors import CheckpointError, CheckpointWarning, SaveError
from ..io.base import DataSet, Partition
from .checkpoint_file import CheckpointDamaged, CheckpointState, is_checkpoint, read_checkpoint, write_checkpoint
from .tasks import Plan

logger = logging.getLogger(__name__)

#: Seconds between saves unless told otherwise.
DEFAULT_EVERY = 30.0
#: The longest interval accepted (a day): beyond it a value is a mistake.
MAX_EVERY = 86400.0
#: What :func:`checkpoint_path` appends to a results file's name.
SUFFIX = ".checkpoint"


def checkpoint_path(output) -> Path:
    """The checkpoint file of the results file ``output``: ``<output>.checkpoint``
    beside it (what ``stem-explorer run -o OUT`` uses)."""
    return Path(f"{os.fspath(output)}{SUFFIX}")


@dataclass
class Resumed:
    """What a job takes from a usable checkpoint."""

    partitions: list
    accumulators: list
    done: list  # indices of the finished partitions


class Checkpoint:
    """Where and how often a job saves its progress, and what it resumes from.

    Parameters
    ----------
    path : str or path
        The checkpoint file (created by the first save; replaced atomically by each).
    every : float
        Seconds between saves (a save happens only when partitions finished since the
        last); default 30.
    context : dict, optional
        More of the work's identity, as JSON (``Session.run`` passes the analyses'
        descriptions): a checkpoint made with another context is not used.

    Attributes
    ----------
    saves : int
        Checkpoints this object wrote.
    resumed : int
        Partitions the job took from the file instead of computing them.
    error : Exception or None
        The last failed save (the job goes on; the next save is tried ``every``
        seconds later).
    """

    def __init__(self, path, *, every: float = DEFAULT_EVERY, context: Optional[dict] = None):
        self.path = Path(path)
        self.every = seconds("checkpoint_every", every, MAX_EVERY, "between checkpoint saves")
        self.context = json.loads(json.dumps(jsonable(context or {})))
        self.saves = 0
        self.resumed = 0
        self.error: Optional[Exception] = None
        self._identity: Optional[dict] = None
        self._layout: list = []
        self._ours = False  # the file at path was written or read by this object
        self._saved_done = 0  # finished partitions in the file: a save needs more
        self._last = time.monotonic()
        self._logged: set = set()

    def __repr__(self) -> str:
        return f"<Checkpoint {str(self.path)!r} every {self.every:g} s, {self.saves} saves, {self.resumed} resumed>"

    # -- starting a job ----------------------------------------------------------------------
    def start(self, dataset: DataSet, plan: Plan, partitions: list, accumulators: list) -> Optional[Resumed]:
        """Bind to a job about to start over ``partitions`` with the fresh
        ``accumulators``; returns what to resume from, or None to start afresh.

        Raises
        ------
        CheckpointError
            The data set has no file, or the file at ``path`` is not a checkpoint.
        SaveError
            ``path`` is a folder or its folder cannot be written.
        """
        check_writable(self.path)
        self._identity = {"dataset": dataset_identity(dataset), "plan": plan_identity(plan), "context": self.context}
        self._layout = [(p.start, p.stop) for p in partitions]
        self._last = time.monotonic()
        if not os.path.lexists(self.path):
            return None
        try:
            state = read_checkpoint(self.path)
            self._ours = True
            resumed = self._resume(state, dataset, accumulators)
        except CheckpointDamaged as exc:
            self._ours = True
            self._set_aside(str(exc))
            return None
        if resumed is not None:
            self._layout = [(p.start, p.stop) for p in resumed.partitions]
            self.resumed = self._saved_done = len(resumed.done)
        return resumed

    def _resume(self, state: CheckpointState, dataset: DataSet, accumulators: list) -> Optional[Resumed]:
        if state.identity != self._identity:
            changes = "; ".join(differences(state.identity, self._identity)[:4])
            self._set_aside(f"checkpoint {str(self.path)!r} was made for other work ({changes})")
            return None
        try:
            ranges = _checked_layout(state.layout, dataset)
            done = sorted(set(state.done))
            _check_fit(done, ranges, state.accumulators, accumulators)
        except ValueError as exc:
            raise CheckpointDamaged(f"checkpoint {str(self.path)!r} is damaged ({exc})") from None
        partitions = [Partition(i, a, b, dataset.source, dataset.source.locations(a, b)) for i, (a, b) in enumerate(ranges)]
        return Resumed(partitions, state.accumulators, done)

    def _set_aside(self, why: str) -> None:
        warnings.warn(
            f"{why}; it is not used: the job starts from the beginning and its checkpoints replace it",
            CheckpointWarning,
            stacklevel=2,
        )

    # -- while the job runs ------------------------------------------------------------------
    def due(self, n_done: int, *, at_once: bool = False) -> bool:
        """Whether to save now: partitions finished since the last save, and ``every``
        seconds passed (or ``at_once``: a failing job saves what it has)."""
        return n_done > self._saved_done and (at_once or time.monotonic() - self._last >= self.every)

    def save(self, accumulators: list, done: list) -> bool:
        """Write the accumulators and the finished partitions' indices; a failure is
        logged (once per kind) and kept in ``error``, and the job goes on."""
        self._last = time.monotonic()
        try:
            write_checkpoint(self.path, CheckpointState(self._identity, self._layout, done, accumulators))
        except (CheckpointError, SaveError) as exc:
            self.error = exc
            if type(exc) not in self._logged:
                self._logged.add(type(exc))
                logger.warning("checkpoint not saved, the job goes on: %s", exc)
            return False
        self._ours = True
        self._saved_done = len(done)
        self.saves += 1
        return True

    # -- after the results are written ----------------------------------------------------
    def remove(self) -> bool:
        """Delete the checkpoint file if this object wrote or read it and it still is
        a checkpoint; returns whether it did. Call it once the results are saved."""
        if not self._ours or not is_checkpoint(self.path):
            return False
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        self._ours = False
        return True


def dataset_identity(dataset: DataSet) -> dict:
    """What identifies ``dataset``'s bytes: path, format, shapes, dtype, metadata and
    the size and modification time of its file (of each file of its folder, leaving
    out hidden files and checkpoints, which writers beside the data create)."""
    if not dataset.path:
        raise CheckpointError(
            "checkpoints need a data set read from files (this one is in memory or live): its file's "
            "path, size and modification time say whether a checkpoint was made for it; run without checkpoint="
        )
    path = os.path.realpath(dataset.path)
    try:
        if os.path.isdir(path):
            names = sorted(e.name for e in os.scandir(path) if e.is_file() and not e.name.startswith(".") and not e.name.endswith(SUFFIX))
        else:
            names = [os.path.basename(path)]
            path = os.path.dirname(path)
        files = [{"name": name, **_size_and_time(os.path.join(path, name))} for name in names]
    except OSError as exc:
        raise CheckpointError(
            f"checkpoints need the data set's files on a file system this process can read; "
            f"{dataset.path!r}: {exc.strerror or exc}; run without checkpoint="
        ) from None
    metadata = {k: v for k, v in dataset.metadata.items() if k != "calibration_warnings"}
    return jsonable({
        "path": os.path.realpath(dataset.path), "files": files, "format": dataset.format,
        "nav_shape": dataset.nav_shape, "sig_shape": dataset.sig_shape, "dtype": dataset.dtype.str,
        "metadata": metadata,
    })


def _size_and_time(path: str) -> dict:
    info = os.stat(path)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def plan_identity(plan: Plan) -> dict:
    """What identifies ``plan``'s computation: each op's identity and the tile size."""
    ops = [json.dumps(jsonable(op.key), sort_keys=True).encode() for op in plan.ops]
    return {"ops": [hashlib.blake2b(op, digest_size=12).hexdigest() for op in ops], "tile_bytes": plan.tile_bytes}


def differences(saved: Any, current: Any, where: str = "") -> list:
    """``"where: saved -> current"`` for each value that differs between two JSON trees."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [d for key in sorted(set(saved) | set(current), key=str)
                for d in differences(saved.get(key), current.get(key), f"{where}.{key}" if where else str(key))]
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        return [d for i, (a, b) in enumerate(zip(saved, current)) for d in differences(a, b, f"{where}[{i}]")]
    if saved == current:
        return []
    return [f"{where}: {_short(saved)} -> {_short(current)}"]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _checked_layout(layout: list, dataset: DataSet) -> list:
    """The saved partition ranges, if they cover the data set's frames in order."""
    alignment = dataset.source.frame_alignment
    expected = 0
    for start, stop in layout:
        if start != expected or stop <= start or (stop != dataset.n_frames and stop % alignment):
            raise ValueError(f"its partition layout does not cover the {dataset.n_frames} frames in order")
        expected = stop
    if expected != dataset.n_frames or not layout:
        raise ValueError(f"its partition layout does not cover the {dataset.n_frames} frames")
    return layout


def _check_fit(done: list, ranges: list, saved: list, fresh: list) -> None:
    """Raise ValueError unless the saved partitions and accumulators fit the job."""
    if any(i >= len(ranges) for i in done):
        raise ValueError("it lists partitions its layout does not have")
    if len(saved) != len(fresh):
        raise ValueError(f"it holds {len(saved)} accumulators, not {len(fresh)}")
    for i, (old, new) in enumerate(zip(saved, fresh)):
        if isinstance(new, np.ndarray) and not (isinstance(old, np.ndarray) and old.shape == new.shape and old.dtype == new.dtype):
            raise ValueError(f"its accumulator {i} has another shape or type")
