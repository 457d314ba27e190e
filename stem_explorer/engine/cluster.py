"""Getting a dask.distributed client: an embedded cluster or an existing one."""

from __future__ import annotations

import logging
from typing import Optional

from .._options import whole_number
from ..errors import ClusterError
from .interpreters import Interpreters
from .locality import worker_addresses

_logger = logging.getLogger(__name__)

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


#: Embedded workers per core at most: each is a process of a few hundred MB, and more
#: than a few per core only makes them wait for each other.
MAX_WORKERS_PER_CORE = 4


def check_n_workers(n_workers, name: str = "n_workers") -> int:
    """``n_workers`` as an int if the embedded cluster can start that many workers,
    else an :class:`~stem_explorer.errors.OptionError` naming ``name``."""
    cores = default_n_workers()
    return whole_number(
        name, n_workers, 1, MAX_WORKERS_PER_CORE * cores, "worker processes of the embedded cluster",
        f"leave it out for one per core ({cores} here), or start a cluster of your own and pass its address",
    )


#: glibc malloc settings of embedded workers, in their environment from the start (dask's
#: own default of a 64 KiB trim threshold also freezes the mmap threshold at 128 KiB, so
#: every larger temporary, e.g. Blosc's decompression blocks, is a fresh mapping that
#: page-faults in: LZ4 zarr chunks decoded at 2.7 instead of 4.2 GB/s on one core).
#: Up to 64 MiB of freed memory stays with a worker for reuse.
WORKER_MALLOC = {
    "MALLOC_TRIM_THRESHOLD_": str(64 * 2**20),
    "MALLOC_MMAP_THRESHOLD_": str(16 * 2**20),
}

#: The dask preload of embedded workers: lower priority, kernels warmed while idle.
WORKER_PRELOAD = "stem_explorer.engine.worker_setup"


def start_local_cluster(n_workers: Optional[int] = None, *, memory_limit="auto", dashboard: bool = False):
    """An embedded cluster on this machine, for this user only.

    The scheduler runs in this process; each worker is a process with one thread
    (``worker_processes``: started without re-running the caller's script). All
    of it listens on 127.0.0.1 only, and speaks TLS with a certificate made for this
    cluster alone (``distributed.Security.temporary()``): a connection without it
    is refused, so other users of the machine cannot submit work that would run as
    this user. Without ``dashboard`` the scheduler and workers serve no HTTP pages (the
    dashboard has no login; with it, it is on 127.0.0.1 for any local user to read).

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: one per core).
    memory_limit : str or int
        Memory per worker, as ``distributed.LocalCluster`` takes it ("auto": the
        machine's memory shared between the workers).
    dashboard : bool
        Serve the dask dashboard on a free port of 127.0.0.1.

    Returns
    -------
    distributed.SpecCluster
        A ``worker_processes.NannyCluster``; ``Client(cluster)`` connects with
        the cluster's certificate.
    """
    n = default_n_workers() if n_workers is None else check_n_workers(n_workers)
    # the workers' interpreters first: they import while this process imports dask
    interpreters = Interpreters(n, {**WORKER_ENV, **WORKER_MALLOC})
    try:
        return _spec_cluster(interpreters, n, memory_limit, dashboard)
    except ClusterError:  # a worker's, which says what happened
        raise
    except (RuntimeError, OSError) as exc:
        raise ClusterError(
            f"the embedded dask cluster did not start ({exc}); see the log above, or start a "
            f"cluster of your own and pass its address"
        ) from exc
    finally:
        interpreters.close()  # those not taken: none unless the start failed


def _spec_cluster(interpreters: Interpreters, n: int, memory_limit, dashboard: bool):
    import dask
    from distributed import Scheduler
    from distributed.security import Security
    from distributed.worker_memory import parse_memory_limit

    from .worker_processes import NannyCluster, NannyProcess, load_tls_defaults

    security = Security.temporary()
    load_tls_defaults()  # while the workers' interpreters import
    http = {} if dashboard else {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}
    worker = {
        "cls": NannyProcess,
        "options": {
            "interpreters": interpreters,
            "nanny_options": {
                "host": "127.0.0.1", "nthreads": 1, "preload": [WORKER_PRELOAD], "silence_logs": logging.ERROR,
                "memory_limit": parse_memory_limit(memory_limit, 1, n, logger=_logger),
            },
            "security": {
                "require_encryption": True, "tls_ca_file": security.tls_ca_file,
                "tls_worker_key": security.tls_worker_key, "tls_worker_cert": security.tls_worker_cert,
            },
            "config": {**http, **{f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC.items()}},
        },
    }
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "port": 0, "security": security, "dashboard": dashboard,
                    "dashboard_address": "127.0.0.1:0"},
    }
    with dask.config.set(http):  # the scheduler reads its routes when it is made
        return NannyCluster(workers={i: worker for i in range(n)}, scheduler=scheduler, worker=worker,
                            security=security, silence_logs=logging.ERROR, name="stem_explorer")


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
