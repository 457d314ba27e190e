"""Jobs: one plan over every partition of a data set, on a dask cluster, streamed.

A :class:`Job` submits one task per partition (preferring the workers that hold the
partition's bytes), merges partials on the client as tasks finish, and exposes the
state at any moment as a :class:`Progress` snapshot: iterate the job for snapshots,
register callbacks, or block on :meth:`Job.result`. Large data sets get a coarse
preview first (:mod:`.preview`), computed in this process when it reads the frames
cheaply and its kernels are warm, else by high-priority tasks.

Callbacks (the design's ``Future`` vocabulary): partials merge under the job's lock,
and callbacks run after it is released, in the job's thread, each after re-checking
that the job is still current; a callback's exception is logged and kept in
:attr:`Job.callback_errors`, never ending the job. So a callback may take any lock,
even one held by a thread that is cancelling the job: :meth:`cancel` never waits for a
callback. Once ``cancel()`` returns no callback of the job starts (one already
running finishes), and a job that follows it (``after=``: a session passes its
earlier jobs) delivers nothing before that callback has returned: no stale partial
result ever follows a newer one.

Failures after the job started (a task's error, workers dying, the cluster going
away) are the job's error, raised by :meth:`Job.result`, in the package's terms
(:mod:`.failures`).

Event hooks (:mod:`.hooks`): ``on_submit``, ``on_schedule`` (reported by the
scheduler, :mod:`.cluster_events`), ``on_partition``, ``on_result``, ``on_error`` and
``on_complete``, delivered in order on a thread of the job's own (:mod:`.hook_queue`);
a hook's exception is kept in :attr:`Job.hook_errors`. What the tasks and workers
used (:mod:`.monitor`) accumulates in :attr:`Job.stats` and goes into the final
results' provenance (``"resources"``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import JobCancelledError
from ..io.base import DataSet
from ..io.isolated import chunk_ranges
from . import failures, monitor, preview, warmup
from .checkpoint import Checkpoint, Resumed
from .hook_queue import HookQueue
from .hooks import as_hooks
from .locality import WorkerIndex, is_local, worker_addresses
from .ops import PickFrames
from .roi import plan_frames, select_partitions
from .reduced_copy import ReducedCopy
from .runner import cancel_quietly, finished, submit_tasks, wait_for
from .tasks import (
    INLINE_PLAN_BYTES,
    PartitionResult,
    Plan,
    PlanParcel,
    compute_preview_here,
    empty_accumulators,
    merge_partition,
    read_partition_here,
    reduced_preview_here,
    run_partition,
    run_preview,
    run_reduced_preview,
)

Finalize = Callable[[list, np.ndarray], Any]

_job_ids = itertools.count(1)
logger = logging.getLogger(__name__)

#: A job keeps at most this many of its callbacks' exceptions (each holds a snapshot).
MAX_CALLBACK_ERRORS = 10

#: A job that reads at most this many bytes of frames (a click, a small scan ROI)
#: reads them in this process when that is cheap (see ``Job.read_in_client``): a
#: task's round trip through the scheduler costs more than reading them.
READ_HERE_BYTES = 64 * 2**20

#: A job previewing from the reduced copy submits its partitions' tasks once the
#: preview's have finished, or after this many seconds (a holder busy with other work).
REDUCED_PREVIEW_WAIT_S = 0.5


@dataclass
class Progress:
    """A snapshot of a job: results so far and how far it has come."""

    results: Any
    filled: np.ndarray  # bool, nav-shaped: which scan positions are computed
    partitions_done: int
    n_partitions: int
    bytes_done: int
    elapsed: float
    final: bool
    job_id: int = 0
    #: stride of the job's preview grid (1: no preview, or one of every position)
    preview_stride: int = 1
    #: a live job's progress in frames (its partitions are whole recorded files, often
    #: one for the scan); None for a job on a file
    frames_done: Optional[int] = None
    n_frames: Optional[int] = None
    #: where the job's preview comes from: ``"grid"`` (the coarse grid of scan
    #: positions, read at full resolution), ``"reduced"`` (the reduced copy in the
    #: workers' memory: binned detector, see :mod:`stem_explorer.engine.reduced`) or
    #: None (no preview)
    preview_source: Optional[str] = None
    #: bool, nav-shaped: the positions holding exact values (a finished partition's);
    #: the others in ``filled`` hold preview values. None where a job does not say.
    exact: Optional[np.ndarray] = None

    @property
    def is_preview(self) -> bool:
        """Whether some of the values shown are a preview's (not exact yet)."""
        return self.preview_source is not None and self.exact is not None and bool((self.filled & ~self.exact).any())

    @property
    def fraction(self) -> float:
        """Fraction finished, 0..1: of the frames for a live job, else of the partitions."""
        if self.n_frames is not None:
            return self.frames_done / self.n_frames if self.n_frames else 1.0
        return self.partitions_done / self.n_partitions if self.n_partitions else 1.0

    @property
    def gbps(self) -> float:
        """Throughput so far in GB/s (10**9 bytes of data set per second)."""
        return self.bytes_done / self.elapsed / 1e9 if self.elapsed > 0 else 0.0

    def fill_preview(self, image: np.ndarray) -> np.ndarray:
        """A scan-shaped ``image`` of these results with the positions not computed
        yet shown at preview resolution (each from its block's grid point).

        Before the first partition finishes this turns the coarse preview into a full
        field; computed positions keep their exact values. Without a preview, or once
        every position is computed, ``image`` is returned unchanged (NaN where not
        computed).
        """
        return preview.fill_from_grid(image, self.filled, self.preview_stride)


