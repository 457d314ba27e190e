"""The client's side of a reduced copy (:mod:`.reduced`): how coarse it must be to
fit its memory budget, which workers hold which parts, and the preview plan.

A session sizes its copy once (:func:`plan_copy`): the finest detector binning
(2 x 2, 3 x 3, ...) whose copy fits the memory budget and what the workers preview
in tens of milliseconds (:data:`PREVIEW_BYTES_PER_WORKER`: a finer copy made the
preview slower than the coarse grid's); when even the coarsest useful binning
(:data:`MIN_BINNED_SIDE` bins along the detector's shorter side) does not fit, every
2nd, 3rd or 4th scan row and column only (:data:`MAX_SCAN_STEP`). A copy sparser than
that is no better than the coarse-grid preview (``engine.preview``), which then stays in
use, and the copy's :attr:`ReducedCopy.status` says why.

Jobs that read whole partitions pass the spec to the partitions the copy lacks,
and record the parts their workers kept (:meth:`ReducedCopy.record`). Once the copy
has been whole, a job whose per-frame ops all have a reduced form
(:func:`.reduced.reduced_op`) previews from it; parts on workers that have gone
are forgotten (the next full pass bins them again), and their frames wait for the
exact pass.

Once the copy is whole, and when it is small enough (:data:`HERE_PREVIEW_BYTES`),
the client fetches every part into this process too (:meth:`ReducedCopy.fetch_when_whole`,
in the background), and jobs then compute the preview here, in a few milliseconds per
tens of MiB, instead of by tasks: the tasks' round trip through the scheduler and
back cost about 110 ms of the 40 GiB file's 190 ms from a mask change to the image
leaving the kernel.

A live acquisition whose frames this process records (:class:`LiveCopy`) keeps its
copy here instead: the live job's thread computing the frames here bins them as it
reads them, and a job started later (a mask changed mid-scan) previews every frame
binned so far in this process, in tens of milliseconds, before its exact pass
re-reads the recording.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import uuid
import weakref
from typing import Optional

import numpy as np

from . import warmup
from .reduced import PartBinner, ReducedSpec, drop_copy, held_bytes, keep_part, parts_held, reduced_op
from .tasks import Plan

#: Default budget: this fraction of the workers' memory (their dask memory limits).
DEFAULT_FRACTION = 0.10
#: The coarsest useful binning leaves at least this many bins along the detector's
#: shorter side (a 256 x 256 detector: 32 x 32 pixels per bin at most).
MIN_BINNED_SIDE = 8
#: The sparsest useful copy holds every 4th scan row and column.
MAX_SCAN_STEP = 4
#: A job previews from the copy only when the session's last whole pass over the data
#: set took at least this long: a faster exact pass streams its partitions onto the
#: screen about as soon, and the preview's tasks would only delay it (on the 2 GiB
#: cached benchmark files they cost 20-35 % of a virtual detector's throughput).
PREVIEW_WORTH_S = 1.0
#: At most this many bytes of the copy per worker, whatever the memory budget: the
#: preview reads all of it (the 0.5 GiB benchmark file's 2 x 2 copy, 128 MiB a worker,
#: previewed in 0.68 s under load, slower than the coarse grid's 0.18 s).
PREVIEW_BYTES_PER_WORKER = 32 * 2**20
#: At most this many bytes of a copy held and previewed in this process by one thread
#: (a live acquisition's, or a fetched one): a 256 x 256 scan of 512 x 512 frames 16 x
#: 16 binned, whose preview of a virtual detector took 49 ms on the 2-core machine under
#: load (64 MiB: 11 ms).
HERE_PREVIEW_BYTES = 256 * 2**20
#: A live acquisition's copy has at most this many bins along the detector's longer
#: side: the thread computing the frames bins them while they arrive, and fine bins
#: cost it more (512 x 512 12-bit frames, per CPU second: 2 x 2 bins about 1.5 GB/s,
#: which doubled the receiving process's CPU per GB at full speed; 8 x 8, 11 GB/s, as
#: much as the sum frame; 16 x 16, 16 GB/s), where a mask change's preview needs no
#: more.
LIVE_BINNED_SIDE = 32


def plan_copy(nav_shape, sig_shape, dtype, budget: int, n_workers: int,
              worker_preview_bytes: int = PREVIEW_BYTES_PER_WORKER, finest: int = 2) -> tuple:
    """``(spec, reason)``: the finest :class:`~.reduced.ReducedSpec` within ``budget``
    bytes and ``worker_preview_bytes`` per worker (module notes), binned ``finest`` x
    ``finest`` at least, or None and why not."""
    if budget <= 0:
        return None, "the reduced copy is off (its memory budget is 0)"
    if len(sig_shape) != 2:
        return None, "no reduced copy: the detector is not 2-D"
    coarsest = max(2, min(sig_shape) // MIN_BINNED_SIDE)
    finest = min(max(2, finest), coarsest)
    steps = range(1, MAX_SCAN_STEP + 1) if len(nav_shape) in (1, 2) else (1,)
    candidates = [(1, b) for b in range(finest, coarsest + 1)] + [(s, coarsest) for s in steps if s > 1]
    key = uuid.uuid4().hex
    limit = min(budget, n_workers * worker_preview_bytes)
    smallest = None
    for step, binning in candidates:
        spec = ReducedSpec(key, tuple(nav_shape), tuple(sig_shape), dtype.str, binning, step, 0)
        smallest = spec
        if spec.nbytes <= limit:
            # a worker may hold up to twice its share: dask does not spread partitions evenly
            per_worker = limit if n_workers <= 1 else min(limit, math.ceil(2 * limit / n_workers))
            return ReducedSpec(key, spec.nav_shape, spec.sig_shape, spec.dtype, binning, step, per_worker), ""
    smallest = (f"even a {smallest.binning} x {smallest.binning} binned copy of one scan row and column "
                f"in {smallest.scan_step} ({_mib(smallest.nbytes)})")
    if budget < n_workers * worker_preview_bytes:
        return None, (f"no reduced copy: its memory budget ({_mib(budget)}) is too small for {smallest}; "
                      f"previews use the coarse grid. Raise the session's reduced_copy_bytes to have one")
    return None, (f"no reduced copy: {smallest} is more than {n_workers} workers preview quickly "
                  f"({_mib(worker_preview_bytes)} each); previews use the coarse grid")


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def default_budget(client) -> int:
    """:data:`DEFAULT_FRACTION` of the memory limits of the client's workers (of
    this machine's memory for workers without a limit)."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # older distributed without the n_workers argument
        info = client.scheduler_info()
    total = 0
    for worker in info.get("workers", {}).values():
        limit = worker.get("memory_limit") or 0
        if not limit:
            import psutil

            limit = psutil.virtual_memory().total
        total += limit
    return int(total * DEFAULT_FRACTION)


