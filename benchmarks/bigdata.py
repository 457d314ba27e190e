"""Larger than memory (issue 4): a raw file bigger than RAM streamed from disk, with
the workers' memory sampled throughout.

``python -m benchmarks --bigdata`` (options: ``python -m benchmarks --bigdata --help``).

1. A raw uint16 file of ``--size`` GiB (default 40), 128 x 128 frames, a scan of
   ``N`` x 256 (``N`` = 128 rows a GiB), is written into ``--dir`` if absent or of the
   wrong size: a synthetic block of real frames (:func:`stem_explorer.sample.make_sample`)
   repeated with a per-block offset so no two blocks are alike, written ``--block-mib``
   at a time (never a sparse file), flushed and dropped from the page cache every GiB,
   ``fsync`` at the end, under a temporary name renamed when complete. Free disk space
   is checked first (the file + 2 GiB).
2. Before every measured pass the file is made non-resident: the workers' mappings of
   it are released (the raw reader keeps one mapping per file and worker process, and
   the kernel does not evict pages that a process maps), then
   ``posix_fadvise(POSIX_FADV_DONTNEED)`` drops its clean pages from the page cache
   (no root needed). ``mincore`` on a fresh mapping reports the resident fraction, which
   is recorded before and after each pass.
3. The disk's read rate, in the same run: ``os.preadv`` into one reused 8 MiB buffer
   per worker, each worker reading a contiguous share of the file
   (:mod:`benchmarks.plainread`), of the whole file or its first ``--read-gib`` GiB,
   once before and once after the workloads (a virtual disk's rate drifts); the higher
   of the two is the reference of the ratio.
4. The virtual bright-field disk and the sum frame of the main suite
   (:mod:`benchmarks.workloads`), one pass each through :class:`stem_explorer.Session`
   on an embedded LocalCluster (``--workers``, default 2), timed from ``run`` to the
   result. The numba kernels are compiled beforehand on the first rows only.
5. A thread samples every 0.1 s the resident memory of the client process and of every
   process below it (the nannies' worker processes and anything they start), from
   ``/proc/PID/status``: ``VmRSS`` (what ``psutil`` and dask's memory monitor call RSS),
   ``RssAnon`` (the process's own memory) and ``RssFile`` (page-cache pages of files it
   maps, shared and reclaimable). With ``--uss`` also psutil's USS once a second.

6. Reads of a few frames (issue 17, :mod:`benchmarks.roi_reads`): ``--clicks`` cold
   clicks (``PickFrame``) and as many 32 x 32 ROI sums (``RoiSum``) on the raw file,
   then on a bitshuffle-LZ4 HDF5 of ``--h5-size`` GiB (default 2) of the same frames,
   with the bytes each read and the peak RSS of a worker. ``--reads-only`` skips
   steps 3, 4 and 7.
7. Mask changes (issue 17, :mod:`benchmarks.mask_change`): in the session of step 4,
   whose passes left the reduced copy in the workers, ``--mask-changes`` cold mask
   changes timed to the full-field preview from the copy and to the exact result,
   and one with the copy off (the coarse grid) for comparison.

Targets: mask change -> full-field preview at most 150 ms (here in the client, not the
browser); the workers' memory at most 2 GiB in total (judged on the anonymous memory;
RSS is reported beside it with its own verdict, see ``docs/performance.md``, section
"Larger than memory"), and workload throughput at least 0.8 x the disk's read rate;
click -> frame at most 50 ms and a 32 x 32 ROI sum at most 200 ms, cold.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import mmap
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from . import data, mask_change, plainread, priority, report, roi_reads
from .workloads import disk_mask

GiB = 2**30
MiB = 2**20

#: Scan width and detector of the file (the main suite's frames, more scan rows).
NAV_X = 256
SIG = data.SIG
ROW_BYTES = NAV_X * SIG[0] * SIG[1] * 2  # one scan row of uint16 frames: 8 MiB

#: Targets of issue 4, "Larger than memory".
MEMORY_TARGET_BYTES = 2 * GiB
RATE_TARGET = 0.8

#: Disk space left free beyond the file.
DISK_HEADROOM = 2 * GiB
#: While writing, flush and drop the written pages every this many bytes.
FLUSH_BYTES = 1 * GiB
#: Scan rows of the generated sample that the written blocks repeat.
SAMPLE_ROWS = 8
#: Scan rows of the warm-up data set (numba compilation before the timed passes).
WARMUP_ROWS = 2


def _log(message: str) -> None:
    print(f"[bench-bigdata] {message}", file=sys.stderr, flush=True)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parents[1]
    p.add_argument("--size", type=_positive_float, default=40.0,
                   help="size of the raw file in GiB (default 40; 128 scan rows of 256 frames a GiB)")
    p.add_argument("--dir", default=str(root / "bench_data"),
                   help="folder of the file (default bench_data/ of the checkout, ignored by git)")
    p.add_argument("--workers", type=data.at_least_one, default=2, help="worker processes (default 2)")
    p.add_argument("--memory-limit", default="auto",
                   help="dask memory limit per worker, e.g. 4GiB (default auto: RAM / workers); dask "
                   "pauses a worker at 80%% and restarts it at 95%% of it, measured as RSS")
    p.add_argument("--read-gib", type=_positive_float,
                   help="read only the first this many GiB for the disk's read rate (default: the whole file)")
    p.add_argument("--block-mib", type=data.at_least_one, default=256,
                   help="write block while creating the file, MiB (default 256)")
    p.add_argument("--interval", type=_positive_float, default=0.1, help="memory sampling period, s (default 0.1)")
    p.add_argument("--uss", action="store_true", help="also sample USS (psutil memory_full_info) once a second; "
                   "it walks every mapping, so it costs CPU on a large mapped file")
    p.add_argument("--pass-timeout", type=_positive_float, default=3600.0,
                   help="give up on a workload pass after this many seconds (default 3600)")
    p.add_argument("--clicks", type=int, default=5,
                   help="cold clicks and 32 x 32 ROI sums timed on each file (default 5; 0 skips them)")
    p.add_argument("--h5-size", type=float, default=2.0,
                   help="GiB of frames in the bitshuffle-LZ4 HDF5 of the click rows (default 2; 0 skips it)")
    p.add_argument("--normal-priority", action="store_true",
                   help="workers back at normal CPU priority (the embedded cluster lowers theirs to keep cores "
                   "for the notebook; on a machine others keep busy that starves them); needs root")
    p.add_argument("--mask-changes", type=int, default=3,
                   help="cold mask changes timed to the reduced copy's preview and the exact result (default 3; "
                   "0 skips them)")
    p.add_argument("--reads-only", action="store_true",
                   help="only the click and ROI rows: no disk-rate pass, no full passes, no mask changes")
    p.add_argument("--remove", action="store_true", help="delete the file at the end")
    p.add_argument("--json", metavar="FILE", help="also write the records as JSON lines to FILE")
    p.add_argument("--format", choices=["table", "json"], default="table", help="stdout: table or JSON lines")
    return p


# -- the file ---------------------------------------------------------------------------
def plan_file(folder, size_gib: float) -> data.BenchData:
    """The data set of ``size_gib`` GiB in ``folder`` (not created yet)."""
    rows = max(1, round(size_gib * GiB / ROW_BYTES))
    name = f"u16_{rows}x{NAV_X}x{SIG[0]}x{SIG[1]}.raw"
    return data.BenchData("raw-uint16-big", "raw", "uint16", Path(folder) / name, (rows, NAV_X), SIG)


def _sample_rows(folder: Path) -> np.ndarray:
    """``SAMPLE_ROWS`` scan rows of synthetic frames (make_sample, uint16), in memory."""
    import h5py

    from stem_explorer.sample import make_sample

    with tempfile.TemporaryDirectory(dir=folder, prefix=".bigdata-sample-") as tmp:
        path = make_sample(Path(tmp) / "rows.h5", nav_shape=(SAMPLE_ROWS, NAV_X), sig_shape=SIG, dtype="uint16")
        with h5py.File(path, "r") as f:
            return f[data.H5_PATH][...]


def _check_space(folder: Path, needed: int, reclaimable: int) -> None:
    free = shutil.disk_usage(folder).free + reclaimable
    if free < needed + DISK_HEADROOM:
        raise SystemExit(
            f"not enough free disk space in {folder}: the file needs {needed / GiB:.1f} GiB and "
            f"{DISK_HEADROOM / GiB:.0f} GiB are kept free, but only {free / GiB:.1f} GiB are available; "
            f"pass a smaller --size or another --dir"
        )


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def ensure_file(bench: data.BenchData, block_mib: int, log=_log) -> dict:
    """Write ``bench``'s file unless it exists with the right size; what was done."""
    path = bench.path
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size == bench.nbytes:
        return {"created": False}
    tmp = path.with_name(path.name + ".tmp")
    reclaimable = sum(p.stat().st_size for p in (path, tmp) if p.exists())
    _check_space(path.parent, bench.nbytes, reclaimable)
    for p in (path, tmp):
        if p.exists():
            log(f"removing {p.name} ({p.stat().st_size / GiB:.2f} GiB, not the expected {bench.nbytes / GiB:.2f} GiB)"
                if p == path else f"removing a stale {p.name}")
            p.unlink()
    log(f"generating {SAMPLE_ROWS} scan rows of synthetic frames (make_sample) ...")
    sample = _sample_rows(path.parent)
    block_rows = max(1, block_mib * MiB // ROW_BYTES)
    base = np.concatenate([sample] * math.ceil(block_rows / SAMPLE_ROWS))[:block_rows]
    block = np.empty_like(base)
    rows = bench.nav_shape[0]
    log(f"writing {path} ({bench.nbytes / GiB:.2f} GiB, {rows} x {NAV_X} scan, blocks of "
        f"{block.nbytes / MiB:.0f} MiB) ...")
    t0 = time.perf_counter()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = flushed = 0
        for k, r0 in enumerate(range(0, rows, block_rows)):
            n = min(block_rows, rows - r0)
            np.add(base[:n], k % 4093, out=block[:n])  # a per-block offset: every block differs
            _write_all(fd, memoryview(block[:n]).cast("B"))
            written += block[:n].nbytes
            if written - flushed >= FLUSH_BYTES or written == bench.nbytes:
                os.fdatasync(fd)  # keep the page cache for what follows, not for this file
                os.posix_fadvise(fd, 0, written, os.POSIX_FADV_DONTNEED)
                flushed = written
                rate = written / (time.perf_counter() - t0) / 1e9
                log(f"  {written / GiB:6.1f} / {bench.nbytes / GiB:.1f} GiB written ({rate:.2f} GB/s)")
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    seconds = time.perf_counter() - t0
    log(f"written in {seconds:.1f} s ({bench.nbytes / seconds / 1e9:.2f} GB/s)")
    return {"created": True, "write_s": seconds, "write_gbps": bench.nbytes / seconds / 1e9}


# -- the page cache ---------------------------------------------------------------------
def drop_cache(path) -> None:
    """Drop the clean, unmapped pages of ``path`` from the page cache (no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


_libc = None


def _c():
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        _libc = lib
    return _libc


def resident_fraction(path, window: int = GiB) -> float:
    """Fraction of ``path``'s pages in the page cache (``mincore`` over fresh read-only
    mappings of ``window`` bytes at a time; mapping faults nothing in)."""
    libc = _c()
    page = mmap.PAGESIZE
    size = os.path.getsize(path)
    if size == 0:
        return 0.0
    resident = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in range(0, size, window):
            length = min(window, size - offset)
            addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
            if addr in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), "mmap failed")
            try:
                vec = np.zeros((length + page - 1) // page, np.uint8)
                if libc.mincore(addr, length, vec.ctypes.data) != 0:
                    raise OSError(ctypes.get_errno(), "mincore failed")
                resident += int(np.count_nonzero(vec & 1))
            finally:
                libc.munmap(addr, length)
    finally:
        os.close(fd)
    return resident / ((size + page - 1) // page)


def _release_mappings() -> dict:
    """On a worker: drop the raw reader's cached mappings; RSS before and after."""
    from stem_explorer.io import raw

    before = _status(os.getpid()).get("rss", 0)
    mappings = getattr(raw, "_MAPPINGS", {})  # the reader's private cache (it may change)
    n = len(mappings)
    mappings.clear()
    gc.collect()
    return {"mappings": n, "rss_before": before, "rss_after": _status(os.getpid()).get("rss", 0)}


