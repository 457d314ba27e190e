"""The job callback contract on a real LocalCluster: callbacks run outside the job's
lock (one may take a lock held by a thread that is cancelling the job), a callback's
exception is logged and kept without failing the job, and no callback of a cancelled
job runs after the first one of the job that replaced it."""

import logging
import threading
import time

import numpy as np
import pytest

import _reference as ref
from stem_explorer import Session, masks
from stem_explorer.analyses import SumFrame, VirtualDetector
from test_session import client, slow_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.cluster

PARTITION = 8 * 8 * 2 * 16  # bytes of 16 frames of the slow data set


def test_a_raising_callback_is_logged_and_kept_and_the_job_finishes(client, tmp_path, caplog):  # noqa: F811
    ds, data = slow_dataset(tmp_path, delay=0.01)
    calls = []

    def progress_bar(progress):
        calls.append(progress.partitions_done)
        raise ZeroDivisionError("a bug in the user's progress bar")

    with Session(ds, client=client, partition_bytes=PARTITION) as session:
        with caplog.at_level(logging.ERROR, logger="stem_explorer.engine.job"):
            job = session.run(SumFrame(), on_progress=progress_bar)
            results = job.result(timeout=60)
    np.testing.assert_array_equal(results["sum/frame"].data, ref.frames(data).sum(axis=0))
    assert calls[-1] == job.n_partitions and len(calls) > 1  # called for every partition still
    assert len(job.callback_errors) == min(len(calls), 10)
    assert all(isinstance(e, ZeroDivisionError) for e in job.callback_errors)
    logged = [r for r in caplog.records if "progress_bar" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info[0] is ZeroDivisionError  # once, with its traceback


def test_a_callback_may_take_a_lock_held_by_the_thread_cancelling_its_job(client, tmp_path):  # noqa: F811
    ds, _ = slow_dataset(tmp_path, delay=0.05)
    views_lock = threading.Lock()  # e.g. an explorer's lock, held while it replaces jobs
    entered, drawn = threading.Event(), []

    def draw(progress):
        entered.set()
        with views_lock:
            drawn.append(progress.partitions_done)

    with Session(ds, client=client, partition_bytes=PARTITION) as session:
        with views_lock:
            job = session.run(SumFrame(), on_partial=draw)
            assert entered.wait(60)
            canceller = threading.Thread(target=job.cancel, daemon=True)
            canceller.start()
            canceller.join(timeout=20)
            assert not canceller.is_alive(), "cancel() waited for the callback: deadlock"
        deadline = time.monotonic() + 20
        while not drawn and time.monotonic() < deadline:
            time.sleep(0.01)
    assert job.cancelled and len(drawn) == 1  # the callback under way finished; no other started


@pytest.mark.parametrize("replace", ["supersede", "cancel_then_run"])
def test_no_callback_of_a_replaced_job_runs_after_its_successors_first(client, tmp_path, replace):  # noqa: F811
    """The replaced job's callback is under way (blocked) when the new job's first
    partial is ready: the new one waits for it, whether the session superseded the
    job or the caller cancelled it and started another (as the Explorer does)."""
    ds, data = slow_dataset(tmp_path, delay=0.01)
    events, release = [], threading.Event()
    old_entered = threading.Event()

    def old_callback(progress):
        old_entered.set()
        release.wait(30)
        events.append("old")

    with Session(ds, client=client, partition_bytes=PARTITION) as session:
        old = session.run(VirtualDetector(masks.Disk(4, 4, 1)), on_partial=old_callback)
        assert old_entered.wait(60)
        if replace == "cancel_then_run":
            old.cancel()
        new = session.run(VirtualDetector(masks.Disk(4, 4, 3)), on_partial=lambda p: events.append("new"),
                          supersede=replace == "supersede")
        while new.snapshot(results=False).partitions_done < 1:  # a partial the new job holds back
            time.sleep(0.01)
        time.sleep(0.2)  # time enough to deliver it, were it not held back
        release.set()
        results = new.result(timeout=60)
    assert events[0] == "old" and set(events[1:]) == {"new"}
    np.testing.assert_allclose(results["vd/mask0"].data, ref.virtual_image(data, masks.Disk(4, 4, 3).rasterize((8, 8))))


def test_result_returns_after_the_final_callbacks_even_one_asking_for_it(client, tmp_path):  # noqa: F811
    """What a caller of result() sees was drawn already (the Explorer waits on it), and
    a final callback may ask for the result itself."""
    ds, data = slow_dataset(tmp_path, delay=0.01)
    seen = []

    def show(progress):
        if progress.final:
            time.sleep(0.3)  # a slow draw
            seen.append(job.result(timeout=5)["sum/frame"].data)

    with Session(ds, client=client, partition_bytes=PARTITION) as session:
        job = session.run(SumFrame(), on_partial=show)
        results = job.result(timeout=60)
    assert len(seen) == 1 and not job.callback_errors
    np.testing.assert_array_equal(seen[0], results["sum/frame"].data)