class ReducedCopy:
    """A session's reduced copy, as the client knows it.

    Parameters
    ----------
    spec : ReducedSpec or None
        What the copy holds (None: there is none; ``reason`` says why).
    budget : int
        The bytes of worker memory it may use, all workers together.
    reason : str
        Why there is no copy (empty when there is one).
    """

    def __init__(self, spec: Optional[ReducedSpec], budget: int, reason: str = ""):
        self.spec = spec
        self.budget = budget
        self.reason = reason
        self._lock = threading.Lock()
        self._parts: dict = {}  # (start, stop) -> (worker address, bytes)
        self._whole = False  # the parts have covered every frame once
        self._pass_s: Optional[float] = None  # seconds of the last whole pass
        self._fetched = False  # this process holds every part too (fetch_when_whole)
        self._fetching = False
        if spec is not None:  # a session let go of without close(): free this process's parts with it
            weakref.finalize(self, drop_copy, spec.key)

    @property
    def nbytes(self) -> int:
        """Bytes of the parts the workers reported keeping."""
        with self._lock:
            return sum(nbytes for _worker, nbytes in self._parts.values())

    @property
    def complete(self) -> bool:
        """Whether the parts recorded now cover every frame."""
        with self._lock:
            return self._covered() == self._n_frames()

    @property
    def usable(self) -> bool:
        """Whether jobs preview from it: it has been whole once and parts remain."""
        with self._lock:
            return self.spec is not None and self._whole and bool(self._parts)

    @property
    def status(self) -> str:
        """One line for a status bar: what the copy is, or why there is none."""
        if self.spec is None:
            return self.reason
        spec = self.spec
        grid = "" if spec.scan_step == 1 else f", one scan row and column in {spec.scan_step}"
        state = "ready" if self.usable else "filled by the next full pass"
        return (f"reduced copy {spec.binning} x {spec.binning} binned{grid}: {_mib(self.nbytes)} of "
                f"{_mib(spec.nbytes)} (budget {_mib(self.budget)}), {state}")

    @property
    def here(self) -> bool:
        """Whether jobs preview from this process's parts: fetched whole and all still
        held (another session's copy fetched later may have pushed them out), and the
        kernels warm for the copy's dtype (a cold process compiles for a second)."""
        with self._lock:
            fetched = self._fetched
        return fetched and held_bytes(self.spec.key) == self.spec.nbytes and warmup.is_warm(self.spec.copy_dtype)

    def fetch_when_whole(self, client) -> None:
        """Once the copy is whole, at most :data:`HERE_PREVIEW_BYTES` and worth
        previewing from (the last whole pass took :data:`PREVIEW_WORTH_S` or more),
        fetch every part into this process in a daemon thread (once), and warm the
        kernels of its dtype here; a fetch that fails (a worker gone) leaves the
        previews to tasks."""
        with self._lock:
            if (self.spec is None or not self._whole or self._fetched or self._fetching
                    or self.spec.nbytes > HERE_PREVIEW_BYTES or self._pass_s is None
                    or self._pass_s < PREVIEW_WORTH_S):
                return
            self._fetching = True
        threading.Thread(target=self._fetch, args=(client,), name="stem-explorer-fetch-copy", daemon=True).start()

    def _fetch(self, client) -> None:
        spec = dataclasses.replace(self.spec, worker_bytes=max(self.spec.worker_bytes, HERE_PREVIEW_BYTES))
        try:
            held = client.run(parts_held, spec.key)
        except Exception:  # workers gone or busy past the timeout: previews stay with tasks
            held = {}
        parts = [part for worker_parts in held.values() for part in worker_parts]
        kept = all(keep_part(spec, *part) is not None for part in parts)
        with self._lock:
            self._fetching = False
            covered = sum(stop - start for start, stop, _indices, _data in parts)
            self._fetched = kept and covered == self._n_frames()
        if self._fetched:
            warmup.warm_up_in_background([spec.copy_dtype], partitions=False)

    def record_pass(self, seconds: float) -> None:
        """A job read every frame in ``seconds``: what the next exact pass will take."""
        with self._lock:
            self._pass_s = float(seconds)

    def worth_previewing(self) -> bool:
        """Whether an exact pass is slow enough for a preview from the copy to show
        sooner (:data:`PREVIEW_WORTH_S`; unknown until a whole pass has run)."""
        with self._lock:
            return self._pass_s is None or self._pass_s >= PREVIEW_WORTH_S

    def wants(self, start: int, stop: int) -> Optional[ReducedSpec]:
        """The spec to pass to a task reading frames ``start:stop`` whole, or None when
        the copy holds that part already (or there is no copy)."""
        with self._lock:
            return None if self.spec is None or (start, stop) in self._parts else self.spec

    def record(self, start: int, stop: int, worker: str, nbytes: Optional[int]) -> None:
        """A task's worker holds the part ``start:stop`` (``nbytes``; None: it could not
        keep it). Parts of another partition layout that overlap it are forgotten."""
        if self.spec is None:
            return
        with self._lock:
            for a, b in [r for r in self._parts if r[0] < stop and start < r[1]]:
                del self._parts[(a, b)]
            if nbytes is not None:
                self._parts[(start, stop)] = (worker, nbytes)
            self._whole = self._whole or self._covered() == self._n_frames()

    def holders(self, workers) -> list:
        """The workers among ``workers`` (addresses) holding parts; parts on others
        (gone) are forgotten."""
        alive = set(workers)
        with self._lock:
            for part in [p for p, (worker, _n) in self._parts.items() if worker not in alive]:
                del self._parts[part]
            return sorted({worker for worker, _n in self._parts.values()})

    def preview_plan(self, plan: Plan) -> Optional[Plan]:
        """``plan``'s ops on the copy (None for ops that are not per frame), or None
        when the copy is not usable or some per-frame op has no reduced form."""
        if not self.usable or not any(op.per_frame for op in plan.ops):
            return None
        ops = []
        for op in plan.ops:
            reduced = reduced_op(op, self.spec) if op.per_frame else None
            if op.per_frame and reduced is None:
                return None
            ops.append(reduced)
        return Plan(tuple(ops), plan.tile_bytes)

    def drop(self, client=None) -> None:
        """Free the copy in this process and, with ``client``, on every worker (the
        session closes; without a client, the cluster goes with it)."""
        with self._lock:
            self._parts.clear()
            self._whole = self._fetched = False
        if self.spec is None:
            return
        drop_copy(self.spec.key)
        if client is not None:
            try:
                client.run(drop_copy, self.spec.key)
            except Exception:  # the cluster is gone, and the copy with it
                pass

    def _covered(self) -> int:
        return sum(stop - start for start, stop in self._parts)

    def _n_frames(self) -> int:
        return math.prod(self.spec.nav_shape)