def make_cold(client, path) -> dict:
    """Release the workers' mappings of ``path``, drop it from the page cache, and say
    how much of it stays resident."""
    released = client.run(_release_mappings)
    drop_cache(path)
    return {"resident": resident_fraction(path), "released": released}


# -- memory sampling --------------------------------------------------------------------
_STATUS_KEYS = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}


def _status(pid: int) -> dict:
    """``VmRSS``, ``RssAnon``, ``RssFile``, ``RssShmem`` of ``pid`` in bytes ({} if gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = _STATUS_KEYS.get(line.split(None, 1)[0])
                if key:
                    out[key] = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return out


def _is_helper(proc) -> bool:
    """multiprocessing's resource tracker / forkserver (not a worker); also a process
    that is gone."""
    import psutil

    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return True
    return "resource_tracker" in cmd or "forkserver" in cmd


class MemorySampler:
    """Samples this process and every process below it every ``interval`` seconds.

    Processes below this one that are not multiprocessing helpers are the cluster's:
    the embedded cluster's nannies are this process's children
    (:mod:`stem_explorer.engine.worker_processes`), each forking one worker; a plain
    LocalCluster's nannies run in this process, its workers are its children. Anything
    a worker starts is counted with the workers. The nannies are reported apart (they
    hold no data). The list is refreshed every second, so a worker restarted by its
    nanny is seen (and counted).
    """

    def __init__(self, interval: float = 0.1, uss: bool = False):
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.uss = uss
        self._me = psutil.Process()
        self._thread = None
        self._stop = threading.Event()

    def _cluster(self) -> dict[int, str]:
        """pid -> "worker" or "nanny" of the processes below this one."""
        roles = {}
        for p in self._me.children(recursive=True):
            if not _is_helper(p):
                roles[p.pid] = "nanny" if self._is_nanny(p) else "worker"
        return roles

    def _is_nanny(self, proc) -> bool:
        try:
            return proc.ppid() == self._me.pid and "worker_processes" in " ".join(proc.cmdline())
        except self._psutil.Error:  # gone
            return False

    def start(self) -> MemorySampler:
        self._stop.clear()
        self.samples = 0
        self.peak = {}  # pid -> {"rss", "anon", "file", "uss"} peaks
        self.sum_peak = {"rss": 0, "anon": 0, "file": 0, "uss": 0}
        self.seen_workers: set[int] = set()
        self._thread = threading.Thread(target=self._loop, name="bigdata-memory", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        me = os.getpid()
        roles: dict[int, str] = {}
        uss: dict[int, int] = {}
        tick = 0
        every = max(1, round(1.0 / self.interval))
        while True:
            if tick % every == 0:
                roles = self._cluster()
                self.seen_workers.update(pid for pid, role in roles.items() if role == "worker")
                if self.uss:
                    uss = {pid: self._uss(pid) for pid in [*roles, me]}
            sums = {"rss": 0, "anon": 0, "file": 0, "uss": 0}
            for pid, role in [(me, "client"), *roles.items()]:
                s = _status(pid)
                if not s:
                    continue
                if self.uss and pid in uss:
                    s["uss"] = uss[pid]
                peak = self.peak.setdefault(pid, {"role": role})
                for key, value in s.items():
                    peak[key] = max(peak.get(key, 0), value)
                    if role == "worker" and key in sums:
                        sums[key] += value
            for key, value in sums.items():
                self.sum_peak[key] = max(self.sum_peak[key], value)
            self.samples += 1
            tick += 1
            if self._stop.wait(self.interval):
                return

    def _uss(self, pid: int) -> int:
        try:
            return self._psutil.Process(pid).memory_full_info().uss
        except self._psutil.Error:
            return 0

    def stop(self, n_workers: int) -> dict:
        """Stop sampling; the peaks as a record's fields (bytes)."""
        self._stop.set()
        self._thread.join()
        workers = {pid: p for pid, p in self.peak.items() if p["role"] == "worker"}
        client = self.peak.get(os.getpid(), {})

        def top(key):
            return max((p.get(key, 0) for p in workers.values()), default=0)

        out = {
            "samples": self.samples,
            "peak_rss_workers_sum": self.sum_peak["rss"], "peak_rss_worker_max": top("rss"),
            "peak_anon_workers_sum": self.sum_peak["anon"], "peak_anon_worker_max": top("anon"),
            "peak_file_workers_sum": self.sum_peak["file"], "peak_file_worker_max": top("file"),
            "peak_rss_client": client.get("rss", 0), "peak_anon_client": client.get("anon", 0),
            "peak_rss_nanny_max": max((p.get("rss", 0) for p in self.peak.values() if p["role"] == "nanny"),
                                      default=0),
            "worker_restarts": max(0, len(self.seen_workers) - n_workers),
            "processes": [{"pid": pid, **p} for pid, p in sorted(self.peak.items())],
        }
        if self.uss:
            out.update(peak_uss_workers_sum=self.sum_peak["uss"], peak_uss_worker_max=top("uss"),
                       peak_uss_client=client.get("uss", 0))
        return out


