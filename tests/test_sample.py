"""Tests of the synthetic sample generator (stem_explorer.sample)."""

import json
import math
import os

import h5py
import numpy as np
import pytest

from stem_explorer import sample as sample_module
from stem_explorer.errors import DataSetError, DataSetNotFoundError, FormatError
from stem_explorer.sample import (
    HDF5_DATASET,
    SAMPLE_ATTR,
    SampleExistsError,
    SampleParams,
    make_sample,
    sample_truth,
)

NAV = (16, 20)
SIG = (32, 48)


def read_frames(path):
    with h5py.File(path, "r") as f:
        return f[HDF5_DATASET][()]


def com(frames, sig_shape):
    """Centre of mass (cy, cx) of frames (..., sy, sx) in pixel index coordinates."""
    frames = np.asarray(frames, dtype=np.float64)
    total = frames.sum(axis=(-2, -1))
    yy = np.arange(sig_shape[0])
    xx = np.arange(sig_shape[1])
    cy = (frames.sum(axis=-1) * yy).sum(axis=-1) / total
    cx = (frames.sum(axis=-2) * xx).sum(axis=-1) / total
    return cy, cx


def radius_map(truth):
    yy, xx = np.indices(truth.sig_shape)
    return np.hypot(yy - truth.centre[0], xx - truth.centre[1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The default-physics sample at the test size, written once."""
    path = tmp_path_factory.mktemp("ref") / "ref.h5"
    make_sample(path, NAV, SIG)
    return path


@pytest.fixture(scope="module")
def truth():
    return sample_truth(NAV, SIG)


def leftovers(directory, keep=()):
    return sorted(n for n in os.listdir(directory) if n not in keep)


# -- determinism ----------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path, reference):
    again = make_sample(tmp_path / "again.h5", NAV, SIG)
    assert again.read_bytes() == reference.read_bytes()


def test_different_seed_gives_different_frames(tmp_path, reference):
    other = make_sample(tmp_path / "other.h5", NAV, SIG, seed=1)
    assert not np.array_equal(read_frames(other), read_frames(reference))


def test_block_size_does_not_change_the_output(tmp_path, reference, monkeypatch):
    # 7 frames a block: scan rows of 20 are split into partial-row hyperslabs
    monkeypatch.setattr(sample_module, "_BLOCK_ELEMENTS", 7 * SIG[0] * SIG[1])
    seen = []
    path = make_sample(tmp_path / "small_blocks.h5", NAV, SIG,
                       progress=lambda done, total: seen.append((done, total)))
    assert np.array_equal(read_frames(path), read_frames(reference))
    assert len(seen) > NAV[0]
    assert seen[-1] == (320, 320)


# -- physics: centre of mass ------------------------------------------------------------


def test_noise_free_com_is_centre_plus_shift(truth):
    frames = truth.noise_free_frames()
    cy, cx = com(frames, SIG)
    assert np.max(np.abs(cy - (truth.centre[0] + truth.shift_y.ravel()))) < 1e-6
    assert np.max(np.abs(cx - (truth.centre[1] + truth.shift_x.ravel()))) < 1e-6
    assert np.allclose(truth.com_y.ravel(), truth.centre[0] + truth.shift_y.ravel())


def test_noise_free_com_exact_on_default_detector():
    truth = sample_truth((4, 6), (128, 128))
    cy, cx = com(truth.noise_free_frames(), truth.sig_shape)
    assert np.max(np.abs(cy - truth.com_y.ravel())) < 1e-6
    assert np.max(np.abs(cx - truth.com_x.ravel())) < 1e-6
    # the default shift reaches about 1.5 px on a detector this size
    assert 1.0 < np.abs(truth.shift_y).max() <= 1.5
    assert 1.0 < np.abs(truth.shift_x).max() <= 1.5


def test_shift_field_has_divergence_and_curl(truth):
    dsy_dy, dsy_dx = np.gradient(truth.shift_y)
    dsx_dy, dsx_dx = np.gradient(truth.shift_x)
    assert np.abs((dsy_dy + dsx_dx).mean()) > 1e-3
    assert np.abs(dsx_dy - dsy_dx).max() > 1e-2


def test_noisy_com_follows_truth(reference, truth):
    cy, cx = com(read_frames(reference), SIG)
    ey = cy - truth.com_y
    ex = cx - truth.com_x
    # shot noise of ~0.1 px a frame, no bias
    assert np.abs(ey).mean() < 0.2 and np.abs(ex).mean() < 0.2
    assert abs(ey.mean()) < 0.03 and abs(ex.mean()) < 0.03


def test_noisy_com_correlates_with_shift_at_high_dose(tmp_path):
    path = make_sample(tmp_path / "bright.h5", NAV, SIG, dose=50000, dtype="uint32")
    truth = sample_truth(NAV, SIG, dose=50000)
    cy, cx = com(read_frames(path), SIG)
    assert np.abs(cy - truth.com_y).mean() < 0.05
    assert np.corrcoef(cy.ravel(), truth.shift_y.ravel())[0, 1] > 0.95
    assert np.corrcoef(cx.ravel(), truth.shift_x.ravel())[0, 1] > 0.95


# -- physics: virtual images -------------------------------------------------------------


def test_thick_region_covers_about_a_fifth(truth):
    assert truth.thick.shape == NAV
    assert 0.15 < truth.thick.mean() < 0.25


def test_virtual_bright_and_dark_field_contrast(reference, truth):
    frames = read_frames(reference).astype(np.float64)
    r = radius_map(truth)
    bright = r <= truth.central_radius
    annular = r > truth.central_radius + 1
    bf = (frames * bright).sum(axis=(-2, -1))
    adf = (frames * annular).sum(axis=(-2, -1))
    inside, outside = truth.thick, ~truth.thick
    assert bf[inside].mean() < 0.75 * bf[outside].mean()
    assert bf[inside].max() < bf[outside].min()
    assert adf[inside].mean() > 1.5 * adf[outside].mean()
    assert adf[inside].min() > adf[outside].max()

    # the noisy virtual images scatter around the noise-free ones by shot noise
    expected = truth.noise_free_frames()
    bf0 = (expected * bright).sum(axis=(-2, -1)).reshape(NAV)
    z = (bf - bf0) / np.sqrt(bf0)
    assert abs(z.mean()) < 0.3 and 0.7 < z.std() < 1.3


def test_frame_totals_follow_dose(truth):
    expected = truth.noise_free_frames(10, 30)
    assert expected.shape == (20,) + SIG
    assert np.allclose(expected.sum(axis=(1, 2)), 2000.0)
    assert expected.min() >= 0
    # the border rows and columns stay empty: nothing leaves the detector
    assert not expected[:, 0].any() and not expected[:, -1].any()
    assert not expected[:, :, 0].any() and not expected[:, :, -1].any()


def test_bragg_disks_are_point_symmetric(truth):
    pos = np.array(truth.bragg_positions)
    assert len(pos) == 6
    assert np.allclose(pos.sum(axis=0), 0.0)
    assert np.allclose(np.hypot(*pos.T), truth.params.bragg_distance)
    assert truth.bragg_radius < truth.central_radius


def test_noise_free_frames_range_is_checked(truth):
    assert truth.noise_free_frames(5, 5).shape == (0,) + SIG
    with pytest.raises(DataSetError, match="outside"):
        truth.noise_free_frames(0, truth.n_frames + 1)


# -- file layout and dtypes ----------------------------------------------------------------


def test_hdf5_layout_and_attributes(reference):
    with h5py.File(reference, "r") as f:
        dset = f[HDF5_DATASET]
        assert dset.shape == NAV + SIG
        assert dset.chunks is None
        assert dset.compression is None
        assert dset.id.get_offset() is not None  # allocated: can be memory-mapped
        record = json.loads(dset.attrs[SAMPLE_ATTR])
    assert record["seed"] == 0
    assert record["nav_shape"] == list(NAV) and record["sig_shape"] == list(SIG)
    params = SampleParams(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in record["params"].items()})
    assert params == sample_truth(NAV, SIG).params


@pytest.mark.parametrize("dtype", ["uint8", "uint16", ">u2", "int32", "float32"])
def test_dtypes(tmp_path, reference, dtype):
    path = make_sample(tmp_path / "d.h5", NAV, SIG, dtype=dtype)
    with h5py.File(path, "r") as f:
        dset = f[HDF5_DATASET]
        assert dset.dtype == np.dtype(dtype)
        data = dset[()]
    assert data.min() >= 0
    if np.dtype(dtype).kind in "ui":
        assert data.max() <= np.iinfo(dtype).max
    else:
        assert np.array_equal(data, np.round(data))
    # the default dose never clips, so every dtype holds the same counts
    assert np.array_equal(data.astype(np.int64), read_frames(reference).astype(np.int64))


def test_uint8_clips_at_high_dose(tmp_path):
    path = make_sample(tmp_path / "hot.h5", (2, 3), SIG, dtype="uint8", dose=1e6)
    data = read_frames(path)
    assert data.dtype == np.uint8
    assert data.max() == 255


def test_one_dimensional_scan(tmp_path):
    path = make_sample(tmp_path / "line.h5", (37,), SIG)
    truth = sample_truth(37, SIG)
    data = read_frames(path)
    assert data.shape == (37,) + SIG
    assert truth.shift_y.shape == truth.shift_x.shape == truth.thick.shape == (37,)
    assert truth.thick.any() and not truth.thick.all()
    cy, cx = com(truth.noise_free_frames(), SIG)
    assert np.max(np.abs(cy - truth.com_y)) < 1e-6
    assert np.max(np.abs(cx - truth.com_x)) < 1e-6


def test_minimum_detector_fits():
    truth = sample_truth((3, 4), (16, 16))
    cy, cx = com(truth.noise_free_frames(), (16, 16))
    assert np.max(np.abs(cy - truth.com_y.ravel())) < 1e-6


# -- atomicity and overwrite -------------------------------------------------------------


class Interrupted(Exception):
    pass


def interrupt_after(frames):
    def progress(done, total):
        if done >= frames:
            raise Interrupted

    return progress


@pytest.mark.parametrize("fmt", ["hdf5", "raw"])
def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(sample_module, "_BLOCK_ELEMENTS", 40 * SIG[0] * SIG[1])
    target = tmp_path / "out"
    with pytest.raises(Interrupted):
        make_sample(target, NAV, SIG, format=fmt, progress=interrupt_after(80))
    assert leftovers(tmp_path) == []


def test_interrupted_overwrite_keeps_the_old_file(tmp_path, reference):
    target = tmp_path / "keep.h5"
    target.write_bytes(b"old")
    with pytest.raises(Interrupted):
        make_sample(target, NAV, SIG, overwrite=True, progress=interrupt_after(1))
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == ["keep.h5"]


def test_existing_path_needs_overwrite(tmp_path, reference):
    target = tmp_path / "x.h5"
    target.write_bytes(b"old")
    with pytest.raises(SampleExistsError, match="overwrite=True") as info:
        make_sample(target, NAV, SIG)
    assert isinstance(info.value, FileExistsError)
    assert isinstance(info.value, DataSetError)
    assert target.read_bytes() == b"old"
    make_sample(target, NAV, SIG, overwrite=True)
    assert target.read_bytes() == reference.read_bytes()
    assert leftovers(tmp_path) == ["x.h5"]


def test_overwrite_refuses_a_foreign_directory(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(SampleExistsError, match="refusing"):
        make_sample(target, NAV, SIG, overwrite=True)
    assert (target / "notes.txt").read_text() == "precious"


def test_missing_parent_directory(tmp_path):
    with pytest.raises(DataSetNotFoundError, match="does not exist"):
        make_sample(tmp_path / "no" / "such.h5", NAV, SIG)


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(nav_shape=(0, 4)), "nav_shape"),
        (dict(nav_shape=(2, 3, 4)), "nav_shape"),
        (dict(nav_shape=(True, 4)), "nav_shape"),
        (dict(nav_shape="ab"), "nav_shape"),
        (dict(sig_shape=(8, 32)), "sig_shape"),
        (dict(sig_shape=(32,)), "sig_shape"),
        (dict(dose=float("nan")), "dose"),
        (dict(dose=-1), "dose"),
        (dict(dose="lots"), "dose"),
        (dict(dtype="nonsense"), "dtype"),
        (dict(dtype="complex64"), "dtype"),
        (dict(dtype="bool"), "dtype"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(bragg_count=5), "bragg_count"),
        (dict(central_radius=0), "central_radius"),
        (dict(diffuse_inner=9, diffuse_outer=5), "diffuse_outer"),
        (dict(thin_fractions=(0, 0, 0)), "thin_fractions"),
        (dict(thick_fractions=(1, 2)), "thick_fractions"),
        (dict(bragg_distance=22), "does not fit"),
        (dict(shift_amplitude=6), "does not fit"),
        (dict(progress=42), "progress"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    args = dict(nav_shape=NAV, sig_shape=SIG)
    args.update(kwargs)
    with pytest.raises(DataSetError, match=match):
        make_sample(tmp_path / "bad.h5", **args)
    assert leftovers(tmp_path) == []


def test_unknown_format_and_parameter(tmp_path):
    with pytest.raises(FormatError, match="hdf5"):
        make_sample(tmp_path / "bad", NAV, SIG, format="tiff")
    with pytest.raises(TypeError, match="bragg_radius"):
        make_sample(tmp_path / "bad.h5", NAV, SIG, bragg_radiuss=3)
    with pytest.raises(TypeError, match="unknown sample parameter"):
        sample_truth(NAV, SIG, seed=3)


def test_default_parameters_fit_default_detector():
    params = SampleParams.for_detector((128, 128))
    assert params.central_radius == pytest.approx(12.8)
    assert params.bragg_distance == pytest.approx(32)
    assert params.max_shift() == pytest.approx(1.5)
    params.check_fits((128, 128))


# -- raw partition format ----------------------------------------------------------------


def test_raw_format_matches_hdf5(tmp_path, reference):
    frame_bytes = SIG[0] * SIG[1] * 2
    target = make_sample(tmp_path / "raw", NAV, SIG, format="raw",
                         partition_bytes=100 * frame_bytes)
    doc = json.loads((target / "dataset.json").read_text())
    assert doc["nav_shape"] == list(NAV) and doc["sig_shape"] == list(SIG)
    assert np.dtype(doc["dtype"]) == np.uint16
    assert len(doc["partitions"]) == math.ceil(320 / 100)
    record = doc["metadata"][SAMPLE_ATTR]
    assert record["seed"] == 0 and record["params"]["dose"] == 2000.0
    parts = [np.fromfile(target / p["file"], dtype=doc["dtype"]) for p in doc["partitions"]]
    frames = np.concatenate(parts).reshape(NAV + SIG)
    assert np.array_equal(frames, read_frames(reference))
    assert leftovers(tmp_path) == ["raw"]


def test_raw_format_overwrite(tmp_path):
    target = make_sample(tmp_path / "raw", (3, 4), SIG, format="raw", dtype=">u2")
    with pytest.raises(SampleExistsError, match="overwrite=True"):
        make_sample(target, (3, 4), SIG, format="raw")
    make_sample(target, (2, 5), SIG, format="raw", overwrite=True, seed=3)
    doc = json.loads((target / "dataset.json").read_text())
    assert doc["nav_shape"] == [2, 5]
    assert leftovers(tmp_path) == ["raw"]


def test_samples_open_with_the_readers(tmp_path, reference):
    io = pytest.importorskip("stem_explorer.io")
    raw = make_sample(tmp_path / "raw", NAV, SIG, format="raw")
    for path in (reference, raw):
        ds = io.open_dataset(str(path))
        assert ds.nav_shape == NAV and ds.sig_shape == SIG
        assert np.array_equal(ds.read_frames(0, ds.n_frames).reshape(NAV + SIG),
                              read_frames(reference))
