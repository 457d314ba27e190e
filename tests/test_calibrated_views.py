"""Calibrated views: the navigation view's axes, scale bar, colour bar title and hover
readout in physical units (the pick, ROI and zoom logic still in pixels); the calibration
editor; and the Explorer on a real cluster showing a data set's calibration, taking an
edited one into its results and exports, and applying the scan rotation guess."""

from __future__ import annotations

import numpy as np
import pytest

from stem_explorer.analyses.com_conventions import unorient
from stem_explorer.errors import CalibrationError
from stem_explorer.io.calibration import Calibration
from stem_explorer.results import Results
from stem_explorer.session import Session
from stem_explorer.widgets import Explorer, ImageView
from stem_explorer.widgets.calibration_panel import CalibrationPanel, spacing_pixel_size
from stem_explorer.widgets.scale import AxisMap, colour_bar_label, nice_length, readout

from test_corrections import atom_field, same_angle, spot_frames

NM_Y, NM_X = AxisMap(0.0, 0.5, "nm"), AxisMap(0.0, 0.25, "nm")


def test_scale_helpers():
    assert [nice_length(v) for v in (0.7, 1.0, 1.99, 4.9, 5.0, 9.99, 0.034, 730.0)] == [0.5, 1.0, 1.0, 2.0, 5.0, 5.0, 0.02, 500.0]
    with pytest.raises(ValueError, match="positive finite"):
        nice_length(0.0)
    for edge in (0.0, 0.5, 7.25):
        assert NM_X.to_edge(NM_X.to_data(edge)) == pytest.approx(edge)
    assert NM_X.to_data(3.5) == pytest.approx(0.75)  # the centre of pixel 3
    assert AxisMap().to_data(3.5) == 3.5 and not AxisMap().calibrated
    assert readout(3, 3, 1.5, NM_Y, NM_X, "mrad") == "y 1.5 nm, x 0.75 nm (row 3, col 3) = 1.5 mrad"
    assert readout(2, 1, float("nan"), AxisMap(), AxisMap()) == "(row 2, col 1) = not computed"
    assert colour_bar_label("magnitude", "mrad", False) == "magnitude (mrad)"
    assert colour_bar_label("image", None, True) == "log(1 + image)"


def test_image_view_with_calibrated_axes_picks_rois_and_hovers_in_pixels():
    view = ImageView(max_rate=1000)
    image = np.arange(200, dtype=np.float32).reshape(10, 20)
    view.set_image(image)
    view.set_axes(NM_Y, NM_X)
    view._throttle.flush()
    assert view.x_axis.label == "x (nm)" and view.y_axis.label == "y (nm)" and view.x_axis.tick_format != "d"
    # the scales and the image span the pixels' edges in nm: pixel 0 centred on 0
    assert tuple(view.mark.x) == pytest.approx((-0.125, 4.875)) and tuple(view.mark.y) == pytest.approx((-0.25, 4.75))
    assert (view.x_scale.min, view.x_scale.max) == pytest.approx((-0.125, 4.875))
    picks, rois = [], []
    view.on_pick(lambda r, c: picks.append((r, c)))
    view.on_roi(lambda *box: rois.append(box))
    view._on_mouse(None, {"event": "click", "domain": {"x": 3.0, "y": 1.6}}, [])  # pixel (3, 12)
    assert picks == [(3, 12)] and list(view.marker.x) == pytest.approx([3.0])  # its centre, in nm
    view._on_mouse(None, {"event": "mousemove", "domain": {"x": 3.0, "y": 1.6}}, [])
    assert view.hover.value == "y 1.5 nm, x 3 nm (row 3, col 12) = 72"
    view._on_mouse(None, {"event": "mouseleave", "domain": {}}, [])
    assert view.hover.value == ""
    view.mode.value = "roi"
    view._brush.selected_x, view._brush.selected_y = np.array([0.45, 1.4]), np.array([0.3, 1.6])
    view._on_brush({"new": False})
    assert rois == [(1, 4, 2, 6)]  # centres inside: rows 1..3 (0.5..1.5 nm), columns 2..5 (0.5..1.25 nm)
    # zooming (the browser moves the scales, in nm) sends the full-resolution region
    with view.x_scale.hold_sync(), view.y_scale.hold_sync():
        view.x_scale.min, view.x_scale.max = 0.875, 2.875  # pixel edges 4 .. 12
        view.y_scale.min, view.y_scale.max = 2.75, 0.75  # pixel edges 2 .. 6
    view._throttle.flush()
    np.testing.assert_array_equal(view.mark.image, image[2:6, 4:12])

    view.set_style("scale bar")
    view._throttle.flush()
    assert not view.x_axis.visible and not view.y_axis.visible
    assert list(view.scale_bar_label.text) == ["0.5 nm"]  # at most 0.3 of the 2 nm shown
    assert np.diff(view.scale_bar.x)[0] == pytest.approx(0.5)
    view.set_style("axes")
    assert view.x_axis.visible and len(view.scale_bar.x) == 0
    with pytest.raises(ValueError, match="style must be one of"):
        view.set_style("ruler")
    view.set_value_unit("magnitude", "mrad")
    assert view.colour_axis.label == "magnitude (mrad)"
    view.set_display(log=True)
    assert view.colour_axis.label == "log(1 + magnitude (mrad))"
    # back to pixels: the same region stays in view
    view.set_axes()
    assert (view.x_scale.min, view.x_scale.max) == pytest.approx((4.0, 12.0)) and view.x_axis.label == ""