# -- the passes -------------------------------------------------------------------------
def _analyses(key: str):
    import stem_explorer as se

    if key == "disk":
        return [se.VirtualDetector({"bf": disk_mask(SIG)})]
    return [se.SumFrame()]


WORKLOADS = (("disk", "one disk (virtual bright field)"), ("sum", "sum frame"))


def _warm_up(client, bench: data.BenchData) -> None:
    """Compile the kernels on the first scan rows (then dropped again by make_cold)."""
    from stem_explorer import Session, open_dataset

    rows = min(WARMUP_ROWS, bench.nav_shape[0])
    ds = open_dataset(str(bench.path), format="raw", nav_shape=(rows, NAV_X), sig_shape=SIG,
                      dtype="uint16", allow_trailing=True)
    with Session(ds, client=client) as session:
        for key, _ in WORKLOADS:
            session.run(*_analyses(key)).result()


def _disk_read(client, bench, sampler, args, when: str) -> dict:
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    nbytes = bench.nbytes if args.read_gib is None else min(bench.nbytes, int(args.read_gib * GiB))
    cold = make_cold(client, bench.path)
    _log(f"disk read rate ({when} the workloads): preadv of {nbytes / GiB:.2f} GiB on {len(workers)} workers "
         f"(resident before: {cold['resident']:.1%})")
    sampler.start()
    t0 = time.perf_counter()
    gbps = plainread._one_pass(client, workers, plainread.preadv_share, str(bench.path), nbytes,
                               plainread.BUFFER_BYTES)
    seconds = time.perf_counter() - t0
    memory = sampler.stop(args.workers)
    _log(f"disk read rate ({when}): {gbps:.2f} GB/s")
    return {"kind": "bigdata_disk_read", "when": when, "nbytes": nbytes, "whole_file": nbytes == bench.nbytes,
            "gbps": gbps, "wall_s": seconds, "buffer_bytes": plainread.BUFFER_BYTES,
            "resident_before": cold["resident"], "resident_after": resident_fraction(bench.path), **memory}