@dataclass
class JobStats:
    """Statistics of a finished (or running) job."""

    n_partitions: int
    bytes_done: int
    elapsed: float
    tasks_per_worker: dict = field(default_factory=dict)
    locality_hits: int = 0
    locality_known: int = 0
    #: addresses of the workers that ran the job's partitions
    workers: tuple = ()
    #: CPU seconds the job's tasks used, summed over workers
    cpu_seconds: float = 0.0
    #: the highest resident set size of a worker while it ran one of the job's tasks
    peak_rss_bytes: int = 0
    #: partitions taken from a checkpoint instead of computed (counted in n_partitions)
    partitions_resumed: int = 0
    #: wall seconds of the job's tasks, summed over workers
    task_seconds: float = 0.0
    #: worker address -> :class:`~.monitor.WorkerUsage` (its tasks' totals and its
    #: samples, one a second while it ran the job's tasks)
    per_worker: dict = field(default_factory=dict)

    @property
    def gbps(self) -> float:
        return self.bytes_done / self.elapsed / 1e9 if self.elapsed > 0 else 0.0

    @property
    def locality_hit_rate(self) -> Optional[float]:
        """Fraction of partitions with known locations computed on one of them."""
        return self.locality_hits / self.locality_known if self.locality_known else None

    def usage(self) -> dict:
        """The resource figures as plain JSON (:func:`~.monitor.usage_summary`)."""
        return monitor.usage_summary(self)


def _placement(partition, workers: WorkerIndex) -> dict:
    """Prefer the workers on the hosts holding the partition; others may still run it,
    so a lost node costs speed, not the job."""
    preferred = workers.local_to(partition.locations)
    if not preferred:
        return {}
    return {"workers": preferred, "allow_other_workers": True}


