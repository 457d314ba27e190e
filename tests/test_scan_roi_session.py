"""Scan ROI through a Session on a real multi-process cluster (issue 17): only the
partitions holding the ROI's frames run, each reads only their tiles (the job's
bytes read count them), and a click reads one frame."""

import numpy as np
import pytest

import _reference as ref
from stem_explorer import Session, masks
from stem_explorer.analyses import PickFrame, RoiSum, SumFrame, VirtualDetector
from stem_explorer.errors import AnalysisError
from test_scan_roi import make_damaged_outside
from test_session import client, raw_dataset  # noqa: F401  (the module's cluster)

pytestmark = pytest.mark.cluster

NAV, SIG = (16, 12), (10, 7)
FRAME_BYTES = SIG[0] * SIG[1] * 2


@pytest.fixture
def data(tmp_path):
    data = np.random.default_rng(5).integers(0, 3000, NAV + SIG).astype(np.uint16)
    return data, raw_dataset(tmp_path, data)


def test_a_run_with_roi_reads_only_the_rois_frames(client, data):  # noqa: F811
    data, ds = data
    rect = masks.Rectangle(3, 2, 4, 5)  # rows 3..6, columns 2..6: 20 frames
    roi = rect.rasterize(NAV) > 0
    disk = masks.Disk(4, 3, 2.5)
    with Session(ds, client=client, partition_bytes=2 * 12 * FRAME_BYTES) as session:
        job = session.run(VirtualDetector(disk), SumFrame(), roi=rect)
        results = job.result(timeout=60)
        progress = job.progress()
    parts = ds.partitions(2, 2 * 12 * FRAME_BYTES)
    assert job.n_partitions == sum(roi.ravel()[p.start : p.stop].any() for p in parts) < len(parts)
    assert job.stats.bytes_done == 20 * FRAME_BYTES
    image = results["vd/mask0"].data
    np.testing.assert_allclose(image[roi], ref.virtual_image(data, disk.rasterize(SIG))[roi], rtol=1e-6)
    assert np.isnan(image[~roi]).all()
    np.testing.assert_array_equal(results["sum/frame"].data, data[roi].sum(axis=0))
    np.testing.assert_array_equal(progress.filled, roi)
    assert results.provenance["complete"] and results.provenance["roi"]["n_frames"] == 20
    assert results.complete and results.filled.all()  # outside the ROI: not asked for, NaN
    assert results.provenance["roi"]["frame_runs"][0] == [3 * 12 + 2, 3 * 12 + 7]


def test_a_click_reads_one_frame(client, data):  # noqa: F811
    data, ds = data
    with Session(ds, client=client, partition_bytes=2 * 12 * FRAME_BYTES) as session:
        job = session.run(PickFrame((9, 4)))
        picked = job.result(timeout=60)["pick/frames"].data[0]
        assert job.n_partitions == 1 and job.stats.bytes_done == FRAME_BYTES
        assert job.read_in_client  # a mapped file: no round trip through the scheduler
        np.testing.assert_array_equal(picked, data[9, 4])
        job = session.run(RoiSum(masks.Rectangle(0, 0, 2, 2)))
        total = job.result(timeout=60)["roi/frame"].data
        assert job.stats.bytes_done == 4 * FRAME_BYTES
        np.testing.assert_array_equal(total, data[:2, :2].reshape((-1,) + SIG).sum(axis=0))
        np.testing.assert_array_equal(session.pick_frame((15, 11)), data[15, 11])


def test_bad_roi_in_run_is_refused_before_anything_starts(client, data):  # noqa: F811
    _data, ds = data
    with Session(ds, client=client) as session:
        with pytest.raises(AnalysisError, match=r"roi has shape \(2, 2\)"):
            session.run(SumFrame(), roi=np.ones((2, 2), bool))
        with pytest.raises(AnalysisError, match="roi holds none of the frames these analyses read"):
            session.run(PickFrame((0, 0)), roi=[(5, 5)])
        assert session.current_job is None


def test_tasks_read_only_the_rois_chunks(client, tmp_path, monkeypatch):  # noqa: F811
    """Compressed partitions are decoded by tasks, never here: with every chunk
    outside the ROI damaged, a run limited to the ROI still succeeds on the cluster."""
    ds, data, roi = make_damaged_outside(tmp_path, monkeypatch)
    with Session(ds, client=client) as session:
        job = session.run(VirtualDetector(masks.Disk(4, 4, 3)), SumFrame(), roi=roi)
        results = job.result(timeout=60)
        assert not job.read_in_client and job.stats.bytes_done == 6 * 128  # two chunks of 3 frames
    np.testing.assert_array_equal(results["sum/frame"].data, data[roi].sum(axis=0))
    assert np.isnan(results["vd/mask0"].data[~roi]).all()
