"""Reads that only a question's frames need (issue 17): click -> frame and a 32 x 32
ROI sum on a cold page cache, with the bytes each reads, for ``--bigdata``.

Each measurement makes the file cold first (:func:`benchmarks.bigdata.make_cold`:
the workers' mappings released, ``posix_fadvise(POSIX_FADV_DONTNEED)``), then times
``Session.run(...)`` to ``result()`` in this process (the notebook's side of a click).
Bytes are counted twice: what the engine asked its readers for (``job.stats.bytes_done``,
decoded frame bytes) and what the worker processes and this one (which reads a few
frames of a mapped file itself) read from storage (``read_bytes`` of
``/proc/PID/io`` summed over them: page-cache misses, read-ahead and compressed chunks
included). ``make_cold`` releases this process's mappings of the file too.

The compressed file: a bitshuffle-LZ4 HDF5 (``hdf5plugin.Bitshuffle(cname="lz4")``,
one frame a chunk as DECTRIS detectors write it) of the same synthetic frames as the
raw file, written once into ``--dir``.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

from . import data

#: Targets of issue 17 (cold page cache).
CLICK_TARGET_S = 0.050
ROI_TARGET_S = 0.200
#: Side of the square ROI, in scan positions.
ROI_SIDE = 32


def plan_hdf5(folder, size_gib: float, nav_x: int) -> data.BenchData:
    """The bitshuffle-LZ4 HDF5 of ``size_gib`` GiB of uint16 frames in ``folder``."""
    row_bytes = nav_x * data.SIG[0] * data.SIG[1] * 2
    rows = max(ROI_SIDE, round(size_gib * 2**30 / row_bytes))
    path = Path(folder) / f"bslz4_{rows}x{nav_x}x{data.SIG[0]}x{data.SIG[1]}.h5"
    return data.BenchData("hdf5-bslz4", "hdf5", "uint16", path, (rows, nav_x), data.SIG)


def ensure_hdf5(bench: data.BenchData, sample: np.ndarray, log) -> dict:
    """Write ``bench``'s HDF5 from ``sample`` (scan rows of frames, repeated with a
    per-block offset as the raw file is) unless it exists complete."""
    import h5py
    import hdf5plugin

    path = bench.path
    if path.exists():
        with h5py.File(path, "r") as f:
            if f[data.H5_PATH].shape == tuple(bench.nav_shape) + tuple(bench.sig_shape):
                return {"h5_created": False, "h5_file_bytes": path.stat().st_size}
    tmp = path.with_name(path.name + ".tmp")
    rows = bench.nav_shape[0]
    log(f"writing {path} ({bench.nbytes / 2**30:.2f} GiB of frames, bitshuffle-LZ4, one frame a chunk) ...")
    t0 = time.perf_counter()
    with h5py.File(tmp, "w") as f:
        dset = f.create_dataset(data.H5_PATH, shape=tuple(bench.nav_shape) + tuple(bench.sig_shape), dtype="uint16",
                                chunks=(1, 1) + tuple(bench.sig_shape), **hdf5plugin.Bitshuffle(cname="lz4"))
        step = len(sample)
        for k, r0 in enumerate(range(0, rows, step)):
            n = min(step, rows - r0)
            dset[r0 : r0 + n] = sample[:n] + np.uint16(k % 4093)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    seconds = time.perf_counter() - t0
    log(f"written in {seconds:.1f} s; {path.stat().st_size / 2**30:.2f} GiB on disk")
    return {"h5_created": True, "h5_write_s": seconds, "h5_file_bytes": path.stat().st_size}


def _io_read_bytes() -> int:
    """Bytes this process has read from storage (``/proc/self/io``)."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def _storage_bytes(client) -> int:
    """Bytes read from storage by the workers and this process (a click on a mapped
    file is read here, without a task)."""
    return sum(client.run(_io_read_bytes).values()) + _io_read_bytes()


