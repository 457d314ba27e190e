"""Calibration of data sets: units through pint, the sources file / user / default,
the values every format stores (synthetic files whose calibration is known, and the
real DE, ARINA and Merlin files of ../shared/realdata), overrides, bad input and
implausible stored values, serialisation, and ``stem-explorer info``."""

import json

import pytest

from stem_explorer.cli import main
from stem_explorer.errors import CalibrationError, DataSetError
from stem_explorer.io import open_dataset
from stem_explorer.io.calibration import Calibration, electron_wavelength, file_calibration
from stem_explorer.io.partitioned import write_raw_partitions
from stem_explorer.io.rosettasciio import rsciio_calibration
from stem_explorer.io.synthetic import write_blockfile
from stem_explorer.io.testing import make_frames
from test_io_formats import write_dm, write_hspy, write_py4dstem, write_ser
from test_io_mrc import RASTER, write_de


def values(part):
    return pytest.approx(list(part.values), rel=1e-6)


# -- the electron wavelength and conversions ---------------------------------------------------
@pytest.mark.parametrize("kev, picometres", [(300, 1.96875), (200, 2.50793), (100, 3.70144), (80, 4.17572)])
def test_electron_wavelength_matches_tabulated_values(kev, picometres):
    """Relativistic wavelengths: 12.2643 Å / sqrt(U (1 + 0.97848e-6 U)), U in volts."""
    assert electron_wavelength(kev) * 1e3 == pytest.approx(picometres, rel=2e-5)


def test_angle_and_reciprocal_length_convert_through_the_wavelength():
    cal = Calibration({"detector_pixel": "0.5 mrad", "beam_energy": "200 kV"})
    assert cal.beam_energy.unit == "keV" and cal.beam_energy.values == (200.0,)  # e * 200 kV
    (q, _) = cal.detector_pixel_in("1/nm")
    assert q == pytest.approx(0.5e-3 / electron_wavelength(200))  # q = theta / lambda
    back = Calibration({"detector_pixel": f"{q} 1/nm", "beam_energy": "200 keV"})
    assert back.detector_pixel_in("mrad") == pytest.approx((0.5, 0.5))
    assert back.preferred_detector_unit() == "mrad"
    # without a beam energy the kinds do not convert
    assert Calibration({"detector_pixel": "0.01 1/nm"}).detector_pixel_in("mrad") is None
    assert Calibration({"detector_pixel": "0.01 1/nm"}).preferred_detector_unit() == "1/nm"


def test_sensor_pitch_with_camera_length_is_an_angle():
    cal = Calibration({"detector_pixel": "55 um", "camera_length": "110 mm"})
    assert cal.detector_pixel.unit == "mrad"
    assert cal.detector_pixel.values == pytest.approx((0.5, 0.5))  # 55 um / 110 mm


@pytest.mark.parametrize("given, unit, expected", [
    ("5 Å", "Å", (5.0, 5.0)),
    ("2 A", "Å", (2.0, 2.0)),  # microscopy's A is the ångström
    (("0.2 nm", "100 pm"), "nm", (0.2, 0.1)),  # (y, x), converted to one unit
    ((0.3, "nm"), "nm", (0.3, 0.3)),
    ({"value": [0.4, 0.2], "unit": "nm"}, "nm", (0.4, 0.2)),
])
def test_accepted_forms(given, unit, expected):
    step = Calibration({"scan_step": given}).scan_step
    assert step.unit == unit and step.values == pytest.approx(expected) and step.source == "user"


