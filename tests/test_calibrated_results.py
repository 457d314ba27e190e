"""Calibrated results: every result's coordinates in the data set's units, in xarray
(``units`` attributes), in the HDF5 results (NeXus NXdata groups other tools read)
and in TIFF (resolution tags); the centre of mass in mrad or 1/nm, the radial
profile's radii in calibrated units. Synthetic data with known answers, and the real
DE movie of ../shared/realdata, whose _info.txt stores a calibration."""

import json
import math

import h5py
import numpy as np
import pytest
import tifffile

from stem_explorer import masks
from stem_explorer.analyses import CenterOfMass, RadialProfile, SumFrame, VirtualDetector, build_plan
from stem_explorer.analyses.frames import PickFrame
from stem_explorer.engine import run_local
from stem_explorer.io import open_dataset
from stem_explorer.io.calibration import electron_wavelength
from stem_explorer.results import Results

SIG = (9, 11)  # odd sizes: the geometric centre (4, 5) is a pixel


def run(ds, *analyses):
    """The analyses through the engine's partition tasks, in this process."""
    plan, finalize = build_plan(list(analyses), ds)
    parts = ds.partitions(2, target_bytes=4 * ds.frame_bytes)
    payloads = [ds.local_payload(p.start, p.stop) for p in parts]  # arrays' frames travel as payloads
    return finalize(run_local(parts, plan, payloads), np.ones(ds.n_frames, bool))


def spot_frames(nav, shifts):
    """Frames that are zero but for one bright pixel at the centre + ``shifts[i]``
    (dy, dx): the centre of mass of frame i is that shift exactly."""
    frames = np.zeros((math.prod(nav),) + SIG, np.float32)
    for i, (dy, dx) in enumerate(shifts):
        frames[i, 4 + dy, 5 + dx] = 7.0
    return frames.reshape(nav + SIG)


SHIFTS = [(1, 0), (0, 2), (-1, -1), (2, 3), (0, 0), (-3, 1)]
CALIBRATION = {"scan_step": ("0.2 nm", "0.1 nm"), "detector_pixel": ("0.5 mrad", "0.25 mrad")}


@pytest.fixture
def calibrated():
    return open_dataset(spot_frames((2, 3), SHIFTS), calibration=CALIBRATION)


def test_scan_and_detector_coordinates_are_calibrated(calibrated):
    results = run(calibrated, VirtualDetector({"bf": masks.Disk(4, 5, 3)}), SumFrame())
    bf, frame = results["vd/bf"], results["sum/frame"]
    assert bf.coord_units == {"scan_y": "nm", "scan_x": "nm"}
    np.testing.assert_allclose(bf.coords["scan_y"], [0, 0.2])
    np.testing.assert_allclose(bf.coords["scan_x"], [0, 0.1, 0.2])
    assert frame.coord_units == {"det_y": "mrad", "det_x": "mrad"}
    np.testing.assert_allclose(frame.coords["det_y"], (np.arange(9) - 4) * 0.5)  # from the centre
    np.testing.assert_allclose(frame.coords["det_x"], (np.arange(11) - 5) * 0.25)
    # the provenance records the calibration the coordinates come from
    assert results.provenance["dataset"]["calibration"]["scan_step"]["source"] == "user"


def test_uncalibrated_results_keep_pixel_indices():
    ds = open_dataset(spot_frames((2, 3), SHIFTS))
    results = run(ds, CenterOfMass(), SumFrame())
    assert results["com/shift_x"].coord_units == {"scan_y": "px", "scan_x": "px"}
    assert results["com/shift_x"].coords["scan_x"].tolist() == [0, 1, 2]
    assert results["sum/frame"].coords["det_y"].tolist() == list(range(9))
    assert "com/shift_x_calibrated" not in results