def _workload(client, session, bench, key, name, sampler, args) -> dict:
    analyses = _analyses(key)
    cold = make_cold(client, bench.path)
    _log(f"{name}: resident before {cold['resident']:.1%}")
    sampler.start()
    t0 = time.perf_counter()
    job = session.run(*analyses)
    error = None
    try:
        job.result(timeout=args.pass_timeout)
    except Exception as exc:  # noqa: BLE001 -- a stuck (paused) or killed worker: record it, go on
        job.cancel()
        error = f"{type(exc).__name__}: {exc}"[:300]
    seconds = time.perf_counter() - t0
    memory = sampler.stop(args.workers)
    resident_after = resident_fraction(bench.path)
    gbps = None if error else bench.nbytes / seconds / 1e9
    _log(f"{name}: {seconds:.1f} s, " + (f"FAILED ({error})" if error else f"{gbps:.2f} GB/s") +
         f", peak RSS workers {memory['peak_rss_workers_sum'] / GiB:.2f} GiB, anonymous "
         f"{memory['peak_anon_workers_sum'] / GiB:.2f} GiB, worker restarts {memory['worker_restarts']}")
    return {"kind": "bigdata_workload", "workload": key, "name": name, "nbytes": bench.nbytes,
            "seconds": seconds, "gbps": gbps, "error": error,
            "resident_before": cold["resident"], "resident_after": resident_after,
            "mappings_released_before": cold["released"],
            "tasks_per_worker": dict(job.stats.tasks_per_worker), "partitions": job.stats.n_partitions,
            "preview_stride": job.preview_stride, **memory}


