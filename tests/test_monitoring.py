"""Resource monitoring on a real multi-process LocalCluster: CPU seconds, wall
seconds, bytes read and peak RSS per task, samples per worker, all of it in the
job's stats and the results' provenance."""

import os
import re
import resource
import time

import numpy as np
import psutil
import pytest

from stem_explorer import Session
from stem_explorer.analyses import RadialProfile, SumFrame
from stem_explorer.engine import monitor
from stem_explorer.results import Results
from stem_explorer.widgets.usage import live_usage_text
from test_session import client, raw_dataset, slow_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.cluster


def _rss() -> int:
    return psutil.Process().memory_info().rss


#: Linux updates a process's high-water mark (``ru_maxrss``) lazily: each thread
#: caches up to 64 page counts before they reach the process's RSS, so a sample of the
#: RSS may pass the mark by a few pages per thread.
HIGH_WATER_SLACK = 4 * 2**20


def _max_rss() -> int:
    """The process's highest RSS so far (give or take :data:`HIGH_WATER_SLACK`)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 + HIGH_WATER_SLACK  # KiB on Linux


def test_task_figures_are_real_for_a_cpu_bound_job(client, tmp_path):  # noqa: F811
    data = np.random.default_rng(5).random((32, 32, 48, 48), dtype=np.float32)
    ds = raw_dataset(tmp_path, data)
    size = os.path.getsize(ds.path)
    before = client.run(_rss)
    with Session(ds, client=client, partition_bytes=size // 8, kernel="dense") as session:
        job = session.run(RadialProfile(n_bins=24), SumFrame(), preview_stride=0)
        results = job.result(timeout=120)
    stats, max_rss = job.stats, client.run(_max_rss)
    n_workers = len(client.scheduler_info()["workers"])
    # CPU of the tasks' threads: more than nothing, at most their wall time, which is at
    # most the job's wall time on every worker (one thread each)
    assert 0 < stats.cpu_seconds <= stats.task_seconds <= stats.elapsed * n_workers
    assert stats.bytes_done == size == sum(w.bytes_read for w in stats.per_worker.values())
    assert set(stats.workers) == set(stats.per_worker) <= set(before)
    assert sum(w.tasks for w in stats.per_worker.values()) == job.n_partitions
    for address, worker in stats.per_worker.items():
        # the worker's RSS while it ran the tasks: not below half of what it held
        # before the job, not above the highest it ever had
        assert before[address] // 2 <= worker.peak_rss_bytes <= max_rss[address]
    assert stats.peak_rss_bytes == max(w.peak_rss_bytes for w in stats.per_worker.values())
    resources = results.provenance["resources"]
    assert resources["bytes_read"] == size and resources["cpu_seconds"] == round(stats.cpu_seconds, 4)
    assert resources["workers"] == list(stats.workers) and resources["peak_rss_bytes"] == stats.peak_rss_bytes
    saved = Results.load(results.save(tmp_path / "out.h5"))
    assert saved.provenance["resources"] == resources


@pytest.mark.slow
def test_workers_are_sampled_every_second_while_a_job_runs(client, tmp_path):  # noqa: F811
    ds, data = slow_dataset(tmp_path, nav=(16, 16), delay=0.25)  # 16 tiles of 0.25 s sleeping
    live = []
    # a sample covers what its worker read, for any job: let the samplers of the jobs
    # before this one stop, so that this job's are its own
    time.sleep(monitor.IDLE_STOP_S + 2 * monitor.SAMPLE_INTERVAL_S)

    def watch(progress):
        live.append((monitor.latest_usage(job.stats), live_usage_text(job)))

    with Session(ds, client=client, partition_bytes=8 * 8 * 2 * 16) as session:
        job = session.run(SumFrame(), on_progress=watch, preview_stride=0)
        job.result(timeout=120)
    stats, max_rss = job.stats, client.run(_max_rss)
    # sleeping tasks: their thread's CPU time is a small part of their wall time
    assert 0 < stats.cpu_seconds < 0.5 * stats.task_seconds
    samples = {address: list(w.samples) for address, w in stats.per_worker.items()}
    assert sum(len(s) for s in samples.values()) >= 2
    for address, worker_samples in samples.items():
        times = [s["time"] for s in worker_samples]
        assert times == sorted(times) and all(0.5 < b - a < 3 for a, b in zip(times, times[1:]))
        for sample in worker_samples:
            assert 0 <= sample["cpu_percent"] <= 100 * os.cpu_count()
            assert 10 * 2**20 < sample["rss_bytes"] <= max_rss[address]
        # what the tasks read per second, over the intervals: no more than was read
        read = sum(s["read_bytes_per_s"] * monitor.SAMPLE_INTERVAL_S for s in worker_samples)
        assert 0 < read <= 1.5 * stats.per_worker[address].bytes_read
    # seen while it ran, and shown in the Explorer's progress line
    assert any(u is not None and u["workers"] >= 1 and u["rss_bytes"] > 0 for u, _text in live)
    assert any(re.search(r"CPU \d+% .* \d+ MiB .* GB/s read on [12] workers", text) for _u, text in live)
    summary = stats.usage()["per_worker"]
    assert {a: e["samples"] for a, e in summary.items()} == {a: len(s) for a, s in samples.items()}


def test_tasks_outside_a_cluster_measure_themselves(tmp_path):
    """run_partition in this process (tests, debugging): the same figures, no sampler."""
    from stem_explorer.engine.tasks import run_partition
    from stem_explorer.analyses import build_plan

    data = np.random.default_rng(2).random((8, 8, 32, 32), dtype=np.float32)
    ds = raw_dataset(tmp_path, data)
    plan, _finalize = build_plan([SumFrame()], ds)
    t0, rss0 = time.thread_time(), _rss()
    result = run_partition(ds.partitions(1)[0], plan)
    assert result.bytes_read == data.nbytes
    assert 0 < result.usage.cpu_seconds <= time.thread_time() - t0
    assert rss0 // 2 <= result.usage.peak_rss_bytes <= _max_rss()
