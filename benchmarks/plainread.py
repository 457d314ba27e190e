"""The plain-read limit: how fast the workers can merely read the file.

Measured on the dask workers themselves (one task pinned to each worker, each
reading a contiguous share of the file), in the same run and on the same file as the
workloads, so the ratio workload / limit compares like with like:

* ``preadv``: ``os.preadv`` into one reused buffer (8 MiB) per worker, no
  computation: the rate at which the page cache hands bytes to the workers;
* ``mmap-sum``: ``np.sum`` over a ``np.memmap`` of the worker's share: touching every
  element once through the mapping, the cheapest "real" computation.

Each task stamps ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process
of the machine) before and after its read; a measurement's rate is the file's bytes
over the span from the first start to the last end.
"""

from __future__ import annotations

import os
import time

import numpy as np

#: Size of each worker's reused read buffer.
BUFFER_BYTES = 8 * 2**20

_buffers: dict[int, np.ndarray] = {}


def _buffer(size: int) -> np.ndarray:
    """This worker process's reused buffer of ``size`` bytes."""
    if size not in _buffers:
        _buffers[size] = np.empty(size, np.uint8)
    return _buffers[size]


def preadv_share(path: str, start: int, stop: int, buffer_bytes: int = BUFFER_BYTES):
    """Read bytes ``start:stop`` of ``path`` with ``os.preadv``; ``(t0, t1, nbytes)``."""
    view = memoryview(_buffer(buffer_bytes))
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.monotonic()
        offset = start
        while offset < stop:
            got = os.preadv(fd, [view[: min(buffer_bytes, stop - offset)]], offset)
            if got <= 0:
                break
            offset += got
        t1 = time.monotonic()
    finally:
        os.close(fd)
    return t0, t1, offset - start


def mmap_sum_share(path: str, start: int, stop: int, dtype: str):
    """``np.sum`` over bytes ``start:stop`` of ``path`` as ``dtype``; ``(t0, t1, nbytes)``."""
    itemsize = np.dtype(dtype).itemsize
    count = (stop - start) // itemsize
    t0 = time.monotonic()
    data = np.memmap(path, dtype=dtype, mode="r", offset=start, shape=(count,))
    np.sum(data)
    t1 = time.monotonic()
    del data
    return t0, t1, count * itemsize


def shares(size: int, n: int, align: int = 8 * 4096) -> list[tuple[int, int]]:
    """``n`` contiguous byte ranges covering ``0:size``; boundaries are page-aligned
    and multiples of every itemsize, so typed views of a share stay aligned."""
    cuts = [min(size, (size * i // n) // align * align) for i in range(n)] + [size]
    return list(zip(cuts[:-1], cuts[1:]))


def _one_pass(client, workers, fn, path, size, *extra) -> float:
    """One parallel pass of ``fn`` over the file on ``workers``; GB/s."""
    futures = [
        client.submit(fn, path, a, b, *extra, workers=[w], allow_other_workers=False, pure=False)
        for w, (a, b) in zip(workers, shares(size, len(workers)))
    ]
    stamps = client.gather(futures)
    span = max(s[1] for s in stamps) - min(s[0] for s in stamps)
    return sum(s[2] for s in stamps) / span / 1e9 if span > 0 else float("inf")


def measure(client, path, dtype: str, repeat: int) -> dict:
    """Plain-read figures of ``path`` on every worker of ``client``: for ``preadv``
    and ``mmap-sum``, median/min/max GB/s of ``repeat`` passes after one warm-up."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    path = str(path)
    size = os.path.getsize(path)
    figures = {"workers": len(workers), "file_bytes": size}
    for name, fn, extra in (("preadv", preadv_share, (BUFFER_BYTES,)), ("mmap_sum", mmap_sum_share, (dtype,))):
        _one_pass(client, workers, fn, path, size, *extra)
        rates = sorted(_one_pass(client, workers, fn, path, size, *extra) for _ in range(repeat))
        figures[name] = {"median_gbps": float(np.median(rates)), "min_gbps": rates[0], "max_gbps": rates[-1]}
    return figures
