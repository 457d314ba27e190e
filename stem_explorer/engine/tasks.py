"""The task every worker runs: read one partition tile by tile and feed the ops.

:func:`run_partition` is a plain function of small picklable arguments, so it runs
the same in a dask worker, in a test, or in a debugger. Memory per task is bounded by
the tile size plus the ops' per-partition state, whatever the partition size.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import pickle
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..io.base import Partition
from .kernels import as_native_2d
from .monitor import TaskMeter, TaskUsage
from .ops import Op
from .reduced import PartBinner, ReducedSpec, binner_for, held_parts
from .roi import frames_in, plan_frames, read_blocks

#: Default tile size in bytes of native data. Large tiles amortise what each tile
#: costs besides its pixels (a read, the kernels' dispatch, BLAS packing the mask
#: matrix for the dense path): 32 MiB against 4 MiB measured float32 16 rings 6.8 ->
#: 7.6 GB/s and the float32 disk 25 -> 35 GB/s on the 2-core machine, nothing slower
#: beyond the noise. Memory per task stays bounded by a few tiles.
DEFAULT_TILE_BYTES = 32 * 2**20


@dataclass(frozen=True)
class Plan:
    """The ops of one job and how to tile. It travels inside each task as a
    :class:`PlanParcel`; one over :data:`INLINE_PLAN_BYTES` is scattered once per job."""

    ops: tuple[Op, ...]
    tile_bytes: int = DEFAULT_TILE_BYTES

    def tile_frames(self, frame_bytes: int, limit: Optional[int] = None) -> int:
        """Frames per tile: the plan's tile size, or the source's ``limit`` (bytes)
        when that is smaller (:attr:`~stem_explorer.io.base.FrameSource.tile_bytes_limit`)."""
        tile_bytes = self.tile_bytes if limit is None else min(self.tile_bytes, limit)
        return max(1, tile_bytes // max(1, frame_bytes))


@dataclass
class PartitionResult:
    """What a task sends back: the ops' partials and a few statistics."""

    index: int
    start: int
    stop: int
    partials: list
    bytes_read: int
    seconds: float
    host: str  # worker address (tcp://host:port), or hostname outside dask
    #: flat frame indices of a preview result (per-frame ops only), None for a partition
    indices: Optional[np.ndarray] = None
    #: the only frames of the partition that were read (a scan ROI; sorted flat
    #: indices, the rows of the per-frame partials), None when all were
    frames: Optional[np.ndarray] = None
    #: what the task used, measured in the worker (None: computed in the client)
    usage: Optional[TaskUsage] = None
    #: bytes of the partition's part of the reduced copy that its worker holds (None:
    #: it holds none; 0: a part of a scan-subsampled copy without frames here)
    reduced_bytes: Optional[int] = None
    #: a preview computed from the reduced copy (:func:`run_reduced_preview`)
    from_copy: bool = False


_THREADS_PINNED = False


def _pin_threads() -> None:
    """One BLAS thread per worker process: dask already runs one task per core."""
    global _THREADS_PINNED
    if _THREADS_PINNED:
        return
    _THREADS_PINNED = True
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # worker env vars (set by our LocalCluster) still apply
        return
    threadpool_limits(1)


#: Plans whose pickle is at most this size travel inside each task (as a
#: :class:`PlanParcel`); larger ones are scattered to every worker once per job.
INLINE_PLAN_BYTES = 512 * 2**10

_unpacked_plans: "OrderedDict[str, Plan]" = OrderedDict()
_MAX_UNPACKED_PLANS = 8


class PlanParcel:
    """A plan pickled once on the client and unpickled once per worker process.

    Every task of a job carries the same bytes; unpickling a parcel returns the
    :class:`Plan` itself, from a per-process cache keyed by the bytes' digest, so the
    ops' prepared kernel layouts are built once per worker and job. No task depends
    on another for its plan, so the scheduler balances partitions freely (a plan
    held by one worker drew every task to that worker) and the job starts without
    a blocking round trip.
    """

    def __init__(self, plan: Plan):
        import cloudpickle

        self.blob = cloudpickle.dumps(plan, protocol=5)
        self.digest = hashlib.blake2b(self.blob, digest_size=16).hexdigest()

    def __reduce__(self):
        return (_unpack_plan, (self.digest, self.blob))


def _unpack_plan(digest: str, blob: bytes) -> Plan:
    plan = _unpacked_plans.get(digest)
    if plan is None:
        plan = _unpacked_plans[digest] = pickle.loads(blob)
        while len(_unpacked_plans) > _MAX_UNPACKED_PLANS:
            _unpacked_plans.popitem(last=False)
    else:
        _unpacked_plans.move_to_end(digest)
    return plan