def test_pint_quantities_are_accepted():
    import pint

    ureg = pint.UnitRegistry()  # a user's own registry
    cal = Calibration({"scan_step": ureg.Quantity([0.2, 0.1], "nm"), "beam_energy": 300 * ureg.keV})
    assert cal.scan_step.values == pytest.approx((0.2, 0.1)) and cal.beam_energy.values == (300.0,)


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("parts, message", [
    ({"scan_step": "1 mrad"}, r"scan_step: the unit 'mrad' is an angle; expected a length"),
    ({"detector_pixel": "3 keV"}, r"detector_pixel: the unit 'keV' is an energy; expected an angle"),
    ({"beam_energy": "300 s"}, r"beam_energy: the unit 's' is of another kind; expected an energy"),
    ({"camera_length": "1 parsec per bar"}, r"camera_length: the unit 'parsec per bar' is of another kind; expected a length"),
    ({"scan_step": "0.5 flurbs"}, r"scan_step: unknown unit 'flurbs'.*expected a length"),
    ({"scan_step": "0 nm"}, r"scan_step: 0.0 is not a positive finite number"),
    ({"scan_step": "-0.5 nm"}, r"scan_step: -0.5 is not a positive finite number"),
    ({"scan_step": "nan nm"}, r"scan_step: nan is not a positive finite number"),
    ({"scan_step": ("0.5 nm", "inf nm")}, r"scan_step: inf is not a positive finite number"),
    ({"scan_step": "1e30 nm"}, r"scan_step: 1e\+30 x 1e\+30 nm is implausible"),
    ({"scan_step": "1 px"}, r"scan_step: 'px' is not a physical unit; leave scan_step out"),
    ({"scan_step": "0.5"}, r"scan_step: '0.5' is not a number with a unit"),
    ({"scan_step": [1, 2, 3]}, r"cannot read"),
    ({"scan_step": ([1, 2, 3], "nm")}, r"scan_step: got 3 values"),
    ({"detector_pixel": "55 um"}, r"the sensor's pixel pitch; give camera_length too"),
    ({"scan_stepp": "1 nm"}, r"unknown part\(s\) 'scan_stepp'; the parts are scan_step, detector_pixel"),
])
def test_bad_calibrations_are_refused_naming_the_problem(parts, message):
    with pytest.raises(CalibrationError, match=message):
        Calibration(parts)


def test_open_dataset_refuses_a_bad_calibration_before_opening(tmp_path):
    """The error is the package's (a DataSetError), raised whatever the file."""
    with pytest.raises(CalibrationError, match="scan_step: the unit 'mrad' is an angle") as info:
        open_dataset(make_frames((2, 3), (4, 4), "uint16"), calibration={"scan_step": "2 mrad"})
    assert isinstance(info.value, DataSetError)
    with pytest.raises(CalibrationError, match="must be a dict"):
        open_dataset(make_frames((2, 3), (4, 4), "uint16"), calibration="0.5 nm")


# -- serialisation and overrides -----------------------------------------------------------------
def test_to_dict_round_trips_through_json_with_sources():
    cal = file_calibration("f", {"scan_step": ([0.2, 0.1], "nm"), "beam_energy": (300, "kV")})
    cal = cal.override({"detector_pixel": "0.7 mrad"})
    data = json.loads(json.dumps(cal.to_dict()))
    assert data["scan_step"] == {"value": [0.2, 0.1], "unit": "nm", "source": "file"}
    assert data["detector_pixel"]["source"] == "user"
    assert data["camera_length"] == {"value": None, "unit": None, "source": "default"}
    assert Calibration.from_dict(data) == cal


def test_default_is_pixels_everywhere():
    data = Calibration().to_dict()
    assert data["scan_step"] == {"value": [1.0, 1.0], "unit": "px", "source": "default"}
    assert data["detector_pixel"]["unit"] == "px" and data["warnings"] == []
    axes = Calibration().scan_axes((2, 3))
    assert [a[1] for a in axes] == ["px", "px"] and axes[1][0].tolist() == [0, 1, 2]


def test_coordinates():
    cal = Calibration({"scan_step": ("0.2 nm", "0.1 nm"), "detector_pixel": "0.5 mrad"})
    (y, uy), (x, ux) = cal.scan_axes((3, 4))
    assert uy == ux == "nm" and y.tolist() == pytest.approx([0, 0.2, 0.4]) and x[-1] == pytest.approx(0.3)
    (dy, u), (dx, _) = cal.detector_axes((4, 5))
    assert u == "mrad" and dy.tolist() == pytest.approx([-0.75, -0.25, 0.25, 0.75])
    assert dx.tolist() == pytest.approx([-1, -0.5, 0, 0.5, 1])
    # a 1-D scan (a stack, a list of positions) keeps frame indices
    assert cal.scan_axes((6,))[0][1] == "px"