@pytest.mark.parametrize("rotation, flip", [(0.0, False), (30.0, False), (-115.0, True)])
def test_centre_of_mass_in_mrad_on_rectangular_pixels(calibrated, rotation, flip):
    """Each detector component is scaled by its own pixel size, then flipped and
    rotated as the pixel shifts are."""
    results = run(calibrated, CenterOfMass(scan_rotation=rotation, flip_y=flip))
    dy, dx = np.array(SHIFTS, float).T
    dy_mrad, dx_mrad = dy * 0.5, dx * 0.25
    if flip:
        dy, dy_mrad = -dy, -dy_mrad
    a = math.radians(rotation)
    expect_y = math.sin(a) * dx_mrad + math.cos(a) * dy_mrad
    expect_x = math.cos(a) * dx_mrad - math.sin(a) * dy_mrad
    got_y, got_x = results["com/shift_y_calibrated"], results["com/shift_x_calibrated"]
    assert got_y.attrs["units"] == got_x.attrs["units"] == "mrad"
    np.testing.assert_allclose(got_y.data.ravel(), expect_y, atol=1e-9)
    np.testing.assert_allclose(got_x.data.ravel(), expect_x, atol=1e-9)
    np.testing.assert_allclose(results["com/magnitude_calibrated"].data.ravel(), np.hypot(dy_mrad, dx_mrad), atol=1e-9)
    # the pixel results are unchanged, in px
    np.testing.assert_allclose(results["com/shift_y"].data.ravel(), math.sin(a) * dx + math.cos(a) * dy, atol=1e-9)
    assert results["com/shift_y"].attrs["units"] == "px"


def test_centre_of_mass_from_a_reciprocal_pixel_size():
    """A pixel size in 1/nm gives mrad with a beam energy (theta = q * lambda), else 1/nm."""
    frames = spot_frames((2, 3), SHIFTS)
    with_energy = open_dataset(frames, calibration={"detector_pixel": "0.1 1/nm", "beam_energy": "300 keV"})
    shift = run(with_energy, CenterOfMass())["com/shift_x_calibrated"]
    assert shift.attrs["units"] == "mrad"
    np.testing.assert_allclose(shift.data.ravel(), [dx * 0.1 * electron_wavelength(300) * 1e3 for _, dx in SHIFTS])
    without = open_dataset(frames, calibration={"detector_pixel": "0.1 1/nm"})
    shift = run(without, CenterOfMass())["com/shift_x_calibrated"]
    assert shift.attrs["units"] == "1/nm"
    np.testing.assert_allclose(shift.data.ravel(), [dx * 0.1 for _, dx in SHIFTS])


def test_radial_profile_radii_in_calibrated_units():
    frames = spot_frames((2, 3), SHIFTS)
    square = open_dataset(frames, calibration={"detector_pixel": "0.4 mrad"})
    results = run(square, RadialProfile(n_bins=4, max_radius=4.0))
    profile = results["radial/profile"]
    assert profile.coord_units["radius"] == "mrad"
    np.testing.assert_allclose(profile.coords["radius"], [0.2, 0.6, 1.0, 1.4])  # mid radii (0.5 ... 3.5 px) * 0.4
    assert profile.attrs["edges"] == [0, 1, 2, 3, 4] and profile.attrs["edges_units"] == "px"
    assert results["radial/ring_pixels"].coord_units == {"radius": "mrad"}
    rectangular = open_dataset(frames, calibration=CALIBRATION)
    profile = run(rectangular, RadialProfile(n_bins=4, max_radius=4.0))["radial/profile"]
    assert profile.coord_units["radius"] == "px" and "not square" in profile.attrs["radius_note"]


def test_to_xarray_carries_units(calibrated):
    xr = pytest.importorskip("xarray")
    results = run(calibrated, CenterOfMass(), PickFrame([(1, 2)]))
    ds = results.to_xarray()
    assert isinstance(ds, xr.Dataset)
    shift = ds["com/shift_x_calibrated"]
    assert shift.attrs["units"] == "mrad"
    assert shift["scan_x"].attrs["units"] == "nm" and shift["scan_x"].values.tolist() == pytest.approx([0, 0.1, 0.2])
    frames = results["pick/frames"].to_xarray()
    assert frames["det_y"].attrs["units"] == "mrad" and frames["position"].attrs == {}


