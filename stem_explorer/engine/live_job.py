"""Jobs on live data sets: follow an acquisition as its frames are recorded.

A :class:`LiveJob` is a :class:`~.job.Job` (same snapshots, callbacks, cancel and
``result()``) whose work comes in over time. Its thread registers with the
:class:`~stem_explorer.io.live.LiveDataSet` as a consumer and, whenever frames
arrive or a task ends, submits the recorded frames not yet submitted as chunks
(:func:`~.tasks.run_partition` on a partition of the recording: the workers read the
frames from the recording, nothing travels through the scheduler). A job started
mid-scan therefore first covers every frame recorded so far (cut into at least one
chunk per worker), then keeps up with new ones.

Frames that the feeder records in this process (the Merlin receiver's spool or
recording: :attr:`~stem_explorer.io.live.LiveDataSet.recorded_here`) are computed in
this process instead, by a thread of the job's own (:class:`ChunksHere`): it takes
whatever has arrived whenever it is free, so a chunk costs it the frames' work and
little else, where a task costs milliseconds of the client's, the scheduler's and a
worker's time and a fresh mapping of its frames. The numba kernels release the GIL,
so the thread computes while the receiver receives. The workers join only for the
frames recorded before the job started, when the thread would take more than
:data:`CATCH_UP_S` of CPU time over them (a mask changed late in a long recorded scan),
and until this process's kernels are warm. While following the acquisition the
thread works alone: where it fell behind on a machine whose cores were busy (the
receiver, the simulator, other work), workers sharing the backlog only added their
per-task costs (a full-speed stream at load average 10-11, 12 % of it to the workers:
2.2 CPU s/GB in this process and 0.5 in the workers, against 1.5 and 0.1 with the
thread alone).

Chunks are merged in acquisition order (a chunk that finishes early waits for the
ones before it), so the filled part of the scan is always its first frames, and the
frames before the merged point are released (a spool deletes them). At most
``2 * n_workers`` tasks are in flight: while the workers are busy, frames gather
into larger chunks, so the task count stays bounded at any frame rate.

The job finishes when the acquisition is complete and every frame is merged; when
it was interrupted, the job ends with the acquisition's error
("acquisition interrupted after N of M frames") once every recorded frame is merged,
and ``job.snapshot()`` keeps the partial results (savable like any).
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

from ..errors import AcquisitionError
from ..io.base import Partition
from ..io.live import LiveDataSet
from . import warmup
from .job import Job
from .reduced_copy import LiveCopy
from .runner import submit_tasks
from .tasks import Plan, PartitionResult, merge_partition, read_partition_here, reduced_preview_here, run_partition

#: Largest chunk when catching up with recorded frames, in bytes of frames.
CHUNK_BYTES = 64 * 2**20
#: New frames wait to be submitted until they make a chunk of this many bytes or the
#: oldest of them has waited :data:`MAX_DELAY_S`: a task costs milliseconds of
#: scheduling on the client, the scheduler and a worker, and a task per frame or two
#: (what arrives between two wake-ups at full speed) cost more than the frames' work.
MIN_CHUNK_BYTES = 16 * 2**20
MAX_DELAY_S = 0.02
#: The thread here takes new frames once they make :data:`MIN_CHUNK_BYTES` or the
#: oldest has waited this long: a chunk costs it about 0.7 ms besides the frames'
#: work (the ops' states, the merge, a snapshot), so at hundreds of frames a second a
#: chunk per frame cost more than the frames.
HERE_DELAY_S = 0.01
#: A job started mid-scan bins the frames recorded but not binned yet into the
#: acquisition's reduced copy before previewing from it, when they are at most this
#: many bytes (binning runs at 10-16 GB per CPU second: a few ms).
TOP_UP_BYTES = 256 * 2**20
#: Tasks in flight per worker.
IN_FLIGHT_PER_WORKER = 2
#: Seconds between checks of the job's state when nothing happens.
_IDLE_WAIT = 0.25
#: With a thread computing here, the workers take chunks of the frames recorded
#: before the job started only when that thread would take more CPU seconds than
#: this over them (at its measured rate).
CATCH_UP_S = 0.5
#: The rate assumed for a thread here before one has measured its own, bytes per CPU
#: second (a virtual detector and the sum frame of 512 x 512 12-bit frames: about 2.3e9
#: measured); it weighs as much as 256 MiB computed.
FIRST_RATE_GUESS = 2e9


def job_class(dataset) -> type:
    """The job type for ``dataset``: :class:`LiveJob` for live data sets, else :class:`Job`."""
    return LiveJob if isinstance(dataset, LiveDataSet) else Job


class LiveJob(Job):
    """A job over a :class:`LiveDataSet` that follows its acquisition (see the module
    notes). Takes :class:`~.job.Job`'s arguments; there is no coarse preview
    (``preview_stride`` is ignored) and ``partition_bytes`` caps the catch-up chunks."""

    selects_frames = False  # chunks follow the acquisition; every frame is read

    def __init__(self, client, dataset: LiveDataSet, plan, finalize, *, n_workers: int = 1,
                 partition_bytes: Optional[int] = None, preview_stride=None, on_partial=None, on_progress=None,
                 after=(), hooks=None, reduced: Optional[LiveCopy] = None):
        # set before Job.__init__ starts the thread
        self._wake = threading.Event()
        self._n_workers = max(1, int(n_workers))
        self._chunk_frames = max(1, (partition_bytes or CHUNK_BYTES) // dataset.frame_bytes)
        self._merged_upto = 0
        self._first_frame = 0
        #: the frames recorded when the job started following the acquisition (those the
        #: workers may share with the thread here)
        self.frames_at_start = 0
        #: computes chunks in this process (None: the frames are read by tasks only)
        self.here: Optional[ChunksHere] = None
        #: the acquisition's reduced copy, kept and previewed here (None: none)
        self.copy = reduced if isinstance(reduced, LiveCopy) and reduced.spec is not None else None
        if dataset.recorded_here and not dataset.source.decodes:
            self.here = ChunksHere(plan, dataset.dtype, self._wake.set, self.copy)
        super().__init__(client, dataset, plan, finalize, n_workers=n_workers, partition_bytes=partition_bytes,
                         preview_stride=1, on_partial=on_partial, on_progress=on_progress, after=after,
                         hooks=hooks)

    @property
    def frames_done(self) -> int:
        """Frames merged so far (from :attr:`first_frame` on, in acquisition order)."""
        return self._merged_upto

    @property
    def first_frame(self) -> int:
        """The first frame this job covers (0 unless frames were discarded before it started)."""
        return self._first_frame

    def _frame_progress(self) -> dict:
        # the frames this job covers: from its first frame to the scan's end
        return {"frames_done": self._merged_upto - self._first_frame,
                "n_frames": self._dataset.n_frames - self._first_frame}

    def cancel(self) -> bool:
        cancelled = super().cancel()
        self._wake.set()
        return cancelled

    # -- the job's thread ------------------------------------------------------------------
    def _run(self) -> None:
        ds: LiveDataSet = self._dataset
        token, first = ds.register_consumer()
        self._first_frame = self._merged_upto = first
        self._stops = [p.stop for p in self._partitions]  # partitions_done counts whole ones
        ds.add_listener(self._wake.set)
        try:
            if ds.ended and first and first >= ds.frames_available:
                raise AcquisitionError(
                    f"the {ds.frames_available} frames of this acquisition were discarded once the jobs "
                    "running during the scan had read them (no recording folder: a spool); start the "
                    "analyses before the scan ends, or record to a folder (merlin(..., record=FOLDER)) to "
                    "explore the scan afterwards")
            if not self._preview_from_copy(first):
                return  # cancelled
            self._plan_arg = self._ship_plan(self._plan)
            self._listen()
            self._follow(ds, token, first)
        except BaseException as exc:  # a task raised, workers died, the cluster went away
            self._fail(exc)
        finally:
            ds.remove_listener(self._wake.set)
            if self.here is not None:  # its chunk must be over before a spool may reuse the frames' part
                self.here.close()
            ds.unregister_consumer(token)
            self._after = []

    def _preview_from_copy(self, first: int) -> bool:
        """Show the frames from ``first`` on that the acquisition's reduced copy holds,
        at once, as a preview (``Progress.preview_source == "reduced"``): a mask
        changed mid-scan shows the whole scan so far in tens of milliseconds, and the
        exact values replace the preview's as the chunks merge. Frames before
        ``first`` (a spool let go of them) are not shown: the job never computes them
        exactly. False when the job was cancelled meanwhile."""
        if self.copy is None or self.here is None or not self.here.warm():
            return True
        self._top_up_copy(first)
        plan = self.copy.preview_plan(self._plan)
        if plan is None:
            return True
        result = reduced_preview_here(self.copy.spec.key, plan)
        with self._changed:
            if self._state != "running":
                return False
            keep = (result.indices >= first) & ~self._exact[result.indices]
            if not keep.any():
                return True
            merge_partition(self._plan, self._accs, result, keep)
            self._filled[result.indices[keep]] = True
            self.preview_source, self.preview_stride = "reduced", self.copy.spec.scan_step
            deliveries, _final = self._new_version()
        self._deliver(deliveries, False)
        return True

    def _top_up_copy(self, first: int) -> None:
        """Bin the frames recorded but not binned yet (those that arrived after the
        previous job's last chunk) into the copy, when they are at most
        :data:`TOP_UP_BYTES`: the preview then shows the whole scan so far, where they
        would have waited for the exact pass to reach them."""
        ds, copy = self._dataset, self.copy
        stop = ds.frames_available
        binner = copy.binner(first, stop)
        if binner is None or (stop - binner.start) * ds.frame_bytes > TOP_UP_BYTES:
            return
        no_ops, pos = Plan((), self._plan.tile_bytes), binner.start
        while pos < stop:  # piece by piece: a recording may hold them in several
            piece = ds.chunk(-1, pos, stop)
            _read_binning(piece, no_ops, copy)
            pos = piece.stop

    def _follow(self, ds: LiveDataSet, token: int, submitted: int) -> None:
        in_flight: dict = {}  # future (a task's, or the thread here's) -> first frame of its chunk
        tasks = 0  # of them, the tasks
        finished: dict = {}  # first frame -> PartitionResult, waiting for the chunks before it
        index = 0
        waiting_since: Optional[float] = None  # when the frames not given to anyone yet first arrived
        min_chunk = max(1, MIN_CHUNK_BYTES // ds.frame_bytes)
        most_tasks = IN_FLIGHT_PER_WORKER * self._n_workers
        here = self.here
        # the frames recorded before the job started following: the workers may help with these
        catch_up = self.frames_at_start = ds.frames_available
        while True:
            self._wake.clear()
            if self.done:  # cancelled: let go of the frames now, not when the next ones arrive
                return
            for future in [f for f in in_flight if f.done()]:
                result = future.result()  # a task's error is the job's
                finished[in_flight.pop(future)] = result
                if not isinstance(future, Future):  # a task's (the thread here's are concurrent.futures')
                    tasks -= 1
            if finished.get(self._merged_upto) is not None:
                if not self._merge_in_order(finished):
                    return
                ds.consumed(token, self._merged_upto)
            available, ended = ds.frames_available, ds.ended
            if ended and self._merged_upto >= available and not in_flight:
                self._end(ds)
                return
            now = time.perf_counter()
            if submitted >= available:
                waiting_since = None
            elif waiting_since is None:
                waiting_since = now
            waited = now - waiting_since if waiting_since is not None else 0.0
            if here is not None and here.free() and submitted < available and (
                    ended or available - submitted >= min_chunk or waited >= HERE_DELAY_S):
                # the oldest frames, all that arrived (at most a chunk's bytes)
                submission = self._submit_here(ds, index, submitted, min(available, submitted + self._chunk_frames))
                if submission is None:
                    return  # cancelled
                future, stop = submission
                in_flight[future] = submitted
                index, submitted = index + 1, stop
            if submitted >= available:
                waiting_since = None
            workers_upto = self._workers_upto(submitted, available, catch_up)
            backlog = workers_upto - submitted
            to_workers = backlog > 0
            due = to_workers and (ended or backlog >= min_chunk or waited >= MAX_DELAY_S)
            size = self._chunk_size(backlog, most_tasks - tasks, min_chunk) if due and tasks < most_tasks else 0
            while size and submitted < workers_upto and tasks < most_tasks:
                stop = min(workers_upto, submitted + size)
                submission = self._submit_chunk(ds, index, submitted, stop)
                if submission is None:
                    return  # cancelled
                future, stop = submission
                in_flight[future] = submitted
                index, submitted, tasks = index + 1, stop, tasks + 1
                waiting_since = None if submitted >= available else waiting_since
            # wake when frames are due to the thread here or the workers (or anything
            # happens: frames arrive, a chunk ends, the job is cancelled)
            deadlines = []
            if waiting_since is not None and here is not None and here.free():
                deadlines.append(waiting_since + HERE_DELAY_S)
            if waiting_since is not None and to_workers and tasks < most_tasks:
                deadlines.append(waiting_since + MAX_DELAY_S)
            self._wake.wait(max(0.0, min(deadlines) - now) if deadlines else _IDLE_WAIT)

    def _workers_upto(self, submitted: int, available: int, catch_up: int) -> int:
        """Up to which frame the workers may take the frames not submitted yet: all of
        them without a thread here (or before its kernels are warm), those recorded
        before the job started (``catch_up``) while the thread would take too long
        over them, else none (``submitted``)."""
        here = self.here
        if here is None or not here.warm():
            return available
        if submitted < catch_up and here.too_slow_for((catch_up - submitted) * self._dataset.frame_bytes):
            return catch_up
        return submitted

    def _chunk_size(self, backlog: int, free: int, min_chunk: int) -> int:
        """Frames per chunk of a ``backlog`` of frames with ``free`` task slots: the
        whole backlog when small (following a scan), else equal chunks of at least
        ``min_chunk`` frames over the free slots, each at most :data:`CHUNK_BYTES`
        (catching up)."""
        pieces = max(1, min(free, backlog // min_chunk))
        return max(1, min(self._chunk_frames, math.ceil(backlog / pieces)))

    def _submit_chunk(self, ds: LiveDataSet, index: int, start: int, stop: int):
        """Submit frames ``start:stop``, or the first part of them that one partition of
        the data set holds; ``(future, stop)``, or None when the job was cancelled."""
        chunk = ds.chunk(index, start, stop)
        key = f"stem-explorer-job{self.id}-live{index}"
        with self._lock:
            if self._state != "running":
                return None
            self._hooks.emit("on_submit", partitions=1, bytes=chunk.n_frames * ds.frame_bytes)
            (future,) = submit_tasks(self._client, run_partition, [chunk], [self._plan_arg], [None], keys=[key],
                                     pure=False)
            self._futures.append(future)
            self._task_frames[key] = [(chunk, None, None)]  # what a failure report re-reads
        future.add_done_callback(lambda _f: self._wake.set())
        return future, chunk.stop

    def _submit_here(self, ds: LiveDataSet, index: int, start: int, stop: int):
        """Give frames ``start:stop`` (or the first part of them that one partition of
        the data set holds) to the thread here; ``(future, stop)``, or None when the
        job was cancelled."""
        chunk = ds.chunk(index, start, stop)
        with self._lock:
            if self._state != "running":
                return None
            self._hooks.emit("on_submit", partitions=1, bytes=chunk.n_frames * ds.frame_bytes)
            return self.here.submit(chunk), chunk.stop

    def _merge_in_order(self, finished: dict) -> bool:
        """Merge the finished chunks that continue the merged frames; one snapshot."""
        with self._changed:
            if self._state != "running":
                return False
            while (result := finished.pop(self._merged_upto, None)) is not None:
                self._merge_chunk(result)
            self._futures = [f for f in self._futures if not f.done()]
            deliveries, _final = self._new_version()
        self._deliver(deliveries, False)
        return True

    def _merge_chunk(self, result) -> None:
        merge_partition(self._plan, self._accs, result)
        self._filled[result.start : result.stop] = True
        self._exact[result.start : result.stop] = True
        self._merged_upto = result.stop
        self._bytes += result.bytes_read
        self._done = bisect.bisect_right(self._stops, self._merged_upto)
        stats = self._stats
        stats.bytes_done = self._bytes
        stats.tasks_per_worker[result.host] = stats.tasks_per_worker.get(result.host, 0) + 1
        self._account(result)

    def _end(self, ds: LiveDataSet) -> None:
        """The acquisition is over and every recorded frame merged: the job finishes,
        or fails with the acquisition's error (its partial results stay in
        :meth:`snapshot`)."""
        deliveries = None
        with self._changed:
            if self._state != "running":
                return
            self._t_end = time.perf_counter()
            if ds.error is not None:
                self._state, self._error = "error", ds.error
                self._changed.notify_all()
            else:
                self._state = "finished"
                deliveries, _final = self._new_version()
        if deliveries is not None:
            self._deliver(deliveries, True)
        self._release()


def _read_binning(chunk: Partition, plan: Plan, copy: LiveCopy) -> PartitionResult:
    """:func:`~.tasks.read_partition_here`, binning the frames of ``chunk`` that
    ``copy`` lacks into it; one range at a time (a superseded job's thread may still
    be binning its last chunk)."""
    with copy.binning:
        binner = copy.binner(chunk.start, chunk.stop)
        result = read_partition_here(chunk, plan, binner=binner)
        if binner is not None:
            copy.record(binner.start, binner.stop, "here", result.reduced_bytes)
    return result


class ChunksHere:
    """The thread computing a live job's chunks in this process, one at a time
    (:func:`~.tasks.read_partition_here`: its kernels, BLAS on one thread), and how
    fast it goes.

    It computes only once this process's kernels are warm for the data's dtype (a
    warm-up starts in the background when it is created; until then the job's
    chunks go to the workers). ``wake`` is called when a chunk is done.
    """

    #: What threads here computed: ``[bytes, CPU seconds]``, older chunks weighing
    #: half every ``_HALF_LIFE_BYTES`` computed since (by bytes, not by chunk: a
    #: few frames' chunk, whose fixed cost dominates, does not wash out the rate of
    #: large ones); shared by the process's jobs (a job started by a mask change
    #: starts with its predecessor's measurement)
    _HALF_LIFE_BYTES = 256 * 2**20
    _measured = [_HALF_LIFE_BYTES, _HALF_LIFE_BYTES / FIRST_RATE_GUESS]

    def __init__(self, plan: Plan, dtype, wake, copy: Optional[LiveCopy] = None):
        self._plan, self._dtype, self._wake, self._copy = plan, dtype, wake, copy
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="stem-explorer-live-chunks")
        self._future: Optional[Future] = None
        #: frames computed here so far
        self.frames = 0
        warmup.warm_up_in_background([dtype], partitions=True)

    def warm(self) -> bool:
        """Whether this process's kernels are ready for the data's dtype."""
        return warmup.partitions_warm(self._dtype)

    def free(self) -> bool:
        """Whether the thread may take a chunk now: warm, and its last chunk done."""
        return (self._future is None or self._future.done()) and self.warm()

    def rate(self) -> float:
        """Bytes of frames computed here per CPU second of the thread (measured; a
        guess before)."""
        nbytes, seconds = self._measured
        return nbytes / seconds

    def too_slow_for(self, nbytes: int) -> bool:
        """Whether ``nbytes`` of frames would take the thread over :data:`CATCH_UP_S`
        of CPU time."""
        return nbytes > CATCH_UP_S * self.rate()

    def submit(self, chunk: Partition) -> Future:
        """Compute ``chunk``; the future has its :class:`~.tasks.PartitionResult`, or
        the error reading it raised."""
        self._future = future = self._pool.submit(self._compute, chunk)
        future.add_done_callback(lambda _f: self._wake())
        return future

    def _compute(self, chunk: Partition) -> PartitionResult:
        # the thread's CPU time, not the wall clock's: the rate of the work itself, which
        # a machine busy with other processes (or the workers) does not change; when the
        # thread is starved of a core, the workers would compete for the same cores
        t0 = time.thread_time()
        if self._copy is None:
            result = read_partition_here(chunk, self._plan)
        else:
            result = _read_binning(chunk, self._plan, self._copy)
        self.frames += chunk.n_frames
        measured, decay = ChunksHere._measured, 0.5 ** (result.bytes_read / ChunksHere._HALF_LIFE_BYTES)
        ChunksHere._measured = [measured[0] * decay + result.bytes_read, measured[1] * decay + time.thread_time() - t0]
        return result

    def close(self) -> None:
        """Wait for the chunk being computed, if any, and end the thread."""
        self._pool.shutdown(wait=True, cancel_futures=True)
