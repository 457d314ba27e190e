"""The inputs of one task of a batch: open them, compute them, save their results files.

Runs in one of the batch's threads; the batch (:func:`~stem_explorer.batch.run.batch`)
hands each thread either one input or a group of small ones. Small files (up to
:data:`SMALL_FILE_BYTES` of data each) are computed together by one task
(:class:`~stem_explorer.engine.grouped.GroupJob`: one graph update and one result for
the group, where a job per file cost this process more than its data); a bigger
input is a :class:`~stem_explorer.engine.Job` of its own, split over the workers as a
session's job would be. No coarse preview: nobody watches a batch's images fill in.

What is wrong with an input (unreadable, another format, analyses that do not fit
it) fails its row, even in a group; what is wrong with the output folder or the
cluster ends the batch (:data:`FATAL`): every further input would fail the same way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ClusterError, JobCancelledError, SaveError, StemExplorerError
from ..analyses import build_plan
from ..engine import Job
from ..engine.cluster import n_workers_of
from ..engine.failures import check_client
from ..engine.grouped import GroupEntry, GroupJob, groupable
from ..io import open_dataset
from .inputs import BatchInput
from .resume import batch_provenance, recorded
from .summary import CANCELLED, DONE, FAILED, dataset_columns, figure_columns, scalar_summaries
from .writer import ResultsWriter

#: Errors that end the whole batch rather than one row.
FATAL = (SaveError, ClusterError)

#: Files up to this size share their task with other small files (the batch's
#: groups keep the workers busy); a bigger one is split over the workers.
SMALL_FILE_BYTES = 64 * 2**20


@dataclass
class Outcome:
    """What processing one input gave: its summary row, and for a computed input its
    results, stats and results path (for the hooks)."""

    row: dict
    results: Any = None
    stats: Any = None
    output: Optional[Path] = None
    fatal: Optional[BaseException] = None


@dataclass
class _Opened:
    """An input opened and planned, waiting for its computation."""

    item: BatchInput
    fingerprint: dict
    row: dict
    target: Path
    entry: GroupEntry


class InputProcessor:
    """Processes inputs of one batch; :meth:`cancel_all` stops the running ones."""

    def __init__(self, recipe, out_dir: Path, client, kernel: str = "auto"):
        self.recipe, self.out_dir, self.client, self.kernel = recipe, Path(out_dir), client, kernel
        self._lock = threading.Lock()
        self._jobs: set = set()  # the Jobs and GroupJobs running
        self._cancelled = False
        # one writer thread for every results file (:mod:`.writer`): an input is done
        # once its file and the file's name are on disk
        self._writer = ResultsWriter(folder=self.out_dir)

    def close(self) -> None:
        """Wait for the saves queued, if any; no save starts after."""
        self._writer.close()

    def cancel_all(self) -> None:
        """Cancel the running jobs (their rows end ``cancelled``) and start no more."""
        with self._lock:
            self._cancelled = True
            jobs = list(self._jobs)
        for job in jobs:
            job.cancel()

    def __call__(self, members: list) -> list:
        """The outcomes of ``members`` (``(BatchInput, fingerprint)`` pairs), in order."""
        outcomes: list = [None] * len(members)
        opened = {}
        for k, (item, fingerprint) in enumerate(members):
            row = {"input": item.key, "output": item.output_name}
            try:
                opened[k] = self._open(item, fingerprint, row)
            except Exception as exc:
                outcomes[k] = _failed(row, exc)
        jobs = []
        for keys, kind, work in self._work(opened):
            try:
                jobs.append((keys, self._start(kind, work)))
            except Exception as exc:  # cancelled, or the cluster gone, before it went out
                for k in keys:
                    outcomes[k] = _failed(opened[k].row, exc)
        try:
            for keys, job in jobs:
                for k, (results, stats, error) in zip(keys, _computed(job, len(keys))):
                    outcomes[k] = self._saving(opened[k], results, stats, error, len(keys))
        finally:
            with self._lock:
                self._jobs.difference_update(job for _keys, job in jobs)
        return [_settled(o) for o in outcomes]

    @staticmethod
    def _work(opened: dict) -> list:
        """``(keys, kind, work)`` per task to start: the small files together (a
        :class:`GroupJob`, first: its inputs are saved while the others compute),
        every other input a :class:`Job` of its own."""
        small = [k for k, o in opened.items() if o.entry.dataset.nbytes <= SMALL_FILE_BYTES and groupable(o.entry.dataset)]
        work = [(small, GroupJob, [opened[k].entry for k in small])] if small else []
        return work + [([k], Job, o.entry) for k, o in opened.items() if k not in small]

    def _open(self, item: BatchInput, fingerprint: dict, row: dict) -> _Opened:
        target = self.out_dir / item.output_name
        if not _replaceable(target, item):
            raise StemExplorerError(
                f"{str(target)!r} exists and is not this batch's results file of {item.key!r}; it is left "
                f"alone: move it away, or choose another output folder")
        dataset = open_dataset(item.path, **self.recipe.open)
        row.update(dataset_columns(dataset.describe()))
        plan, finalize = build_plan(self.recipe.build(), dataset, kernel=self.kernel)
        return _Opened(item, fingerprint, row, target, GroupEntry(dataset, plan, finalize))

    def _start(self, kind, work):
        """A :class:`GroupJob` of ``work`` (entries), or a :class:`Job` of ``work`` (one
        entry) split over the workers; registered for :meth:`cancel_all`."""
        check_client(self.client)
        with self._lock:
            if self._cancelled:
                raise JobCancelledError("the batch was interrupted")
            if kind is GroupJob:
                job = GroupJob(self.client, work)
            else:
                spread = n_workers_of(self.client) if work.dataset.nbytes > SMALL_FILE_BYTES else 1
                job = Job(self.client, work.dataset, work.plan, work.finalize, n_workers=spread, preview_stride=0)
            self._jobs.add(job)
        return job

    def _saving(self, opened: _Opened, results, stats, error, task_inputs: int) -> "_Saving":
        """Queue the save of one input's results (or keep its error): the saves of a
        group queue together and share the writer's folder sync."""
        if error is not None:
            return _Saving(opened, error=error)
        figures = figure_columns(stats, task_inputs)
        results.provenance["batch"] = batch_provenance(self.recipe, opened.item.path, opened.fingerprint, figures)
        opened.row.update(figures)
        saved = self._writer.submit(lambda: self._save(results, opened.target))
        return _Saving(opened, results, stats, saved)

    def _save(self, results, target: Path) -> None:
        with self._lock:
            if self._cancelled:  # the batch stopped (Ctrl-C, a full disk) while this input ran
                raise JobCancelledError("the batch was interrupted")
        results.save(target)