def positions(nav_shape, count: int, side: int, seed: int = 17) -> list[tuple[int, int]]:
    """``count`` seeded top-left corners at which a ``side`` x ``side`` square fits."""
    rng = np.random.default_rng(seed)
    rows, cols = nav_shape[0] - side + 1, nav_shape[1] - side + 1
    return [(int(rng.integers(0, rows)), int(rng.integers(0, cols))) for _ in range(count)]


def measure_reads(client, session, bench: data.BenchData, make_cold, sampler, n_workers: int, clicks: int,
                  log) -> list[dict]:
    """Click -> frame and 32 x 32 ROI sums on ``session``'s data set, each on a cold
    cache; one record per kind, with every repetition's figures."""
    from stem_explorer import masks
    from stem_explorer.analyses import PickFrame, RoiSum

    # compile the kernels and open the file's reader code paths first (not timed)
    session.run(PickFrame((0, 0))).result()
    session.run(RoiSum(masks.Rectangle(0, 0, 2, 2))).result()
    kinds = {
        "click -> frame": (lambda y, x: PickFrame((y, x)), 1, CLICK_TARGET_S),
        f"{ROI_SIDE}x{ROI_SIDE} ROI sum": (lambda y, x: RoiSum(masks.Rectangle(y, x, ROI_SIDE, ROI_SIDE)),
                                           ROI_SIDE, ROI_TARGET_S),
    }
    records = []
    for name, (make, side, target) in kinds.items():
        runs = []
        sampler.start()
        for y, x in positions(bench.nav_shape, clicks, side):
            cold = make_cold(client, bench.path)
            before = _storage_bytes(client)
            t0 = time.perf_counter()
            job = session.run(make(y, x))
            job.result()
            seconds = time.perf_counter() - t0
            runs.append({"seconds": seconds, "engine_bytes": job.stats.bytes_done,
                         "storage_bytes": _storage_bytes(client) - before, "resident_before": cold["resident"],
                         "partitions": job.n_partitions})
        memory = sampler.stop(n_workers)
        median = statistics.median(r["seconds"] for r in runs)
        log(f"{bench.key} {name}: median {median * 1e3:.1f} ms over {len(runs)} cold reads, "
            f"{statistics.median(r['storage_bytes'] for r in runs) / 2**20:.2f} MiB from storage each")
        records.append({
            "kind": "bigdata_roi_read", "data": bench.key, "name": name, "runs": runs,
            "median_s": median, "max_s": max(r["seconds"] for r in runs), "target_s": target,
            "pass": median <= target, "frames": side * side, "frame_bytes": bench.nbytes // int(np.prod(bench.nav_shape)),
            **{k: memory[k] for k in ("peak_rss_worker_max", "peak_anon_worker_max", "peak_rss_client",
                                      "worker_restarts")},
        })
    return records


def table(records: list[dict]) -> str:
    """The rows of :func:`measure_reads`'s records as a Markdown table."""
    rows = [r for r in records if r["kind"] == "bigdata_roi_read"]
    if not rows:
        return ""
    lines = [
        "| data | read | cold reads | median / max ms | target ms | frame bytes needed | engine bytes | "
        "bytes from storage (median) | peak RSS a worker (GiB) | met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        engine = statistics.median(x["engine_bytes"] for x in r["runs"])
        storage = statistics.median(x["storage_bytes"] for x in r["runs"])
        lines.append(
            f"| {r['data']} | {r['name']} | {len(r['runs'])} | {r['median_s'] * 1e3:.1f} / {r['max_s'] * 1e3:.1f} | "
            f"{r['target_s'] * 1e3:.0f} | {_size(r['frames'] * r['frame_bytes'])} | {_size(engine)} | "
            f"{_size(storage)} | {r['peak_rss_worker_max'] / 2**30:.2f} | {'yes' if r['pass'] else 'NO'} |"
        )
    return "\n".join(lines)


def _size(n: float) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"