def run_partition(
    partition: Partition, plan: Plan, payload: Any = None, frames: Optional[np.ndarray] = None,
    keep: Optional[ReducedSpec] = None,
) -> PartitionResult:
    """Run every op of ``plan`` over ``partition``; return the partials.

    With ``frames`` (sorted flat indices inside the partition: a scan ROI, or what
    the ops need) only the blocks holding them are read (:func:`stem_explorer.engine.roi.read_blocks`)
    and the ops see only those frames; per-frame partials then hold their rows only.
    With ``keep`` (and no ``frames``) the worker also keeps the partition's part of
    that reduced copy (:mod:`.reduced`) unless it holds it already.
    """
    _pin_threads()
    meter = TaskMeter()
    result = _read_partition(partition, plan, payload, frames, meter, keep)
    result.usage = meter.finish()
    return result


def read_partition_here(
    partition: Partition, plan: Plan, payload: Any = None, frames: Optional[np.ndarray] = None,
    binner: Optional[PartBinner] = None,
) -> PartitionResult:
    """:func:`run_partition` in the client (a click, a small ROI, a live job's
    chunk), with BLAS on the calling thread only for the call (the user's process
    keeps its own settings). ``binner`` (with no ``frames``): also bin the frames it
    covers into a part of a reduced copy kept here (a live acquisition's,
    :class:`~.reduced_copy.LiveCopy`); the result's ``reduced_bytes`` says what was
    kept."""
    with _threadpools().limit(limits=1, user_api="blas"):
        return _read_partition(partition, plan, payload, frames, binner=binner)


def _read_partition(
    partition: Partition, plan: Plan, payload: Any, frames: Optional[np.ndarray], meter: Optional[TaskMeter] = None,
    keep: Optional[ReducedSpec] = None, binner: Optional[PartBinner] = None,
) -> PartitionResult:
    t0 = time.perf_counter()
    source = partition.source
    n_pixels = math.prod(source.sig_shape)
    dtype = np.dtype(source.dtype)
    frame_bytes = n_pixels * dtype.itemsize
    native = dtype.newbyteorder("=")
    states = [op.start(partition.start, partition.stop, n_pixels, native) for op in plan.ops]
    keep_order = all(op.reads_stored_order(dtype) for op in plan.ops)
    scratch = [None]  # the swap buffer, reused from tile to tile
    cancelled = _cancellation_check()
    tile_frames = plan.tile_frames(frame_bytes, source.tile_bytes_limit)
    if frames is None:
        blocks = [(start, stop, [(start, stop)]) for start, stop in partition.tile_ranges(tile_frames)]
    else:
        blocks = read_blocks(frames, partition.stop, source.frame_alignment, tile_frames)
    reduced_bytes = None
    if binner is None:
        binner, reduced_bytes = binner_for(keep if frames is None else None, partition.start, partition.stop)
    frames_read = 0
    with source.open(payload) as reader:
        if frames is not None:  # scattered blocks: let the reader fetch them together
            reader.will_need([(block_start, block_stop) for block_start, block_stop, _runs in blocks])
        for block_start, block_stop, runs in blocks:
            if cancelled():
                break  # nobody waits for this result; free the worker for the next job
            tile = as_native_2d(reader.read(block_start, block_stop), keep_order, scratch)
            frames_read += block_stop - block_start
            for start, stop in runs:
                for op, state in zip(plan.ops, states):
                    op.feed(state, start, tile[start - block_start : stop - block_start])
            if binner is not None:
                binner.add(block_start, tile)
            if meter is not None:  # the tile is still held: the RSS now is the task's
                meter.tile((block_stop - block_start) * frame_bytes)
        else:  # every tile was read: the part is whole
            reduced_bytes = binner.keep() if binner is not None else reduced_bytes
    partials = [op.finish(state) for op, state in zip(plan.ops, states)]
    if frames is not None:  # per-frame rows of the frames read only: the rest stays NaN
        rows = frames - partition.start
        partials = [partial[rows] if op.per_frame else partial for op, partial in zip(plan.ops, partials)]
    return PartitionResult(
        index=partition.index,
        start=partition.start,
        stop=partition.stop,
        partials=partials,
        bytes_read=frames_read * frame_bytes,
        seconds=time.perf_counter() - t0,
        host=_where(),
        frames=frames,
        reduced_bytes=reduced_bytes,
    )