def test_hdf5_results_are_nexus_nxdata(calibrated, tmp_path):
    results = run(calibrated, CenterOfMass(), SumFrame())
    path = results.save(tmp_path / "r.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["default"] == "entry" and f["entry"].attrs["NX_class"] == "NXentry"
        assert f["entry"].attrs["default"] == "com" and f["entry/com"].attrs["default"] == "shift_y"
        group = f["entry/com/shift_x_calibrated"]
        assert group.attrs["NX_class"] == "NXdata" and group.attrs["signal"] == "data"
        assert list(group.attrs["axes"]) == ["scan_y", "scan_x"]
        assert group.attrs["scan_y_indices"] == 0 and group.attrs["scan_x_indices"] == 1
        assert group["scan_x"].attrs["units"] == "nm"
        np.testing.assert_allclose(group["scan_x"][()], [0, 0.1, 0.2])
        assert group["data"].attrs["units"] == "mrad"
        np.testing.assert_array_equal(group["data"][()], results["com/shift_x_calibrated"].data)
        # hard links: the same object under two names, not a copy
        assert group["data"].id == f["results/com/shift_x_calibrated"].id
        frame = f["entry/sum/frame"]
        assert frame["det_y"].attrs["units"] == "mrad" and list(frame.attrs["axes"]) == ["det_y", "det_x"]
    loaded = Results.load(path)
    assert loaded["com/shift_x"].coord_units == {"scan_y": "nm", "scan_x": "nm"}
    np.testing.assert_allclose(loaded["sum/frame"].coords["det_x"], results["sum/frame"].coords["det_x"])


def test_hdf5_axes_read_by_a_nexus_reader(calibrated, tmp_path):
    """nexusformat (the NeXus project's reader), when installed, sees the axes."""
    nexus = pytest.importorskip("nexusformat.nexus")
    path = run(calibrated, SumFrame()).save(tmp_path / "r.h5")
    root = nexus.nxload(str(path))
    data = root["entry/sum/frame"]
    assert [a.nxname for a in data.nxaxes] == ["det_y", "det_x"]
    assert data.nxaxes[0].attrs["units"] == "mrad"


def test_tiff_resolution_tags(calibrated, tmp_path):
    results = run(calibrated, VirtualDetector({"bf": masks.Disk(4, 5, 3)}), SumFrame(), CenterOfMass())
    written = {p.name: p for p in results.to_tiff(tmp_path, keys=["vd/bf", "sum/frame"])}
    with tifffile.TiffFile(written["vd_bf.tif"]) as tif:
        page = tif.pages[0]
        # steps of 0.1 nm (x) and 0.2 nm (y): 1e8 and 5e7 pixels per centimetre
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        assert page.resolution == pytest.approx((1e8, 5e7))
        axes = json.loads(page.description)["axes"]
        assert axes["scan_x"] == {"origin": 0.0, "step": pytest.approx(0.1), "units": "nm"}
    with tifffile.TiffFile(written["sum_frame.tif"]) as tif:
        page = tif.pages[0]  # angles are no TIFF unit: pixels per mrad, named in the description
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.NONE
        assert page.resolution == pytest.approx((4.0, 2.0))
        assert json.loads(page.description)["axes"]["det_y"]["units"] == "mrad"
    plain = run(open_dataset(spot_frames((2, 3), SHIFTS)), SumFrame()).to_tiff(tmp_path / "plain")
    with tifffile.TiffFile(plain[0]) as tif:
        assert tif.pages[0].tags["ResolutionUnit"].value == tifffile.RESUNIT.NONE
        assert tif.pages[0].resolution == (1, 1)  # tifffile's default: no calibration


def test_real_de_movie_results_are_calibrated(realdata):
    """20241021_00405: scan steps 0.2 (y) x 0.1 (x) nm, diffraction pixels 0.1 1/nm at
    300 keV: CoM in mrad = pixels * 0.1 1/nm * lambda."""
    ds = open_dataset(realdata.file("de_mrc/20241021_00405_movie.mrc"))
    results = run(ds, CenterOfMass(), SumFrame())
    shift = results["com/shift_y"]
    assert shift.coord_units == {"scan_y": "nm", "scan_x": "nm"}
    np.testing.assert_allclose(shift.coords["scan_y"], np.arange(ds.nav_shape[0]) * 0.2)
    np.testing.assert_allclose(shift.coords["scan_x"], np.arange(ds.nav_shape[1]) * 0.1)
    mrad_per_pixel = 0.1 * electron_wavelength(300) * 1e3
    np.testing.assert_allclose(results["com/shift_y_calibrated"].data, shift.data * mrad_per_pixel, equal_nan=True)
    assert results["sum/frame"].coord_units == {"det_y": "1/nm", "det_x": "1/nm"}