def test_open_dataset_overrides_parts_of_the_file_calibration(tmp_path):
    path, _ = write_de(tmp_path, 6, {**RASTER, **DE_CALIBRATED})
    ds = open_dataset(path, calibration={"scan_step": "3 Å"})
    assert ds.calibration.scan_step.values == (3.0, 3.0) and ds.calibration.source("scan_step") == "user"
    assert ds.calibration.source("detector_pixel") == "file"
    assert ds.describe()["calibration"]["scan_step"]["source"] == "user"


# -- what files store -----------------------------------------------------------------------------
DE_CALIBRATED = {
    "Specimen Pixel Size X (nanometers)": 0.25,
    "Specimen Pixel Size Y (nanometers)": 0.5,
    "Diffraction Pixel Size X": 0.02,
    "Diffraction Pixel Size Y": 0.03,
    "Instrument Accelerating Voltage (V)": 200000,
    "Instrument Project Camera Length (centimeters)": 8,
}


def test_de_info_calibration(tmp_path):
    path, _ = write_de(tmp_path, 6, {**RASTER, **DE_CALIBRATED})
    cal = open_dataset(path).calibration
    assert cal.scan_step.values == (0.5, 0.25) and cal.scan_step.unit == "nm"
    assert cal.detector_pixel.values == (0.03, 0.02) and cal.detector_pixel.unit == "1/nm"
    assert cal.camera_length.to("mm") == pytest.approx((80.0,))
    assert cal.beam_energy.to("keV") == pytest.approx((200.0,))
    assert {cal.source(name) for name in ("scan_step", "detector_pixel", "camera_length", "beam_energy")} == {"file"}
    assert cal.warnings == ()


def test_de_not_set_is_pixels_without_a_warning(tmp_path):
    unset = {k: -1 for k in DE_CALIBRATED}
    path, _ = write_de(tmp_path, 6, {**RASTER, **unset})
    ds = open_dataset(path)
    assert not ds.calibration.is_calibrated and ds.calibration.warnings == ()
    assert "calibration_warnings" not in ds.metadata


@pytest.mark.parametrize("stored", ["0", "1e30", "nan", "-3", "abc"])
def test_implausible_stored_calibration_falls_back_to_pixels_with_a_warning(tmp_path, stored, capsys):
    info = {**RASTER, **DE_CALIBRATED, "Specimen Pixel Size X (nanometers)": stored,
            "Specimen Pixel Size Y (nanometers)": stored}
    path, _ = write_de(tmp_path, 6, info)
    ds = open_dataset(path)
    assert ds.calibration.scan_step is None and ds.calibration.source("scan_step") == "default"
    assert ds.calibration.detector_pixel is not None  # the plausible parts stay
    (warning,) = ds.calibration.warnings
    assert warning.startswith("scan_step: the value stored in 'acq_info.txt' is not used")
    assert "stays in pixels" in warning and "calibration={'scan_step': ...}" in warning
    assert ds.metadata["calibration_warnings"] == [warning]  # where the views read metadata
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "scan_step: pixels [default]" in out and "warning: scan_step: the value stored" in out
    # the user's value replaces the file's and its warning
    fixed = open_dataset(path, calibration={"scan_step": "0.5 nm"})
    assert fixed.calibration.warnings == () and "calibration_warnings" not in fixed.metadata


def test_ser_calibration(tmp_path):
    """A spatial TIA scan: steps from the dimension array (metres, shown in nm), the
    frames' deltas in 1/m (diffraction), shown in 1/nm."""
    data = make_frames((3, 4), (5, 6), "uint16")
    path = write_ser(tmp_path / "scan_1.ser", data, deltas=[2e-10, 1e-10], pixel=(3e7, 2e7))
    cal = open_dataset(path).calibration
    assert cal.scan_step.unit == "nm" and cal.scan_step.values == pytest.approx((0.2, 0.1))
    assert cal.detector_pixel.unit == "1/nm" and cal.detector_pixel.values == pytest.approx((0.03, 0.02))
    # a reshaped scan is not the stored one: no scan step
    assert open_dataset(path, nav_shape=(12,)).calibration.scan_step is None