def test_calibration_panel_checks_values_and_measures_a_spacing():
    applied = []
    distance = [0.0]
    panel = CalibrationPanel(applied.append, lambda: distance[0])
    panel.show(Calibration({"scan_step": "0.2 nm"}, warnings=["detector_pixel: the value stored in 'f' is not used"]))
    assert (panel.scan_y.value, panel.scan_unit.value) == (0.2, "nm") and panel.pixel_y.value == 0.0
    assert "not used" in panel.message.value
    panel.scan_unit.value = "mrad"  # a scan step is a length
    assert panel.apply() is None and applied == []
    assert "expected a length" in panel.message.value
    panel.scan_unit.value = "Å"
    panel.beam_energy.value = "300 kV"
    calibration = panel.apply()
    assert calibration.scan_step.values == (0.2, 0.2) and calibration.source("scan_step") == "user"
    assert calibration.beam_energy.unit == "keV" and applied == [calibration]
    assert calibration.detector_pixel is None  # left at 0: not given
    panel.spacing.value = "4.9 1/nm"
    assert panel.measure_spacing() is None and "draw two points" in panel.message.value  # no points yet
    distance[0] = 35.0
    measured = panel.measure_spacing()
    assert measured.detector_pixel.values == pytest.approx((0.14, 0.14)) and measured.detector_pixel.unit == "1/nm"
    assert spacing_pixel_size("0.25 nm", 20.0) == (pytest.approx(0.2), "1/nm")  # a d-spacing: 1/d apart
    with pytest.raises(CalibrationError, match="detector_pixel"):
        spacing_pixel_size("3 keV", 20.0)


# -- the Explorer on a real cluster -------------------------------------------------------
def write_emd(path, frames, scan_step, pixel):
    """An EMD 1.0 file (``dim<i>`` datasets with units, as py4DSTEM writes) whose scan
    axes step by ``scan_step`` and detector axes by ``pixel``, each ``(value, unit)``."""
    import h5py

    with h5py.File(path, "w") as f:
        group = f.create_group("data")
        group.attrs["emd_group_type"] = 1
        group["data"] = frames
        for i, (n, (step, unit)) in enumerate(zip(frames.shape, (scan_step, scan_step, pixel, pixel))):
            group.create_dataset(f"dim{i + 1}", data=np.arange(n) * step).attrs["units"] = unit
    return path


TRUTH = (-110.0, True)  # the scan rotation and flip that orient the detector's shifts


@pytest.fixture(scope="module")
def com_data():
    """Frames whose centre of mass is a rotated, flipped potential gradient (pixels)."""
    truth_y, truth_x = atom_field(shape=(20, 22), scale=1.5)
    return spot_frames(*unorient(truth_y, truth_x, *TRUTH))


@pytest.fixture(scope="module")
def explorer(com_data, tmp_path_factory):
    e = Explorer(com_data, n_workers=1, export_dir=str(tmp_path_factory.mktemp("exports")),
                 calibration={"scan_step": "0.3 nm", "detector_pixel": "0.5 mrad"})
    e.wait(300)  # the first job compiles the kernels: minutes on a loaded machine
    yield e
    e.close()