@functools.lru_cache(maxsize=1)
def _threadpools():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def compute_preview_here(pieces: Sequence[tuple], plan: Plan, stop: Optional[Callable[[], bool]] = None) -> PartitionResult:
    """:func:`compute_preview` in the client, with BLAS on the calling thread only;
    ``stop()`` is asked between pieces whether to give up (the rows read so far come back).

    A multi-threaded BLAS call wakes OpenBLAS's threads, which then spin for a while
    on the cores the workers need: a float32 annulus (one matrix-vector product per
    tile) lost 45 ms a job to it. Limiting costs about 0.7 ms.
    """
    with _threadpools().limit(limits=1, user_api="blas"):
        return compute_preview(pieces, plan, stop)


def run_preview(pieces: Sequence[tuple], plan: Plan) -> PartitionResult:
    """The task computing a coarse preview on a worker: :func:`compute_preview`,
    metered."""
    _pin_threads()
    meter = TaskMeter()
    result = compute_preview(pieces, plan)
    meter.tile(result.bytes_read)
    result.usage = meter.finish()
    return result


#: A preview with a ``stop`` test asks it every this many frames.
STOP_CHECK_FRAMES = 4


def compute_preview(pieces: Sequence[tuple], plan: Plan, stop: Optional[Callable[[], bool]] = None) -> PartitionResult:
    """Run the per-frame ops of ``plan`` on scattered frames only (a coarse preview).

    ``pieces`` are ``(partition, payload, indices)``: the flat frame indices to read
    from each partition. The frames are gathered into one tile (a few MiB) so each op
    runs once. Reductions are skipped (their partials are None): a preview only fills
    navigation images early. Runs in a worker (:func:`run_preview`) or in the client.
    """
    t0 = time.perf_counter()
    source = pieces[0][0].source
    n_pixels = math.prod(source.sig_shape)
    native = np.dtype(source.dtype).newbyteorder("=")
    indices = np.concatenate([piece[2] for piece in pieces])
    cancelled = _cancellation_check()

    def stopped() -> bool:  # superseded, or overtaken: the rows left are never merged
        return cancelled() or (stop is not None and stop())

    # with ``stop``, asked every few frames: a cold frame can take a disk seek
    step = STOP_CHECK_FRAMES if stop is not None else max(1, *(len(piece[2]) for piece in pieces))
    with _preview_buffer(len(indices) * n_pixels, source.dtype) as flat:
        stored = flat.reshape(len(indices), n_pixels)
        row = 0
        for partition, payload, wanted in pieces:
            if stopped():
                break
            with partition.source.open(payload) as reader:
                for lo in range(0, len(wanted), step):
                    if lo and stopped():
                        break
                    part = wanted[lo : lo + step]
                    reader.take(part, stored[row : row + len(part)])
                    row += len(part)
        tile, indices = as_native_2d(stored[:row]), indices[:row]
        partials = []  # per-frame ops write their own arrays: nothing refers to the buffer
        for op in plan.ops:
            if op.per_frame:
                state = op.start(0, len(indices), n_pixels, native)
                op.feed_at(state, indices, tile)
                partials.append(op.finish(state))
            else:
                partials.append(None)
    return PartitionResult(
        index=-1,
        start=int(indices.min()) if indices.size else 0,
        stop=int(indices.max()) + 1 if indices.size else 0,
        partials=partials,
        bytes_read=tile.nbytes,
        seconds=time.perf_counter() - t0,
        host=_where(),
        indices=indices,
    )


def run_reduced_preview(key: str, plan: Plan) -> PartitionResult:
    """The task computing a preview from this worker's parts of the reduced copy
    ``key`` (:mod:`.reduced`). ``plan`` holds the job's ops on the copy, None for those
    that do not preview (their partials are None). A worker holding no part (one that
    replaced a lost worker) returns no frames."""
    _pin_threads()
    return _reduced_preview(key, plan)


def reduced_preview_here(key: str, plan: Plan) -> PartitionResult:
    """:func:`run_reduced_preview` on this process's parts (a live acquisition's
    copy), with BLAS on the calling thread only for the call."""
    with _threadpools().limit(limits=1, user_api="blas"):
        return _reduced_preview(key, plan)


