"""Several small data sets in one task: one graph update and one result for all.

A :class:`~.job.Job` costs this process milliseconds besides reading its data: its
thread, the scheduler's graph update and transitions for its task, the client's
submit and gather, the monitoring (about 11 ms of this process's CPU per job on
the 2-core machine). For a file of a few MiB that is most of its cost. A
:class:`GroupJob` sends the partitions of several data sets, each with its plan, in
one task; the worker runs them one data set after the other, each metered on its
own (so every data set's worker, CPU seconds, peak RSS and seconds are its own),
and returns each data set's partials, or the exception that data set raised: a file
that cannot be read fails its own entry only.

When the group task's workers die (a reader crashing on a corrupt file), each data
set is computed again by a task of its own, so that only the data set at fault
fails, with the diagnosis a job gives (``failures.explain``).

What a data set of a group does not get, against a job of its own: no coarse
preview, no hooks of its own, no worker samples (its part of the task is far
shorter than their second), and its ``JobStats.elapsed`` is its own time in the
task (reading and computing), not a wall time from submit to result: the group's
round trip is shared by its data sets and is :attr:`GroupJob.elapsed`.
"""

from __future__ import annotations

import itertools
import pickle
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import JobCancelledError
from ..io.base import DataSet
from ..io.isolated import chunk_ranges
from . import failures, monitor
from .job import JobStats
from .roi import plan_frames, select_partitions
from .runner import cancel_quietly
from .tasks import Plan, PlanParcel, empty_accumulators, merge_partition, run_partition

_group_ids = itertools.count(1)


@dataclass
class GroupEntry:
    """One data set of a group: what to compute on it and how to finish it
    (``finalize(accumulators, covered)`` of :func:`~stem_explorer.analyses.build_plan`)."""

    dataset: DataSet
    plan: Plan
    finalize: Callable[[list, np.ndarray], Any]


@dataclass
class GroupOutcome:
    """One data set's outcome: its results and stats, or the error it raised."""

    results: Any = None
    stats: Optional[JobStats] = None
    error: Optional[BaseException] = None


def groupable(dataset: DataSet) -> bool:
    """Whether ``dataset`` can share a task: a file the task opens itself (no data in
    the cluster's memory) whose bytes have no preferred workers (a group ignores
    placement)."""
    files = type(dataset).payloads is DataSet.payloads  # the base class's: tasks open the file
    return files and not any(p.locations for p in dataset.partitions(1))


def run_group(entries: Sequence[tuple]) -> list:
    """The task: for each ``(partitions, plan, frames)`` the list of its partitions'
    :class:`~.tasks.PartitionResult`, or the exception it raised."""
    outcomes = []
    for partitions, plan, frames in entries:
        try:
            outcomes.append([run_partition(part, plan, None, f) for part, f in zip(partitions, frames)])
        except Exception as exc:  # this data set's error: the others go on
            outcomes.append(_portable(exc))
    return outcomes