@pytest.mark.cluster
def test_explorer_shows_the_calibration_in_both_views(explorer):
    assert explorer.error is None
    y, x = explorer.nav.axes
    assert (y.unit, x.unit, x.step) == ("nm", "nm", pytest.approx(0.3)) and explorer.nav.x_axis.label == "x (nm)"
    assert explorer.editor.pixel_size == [0.5, 0.5] and explorer.editor.pixel_unit == "mrad"
    assert "scan step 0.3 x 0.3 nm (user)" in explorer.calibration_note.value
    assert explorer.calibration_panel.pixel_y.value == 0.5
    explorer.scale_style.value = "scale bar"
    assert explorer.nav.style == "scale bar" and explorer.editor.scale_style == "scale bar"
    explorer.scale_style.value = "axes"


@pytest.mark.cluster
def test_an_edited_calibration_reaches_the_results_and_the_export(explorer):
    explorer.analysis.value = "vd"
    explorer.wait(120)
    explorer.calibration_panel.scan_x.value = explorer.calibration_panel.scan_y.value = 2.0
    explorer.calibration_panel.scan_unit.value = "Å"
    explorer.calibration_panel.apply()
    explorer.wait(120)
    assert explorer.error is None
    image = explorer.results["vd/image"]
    assert image.coord_units["scan_x"] == "Å" and image.coords["scan_x"][1] == pytest.approx(2.0)
    assert explorer.nav.axes[1].unit == "Å" and explorer.nav.x_axis.label == "x (Å)"
    saved = Results.load(explorer.export_hdf5())
    stored = saved.provenance["dataset"]["calibration"]["scan_step"]
    assert stored == {"value": [2.0, 2.0], "unit": "Å", "source": "user"}
    assert saved["vd/image"].coord_units["scan_y"] == "Å"
    with pytest.raises(CalibrationError, match="is implausible"):
        explorer.set_calibration({"scan_step": "1e30 nm"})
    explorer.calibration_panel.scan_unit.value = "mrad"
    explorer.calibration_panel.apply()
    assert "expected a length" in explorer.calibration_panel.message.value
    assert explorer.session.dataset.calibration.scan_step.unit == "Å"  # unchanged


@pytest.mark.cluster
def test_the_rotation_guess_button_sets_the_center_of_mass_parameters(explorer):
    # a disk that holds every spot: the centre of mass counts its pixels
    explorer.editor.shapes = [{"kind": "disk", "cy": 7.0, "cx": 7.0, "radius": 6.0, "op": "add"}]
    explorer.analysis.value = "com"
    explorer.wait(300)  # the first centre of mass compiles its kernel
    assert explorer.guess_box.layout.display is None
    assert explorer.nav.colour_axis.label == "magnitude (px)"
    controls = explorer._controls("com")
    assert (controls["scan_rotation"].value, controls["flip_y"].value) == (0.0, False)
    assert curl_share(explorer.results) > 0.3  # detector axes, flipped: far from a gradient
    explorer.guess_button.click()
    explorer.wait(120)
    assert explorer.error is None, explorer.error
    assert same_angle(controls["scan_rotation"].value, TRUTH[0]) and controls["flip_y"].value is TRUTH[1]
    (com,) = explorer.results.provenance["analyses"]
    assert same_angle(com["scan_rotation"], TRUTH[0]) and com["flip_y"] is True
    assert explorer.guess_label.value.startswith("applied: ") and "flipped" in explorer.guess_label.value
    # what is left is the sampling of the Gaussians' gradient (their sigma is 1.4 steps)
    assert curl_share(explorer.results) < 0.01


def curl_share(results) -> float:
    """The share of the squared curl in curl and divergence, away from the scan's edges."""
    curl = results["com/curl"].data[1:-1, 1:-1]
    divergence = results["com/divergence"].data[1:-1, 1:-1]
    return float(np.sum(curl**2) / (np.sum(curl**2) + np.sum(divergence**2)))


@pytest.mark.cluster
def test_an_implausible_file_calibration_is_shown_as_a_warning_and_pixels(explorer, com_data, tmp_path):
    path = write_emd(tmp_path / "bad.h5", com_data[:6, :7], (1e30, "nm"), (0.5, "mrad"))
    shown = Explorer(Session(str(path), client=explorer.session.client))
    try:
        shown.wait(120)
        assert shown.error is None, shown.error
        assert "warning: scan_step: the value stored in &#x27;bad.h5&#x27; is not used" in shown.calibration_note.value
        assert "stays in pixels" in shown.calibration_note.value
        assert not shown.nav.axes[1].calibrated and shown.nav.x_axis.label == ""
        assert shown.editor.pixel_unit == "mrad"  # the plausible part is used
    finally:
        shown.close()
