"""The engine's task runner, shared by jobs and ingestion."""

import threading
import time
from concurrent.futures import CancelledError

import pytest
from distributed import Client, LocalCluster

from stem_explorer.engine.runner import cancel_quietly, finished, submit_tasks


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
        yield c


def _add(a, b, *, scale=1):
    return (a + b) * scale


@pytest.mark.parametrize("placed", [False, True])
def test_tasks_submitted_together_or_placed_give_every_result(client, placed):
    worker = next(iter(client.scheduler_info()["workers"]))
    placements = [{"workers": [worker], "allow_other_workers": True}] * 3 if placed else None
    keys = [f"runner-test-{placed}-{i}" for i in range(3)]
    futures = submit_tasks(client, _add, [1, 2, 3], [10, 20, 30], keys=keys, placements=placements, scale=2,
                           pure=False)
    assert [f.key for f in futures] == keys
    assert sorted(result for _f, result in finished(client, futures)) == [22, 44, 66]


def _slow(x):
    time.sleep(5)
    return x


def test_work_the_cluster_drops_is_an_error_unless_the_caller_stopped_it(client):
    futures = submit_tasks(client, _slow, [1], keys=["runner-test-dropped"], pure=False)
    threading.Timer(0.2, client.cancel, [futures]).start()  # not the caller: the cluster's doing
    with pytest.raises(CancelledError):
        list(finished(client, futures))
    futures = submit_tasks(client, _slow, [2], keys=["runner-test-stopped"], pure=False)
    threading.Timer(0.2, client.cancel, [futures]).start()
    assert list(finished(client, futures, stopped=lambda: True)) == []


def test_cancelling_on_a_closed_client_does_not_raise():
    with LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        c = Client(cluster)
        futures = submit_tasks(c, _slow, [1], keys=["runner-test-closed"], pure=False)
        c.close()
        cancel_quietly(c, futures)