@dataclass
class _Saving:
    """An input whose results are being saved (``saved``: the writer's future), or
    whose computation failed (``error``)."""

    opened: _Opened
    results: Any = None
    stats: Any = None
    saved: Any = None
    error: Optional[BaseException] = None


def _settled(outcome) -> Outcome:
    """The :class:`Outcome` of an input: waits for its save."""
    if isinstance(outcome, Outcome):
        return outcome
    row = outcome.opened.row
    try:
        if outcome.error is not None:
            raise outcome.error
        outcome.saved.result()
    except Exception as exc:
        return _failed(row, exc)
    row.update(status=DONE, error="", **scalar_summaries(outcome.results))
    return Outcome(row, outcome.results, outcome.stats, outcome.opened.target)


def _computed(job, n: int) -> list:
    """``(results, stats, error)`` of each of the ``n`` inputs of ``job`` (a
    :class:`Job` or a :class:`GroupJob`), once it is over."""
    try:
        if isinstance(job, GroupJob):
            return [(o.results, o.stats, o.error) for o in job.outcomes()]
        return [(job.result(), job.stats, None)]
    except Exception as exc:  # cancelled, the cluster gone, the job's own error
        return [(None, None, exc)] * n


def _failed(row: dict, exc: BaseException) -> Outcome:
    """The row of an input that did not complete: cancelled, failed, or failed in a
    way that ends the batch (:data:`FATAL`)."""
    if isinstance(exc, JobCancelledError):
        return Outcome(dict(row, status=CANCELLED, error="interrupted"))
    if isinstance(exc, FATAL):
        return Outcome(dict(row, status=FAILED, error=str(exc)), fatal=exc)
    if isinstance(exc, StemExplorerError):
        return Outcome(dict(row, status=FAILED, error=str(exc)))
    return Outcome(dict(row, status=FAILED, error=f"{type(exc).__name__}: {exc}"))


def _replaceable(target: Path, item: BatchInput) -> bool:
    """Whether ``target`` is free or a batch's results file of this input: any other
    file there is the user's and never replaced (the name rules normally avoid it)."""
    if not target.exists():
        return True
    entry = recorded(target)
    return entry is not None and entry.get("input", {}).get("path") == item.key