@pytest.mark.parametrize("version", [3, 4])
def test_dm_calibration(tmp_path, version):
    """Dimensions are listed fastest first: (detector x, detector y, scan x, scan y) in
    the nav-major layout, scales 0.1, 0.2, 0.3, 0.4 in that order."""
    data = make_frames((3, 4), (5, 6), "uint16")
    path = write_dm(tmp_path / f"a.dm{version}", data, version=version, units=["1/nm", "1/nm", "nm", "nm"],
                    microscope={"Voltage": 300000.0, "STEM Camera Length": 115.0})
    cal = open_dataset(path).calibration
    assert cal.scan_step.unit == "nm" and cal.scan_step.values == pytest.approx((0.4, 0.3))
    assert cal.detector_pixel.unit == "1/nm" and cal.detector_pixel.values == pytest.approx((0.2, 0.1))
    assert cal.beam_energy.to("keV") == pytest.approx((300.0,))
    assert cal.camera_length.to("mm") == pytest.approx((115.0,))
    uncalibrated = write_dm(tmp_path / f"b.dm{version}", data, version=version, units=["", "", "", ""])
    cal = open_dataset(uncalibrated).calibration
    assert not cal.is_calibrated and cal.warnings == ()


def test_hspy_calibration(tmp_path):
    data = make_frames((3, 4), (5, 6), "uint16")
    path = tmp_path / "a.hspy"
    write_hspy(path, data, axes=[(0.2, "nm"), (0.1, "nm"), (0.5, "mrad"), (0.5, "mrad")],
               tem={"beam_energy": 200.0, "camera_length": 80.0})
    cal = open_dataset(path).calibration
    assert cal.scan_step.values == pytest.approx((0.2, 0.1)) and cal.detector_pixel.unit == "mrad"
    assert cal.beam_energy.values == (200.0,) and cal.camera_length.to("mm") == pytest.approx((80.0,))
    undefined = tmp_path / "b.hspy"
    write_hspy(undefined, data, axes=[(1.0, "<undefined>")] * 4)
    assert not open_dataset(undefined).calibration.is_calibrated


def test_py4dstem_emd_calibration(tmp_path):
    """py4DSTEM writes Å as "A" and 1/Å as "A^-1"."""
    data = make_frames((3, 4), (5, 6), "uint16")
    path = tmp_path / "a.h5"
    write_py4dstem(path, data, dims=[(2.0, "A"), (1.0, "A"), (0.01, "A^-1"), (0.02, "A^-1")])
    cal = open_dataset(path).calibration
    assert cal.scan_step.unit == "Å" and cal.scan_step.values == pytest.approx((2.0, 1.0))
    assert cal.detector_pixel.to("1/nm") == pytest.approx((0.1, 0.2))
    pixels = tmp_path / "b.h5"
    write_py4dstem(pixels, data, dims=[(1.0, "pixels")] * 4)
    assert not open_dataset(pixels).calibration.is_calibrated


def test_blockfile_calibration(tmp_path):
    path = write_blockfile(tmp_path / "a.blo", make_frames((3, 5), (6, 6), "uint8"))
    cal = open_dataset(path).calibration  # the writer's header: SX 1.5, SY 2.5 nm, 200 kV, 1200 x 0.1 mm
    assert cal.scan_step.values == (2.5, 1.5) and cal.scan_step.unit == "nm"
    assert cal.beam_energy.to("keV") == pytest.approx((200.0,)) and cal.camera_length.to("mm") == pytest.approx((120.0,))


def test_rsciio_signal_axes():
    """The dictionary RosettaSciIO readers return: axes in array order."""
    signal = {
        "axes": [{"scale": 0.3, "units": "nm"}, {"scale": 0.3, "units": "nm"},
                 {"scale": 0.02, "units": "1 / nm"}, {"scale": 0.02, "units": "1 / nm"}],
        "metadata": {"Acquisition_instrument": {"TEM": {"beam_energy": 300.0, "camera_length": 100.0}}},
    }
    cal = rsciio_calibration(signal, "x.hspy")
    assert cal.scan_step.values == (0.3, 0.3) and cal.detector_pixel.unit == "1/nm"
    assert cal.beam_energy.values == (300.0,)
    assert rsciio_calibration(signal, "x.hspy", reshaped=True).scan_step is None