def _held_mapping_check(client, bench) -> dict:
    """After a pass: how much of the file DONTNEED evicts while the workers still hold
    their mappings of it, and how much once they are released."""
    drop_cache(bench.path)
    held = resident_fraction(bench.path)
    cold = make_cold(client, bench.path)
    return {"kind": "bigdata_cache_check", "resident_after_dontneed_mapped": held,
            "resident_after_release_and_dontneed": cold["resident"], "released": cold["released"]}


def _verdicts(records: list[dict]) -> None:
    read = max(r["gbps"] for r in records if r["kind"] == "bigdata_disk_read")  # the stricter reference
    for r in records:
        if r["kind"] != "bigdata_workload":
            continue
        r["disk_read_gbps"] = read
        r["ratio"] = None if r["gbps"] is None else r["gbps"] / read
        r["rate_pass"] = r["ratio"] is not None and r["ratio"] >= RATE_TARGET
        r["memory_target_bytes"] = MEMORY_TARGET_BYTES
        r["memory_pass"] = (r["peak_anon_workers_sum"] <= MEMORY_TARGET_BYTES and r["worker_restarts"] == 0
                            and r["error"] is None)
        r["rss_within_target"] = r["peak_rss_workers_sum"] <= MEMORY_TARGET_BYTES
        r["pass"] = r["rate_pass"] and r["memory_pass"]