def _reduced_preview(key: str, plan: Plan) -> PartitionResult:
    meter = TaskMeter()
    t0 = time.perf_counter()
    parts = held_parts(key)
    indices = np.concatenate([part[0] for part in parts] + [np.zeros(0, np.int64)])
    partials = [None if op is None else _feed_parts(op, parts, indices.size) for op in plan.ops]
    nbytes = sum(part[1].nbytes for part in parts)
    meter.tile(nbytes)
    return PartitionResult(
        index=-1,
        start=int(indices.min()) if indices.size else 0,
        stop=int(indices.max()) + 1 if indices.size else 0,
        partials=partials,
        bytes_read=0,
        seconds=time.perf_counter() - t0,
        host=_where(),
        indices=indices,
        usage=meter.finish(),
        from_copy=True,
    )


def _feed_parts(op: Op, parts: list, n_frames: int):
    """A per-frame op's partial over the reduced parts, fed one part at a time (no
    concatenated copy)."""
    if not parts:
        return op.finish(op.start(0, 0, 0, np.dtype(np.float64)))
    data = parts[0][1]
    state, row = op.start(0, n_frames, data.shape[1], data.dtype), 0
    for _indices, data in parts:
        op.feed(state, row, data)
        row += data.shape[0]
    return op.finish(state)


_buffer: list = [None]  # the flat uint8 array reused by previews in this process
_buffer_lock = threading.Lock()


@contextlib.contextmanager
def _preview_buffer(size: int, dtype):
    """A flat array of ``size`` values for one preview, reused across previews: a fresh
    16 MiB array page-faults its way in every time (dask workers return freed memory to
    the system at once; the client computes each preview in a new job thread), which
    cost as much as the gather itself. A preview that finds the buffer in use gets a
    fresh array."""
    dtype = np.dtype(dtype)
    nbytes = size * dtype.itemsize
    if not _buffer_lock.acquire(blocking=False):
        yield np.empty(size, dtype)
        return
    try:
        if _buffer[0] is None or _buffer[0].nbytes < nbytes:
            _buffer[0] = np.empty(nbytes, np.uint8)
        yield _buffer[0][:nbytes].view(dtype)
    finally:
        _buffer_lock.release()


def _cancellation_check() -> Callable[[], bool]:
    """A cheap test, called between tiles, of whether the client has cancelled this
    task (a superseded job). A dask worker keeps running a cancelled task to its end;
    stopping at the next tile lets the successor's tasks start within a tile's time
    instead of a partition's. Outside dask it always says no."""
    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()
    except (ImportError, ValueError, AttributeError):
        return lambda: False

    def cancelled() -> bool:
        task = worker.state.tasks.get(key)
        return task is None or task.state in ("cancelled", "released", "forgotten")

    return cancelled


def _where() -> str:
    """The address of the dask worker running this task (its host, outside dask)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return socket.gethostname()


def empty_accumulators(plan: Plan, n_frames: int, sig_shape, dtype) -> list:
    """The client-side accumulators of every op before any partition reported."""
    native = np.dtype(dtype).newbyteorder("=")
    return [op.empty(n_frames, math.prod(sig_shape), native) for op in plan.ops]


def merge_partition(plan: Plan, accumulators: list, result: PartitionResult, keep=None) -> None:
    """Fold one task's partials into the accumulators (in place).

    A preview result (``result.indices`` set) writes its per-frame values at those
    frames, except where the boolean ``keep`` mask (indexed like ``indices``) is False.
    """
    for i, (op, partial) in enumerate(zip(plan.ops, result.partials)):
        if result.frames is not None and op.per_frame:
            accumulators[i] = op.merge_frames(accumulators[i], partial, result.frames)
        elif result.indices is None:
            accumulators[i] = op.merge(accumulators[i], partial, result.start, result.stop)
        elif partial is not None:
            accumulators[i] = op.merge_frames(accumulators[i], partial, result.indices, keep)


def run_local(partitions: Sequence[Partition], plan: Plan, payloads=None, roi: Optional[np.ndarray] = None) -> list:
    """Run a plan in this process, partition after partition, and return the merged
    accumulators (tests, debugging, single-process use). ``roi`` (sorted flat frame
    indices) limits the frames read, as a job's does."""
    if not partitions:
        raise ValueError("run_local needs at least one partition")
    source = partitions[0].source
    accumulators = empty_accumulators(plan, source.n_frames, source.sig_shape, source.dtype)
    wanted = plan_frames(plan.ops, roi)
    for partition, payload in zip(partitions, payloads or [None] * len(partitions)):
        frames = None if wanted is None else frames_in(wanted, partition)
        if frames is None or frames.size:
            merge_partition(plan, accumulators, run_partition(partition, plan, payload, frames))
    return accumulators