def test_raw_partitions_keep_the_calibration(tmp_path):
    ds = open_dataset(make_frames((2, 3), (4, 4), "uint16"),
                      calibration={"scan_step": "0.5 nm", "detector_pixel": "1.5 mrad"})
    written = write_raw_partitions(tmp_path / "parts", ds)
    reopened = open_dataset(tmp_path / "parts")
    for again in (written, reopened):
        assert again.calibration.to_dict() == ds.calibration.to_dict()


def test_raw_partitions_with_a_damaged_calibration_are_pixels_with_a_warning(tmp_path):
    write_raw_partitions(tmp_path / "parts", make_frames((2, 3), (4, 4), "uint16"))
    sidecar = tmp_path / "parts" / "dataset.json"
    doc = json.loads(sidecar.read_text())
    doc["metadata"]["calibration"] = {"scan_step": {"value": [0.5, 0.5], "unit": "mrad"}}
    sidecar.write_text(json.dumps(doc))
    ds = open_dataset(tmp_path / "parts")
    assert not ds.calibration.is_calibrated
    assert "is not used (scan_step: the unit 'mrad' is an angle" in ds.metadata["calibration_warnings"][0]


# -- the real files ------------------------------------------------------------------------------
def test_real_de_movie_calibration(realdata):
    """20241021_00405_info.txt: Specimen Pixel Size Y 0.2 / X 0.1 nm, Diffraction Pixel
    Size 0.1, 300000 V, camera length 0.1 cm."""
    cal = open_dataset(realdata.file("de_mrc/20241021_00405_movie.mrc")).calibration
    assert cal.scan_step.values == (0.2, 0.1) and cal.scan_step.unit == "nm"
    assert cal.detector_pixel.values == (0.1, 0.1) and cal.detector_pixel.unit == "1/nm"
    assert cal.beam_energy.to("keV") == pytest.approx((300.0,)) and cal.camera_length.to("mm") == pytest.approx((1.0,))
    assert cal.detector_pixel_in("mrad") == pytest.approx((0.1 * electron_wavelength(300) * 1e3,) * 2)
    # the custom scan's info file says -1 (not set) for the sizes
    custom = open_dataset(realdata.file("de_mrc/Custom_movie.mrc")).calibration
    assert not custom.is_calibrated and custom.warnings == () and custom.beam_energy.values == (300.0,)


def test_real_arina_calibration(realdata):
    """test_00.h5 (STEM Metadata): Pixel Size 0.139 nm, Camera Length 0.115 m, High
    Tension 300 kV; the master's sensor pitch 100 um: 100 um / 115 mm = 0.8696 mrad."""
    ds = open_dataset(realdata.file("arina/test_00_master.h5"))
    cal = ds.calibration
    assert cal.scan_step.values == pytest.approx((0.13915206, 0.13915206)) and cal.scan_step.unit == "nm"
    assert "IsPixelSizeCalibrated is 0" in cal.scan_step.note
    assert cal.detector_pixel.unit == "mrad" and cal.detector_pixel.values == pytest.approx((100e-6 / 0.115 * 1e3,) * 2)
    assert cal.beam_energy.to("keV") == pytest.approx((300.0,))
    assert cal.warnings == ()


def test_real_merlin_stores_no_calibration(realdata):
    """Merlin .mib / .hdr files hold no scan step or camera length: pixels, no warning."""
    ds = open_dataset(realdata.file("merlin_mib/001_4x2_6bit.mib"))
    assert not ds.calibration.is_calibrated and ds.calibration.warnings == ()
    assert all(ds.calibration.source(p) == "default" for p in ("scan_step", "detector_pixel"))


def test_cli_info_prints_the_calibration(tmp_path, capsys):
    path, _ = write_de(tmp_path, 6, {**RASTER, **DE_CALIBRATED})
    assert main(["info", str(path), "--calibration", '{"beam_energy": "300 kV"}']) == 0
    out = capsys.readouterr().out
    assert "scan_step: 0.5 x 0.25 nm [file]" in out and "beam_energy: 300 keV [user]" in out
    assert "electron wavelength: 1.9687 pm" in out
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["calibration"]["detector_pixel"] == {"value": [0.03, 0.02], "unit": "1/nm", "source": "file"}
    assert main(["info", str(path), "--calibration", '{"scan_step": "2 mrad"}']) != 0
    assert "scan_step: the unit 'mrad' is an angle" in capsys.readouterr().err
