"""What a job reports when the cluster, a worker or the data fails under it.

dask reports these in its own terms: a closed client or a lost scheduler cancels
every future (``FutureCancelledError``), a task whose workers keep dying ends in
``KilledWorker`` (a corrupt compressed chunk crashing its decoder, a memory-mapped
file truncated under the job: SIGBUS, memory exhausted). A job turns them into a
:class:`~stem_explorer.errors.ClusterError` that says what happened and what to do,
or, when re-reading the task's frames in a separate process (:mod:`..io.isolated`)
finds the data at fault, the :class:`~stem_explorer.errors.FormatError` that names
the file and the frame.
"""

from __future__ import annotations

import logging
from concurrent.futures import CancelledError
from typing import Optional

from ..errors import ClusterError, DataSetError, DataSetNotFoundError, FormatError, StemExplorerError
from ..io.isolated import read_isolated

logger = logging.getLogger(__name__)

#: Longest a failed job spends re-reading a task's frames to find why its workers
#: died (a partition is about 256 MiB); past it the job reports the deaths alone.
DIAGNOSIS_SECONDS = 300.0

_NEW_SESSION = (
    "start a new Session (in the Explorer: press reconnect); with a cluster of your "
    "own, check first that its scheduler and workers are running"
)
_LOOK = (
    "Workers die when they run out of memory or are killed from outside: look at the "
    "workers' logs (client.get_worker_logs()) or the dask dashboard, then run the job again"
)


def check_client(client) -> None:
    """Raise :func:`cluster_lost`'s error unless ``client`` can take work now."""
    if getattr(client, "status", "running") != "running":
        raise cluster_lost(client)


def cluster_lost(client, cause: Optional[BaseException] = None) -> ClusterError:
    """The error for work the cluster dropped: the client closed, the scheduler gone."""
    status = getattr(client, "status", None)
    reason = getattr(cause, "reason", None)
    if reason == "scheduler-connection-lost" or status == "connecting":
        what = (
            f"the connection to the dask scheduler{_at(client)} was lost (the scheduler "
            f"stopped or the network failed)"
        )
    elif status in ("closing", "closed"):
        what = "the session's dask client was closed, or its cluster shut down"
    elif reason == "scheduler-restart":
        what = "the dask cluster was restarted"
    elif cause is None:
        what = f"the session's dask client cannot reach its scheduler (client status: {status})"
    else:
        what = f"the dask cluster dropped the job's tasks ({type(cause).__name__}: {cause})"
    return ClusterError(f"{what}; {_NEW_SESSION}")


def _at(client) -> str:
    address = getattr(getattr(client, "scheduler", None), "address", None)
    return f" at {address}" if address else ""


def explain(exc: BaseException, client, reads: Optional[tuple]) -> BaseException:
    """What a job whose thread caught ``exc`` reports.

    ``reads`` is ``(source, ranges, what)`` for the task ``exc`` names, if it is one of
    the job's (``what`` describes it: "partition 3 (frames 100 to 199)"), else None.
    The package's own errors and a task's other exceptions are reported as they are.
    """
    from distributed.client import ClosedClientError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        return _workers_died(exc, reads)
    if isinstance(exc, (CancelledError, ClosedClientError, CommClosedError)):
        return cluster_lost(client, exc)
    return exc


def _workers_died(exc, reads: Optional[tuple]) -> StemExplorerError:
    """A task whose workers kept dying: re-read its frames in a separate process; the
    data's own error if that finds one, else a :class:`ClusterError` saying so."""
    deaths = exc.allowed_failures + 1
    if reads is None:
        return ClusterError(f"{deaths} dask workers died running the task {exc.task!r}; {_LOOK}")
    source, ranges, what = reads
    try:
        read_isolated(source, ranges, keep=False, timeout=DIAGNOSIS_SECONDS)
    except DataSetNotFoundError as err:
        found = f"this process cannot read the file to check it ({err})"
    except FormatError as err:
        return err
    except (DataSetError, TimeoutError, OSError) as err:
        found = f"checking its frames here failed too ({err})"
    else:
        found = "its frames read without error in a separate process here, so the data is not at fault"
    logger.debug("workers died running %s: %s", what, found)
    return ClusterError(f"{deaths} dask workers died running {what}; {found}. {_LOOK}")