def _run_record(args, bench, created: dict) -> dict:
    import psutil

    import stem_explorer

    return {"kind": "bigdata_run", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **bench.describe(),
            "size_gib": bench.nbytes / GiB, "workers": args.workers, "memory_limit": args.memory_limit,
            "ram_bytes": psutil.virtual_memory().total, "cores": len(os.sched_getaffinity(0)),
            "interval_s": args.interval, "python": platform.python_version(), "load_before": os.getloadavg(),
            "normal_priority": False,
            "stem_explorer": stem_explorer.__version__, **created}


def measure(args) -> list[dict]:
    from distributed import Client

    from stem_explorer import Session
    from stem_explorer.engine.cluster import start_local_cluster

    bench = plan_file(args.dir, args.size)
    created = ensure_file(bench, args.block_mib)
    records = [_run_record(args, bench, created)]
    sampler = MemorySampler(args.interval, args.uss)
    _log(f"starting a LocalCluster with {args.workers} workers (memory limit {args.memory_limit})")
    with start_local_cluster(args.workers, memory_limit=args.memory_limit) as cluster, Client(cluster) as client:
        client.wait_for_workers(args.workers)
        if args.normal_priority:
            records[0]["normal_priority"] = priority.normal_priority(client)
        limits = [w.get("memory_limit") for w in client.scheduler_info(n_workers=-1)["workers"].values()]
        records[0]["worker_memory_limit_bytes"] = limits[0] if len(set(limits)) == 1 else limits
        if not args.reads_only:
            _warm_up(client, bench)
            records.append(_disk_read(client, bench, sampler, args, "before"))
            with Session(bench.open(), client=client) as session:
                for i, (key, name) in enumerate(WORKLOADS):
                    records.append(_workload(client, session, bench, key, name, sampler, args))
                    if i == 0:
                        records.append(_held_mapping_check(client, bench))
                if args.mask_changes > 0:
                    records += mask_change.measure_mask_changes(client, session, bench, make_cold,
                                                                args.mask_changes, _log)
            records.append(_disk_read(client, bench, sampler, args, "after"))
        records += _few_frame_reads(client, bench, sampler, args)
    records[0]["load_after"] = os.getloadavg()
    if not args.reads_only:
        _verdicts(records)
    if args.remove:
        bench.path.unlink()
        _log(f"removed {bench.path}")
    return records


def _few_frame_reads(client, bench, sampler, args) -> list[dict]:
    """Click and ROI rows on the raw file and on the bitshuffle-LZ4 HDF5."""
    from stem_explorer import Session

    if args.clicks <= 0:
        return []
    benches = [bench]
    if args.h5_size > 0:
        h5 = roi_reads.plan_hdf5(args.dir, args.h5_size, NAV_X)
        if not h5.path.exists():
            _check_space(h5.path.parent, h5.nbytes, 0)  # compressed it needs less; a bound
        created = roi_reads.ensure_hdf5(h5, _sample_rows(h5.path.parent), _log)
        records = [{"kind": "bigdata_h5", **h5.describe(), **created}]
        benches.append(h5)
    else:
        records = []
    for each in benches:
        with Session(each.open(), client=client) as session:
            records += roi_reads.measure_reads(client, session, each, _cold_here_too, sampler, args.workers,
                                               args.clicks, _log)
    return records