def plan_live_copy(nav_shape, sig_shape, dtype, budget: int) -> "LiveCopy":
    """The reduced copy of a live acquisition recorded in this process: the finest
    binning within ``budget`` and :data:`HERE_PREVIEW_BYTES` (:func:`plan_copy`, one
    thread previewing) of at most :data:`LIVE_BINNED_SIDE` bins a side."""
    finest = math.ceil(max(sig_shape) / LIVE_BINNED_SIDE) if len(sig_shape) == 2 else 2
    spec, reason = plan_copy(nav_shape, sig_shape, np.dtype(dtype), budget, 1, HERE_PREVIEW_BYTES, finest)
    return LiveCopy(spec, budget, reason)


class LiveCopy(ReducedCopy):
    """A live acquisition's reduced copy, held in this process (module notes).

    The thread computing a live job's frames here asks :meth:`binner` for each chunk,
    reads the chunk with it (:func:`~.tasks.read_partition_here`) and records the
    part kept (:meth:`record`, worker ``"here"``); a chunk overlapping frames binned
    already bins only the rest. It is usable as soon as it holds a part: a job
    previews the frames it holds.
    """

    def __init__(self, spec: Optional[ReducedSpec], budget: int, reason: str = ""):
        super().__init__(spec, budget, reason)
        #: held while a range of frames is binned into the copy (one at a time)
        self.binning = threading.Lock()

    @property
    def usable(self) -> bool:
        with self._lock:
            return self.spec is not None and bool(self._parts)

    @property
    def status(self) -> str:
        text = super().status
        return text.replace("filled by the next full pass", "filled as the frames arrive") if self.spec else text

    def binner(self, start: int, stop: int) -> Optional[PartBinner]:
        """A binner for the frames of ``start:stop`` not binned yet (from the first
        one after the parts that end in the range), or None when there are none (or
        there is no copy)."""
        if self.spec is None:
            return None
        with self._lock:
            first = max([start] + [b for a, b in self._parts if a < stop and start < b])
        return PartBinner(self.spec, first, stop) if first < stop else None
