"""Several small data sets in one task (``stem_explorer.engine.grouped``), on real
multi-process clusters: results equal to numpy, one task for all, each data set's own
stats, a data set whose read fails in the worker failing alone, and one whose reader
kills its worker failing alone too (the others recomputed by tasks of their own)."""

import os
import signal
import sys

import cloudpickle
import dask
import distributed  # noqa: F401 (its config defaults, before dask.config.set below)
import numpy as np
import pytest

from stem_explorer import masks
from stem_explorer.analyses import SumFrame, VirtualDetector, build_plan
from stem_explorer.engine.grouped import GroupEntry, GroupJob, groupable
from stem_explorer.errors import DataSetNotFoundError, FormatError, JobCancelledError
from stem_explorer.io import DataSet, FrameReader, open_dataset
from stem_explorer.io.raw import MappedFrameSource

pytestmark = pytest.mark.cluster

# the crashing source below is defined here, and workers cannot import test modules
cloudpickle.register_pickle_by_value(sys.modules[__name__])

DISK = masks.Disk(4, 3, 2.5)


def cluster(**options):
    from distributed import LocalCluster

    return LocalCluster(threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                        **options)


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with cluster(n_workers=2) as c, Client(c) as client:
        yield client


def scan(tmp_path, name: str, seed: int, nav=(3, 4), sig=(9, 7)) -> tuple:
    data = np.random.default_rng(seed).integers(0, 1000, nav + sig).astype(np.uint16)
    np.save(tmp_path / name, data)
    return open_dataset(tmp_path / name), data


def entry(dataset) -> GroupEntry:
    return GroupEntry(dataset, *build_plan([VirtualDetector({"bf": DISK}), SumFrame()], dataset))


def check(results, data: np.ndarray) -> None:
    mask = DISK.rasterize(data.shape[2:])
    np.testing.assert_allclose(results["vd/bf"].data, np.einsum("abyx,yx->ab", data.astype(float), mask), rtol=1e-6)
    np.testing.assert_array_equal(results["sum/frame"].data, data.sum(axis=(0, 1)))
    assert results.complete and results.provenance["complete"] is True


def test_one_task_computes_every_data_set_with_its_own_stats(client, tmp_path):
    from distributed import get_task_stream

    scans = [scan(tmp_path, f"s{i}.npy", i, nav=(3 + i, 4)) for i in range(4)]
    assert all(groupable(ds) for ds, _ in scans)
    with get_task_stream(client) as stream:
        group = GroupJob(client, [entry(ds) for ds, _ in scans])
        outcomes = group.outcomes()
    assert len(stream.data) == 1  # one task for the four files
    assert group.elapsed > 0
    for outcome, (ds, data) in zip(outcomes, scans):
        assert outcome.error is None
        check(outcome.results, data)
        stats = outcome.stats
        assert stats.bytes_done == data.nbytes and stats.n_partitions == 1 and stats.elapsed > 0
        assert stats.cpu_seconds > 0 and stats.peak_rss_bytes > 0 and len(stats.workers) == 1
        resources = outcome.results.provenance["resources"]
        assert resources["bytes_read"] == data.nbytes and resources["workers"] == list(stats.workers)
    assert len({o.stats.workers for o in outcomes}) == 1  # the one task's worker


def test_a_data_set_that_cannot_be_read_in_the_worker_fails_alone(client, tmp_path):
    scans = [scan(tmp_path, f"s{i}.npy", i) for i in range(3)]
    entries = [entry(ds) for ds, _ in scans]
    os.remove(tmp_path / "s1.npy")  # opened here; gone before the worker reads it
    outcomes = GroupJob(client, entries).outcomes()
    check(outcomes[0].results, scans[0][1])
    check(outcomes[2].results, scans[2][1])
    assert outcomes[1].results is None and isinstance(outcomes[1].error, DataSetNotFoundError)
    assert "s1.npy" in str(outcomes[1].error)


def test_a_cancelled_group_raises_job_cancelled(client, tmp_path):
    group = GroupJob(client, [entry(scan(tmp_path, "s.npy", 0)[0])])
    group.cancel()
    with pytest.raises(JobCancelledError):
        group.outcomes()


class KillingReader(FrameReader):
    def __init__(self, inner):
        self.inner = inner

    def read(self, start, stop):
        os.kill(os.getpid(), signal.SIGKILL)  # as a decoder crashing on a corrupt chunk would

    def close(self):
        self.inner.close()


class KillingSource(MappedFrameSource):
    def open(self, payload=None):
        return KillingReader(super().open(payload))


def test_a_data_set_whose_reader_kills_its_worker_fails_alone(tmp_path):
    from distributed import Client

    scans = [scan(tmp_path, f"s{i}.npy", i) for i in range(2)]
    data = np.zeros((2, 2, 9, 7), np.uint16)
    data.tofile(tmp_path / "bad.raw")
    source = KillingSource(tmp_path / "bad.raw", offset=0, n_frames=4, sig_shape=(9, 7), dtype="uint16")
    bad = DataSet(source, (2, 2), format="raw", path=str(tmp_path / "bad.raw"))
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # one death per task, not four
        with cluster(n_workers=1) as c, Client(c) as client:
            outcomes = GroupJob(client, [entry(scans[0][0]), entry(bad), entry(scans[1][0])]).outcomes()
    check(outcomes[0].results, scans[0][1])
    check(outcomes[2].results, scans[1][1])
    assert outcomes[1].results is None and isinstance(outcomes[1].error, FormatError)
    assert "bad.raw" in str(outcomes[1].error)
