"""Resource monitoring: what each task used, and what each worker does while jobs run.

Per task, inside the worker (:class:`TaskMeter`, used by :func:`.tasks.run_partition`
and ``run_preview``): wall seconds, CPU seconds of the task's thread (the
kernels run on it: BLAS is held to one thread per task and the numba kernels are not
parallel; a background thread of the worker, e.g. the kernels' warm-up, is not the
task's), bytes the reader returned, and the worker process's peak resident set size
while the task ran (sampled at tile boundaries at most every :data:`RSS_EVERY_S`).

Per worker, once a second while it runs tasks (:class:`WorkerSampler`): CPU % of the
worker process, its resident set size and the bytes per second its tasks read. The
sampler is a daemon thread of the worker process, started by the first task that
runs there and ending after :data:`IDLE_STOP_S` without tasks; it pushes each sample
through the worker's event stream (``Worker.log_event``), which dask forwards to the
subscribed clients. That is cheaper than polling with ``client.run`` every second (a
round trip from the client through the scheduler to every worker, on the client's
cores, for as long as a job runs) and needs no set-up on the cluster: any worker
running a task of this package samples itself. A job shorter than a second may get
no sample; its per-task figures are always there.

On the client, :func:`record_task` and :func:`record_sample` fold both into a job's
:class:`~.job.JobStats`, and :func:`usage_summary` condenses it for the results'
provenance.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

#: The topic of worker samples (``Worker.log_event`` -> ``Client.subscribe_topic``).
SAMPLES_TOPIC = "stem-explorer-worker-samples"

#: Seconds between two samples of a worker.
SAMPLE_INTERVAL_S = 1.0

#: A worker's sampler stops after this long without a task of this package.
IDLE_STOP_S = 2.0

#: A task samples its worker's RSS at a tile boundary at most this often (a sample
#: costs microseconds, a 32 MiB tile milliseconds).
RSS_EVERY_S = 0.01

#: A job keeps at most this many samples per worker (an hour at one a second).
MAX_SAMPLES_PER_WORKER = 3600

#: Key prefix of every task this package submits; a key's job tag is the key up to
#: its last "-" (``stem-explorer-job7-part3`` -> ``stem-explorer-job7``).
KEY_PREFIX = "stem-explorer-job"


def job_tag(key) -> Optional[str]:
    """The job tag of a task key of this package, else None."""
    if not isinstance(key, str) or not key.startswith(KEY_PREFIX):
        return None
    return key.rsplit("-", 1)[0]


@dataclass
class TaskUsage:
    """What one task used, measured in the worker that ran it."""

    #: CPU seconds of the thread that ran the task
    cpu_seconds: float
    #: the highest resident set size of the worker process while the task ran
    peak_rss_bytes: int


@dataclass
class WorkerUsage:
    """One worker's share of a job: totals of its tasks, and its samples.

    Each sample is a dict: ``time`` (``time.time()`` in the worker), ``cpu_percent``
    (of one core, over the last interval), ``rss_bytes`` and ``read_bytes_per_s``
    (bytes the worker's tasks read per second over the last interval).
    """

    tasks: int = 0
    cpu_seconds: float = 0.0
    task_seconds: float = 0.0
    bytes_read: int = 0
    peak_rss_bytes: int = 0
    samples: collections.deque = field(default_factory=lambda: collections.deque(maxlen=MAX_SAMPLES_PER_WORKER))


# -- in the worker ------------------------------------------------------------------------
_process_cache: list = [None, None]  # (pid, psutil.Process): a forked child needs its own


def _process():
    import psutil

    if _process_cache[0] != os.getpid():
        _process_cache[:] = [os.getpid(), psutil.Process()]
    return _process_cache[1]


_statm: list = [None, None]  # (pid, fd of /proc/self/statm), on Linux
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    """This process's resident set size. On Linux read from a descriptor of
    ``/proc/self/statm`` kept open (about 6 us a call under load, against 75 us through
    psutil, which opens the file each time); elsewhere through psutil."""
    if _statm[0] != os.getpid():
        try:
            _statm[:] = [os.getpid(), os.open("/proc/self/statm", os.O_RDONLY)]
        except OSError:  # not Linux
            _statm[:] = [os.getpid(), None]
    if _statm[1] is None:
        return _process().memory_info().rss
    return int(os.pread(_statm[1], 128, 0).split()[1]) * _PAGE_BYTES


class TaskMeter:
    """Measures the task running on this thread: call :meth:`tile` after each tile,
    :meth:`finish` at the end."""

    def __init__(self):
        self.bytes_read = 0
        self.peak_rss_bytes = _rss()
        self._t0 = time.perf_counter()
        self._cpu0 = time.thread_time()
        self._next_rss = self._t0 + RSS_EVERY_S
        self._sampler = _worker_sampler()
        self._job = None
        if self._sampler is not None:
            self._job = job_tag(self._current_key())
            self._sampler.task_started(self._job)

    @staticmethod
    def _current_key():
        from distributed import get_worker

        try:
            return get_worker().get_current_task()
        except (ValueError, AttributeError):
            return None

    def tile(self, nbytes: int) -> None:
        """``nbytes`` more were read (the tile is still held: sample the RSS now)."""
        self.bytes_read += nbytes
        if self._sampler is not None:
            self._sampler.add_bytes(nbytes)
        now = time.perf_counter()
        if now >= self._next_rss:
            self.peak_rss_bytes = max(self.peak_rss_bytes, _rss())
            self._next_rss = now + RSS_EVERY_S

    def finish(self) -> TaskUsage:
        """The task's usage; the RSS is sampled once more before its buffers go."""
        self.peak_rss_bytes = max(self.peak_rss_bytes, _rss())
        if self._sampler is not None:
            self._sampler.task_finished(self._job)
        return TaskUsage(time.thread_time() - self._cpu0, self.peak_rss_bytes)


class WorkerSampler:
    """Samples this worker process once a second while it runs tasks (module notes)."""

    def __init__(self, worker):
        self._worker = worker
        self._lock = threading.Lock()
        self._running: collections.Counter = collections.Counter()  # job tag (or None) -> tasks
        self._jobs: set = set()  # tags of the jobs that ran tasks in this interval
        self._bytes = 0
        self._last_task = time.monotonic()
        self._thread: Optional[threading.Thread] = None

    def task_started(self, tag: Optional[str]) -> None:
        with self._lock:
            self._running[tag] += 1
            if self._thread is None:
                _process().cpu_percent(None)  # the first interval starts now
                self._thread = threading.Thread(target=self._loop, name="stem-explorer-sampler", daemon=True)
                self._thread.start()

    def task_finished(self, tag: Optional[str]) -> None:
        with self._lock:
            self._running[tag] -= 1
            if not self._running[tag]:
                del self._running[tag]
            self._jobs.add(tag)
            self._last_task = time.monotonic()

    def add_bytes(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            time.sleep(SAMPLE_INTERVAL_S)
            now = time.monotonic()
            with self._lock:
                jobs, self._jobs = self._jobs | set(self._running), set()
                jobs.discard(None)  # tasks of no job of this package count only in the figures
                nbytes, self._bytes = self._bytes, 0
                if not self._running and now - self._last_task >= IDLE_STOP_S:
                    self._thread = None  # the next task starts a new one
                    return
            if jobs:
                self._publish(jobs, nbytes, now - last)
            last = now

    def _publish(self, jobs: set, nbytes: int, seconds: float) -> None:
        process = _process()
        sample = {
            "worker": self._worker.address,
            "jobs": sorted(jobs),
            "time": time.time(),
            "cpu_percent": process.cpu_percent(None),
            "rss_bytes": _rss(),
            "read_bytes_per_s": nbytes / seconds if seconds > 0 else 0.0,
        }
        try:
            self._worker.log_event(SAMPLES_TOPIC, sample)
        except Exception:  # the worker is closing: the sample has nowhere to go
            pass


_sampler_lock = threading.Lock()
_samplers: dict = {}  # id(worker) -> WorkerSampler


def _worker_sampler() -> Optional[WorkerSampler]:
    """This dask worker's sampler (None outside a dask worker)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    with _sampler_lock:
        sampler = _samplers.get(id(worker))
        if sampler is None or sampler._worker is not worker:
            sampler = _samplers[id(worker)] = WorkerSampler(worker)
        return sampler


# -- on the client ------------------------------------------------------------------------
#: Guards the per-worker figures of every job's stats: the job's thread records tasks,
#: the client's event loop records samples, callers read summaries.
_stats_lock = threading.Lock()


def record_task(stats, host: str, seconds: float, bytes_read: int, usage: Optional[TaskUsage]) -> None:
    """Fold one finished task (measured in a worker: ``usage`` not None) into ``stats``,
    a :class:`~.job.JobStats`."""
    if usage is None:
        return
    with _stats_lock:
        worker = _worker_usage(stats, host)
        stats.workers = tuple(sorted(set(stats.workers) | {host}))
        worker.tasks += 1
        worker.cpu_seconds += usage.cpu_seconds
        worker.task_seconds += seconds
        worker.bytes_read += bytes_read
        worker.peak_rss_bytes = max(worker.peak_rss_bytes, usage.peak_rss_bytes)
        stats.cpu_seconds += usage.cpu_seconds
        stats.task_seconds += seconds
        stats.peak_rss_bytes = max(stats.peak_rss_bytes, usage.peak_rss_bytes)


def _worker_usage(stats, host: str) -> WorkerUsage:
    worker = stats.per_worker.get(host)
    if worker is None:
        worker = stats.per_worker[host] = WorkerUsage()
    return worker


def record_sample(stats, sample: dict) -> None:
    """Add one worker sample to ``stats``."""
    with _stats_lock:  # a worker may be sampled before its first task of the job ends
        worker = _worker_usage(stats, sample["worker"])
        worker.samples.append({k: sample[k] for k in ("time", "cpu_percent", "rss_bytes", "read_bytes_per_s")})


def latest_usage(stats, max_age_s: float = 3 * SAMPLE_INTERVAL_S) -> Optional[dict]:
    """The workers' latest samples added up (``cpu_percent``, ``rss_bytes``,
    ``read_bytes_per_s``, ``workers``: how many), over samples at most ``max_age_s``
    old; None when there is none."""
    now = time.time()
    with _stats_lock:
        latest = [w.samples[-1] for w in stats.per_worker.values() if w.samples]
    latest = [s for s in latest if now - s["time"] <= max_age_s]
    if not latest:
        return None
    total = {k: sum(s[k] for s in latest) for k in ("cpu_percent", "rss_bytes", "read_bytes_per_s")}
    return dict(total, workers=len(latest))


def usage_summary(stats) -> dict:
    """``stats``' resource figures as plain JSON (the results' provenance): totals,
    and per worker its task totals and its samples condensed (count, mean and maximum
    CPU %, maximum RSS, mean read throughput)."""
    with _stats_lock:
        workers = [(host, worker, list(worker.samples)) for host, worker in sorted(stats.per_worker.items())]
    per_worker = {}
    for host, worker, samples in workers:
        entry = {
            "tasks": worker.tasks,
            "cpu_seconds": round(worker.cpu_seconds, 4),
            "task_seconds": round(worker.task_seconds, 4),
            "bytes_read": worker.bytes_read,
            "peak_rss_bytes": worker.peak_rss_bytes,
            "samples": len(samples),
        }
        if samples:
            cpu = [s["cpu_percent"] for s in samples]
            entry.update(
                cpu_percent_mean=round(sum(cpu) / len(cpu), 1),
                cpu_percent_max=round(max(cpu), 1),
                rss_bytes_max=max(s["rss_bytes"] for s in samples),
                read_bytes_per_s_mean=round(sum(s["read_bytes_per_s"] for s in samples) / len(samples)),
            )
        per_worker[host] = entry
    return {
        "wall_seconds": round(stats.elapsed, 4),
        "task_seconds": round(stats.task_seconds, 4),
        "cpu_seconds": round(stats.cpu_seconds, 4),
        "peak_rss_bytes": stats.peak_rss_bytes,
        "bytes_read": stats.bytes_done,
        "workers": list(stats.workers),
        "per_worker": per_worker,
    }