def _portable(exc: Exception) -> Exception:
    """``exc``, or where it cannot be pickled back to the client a RuntimeError with
    its type and text (an unpicklable one would fail the whole group's result)."""
    try:
        pickle.dumps(exc)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class GroupJob:
    """Compute ``entries`` (:class:`GroupEntry`, each :func:`groupable`) in one task,
    submitted at once; :meth:`outcomes` waits for them, :meth:`cancel` stops them."""

    def __init__(self, client, entries: Sequence[GroupEntry]):
        self.id = next(_group_ids)
        self._client = client
        self._entries = list(entries)
        self._lock = threading.Lock()
        self._cancelled = False
        self._futures: list = []
        self._work = [self._work_of(entry) for entry in self._entries]
        self._t0 = time.perf_counter()
        #: seconds from submit to the result of the group's task (None until then)
        self.elapsed: Optional[float] = None
        self._submit(list(range(len(self._entries))), "group")

    @staticmethod
    def _work_of(entry: GroupEntry) -> tuple:
        """``(partitions, frames of each, unread frames or None)`` as a job would
        read them: only the frames the plan's ops declare, when all declare some."""
        ds = entry.dataset
        frames = plan_frames(entry.plan.ops)
        partitions, pieces = select_partitions(ds.partitions(1), frames)
        unread = None
        if frames is not None:
            unread = np.ones(ds.n_frames, bool)
            unread[frames] = False
        return partitions, pieces, unread

    def _submit(self, indices: list, name: str) -> None:
        parcels: dict = {}  # one parcel per distinct plan: pickled once in the task
        args = []
        for i in indices:
            parcel = PlanParcel(self._entries[i].plan)
            parcel = parcels.setdefault(parcel.digest, parcel)
            partitions, pieces, _unread = self._work[i]
            args.append((partitions, parcel, pieces))
        key = f"{monitor.KEY_PREFIX}g{self.id}-{name}"
        with self._lock:
            if self._cancelled:
                raise JobCancelledError(f"group {self.id} was cancelled")
            self._futures.append(self._client.submit(run_group, args, key=key, pure=False))

    def cancel(self) -> None:
        """Cancel the group's tasks; :meth:`outcomes` then raises JobCancelledError."""
        with self._lock:
            self._cancelled = True
            futures = list(self._futures)
        cancel_quietly(self._client, futures)

    def outcomes(self) -> list[GroupOutcome]:
        """Wait for the task; each entry's outcome, in order.

        Raises
        ------
        JobCancelledError
            :meth:`cancel` was called.
        ClusterError
            The cluster dropped the task (the client closed, the scheduler lost).
        """
        try:
            results = self._result(self._futures[0])
            self.elapsed = time.perf_counter() - self._t0
        except _WorkersDied:
            # one of the data sets may crash its readers: each alone, so only it fails
            results = [self._alone(i) for i in range(len(self._entries))]
        return [self._outcome(i, r) for i, r in enumerate(results)]

    def _alone(self, i: int):
        """The partition results of entry ``i`` computed by a task of its own, or its
        error (with a job's diagnosis when its workers died too). One after the other:
        a worker's death fails the tasks waiting on it too, innocent ones included."""
        self._submit([i], f"alone{i}")
        try:
            return self._result(self._futures[-1])[0]
        except _WorkersDied as died:
            return failures.explain(died.cause, self._client, self._reads(i))

    def _result(self, future):
        from distributed.scheduler import KilledWorker

        try:
            return future.result()
        except KilledWorker as exc:
            raise _WorkersDied(exc) from exc
        except BaseException as exc:
            if self._cancelled:
                raise JobCancelledError(f"group {self.id} was cancelled") from None
            explained = failures.explain(exc, self._client, None)
            if explained is exc:
                raise
            raise explained from exc

    def _reads(self, i: int) -> tuple:
        """``(source, ranges, description)`` of entry ``i``'s frames, for
        ``failures.explain`` to re-read."""
        partitions = self._work[i][0]
        source = self._entries[i].dataset.source
        ranges = [r for part in partitions for r in chunk_ranges(part.source, part.start, part.stop)]
        return source, ranges, f"{self._entries[i].dataset.path or 'the data set'} ({len(partitions)} partition(s))"

    def _outcome(self, i: int, results) -> GroupOutcome:
        if isinstance(results, BaseException):
            return GroupOutcome(error=results)
        entry, (partitions, _pieces, unread) = self._entries[i], self._work[i]
        ds = entry.dataset
        accumulators = empty_accumulators(entry.plan, ds.n_frames, ds.sig_shape, ds.dtype)
        filled = np.zeros(ds.n_frames, bool)
        stats = JobStats(len(partitions), 0, 0.0)
        for result in results:
            merge_partition(entry.plan, accumulators, result)
            filled[slice(result.start, result.stop) if result.frames is None else result.frames] = True
            stats.bytes_done += result.bytes_read
            stats.elapsed += result.seconds
            stats.tasks_per_worker[result.host] = stats.tasks_per_worker.get(result.host, 0) + 1
            monitor.record_task(stats, result.host, result.seconds, result.bytes_read, result.usage)
        final = entry.finalize(accumulators, filled if unread is None else filled | unread)
        provenance = getattr(final, "provenance", None)
        if isinstance(provenance, dict):
            provenance["resources"] = stats.usage()
        return GroupOutcome(final, stats)


class _WorkersDied(Exception):
    """The workers running a group's task kept dying (``cause``: dask's KilledWorker)."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause
