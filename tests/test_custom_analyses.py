"""User-defined analyses (FrameAnalysis, ReductionAnalysis) on a real LocalCluster:
results equal numpy, a numba kernel runs on the workers, partial results stream, the
coarse preview comes first, cancel stops the work, and errors in user code are the
job's errors."""

import math
import sys
import time

import cloudpickle
import numba
import numpy as np
import pytest

from stem_explorer import Session
from stem_explorer.analyses import FrameAnalysis, Integer, MaskParam, Number, ReductionAnalysis
from stem_explorer.engine import preview
from stem_explorer.errors import AnalysisError, JobCancelledError
from stem_explorer.masks import Disk
from test_preview import preview_where  # noqa: F401 (fixture)
from test_session import client, raw_dataset, slow_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.cluster

# the analyses below are defined here, and workers cannot import test modules
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@numba.njit(cache=False, nogil=True)
def count_inside_above(frames, inside, threshold, out):
    for i in range(frames.shape[0]):
        count = 0
        for y in range(frames.shape[1]):
            for x in range(frames.shape[2]):
                if inside[y, x] and frames[i, y, x] > threshold:
                    count += 1
        out[i, 0] = count


class PixelsAbove(FrameAnalysis):
    """Pixels above a threshold inside a mask, per frame (a numba kernel)."""

    threshold = Number(100.0, minimum=0, unit="counts")
    region = MaskParam()

    def process_tile(self, frames, out):
        inside = self.region.rasterize(frames.shape[1:]) > 0
        count_inside_above(frames, inside, self.threshold, out)


class Brightest(FrameAnalysis):
    """Row and column of each frame's brightest pixel."""

    outputs = ("y", "x")
    units = {"y": "px", "x": "px"}

    def process_frame(self, frame):
        return np.unravel_index(np.argmax(frame), frame.shape)


class Histogram(ReductionAnalysis):
    """Histogram of every pixel value of every frame."""

    bins = Integer(16, minimum=1)
    top = Number(1000.0, minimum=0, exclusive_minimum=True)

    def new(self, sig_shape, dtype):
        return np.zeros(self.bins, np.int64)

    def process_tile(self, state, frames):
        state += np.histogram(frames, bins=self.bins, range=(0, self.top))[0]
        return state

    def merge(self, state, other):
        state += other  # in place: what was delivered before must not change
        return state

    def results(self, state, dataset):
        return {"counts": state, "fraction": state / max(1, state.sum())}


@pytest.mark.parametrize("dtype", ["uint16", ">u2", "float32"])
def test_user_analyses_on_the_cluster_equal_numpy(client, tmp_path, dtype):  # noqa: F811
    data = (np.random.default_rng(5).random((9, 11, 12, 10)) * 900).astype(dtype)
    ds = raw_dataset(tmp_path, data)
    region = Disk(6, 5, 3.5)
    analyses = [PixelsAbove(threshold=300, region=region), Brightest(), Histogram(bins=9)]
    with Session(ds, client=client, partition_bytes=12 * 10 * 4 * 11) as session:
        results = session.compute(*analyses)
    values = data.astype(np.float64)
    inside = region.rasterize((12, 10)) > 0
    np.testing.assert_array_equal(results["pixelsabove/value"].data, ((values > 300) & inside).sum(axis=(2, 3)))
    flat = values.reshape(9, 11, -1).argmax(axis=2)
    np.testing.assert_array_equal(results["brightest/y"].data, flat // 10)
    np.testing.assert_array_equal(results["brightest/x"].data, flat % 10)
    assert results["brightest/y"].attrs["units"] == "px" and results["brightest/y"].dims == ("scan_y", "scan_x")
    np.testing.assert_array_equal(results["histogram/counts"].data, np.histogram(values, bins=9, range=(0, 1000))[0])
    assert results["histogram/counts"].dims == ("counts_0",)
    assert [type(a).from_dict(a.to_dict()) for a in analyses] == analyses  # unregistered: by their class


def test_user_frame_analysis_gets_the_coarse_preview_first(client, tmp_path, preview_where):  # noqa: F811
    nav = (12, 10)
    ds, data = slow_dataset(tmp_path, nav=nav, sig=(8, 8), delay=0.02)
    snapshots = []
    with Session(ds, client=client, partition_bytes=8 * 8 * 2 * 10) as session:
        job = session.run(Brightest(), preview_stride=2, on_partial=snapshots.append)
        job.result(timeout=60)
    first = snapshots[0]
    grid = np.zeros(math.prod(nav), bool)
    grid[preview.grid_indices(nav, 2)] = True
    assert first.preview_stride == 2 and first.filled.ravel()[grid].all()
    assert job.preview_in_client == (preview_where == "client")
    expected = data.reshape(*nav, -1).argmax(axis=2) // 8
    image = first.results["brightest/y"].data
    np.testing.assert_array_equal(image[first.filled], expected[first.filled])
    assert not np.isnan(first.fill_preview(image)).any()
    np.testing.assert_array_equal(snapshots[-1].results["brightest/y"].data, expected)


def test_user_analyses_stream_and_delivered_partials_never_change(client, tmp_path):  # noqa: F811
    ds, data = slow_dataset(tmp_path, delay=0.01)
    with Session(ds, client=client, partition_bytes=8 * 8 * 2 * 16) as session:
        job = session.run(Histogram(bins=4), PixelsAbove(region=Disk(4, 4, 3)))
        snapshots = list(job)
        kept = [s.results["histogram/counts"].data.copy() for s in snapshots]
    assert len(snapshots) >= 3 and snapshots[-1].final
    for snapshot, copy in zip(snapshots, kept):
        np.testing.assert_array_equal(snapshot.results["histogram/counts"].data, copy)
    totals = [c.sum() for c in kept]
    assert totals == sorted(totals) and totals[-1] == data.size
    counts = snapshots[1].results["pixelsabove/value"].data
    assert np.isnan(counts[~snapshots[1].filled]).all()


def test_cancelling_a_user_analysis_stops_its_work(client, tmp_path):  # noqa: F811
    ds, _ = slow_dataset(tmp_path, delay=0.1)
    with Session(ds, client=client, partition_bytes=8 * 8 * 2 * 8) as session:
        job = session.run(Brightest(), preview_stride=1)
        next(iter(job))  # the first partition's partial result
        assert job.cancel() is True
        with pytest.raises(JobCancelledError):
            job.result(timeout=10)
        done = job.snapshot(results=False).partitions_done
        time.sleep(0.5)  # tasks still queued or running would report in this time
        assert job.snapshot(results=False).partitions_done == done < job.n_partitions


def test_an_error_in_user_code_is_the_jobs_error(client, tmp_path):  # noqa: F811
    class ThreeForTwo(FrameAnalysis):
        outputs = ("a", "b")

        def process_frame(self, frame):
            return (1.0, 2.0, 3.0)

    ds = raw_dataset(tmp_path, np.ones((3, 4, 5, 5), np.uint16))
    with Session(ds, client=client) as session:
        job = session.run(ThreeForTwo())
        with pytest.raises(AnalysisError, match=r"ThreeForTwo.process_frame returned \(1.0, 2.0, 3.0\); it must return 2 number\(s\), one per output \('a', 'b'\)"):
            job.result(timeout=60)
