"""Getting a dask.distributed client: an embedded LocalCluster or an existing one."""

from __future__ import annotations

import logging
from typing import Optional

from ..errors import ClusterError
from .locality import worker_addresses

#: Environment of embedded worker processes: one thread for every numeric library,
#: because dask already runs one task per worker process and core.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}


def default_n_workers() -> int:
    """One worker process per core this process may use: its CPU affinity and, in a
    container (Binder, Kubernetes, ``docker --cpus``), its cgroup's CPU quota, which
    leaves the affinity at all the host's cores."""
    from dask.system import cpu_count

    return max(1, cpu_count())


#: glibc malloc settings of embedded workers, set before they start (dask's own default
#: of a 64 KiB trim threshold also freezes the mmap threshold at 128 KiB, so every
#: larger temporary, e.g. Blosc's decompression blocks, is a fresh mapping that
#: page-faults in: LZ4 zarr chunks decoded at 2.7 instead of 4.2 GB/s on one core).
#: Up to 64 MiB of freed memory stays with a worker for reuse.
WORKER_MALLOC = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 64 * 2**20,
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 16 * 2**20,
}


def start_local_cluster(n_workers: Optional[int] = None, **kwargs):
    """An embedded LocalCluster: worker processes with one thread each, everything
    (scheduler, workers, dashboard) bound to 127.0.0.1."""
    import dask
    from distributed import LocalCluster

    options = dict(
        n_workers=n_workers or default_n_workers(),
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        env=WORKER_ENV,
        silence_logs=logging.ERROR,
        preload=["stem_explorer.engine.worker_setup"],  # lower priority, kernels warmed while idle
    )
    options.update(kwargs)
    with dask.config.set(WORKER_MALLOC):  # the nannies read it when they are made
        return LocalCluster(**options)


def connect(address: str, timeout: float = 10.0):
    """A Client of the scheduler at ``address``, or a ClusterError naming it."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"no dask scheduler answered at {address} within {timeout:g} s ({exc}); "
            f"check the address and that the scheduler is running, or pass neither "
            f"address nor client to start an embedded LocalCluster"
        ) from exc


def n_workers_of(client) -> int:
    """Number of workers the client's scheduler knows (at least 1; the list is
    reused for up to :data:`~stem_explorer.engine.locality.WORKER_LIST_MAX_AGE` s)."""
    return max(1, len(worker_addresses(client)))
