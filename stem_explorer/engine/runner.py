"""The one way work reaches the cluster: jobs and ingestion get their client, submit
their tasks, take results as tasks finish and cancel what is left through here.

Keeping this in one place keeps one set of rules for both: a task of known locations
prefers the workers holding its bytes (and may run elsewhere), tasks without one go
in one graph update, a future the cluster cancelled (scheduler lost, client closed)
is an error rather than a missing result, and cancelling never raises when the
cluster is already gone.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence


@contextmanager
def cluster_client(client=None, address: Optional[str] = None, n_workers: Optional[int] = None):
    """The given ``client``, a client of the scheduler at ``address`` (closed on exit),
    or the client of an embedded cluster of ``n_workers`` (stopped on exit)."""
    if client is not None:
        yield client
        return
    from .cluster import connect, start_local_cluster

    if address is not None:
        with connect(address) as c:
            yield c
        return
    from distributed import Client

    with start_local_cluster(n_workers) as cluster, Client(cluster) as c:
        yield c


def submit_tasks(client, fn: Callable, *iterables: Sequence, keys: Sequence[str],
                 placements: Optional[Sequence[dict]] = None, **options) -> list:
    """One task ``fn(*args)`` per element of the zipped ``iterables``, under ``keys``.

    ``placements`` (one dict of ``submit`` options per task, e.g. ``workers`` and
    ``allow_other_workers``) place tasks one by one; without any the tasks go in one
    ``client.map`` (a single graph update instead of one per task). ``options`` go to
    every task (``pure``, ``retries``, ``priority``...).
    """
    if placements is None or not any(placements):
        return client.map(fn, *iterables, key=list(keys), **options)
    return [
        client.submit(fn, *args, key=key, **options, **placement)
        for *args, key, placement in zip(*iterables, keys, placements)
    ]


def finished(client, futures: Sequence, *, stopped: Callable[[], bool] = lambda: False) -> Iterator[tuple]:
    """``(future, result)`` of ``futures`` as they finish. A task's exception is raised;
    so is the cancellation of a future the caller did not cancel (``stopped()`` is
    False): the cluster dropped the work."""
    from distributed import as_completed

    for future, result in as_completed(futures, loop=client.loop, with_results=True):
        if future.cancelled():
            if stopped():
                return
            raise result
        yield future, result


def wait_for(futures: Sequence, timeout: float) -> None:
    """Block until ``futures`` are finished (done, failed or cancelled) or ``timeout``
    seconds have passed, whichever is first; raises nothing: what went wrong is
    raised where the results are taken (:func:`finished`)."""
    from distributed import wait

    try:
        wait(list(futures), timeout=timeout)
    except Exception:  # a timeout, or the cluster gone: the caller's results say which
        pass


def cancel_quietly(client, futures: Sequence, *, done_too: bool = False) -> None:
    """Cancel the futures not done yet (``done_too``: all of them, which releases
    finished ones' data, e.g. something scattered); nothing to free when the cluster
    is gone."""
    pending = list(futures) if done_too else [f for f in futures if not f.done()]
    if not pending:
        return
    try:
        client.cancel(pending)
    except Exception:  # the cluster may already be gone; nothing left to free
        pass