class Job:
    """A running plan; returned at once by ``Session.run``.

    ``on_partial(progress)`` is called after each partition merges, with results;
    ``on_progress(progress)`` likewise but without results (cheap, for progress bars).
    Both run in the job's thread, outside the job's lock, and are registered before
    any task starts, so they see every partition, the last one included; the first
    call can come before ``Session.run`` has returned (a preview computed in this
    process). An exception in a callback is logged and kept in
    :attr:`callback_errors`; the job goes on.

    ``after`` are jobs started before this one: those of them cancelled by the time
    this job first delivers (the job it supersedes) have their running callbacks
    return first.

    ``roi`` (sorted unique flat frame indices) limits the job to those frames: only
    the partitions holding them run, each reads only the blocks holding them
    (:mod:`stem_explorer.engine.roi`), per-frame results stay NaN elsewhere and reductions cover only
    them. Without it the job still reads only the frames its ops declare when every
    op declares some (a picked frame). A job with a frame subset has no coarse
    preview.

    With a ``checkpoint`` (:class:`~stem_explorer.engine.checkpoint.Checkpoint`) the job saves its
    progress to the checkpoint's file as it goes, and a job started with a file made
    for the same work computes only the partitions the file lacks (it has no coarse
    preview; its first snapshot shows the partitions taken from the file). A job of a
    frame subset (picked frames) reads little and takes no checkpoint.

    ``hooks`` (anything :func:`~.hooks.as_hooks` takes) are told of the job's events
    (module notes); :meth:`result` returns after ``on_complete``'s hooks have run.

    ``reduced`` (a :class:`~stem_explorer.engine.reduced_copy.ReducedCopy`: the
    session's) has the workers keep their partitions' parts of the reduced copy while
    the job reads whole partitions, and, once the copy is usable and every per-frame
    op has a reduced form, gives the job its preview from the copy
    (``Progress.preview_source == "reduced"``; a grid preview computed here meanwhile
    shows first if it is faster, and keeps its values); its values never replace a
    finished partition's.
    """

    #: whether the job reads only the frames of its ROI and its ops' declarations
    #: (a live job follows the acquisition frame by frame instead)
    selects_frames = True

    def __init__(
        self,
        client,
        dataset: DataSet,
        plan: Plan,
        finalize: Finalize,
        *,
        n_workers: int = 1,
        partition_bytes: Optional[int] = None,
        preview_stride: Optional[int] = None,
        on_partial: Optional[Callable[[Progress], None]] = None,
        on_progress: Optional[Callable[[Progress], None]] = None,
        after: Sequence["Job"] = (),
        roi: Optional[np.ndarray] = None,
        checkpoint: Optional[Checkpoint] = None,
        hooks: Any = None,
        reduced: Optional[ReducedCopy] = None,
    ):
        self.id = next(_job_ids)
        self._hooks = HookQueue(as_hooks(hooks), self.id, str(dataset.path) if dataset.path else None)
        self._events = None  # the client's ClusterEvents while the job runs
        self._client = client
        self._dataset = dataset
        self._plan = plan
        self._finalize = finalize
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._callbacks: list[tuple[Callable, bool]] = []
        if on_partial is not None:
            self._callbacks.append((on_partial, True))
        if on_progress is not None:
            self._callbacks.append((on_progress, False))
        self._state = "running"
        self._error: Optional[BaseException] = None
        self._silenced = False  # cancel() was called: no callback starts any more
        self._delivering = False  # the job's thread is running callbacks
        self._final_delivered = False  # the final snapshot's callbacks have returned
        self._after = list(after)
        #: exceptions raised by this job's callbacks (the first
        #: :data:`MAX_CALLBACK_ERRORS`); each is also logged
        self.callback_errors: list[Exception] = []
        self._failed_callbacks: set = set()
        self._version = 0
        self._final: Optional[Progress] = None

        self._accs = empty_accumulators(plan, dataset.n_frames, dataset.sig_shape, dataset.dtype)
        self._filled = np.zeros(dataset.n_frames, bool)
        self._exact = np.zeros(dataset.n_frames, bool)  # filled by a whole partition
        #: the sorted flat indices of the frames the job reads (None: all)
        self.frames = plan_frames(plan.ops, roi) if self.selects_frames else None
        self._partitions, self._partition_frames = select_partitions(
            dataset.partitions(n_workers, partition_bytes), self.frames
        )
        self._unread = None  # frames outside the job's frames: complete without them
        if self.frames is not None:
            self._unread = np.ones(dataset.n_frames, bool)
            self._unread[self.frames] = False
        self._done = 0
        self._bytes = 0
        #: where the job saves its progress (None: nowhere; a job of a frame subset
        #: reads little and takes none)
        self.checkpoint = checkpoint if self.frames is None else None
        if self.checkpoint is not None:
            self._resume(self.checkpoint.start(dataset, plan, self._partitions, self._accs))
        self._stats = JobStats(len(self._partitions), 0, 0.0, partitions_resumed=self._done)
        self._t0 = time.perf_counter()
        self._t_end: Optional[float] = None

        self._reduced = reduced if self.frames is None else None
        self.preview_stride = self._choose_preview(preview_stride)
        #: whether the coarse preview was computed in this process (else by a task, or
        #: none; settled once the job's first snapshot is out)
        self.preview_in_client = self._can_preview_here()
        # the job's ops on the reduced copy (None: no preview from it)
        self._reduced_plan = self._reduced_preview_plan(preview_stride)
        if self._reduced_plan is not None and not self.preview_in_client:
            self.preview_stride = self._reduced.spec.scan_step
        #: where the job's preview comes from now: "grid", "reduced" or None (see
        #: :attr:`Progress.preview_source`)
        self.preview_source = ("grid" if self.preview_in_client or (self._reduced_plan is None and self.preview_stride > 1)
                               else "reduced" if self._reduced_plan is not None else None)
        self._grid: Optional[np.ndarray] = None  # the frames holding the grid preview's (exact) values
        self._keeping: set = set()  # indices of the partitions whose tasks keep reduced parts
        #: whether the job reads its few frames in this process (else by tasks;
        #: settled once the job's first snapshot is out)
        self.read_in_client = self._can_read_here()
        self._preview_left = 0
        self._preview_until: Optional[float] = None  # see _preview_overdue
        self._announced = False  # on_submit was emitted
        self._plan_arg = None
        self._futures: list = []
        # task key -> what it reads: (partition, payload, None) for a partition, the
        # (partition, payload, frame indices) pieces of a preview
        self._task_frames: dict = {}
        self._thread = threading.Thread(target=self._run, name=f"stem-explorer-job{self.id}", daemon=True)
        self._thread.start()

    # -- public API --------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._state != "running"

    @property
    def cancelled(self) -> bool:
        return self._state == "cancelled"

    @property
    def n_partitions(self) -> int:
        return len(self._partitions)

    @property
    def _tag(self) -> str:
        """The prefix of the job's task keys (:func:`.monitor.job_tag`)."""
        return f"{monitor.KEY_PREFIX}{self.id}"

    @property
    def hook_errors(self) -> list:
        """Exceptions raised by this job's hooks (each also logged); the job went on."""
        return self._hooks.hooks.errors

    @property
    def stats(self) -> JobStats:
        with self._lock:
            self._stats.elapsed = self._elapsed()
            return self._stats

    def add_callback(self, fn: Callable[[Progress], None], *, results: bool = True) -> None:
        """Call ``fn(progress)`` after each partition merges (in the job's thread,
        outside the job's lock; an exception is logged and kept in
        :attr:`callback_errors`).

        With ``results=False`` the snapshot carries no results (``results`` is None),
        which is cheap: use it for progress bars.
        """
        with self._lock:
            self._callbacks.append((fn, results))

    def snapshot(self, results: bool = True) -> Progress:
        """The job's state now."""
        with self._lock:
            return self._snapshot(results)

    def __iter__(self):
        """Yield snapshots as partitions finish (coalesced when the reader is slower
        than the job; the newest wins); the last one has ``final=True``. The first
        comes when the first partition has merged."""
        seen = 0
        while True:
            with self._changed:
                while self._version == seen and self._state == "running":
                    self._changed.wait()
                self._raise_if_failed()
                seen = self._version
                progress = self._snapshot(True)
            yield progress
            if progress.final:
                return

    def result(self, timeout: Optional[float] = None):
        """Block until the job is finished, its callbacks and hooks included (except
        when called from one of them), and return the final results."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            if not self._changed.wait_for(self._over, timeout):
                raise TimeoutError(f"job {self.id} did not finish within {timeout} s")
        if threading.current_thread() is not self._thread:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._hooks.wait(left):
                raise TimeoutError(f"the hooks of job {self.id} did not finish within {timeout} s")
        with self._changed:
            self._raise_if_failed()
            return self._final_progress().results

    def progress(self, timeout: Optional[float] = None) -> Progress:
        """Like :meth:`result` but returns the final :class:`Progress` (with stats)."""
        self.result(timeout)
        return self._final_progress()

    def cancel(self) -> bool:
        """Stop the job: pending tasks are cancelled and no callback starts any more
        (one already running finishes: this never waits for it, so a callback may
        need a lock the caller holds).

        Returns False when the job had already finished.
        """
        with self._changed:
            self._silenced = True
            if self._state != "running":
                return False
            self._state = "cancelled"
            self._t_end = time.perf_counter()
            self._changed.notify_all()
        self._release()
        return True

    def save(self, path, **options):
        """Wait for the results, write them to ``path`` (their ``save(path,
        **options)``: atomically), then remove the job's checkpoint file: it is only
        removed once the results it led to are safely on disk. Returns the path."""
        written = self.result().save(path, **options)
        if self.checkpoint is not None:
            self.checkpoint.remove()
        return written

    def __repr__(self) -> str:
        return f"<Job {self.id} {self._state} {self._done}/{self.n_partitions} partitions>"

    # -- internals -----------------------------------------------------------------------
    def _resume(self, resumed: Optional[Resumed]) -> None:
        """Start from a checkpoint: its partition layout, accumulators and finished
        partitions (None: start afresh)."""
        if resumed is None:
            return
        self._partitions, self._accs = resumed.partitions, resumed.accumulators
        self._partition_frames = [None] * len(self._partitions)
        for index in resumed.done:
            part = self._partitions[index]
            self._filled[part.start : part.stop] = self._exact[part.start : part.stop] = True
        self._done = len(resumed.done)

    def _choose_preview(self, stride: Optional[int]) -> int:
        """The preview grid's stride: ``stride`` if given (0 or 1: none), else sized
        by :func:`preview.auto_stride`; 1 when no op is per frame, one partition, or
        the job resumes from a checkpoint."""
        ds = self._dataset
        resumed = self._done > 0
        if not any(op.per_frame for op in self._plan.ops) or len(self._partitions) < 2 or len(ds.nav_shape) > 2 or resumed:
            return 1
        if self.frames is not None:  # the grid would read frames outside the ROI
            return 1
        if stride is None:
            return preview.auto_stride(ds.nav_shape, ds.frame_bytes)
        return max(1, int(stride))

    def _submit(self, preview_tasks: bool) -> bool:
        """Submit the partitions' tasks (and the preview's, with ``preview_tasks``);
        False when the job was cancelled first."""
        client, partitions = self._client, self._partitions
        payloads = self._dataset.payloads(client, partitions)
        workers = WorkerIndex(worker_addresses(client) if any(p.locations for p in partitions) else ())
        plan_arg = self._ship_plan(self._plan)
        self._listen()
        with self._lock:  # cancel() waits, then releases what was submitted
            if self._state != "running":
                return False
            self._plan_arg = plan_arg
            self._announce_submit()
        if self._futures and self._grid is None:
            # the copy's preview first: a partition's task that a worker starts before
            # it holds up the preview by a partition's read (measured: 0.68 s, against
            # tens of ms); a worker busy with other work delays the exact pass no longer.
            # Not after the grid's preview from here: the exact pass then goes at once
            wait_for(self._futures, max(0.0, self._preview_until - time.perf_counter()))
            if not self._merge_copy_preview():
                return False
        with self._lock:
            if self._state != "running":
                return False
            preview = self._submit_preview(payloads, workers) if preview_tasks and self._reduced_plan is None else []
            self._futures = self._futures + preview + self._submit_partitions(payloads, workers)
        return True

    def _merge_copy_preview(self) -> bool:
        """Merge the copy's preview tasks that have finished before the partitions'
        tasks go: taken later, their results waited behind the workers' first reads
        (40 GiB file, cold: the preview on screen 240 ms after ``run`` instead of about
        110). A failed one raises, as in :func:`~.runner.finished`. False when the job
        was cancelled meanwhile."""
        done = [f for f in self._futures if f.status in ("finished", "error")]
        if not done:
            return True
        results = self._client.gather(done)
        merged = {id(f) for f in done}
        self._futures = [f for f in self._futures if id(f) not in merged]
        return all(self._merge(result) for result in results)

    def _announce_submit(self) -> None:
        """``on_submit``, once, before the job's first task goes (lock held): every
        placement the scheduler reports follows it."""
        if not self._announced:
            self._announced = True
            self._hooks.emit("on_submit", partitions=len(self._partitions),
                             bytes=sum(p.n_frames for p in self._partitions) * self._dataset.frame_bytes)

    def _submit_copy_preview(self) -> bool:
        """Submit the reduced copy's preview tasks (:meth:`_submit_reduced_preview`)
        before anything else: a grid preview computed here meanwhile is dropped if they
        finish first (:meth:`_preview_here`). False when the job was cancelled first."""
        self._listen()
        with self._lock:
            if self._state != "running":
                return False
            self._announce_submit()
            self._futures = self._submit_reduced_preview()
        return True

    def _preview_copy_here(self) -> bool:
        """The preview from the reduced copy's parts in this process (fetched once
        whole): a few milliseconds where the tasks' round trip took about a hundred.
        It covers the field, so there is no grid preview. False when the job was
        cancelled first."""
        self.preview_in_client = False
        self._preview_left = 1
        return self._merge(reduced_preview_here(self._reduced.spec.key, self._reduced_plan))

    def _reduced_preview_plan(self, stride: Optional[int]) -> Optional[Plan]:
        """The job's ops on the reduced copy, when it previews from it: the session has
        a usable copy, the job would have a preview (the grid's conditions, whatever
        its size: a copy is worth it on any data set of two partitions or more) and
        ``stride`` does not turn previews off; without a ``stride`` asked for, only when
        the exact pass is slow enough for a preview to show sooner
        (:meth:`~.reduced_copy.ReducedCopy.worth_previewing`)."""
        if self._reduced is None or stride in (0, 1) or self._choose_preview(2) <= 1:
            return None
        if stride is None and not self._reduced.worth_previewing():
            return None
        return self._reduced.preview_plan(self._plan)

    def _submit_reduced_preview(self) -> list:
        """High-priority tasks computing the preview from the reduced copy: one on
        each worker holding parts of it, and only there (dask steals tasks whose
        placement is only preferred, and elsewhere there is nothing to read). No task
        when no holder is left: the job then has no preview. Snapshots wait for the
        preview at most :data:`REDUCED_PREVIEW_WAIT_S` (a holder busy with other
        work, or lost meanwhile: its task then waits until the job ends and is
        cancelled)."""
        holders = self._reduced.holders(worker_addresses(self._client))
        if not holders:
            self.preview_stride, self.preview_source = 1, None
            return []
        self._preview_until = time.perf_counter() + REDUCED_PREVIEW_WAIT_S
        keys = [f"stem-explorer-job{self.id}-reduced{k}" for k in range(len(holders))]
        placements = [{"workers": [worker], "allow_other_workers": False} for worker in holders]
        futures = submit_tasks(self._client, run_reduced_preview, [self._reduced.spec.key] * len(keys),
                               [PlanParcel(self._reduced_plan)] * len(keys), keys=keys, placements=placements,
                               pure=False, priority=1)
        self._preview_left = len(futures)
        return futures

    def _grid_pieces(self, payloads) -> list:
        """``(partition, payload, frame indices)`` of the partitions holding preview
        grid frames."""
        indices = preview.grid_indices(self._dataset.nav_shape, self.preview_stride)
        pieces = []
        for part, payload in zip(self._partitions, payloads):
            lo, hi = np.searchsorted(indices, [part.start, part.stop])
            if hi > lo:
                pieces.append((part, payload, indices[lo:hi]))
        return pieces

    def _can_preview_here(self) -> bool:
        """Whether to compute the preview in this process: it reads scattered frames
        cheaply and its kernels are warm for the dtype. The preview (a few MiB) then
        takes about 2 ms, against about 20 ms as a task on the 2-core machine
        (scheduler, worker and result round trips), and its image is on its way
        before the partitions' tasks load the cores. Never for frames that must be
        decoded: a corrupt chunk could crash this process (the user's kernel) where
        it only costs a worker."""
        ds = self._dataset
        cheap = ds.random_access_here and not ds.source.decodes
        return self.preview_stride > 1 and cheap and warmup.is_warm(ds.dtype)

    def _can_read_here(self) -> bool:
        """Whether to read the job's frames in this process instead of by tasks: they
        are few (:data:`READ_HERE_BYTES`), this process reads scattered frames cheaply
        and never decodes (see :meth:`_can_preview_here`), and its kernels are warm
        for the dtype unless the plan only copies frames (picked ones)."""
        ds = self._dataset
        few = self.frames is not None and len(self.frames) * ds.frame_bytes <= READ_HERE_BYTES
        cheap = ds.random_access_here and not ds.source.decodes
        copies_only = all(isinstance(op, PickFrames) for op in self._plan.ops)
        return few and cheap and (copies_only or warmup.is_warm(ds.dtype))

    def _read_here(self) -> Optional[list]:
        """The partitions' results read in this process, or None to leave them to
        tasks (which then report whatever went wrong, as the job's error)."""
        ds = self._dataset
        try:
            return [read_partition_here(part, self._plan, ds.local_payload(part.start, part.stop), frames)
                    for part, frames in zip(self._partitions, self._partition_frames)]
        except Exception:
            return None

    def _preview_here(self) -> Optional[PartitionResult]:
        """The preview computed in this process, or None to leave it to a task. With
        the reduced copy's preview tasks out, None as well once they have all finished
        first: from the page cache the grid takes a few ms, where the copy's preview
        costs a round trip through the scheduler, but from a cold file its frames come
        from disk (0.5 GiB benchmark: 271 ms against the copy's 86 ms)."""
        ds = self._dataset
        payloads = [ds.local_payload(part.start, part.stop) for part in self._partitions]
        copy = list(self._futures)
        overtaken = (lambda: all(f.done() for f in copy)) if copy else None
        try:
            result = compute_preview_here(self._grid_pieces(payloads), self._plan, stop=overtaken)
        except Exception:  # say, the file shrank since it was opened: the preview's
            return None  # task reads the same frames and reports it with the job
        return None if overtaken is not None and overtaken() else result

    def _ship_plan(self, plan: Plan):
        """What tasks receive as their plan: a :class:`PlanParcel` inside each task
        (no round trip), or for a plan over :data:`INLINE_PLAN_BYTES` (large dense
        masks) a future of it scattered to every worker once."""
        parcel = PlanParcel(plan)
        if len(parcel.blob) <= INLINE_PLAN_BYTES:
            return parcel
        return self._client.scatter(plan, broadcast=True, hash=False)

    def _submit_partitions(self, payloads, workers) -> list:
        """One task per partition not finished yet (a resumed job's checkpoint holds
        some): placed ones one by one, the others in one batch (a single graph update
        instead of one per task)."""
        todo = [i for i, part in enumerate(self._partitions) if not self._exact[part.start]]
        partitions = [self._partitions[i] for i in todo]
        payloads, frames = [payloads[i] for i in todo], [self._partition_frames[i] for i in todo]
        keep = [self._reduced.wants(part.start, part.stop) if self._reduced is not None and f is None else None
                for part, f in zip(partitions, frames)]
        self._keeping = {part.index for part, spec in zip(partitions, keep) if spec is not None}
        keys = [f"stem-explorer-job{self.id}-part{part.index}" for part in partitions]
        self._task_frames.update((key, [(part, payload, None)]) for key, part, payload in zip(keys, partitions, payloads))
        placements = [_placement(part, workers) for part in partitions]
        return submit_tasks(self._client, run_partition, partitions, [self._plan_arg] * len(keys), payloads, frames,
                            keep, keys=keys, placements=placements, pure=False)

    def _submit_preview(self, payloads, workers) -> list:
        """High-priority tasks computing the preview grid: one task (the first worker
        to come free runs it; the grid is a few MiB), or one per group of workers
        local to the partitions when the data has locations (remote reads of single
        frames would be slow)."""
        if self.preview_stride <= 1:
            return []
        groups: dict = {}
        for piece in self._grid_pieces(payloads):
            placement = _placement(piece[0], workers)
            group = tuple(placement.get("workers", ()))
            groups.setdefault(group, (placement, []))[1].append(piece)
        keys = [f"stem-explorer-job{self.id}-preview{k}" for k in range(len(groups))]
        self._task_frames.update(zip(keys, (pieces for _placement, pieces in groups.values())))
        placements, pieces = zip(*groups.values()) if groups else ((), ())
        futures = submit_tasks(self._client, run_preview, list(pieces), [self._plan_arg] * len(keys), keys=keys,
                               placements=list(placements), pure=False, priority=1)
        self._preview_left = len(futures)
        return futures

    def _raise_if_failed(self) -> None:
        if self._state == "cancelled":
            raise JobCancelledError(f"job {self.id} was cancelled")
        if self._state == "error":
            raise self._error

    def _elapsed(self) -> float:
        return (self._t_end or time.perf_counter()) - self._t0

    def _snapshot(self, results: bool) -> Progress:
        final = self._state == "finished"
        if final and results and self._final is not None:
            return self._final
        progress = Progress(
            results=self._finalize(self._accs, self._covered()) if results else None,
            filled=self._filled.reshape(self._dataset.nav_shape).copy(),
            partitions_done=self._done,
            n_partitions=len(self._partitions),
            bytes_done=self._bytes,
            elapsed=self._elapsed(),
            final=final,
            job_id=self.id,
            preview_stride=self.preview_stride,
            preview_source=self.preview_source,
            exact=self._exact.reshape(self._dataset.nav_shape).copy(),
            **self._frame_progress(),
        )
        if final and results:
            self._final = progress
            provenance = getattr(progress.results, "provenance", None)
            if isinstance(provenance, dict):
                provenance["resources"] = self.stats.usage()
        return progress

    def _frame_progress(self) -> dict:
        """``frames_done`` and ``n_frames`` of a :class:`Progress`, for jobs that count frames."""
        return {}

    def _covered(self) -> np.ndarray:
        """Frames computed or outside the job's frames: all True when the job is complete."""
        return self._filled if self._unread is None else self._filled | self._unread

    def _final_progress(self) -> Progress:
        with self._lock:
            return self._snapshot(True)

    def _run(self) -> None:
        """The job's thread: the preview here when chosen, then the tasks, merged as
        they finish. ``run()`` has returned meanwhile: reading the preview's frames
        (cold ones come from disk) and submitting never hold up the caller."""
        try:
            if self._done and not self._merge(None):  # resumed: show the checkpoint's partitions
                return
            here = self._read_here() if self.read_in_client else None
            self.read_in_client = here is not None
            if here is not None:
                for result in here:
                    if not self._merge(result):
                        return
                return
            if self._reduced_plan is not None and not (
                    self._preview_copy_here() if self._reduced.here else self._submit_copy_preview()):
                return
            first = self._preview_here() if self.preview_in_client else None
            if first is None and self.preview_in_client and self._futures:  # the copy's came first
                self.preview_stride, self.preview_source = self._reduced.spec.scan_step, "reduced"
            self.preview_in_client = first is not None
            if first is not None and not self._merge(first, grid_here=True):
                return
            if not self._submit(preview_tasks=first is None):
                return
            for _future, result in finished(self._client, self._futures, stopped=lambda: self.done):
                if not self._merge(result):
                    return
        except BaseException as exc:  # a task raised, workers died, the cluster went away
            self._save_checkpoint(at_once=True)  # what merged so far is good: a re-run goes on from it
            self._fail(exc)
        finally:
            self._after = []

    def _fail(self, exc: BaseException) -> None:
        """End the job with ``exc`` in the package's terms (:func:`failures.explain`:
        for dead workers that re-reads the task's frames, seconds, outside the lock)."""
        if self.done:
            return
        key = getattr(exc, "task", None)
        error = failures.explain(exc, self._client, self._frames_read_by(key))
        if error is not exc:
            error.__cause__ = exc
        with self._changed:
            if self._state != "running":
                return
            self._state = "error"
            self._error = error
            self._t_end = time.perf_counter()
            self._changed.notify_all()
        self._release()

    def _frames_read_by(self, key) -> Optional[tuple]:
        """``(source, ranges, description)`` of the frames the task ``key`` reads, for
        :func:`failures.explain` to re-read; None for a task of in-memory data (its
        frames are on the cluster) or a key that is not the job's."""
        pieces = self._task_frames.get(key)
        if pieces is None or any(payload is not None for _part, payload, _indices in pieces):
            return None
        if pieces[0][2] is None:  # a partition's task
            part = pieces[0][0]
            what = f"partition {part.index} (frames {part.start} to {part.stop - 1})"
            return part.source, chunk_ranges(part.source, part.start, part.stop), what
        ranges = [(int(i), int(i) + 1) for piece in pieces for i in piece[2]]
        return self._dataset.source, ranges, f"the coarse preview ({len(ranges)} frames)"

    def _merge(self, result: Optional[PartitionResult], grid_here: bool = False) -> bool:
        """Fold ``result`` into the accumulators and announce the new state (None:
        only announce it); then save a checkpoint if one is due. ``grid_here``: the grid
        preview computed here, announced whatever previews are still out."""
        with self._changed:
            if self._state != "running":
                return False
            if result is None:  # a resumed job's first announcement: nothing ran
                pass
            elif result.indices is not None:
                # preview values never overwrite those of a finished partition, and the
                # copy's never the grid's (exact at full resolution)
                keep = ~self._exact[result.indices]
                if result.from_copy and self._grid is not None:
                    keep &= ~self._grid[result.indices]
                merge_partition(self._plan, self._accs, result, keep)
                self._filled[result.indices[keep]] = True
                if grid_here:
                    self._grid = np.zeros(len(self._filled), bool)
                    self._grid[result.indices] = True
                else:
                    self._preview_left -= 1
                if result.from_copy and self._preview_left == 0:  # shown from now on
                    self.preview_source, self.preview_stride = "reduced", self._reduced.spec.scan_step
            else:
                merge_partition(self._plan, self._accs, result)
                read = slice(result.start, result.stop) if result.frames is None else result.frames
                self._filled[read] = True
                self._exact[read] = True
                self._done += 1
                self._bytes += result.bytes_read
                self._count(result)
                if result.index in self._keeping:
                    self._reduced.record(result.start, result.stop, result.host, result.reduced_bytes)
            if result is not None:
                self._account(result)
            if self._done == len(self._partitions):
                self._state = "finished"
                self._t_end = time.perf_counter()
                if self._reduced is not None:  # a whole pass (no ROI): how long the next takes
                    self._reduced.record_pass(self._t_end - self._t0)
                    self._reduced.fetch_when_whole(self._client)
            elif self._preview_left > 0 and self._grid is None and not self._preview_overdue():
                return True  # the first snapshot shows the whole preview at once
            deliveries, finished = self._new_version()
        self._deliver(deliveries, finished)
        if finished:
            self._release()
        else:
            self._save_checkpoint()
        return True

    def _preview_overdue(self) -> bool:
        """Whether snapshots stop waiting for the preview (one from the reduced copy
        that is late: :meth:`_submit_reduced_preview`)."""
        return self._preview_until is not None and time.perf_counter() > self._preview_until

    def _save_checkpoint(self, at_once: bool = False) -> None:
        """Save the job's progress when its checkpoint is due (``at_once``: whenever
        partitions merged since the last save). Only the job's thread merges, and
        this is it: the accumulators hold still while they are written."""
        if self.checkpoint is None or self.done or not self.checkpoint.due(self._done, at_once=at_once):
            return
        self.checkpoint.save(self._accs, [part.index for part in self._partitions if self._exact[part.start]])

    def _new_version(self) -> tuple[list, bool]:
        """Announce a new state (lock held): wake the iterators and return the
        callbacks' ``(fn, snapshot)`` pairs for :meth:`_deliver`, and whether it is
        the final one."""
        self._version += 1
        self._changed.notify_all()
        snapshots = {flag: self._snapshot(flag) for flag in {flag for _fn, flag in self._callbacks}}
        self._delivering = True
        return [(fn, snapshots[flag]) for fn, flag in self._callbacks], self._state == "finished"

    def _deliver(self, deliveries: list, final: bool) -> None:
        """Run the callbacks outside the job's lock, each only while the job is still
        current (``cancel()`` not called); after the superseded job's running
        callback, if any, has returned. ``result()`` returns once the ``final``
        snapshot's callbacks have."""
        try:
            for earlier in self._after:
                earlier._wait_until_quiet()
            self._after = []
            for fn, progress in deliveries:
                with self._lock:
                    if self._silenced:
                        return
                try:
                    fn(progress)
                except Exception as exc:  # the user's code: report it, keep the job
                    self._callback_failed(fn, exc)
        finally:
            with self._changed:
                self._delivering = False
                self._final_delivered = final
                self._changed.notify_all()

    def _over(self) -> bool:
        """Whether :meth:`result` may return: the job failed or was cancelled, or it
        finished and its final callbacks have run (a callback asking waits for none)."""
        if self._state == "running":
            return False
        in_callback = threading.current_thread() is self._thread
        return self._state != "finished" or self._final_delivered or in_callback

    def _wait_until_quiet(self) -> None:
        """If this job was cancelled, block until a callback it is still running has
        returned (none starts after ``cancel()``); a job still running goes on."""
        with self._changed:
            self._changed.wait_for(lambda: not (self._silenced and self._delivering))

    def _callback_failed(self, fn: Callable, exc: Exception) -> None:
        """Keep and log a callback's exception (with its traceback the first time that
        callback fails: a callback failing on every partition must not flood the log)."""
        with self._lock:
            first = fn not in self._failed_callbacks
            self._failed_callbacks.add(fn)
            if len(self.callback_errors) < MAX_CALLBACK_ERRORS:
                self.callback_errors.append(exc)
        name = getattr(fn, "__qualname__", repr(fn))
        if first:
            logger.error("callback %s of job %d raised; the job goes on", name, self.id, exc_info=exc)
        else:
            logger.debug("callback %s of job %d raised again: %r", name, self.id, exc)

    def _count(self, result: PartitionResult) -> None:
        stats = self._stats
        stats.bytes_done = self._bytes
        stats.tasks_per_worker[result.host] = stats.tasks_per_worker.get(result.host, 0) + 1
        locations = self._partitions[result.index].locations
        if locations:
            stats.locality_known += 1
            stats.locality_hits += is_local(result.host, locations)

    # -- hooks and monitoring ---------------------------------------------------------------
    def _listen(self) -> None:
        """Have the cluster's placements (when ``on_schedule`` has hooks) and worker
        samples routed to this job (once)."""
        from .cluster_events import for_client

        if self._events is not None:
            return
        self._events = for_client(self._client)
        if self._events is not None:
            self._events.listen(self._tag, self)
            if self._hooks.wants("on_schedule"):
                self._events.watch_placements()

    def _on_placement(self, key: str, worker: str) -> None:
        """The scheduler placed the task ``key`` on ``worker`` (client's event loop)."""
        pieces = self._task_frames.get(key)
        partition = pieces[0][0].index if pieces and pieces[0][2] is None else None
        self._hooks.emit("on_schedule", key=key, worker=worker, partition=partition)

    def _on_sample(self, sample: dict) -> None:
        """A worker's sample while it ran this job's tasks (client's event loop)."""
        monitor.record_sample(self._stats, sample)

    def _account(self, result: PartitionResult) -> None:
        """A task's usage into the stats, and ``on_partition`` for a partition (lock held)."""
        monitor.record_task(self._stats, result.host, result.seconds, result.bytes_read, result.usage)
        if result.indices is None and self._hooks.wants("on_partition"):
            usage = result.usage
            self._hooks.emit(
                "on_partition", partition=result.index, worker=result.host, bytes=result.bytes_read,
                seconds=result.seconds, cpu_seconds=usage.cpu_seconds if usage else None,
                peak_rss_bytes=usage.peak_rss_bytes if usage else None,
                partitions_done=self._done, n_partitions=len(self._partitions),
            )

    def _end_hooks(self) -> None:
        """The job is over: ``on_result`` (finished) or ``on_error`` (failed), then
        ``on_complete`` with the status; no event after these."""
        hooks, state = self._hooks, self._state
        try:
            if state == "finished" and hooks.wants("on_result"):
                hooks.emit("on_result", results=self._final_progress().results, stats=self.stats)
            elif state == "error":
                hooks.emit("on_error", error=self._error)
            hooks.emit("on_complete", status=state, stats=self.stats)
        finally:  # result() waits for this
            hooks.close()

    def _release(self) -> None:
        """Cancel what is still pending and drop references so workers free memory;
        the job's last hook events."""
        if self._events is not None:
            self._events.forget(self._tag)
        futures, self._futures = self._futures, []
        cancel_quietly(self._client, futures)
        if self._plan_arg is not None and not isinstance(self._plan_arg, PlanParcel):
            cancel_quietly(self._client, [self._plan_arg], done_too=True)  # the scattered plan's memory
        self._end_hooks()