def _cold_here_too(client, path) -> dict:
    """:func:`make_cold`, this process's mappings released first (a job reads a few
    frames of a mapped file here, and the kernel keeps mapped pages)."""
    _release_mappings()
    return make_cold(client, path)


def _gib(n: int) -> str:
    return f"{n / GiB:.2f}"


def _limit(value) -> str:
    return f" ({_gib(value)} GiB a worker)" if isinstance(value, int) and value else ""


def table(records: list[dict]) -> str:
    run = records[0]
    head = [
        (f"file: {run['path']} ({run['size_gib']:.2f} GiB, {run['nav_shape'][0]} x {run['nav_shape'][1]} scan of "
         f"{SIG[0]} x {SIG[1]} uint16 frames); RAM {_gib(run['ram_bytes'])} GiB; {run['workers']} workers, "
         f"memory limit {run['memory_limit']}{_limit(run.get('worker_memory_limit_bytes'))}"
         f"{', normal priority' if run.get('normal_priority') else ''}; load average before "
         f"{run['load_before'][0]:.1f}, after {run['load_after'][0]:.1f}"),
    ]
    passes = [
        ("| pass | resident before | s | GB/s | vs disk read | peak RSS workers, sum / max (GiB) | "
         "peak anonymous workers, sum / max (GiB) | peak RSS client (GiB) | anon <= 2 GiB | RSS <= 2 GiB | "
         f">= {RATE_TARGET:g} x disk |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    reads = [r for r in records if r["kind"] == "bigdata_disk_read"]
    best = max((r["gbps"] for r in reads), default=None)
    lines = head + ([""] + passes if reads else [])
    for read in reads:
        share = "whole file" if read["whole_file"] else f"first {_gib(read['nbytes'])} GiB"
        lines.append(
            f"| disk read {read['when']} (preadv, {share}) | {read['resident_before']:.1%} | {read['wall_s']:.1f} | "
            f"{read['gbps']:.2f} | {read['gbps'] / best:.2f} | "
            f"{_gib(read['peak_rss_workers_sum'])} / {_gib(read['peak_rss_worker_max'])} | "
            f"{_gib(read['peak_anon_workers_sum'])} / {_gib(read['peak_anon_worker_max'])} | "
            f"{_gib(read['peak_rss_client'])} | | | |"
        )
    yes = {True: "yes", False: "NO"}
    for r in (r for r in records if r["kind"] == "bigdata_workload"):
        restarts = f" ({r['worker_restarts']} worker restarts)" if r["worker_restarts"] else ""
        lines.append(
            f"| {r['name']} | {r['resident_before']:.1%} | {r['seconds']:.1f} | "
            + (f"{r['gbps']:.2f} | {r['ratio']:.2f} | " if r["error"] is None else f"failed: {r['error'][:60]} | | ")
            + f"{_gib(r['peak_rss_workers_sum'])} / {_gib(r['peak_rss_worker_max'])} | "
            f"{_gib(r['peak_anon_workers_sum'])} / {_gib(r['peak_anon_worker_max'])} | {_gib(r['peak_rss_client'])} | "
            f"{yes[r['memory_pass']]}{restarts} | {yes[r['rss_within_target']]} | {yes[r['rate_pass']]} |"
        )
    check = next((r for r in records if r["kind"] == "bigdata_cache_check"), None)
    if check:
        lines.append(
            f"\npage cache: after the disk pass, DONTNEED left {check['resident_after_dontneed_mapped']:.1%} of the file "
            f"resident while the workers held their mappings, {check['resident_after_release_and_dontneed']:.1%} "
            f"after releasing them"
        )
    if any("peak_uss_workers_sum" in r for r in records):
        for r in (r for r in records if r["kind"] == "bigdata_workload"):
            lines.append(f"USS {r['workload']}: workers sum {_gib(r['peak_uss_workers_sum'])} GiB, "
                         f"max {_gib(r['peak_uss_worker_max'])} GiB, client {_gib(r['peak_uss_client'])} GiB")
    lines += ["", mask_change.table(records, best), "", roi_reads.table(records)]
    return "\n".join(lines)


def main(argv=None, prog: str = "python -m benchmarks --bigdata") -> int:
    """``python -m benchmarks --bigdata``: measure and print the table (or JSON lines)."""
    return report.side_main(build_parser, measure, table, argv, prog)
