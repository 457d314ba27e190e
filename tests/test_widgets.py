"""The explorer's Python side: views, pyramid, throttle, choices, and the Explorer on a
real LocalCluster (results against plain numpy, bad input shown in the widget)."""

from __future__ import annotations

import os
import re
import stat
import threading
import time

import h5py
import numpy as np
import pytest

from stem_explorer.errors import ClusterError, StemExplorerError
from stem_explorer.masks import Disk, Ring, rasterize
from stem_explorer.sample import make_sample
from stem_explorer.widgets import Explorer, ImageView
from stem_explorer.widgets import choices
from stem_explorer.widgets.export import colorize, colormap_lut, save_png
from stem_explorer.widgets.pyramid import Pyramid, block_means
from stem_explorer.widgets.throttle import Throttle
from stem_explorer.widgets.views import as_image, display_values


# -- pyramid ---------------------------------------------------------------------------
def test_block_means_ignore_nan_and_pad_ragged_edges():
    image = np.arange(15, dtype=np.float32).reshape(3, 5)
    image[0, 0] = np.nan
    half = block_means(image, 2)
    assert half.shape == (2, 3)
    assert half[0, 0] == pytest.approx(np.nanmean([np.nan, 1, 5, 6]))
    assert half[1, 2] == image[2, 4]  # the corner block holds one real pixel
    assert np.isnan(block_means(np.full((2, 2), np.nan, np.float32), 2)).all()


@pytest.mark.parametrize("shape", [(5120, 256), (37, 11), (1, 300), (64, 64)])
def test_pyramid_levels_are_the_nan_ignoring_means_of_their_blocks(shape):
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    image[image < 0.3] = np.nan  # a partly filled result
    pyramid = Pyramid(image)
    for k in range(4):
        step = 2**k
        level = pyramid.level(k)
        assert level.shape == (-(-shape[0] // step), -(-shape[1] // step))
        for i, j in [(0, 0), (level.shape[0] - 1, level.shape[1] - 1), (level.shape[0] // 2, level.shape[1] // 3)]:
            block = image[i * step : (i + 1) * step, j * step : (j + 1) * step]
            if np.isfinite(block).any():
                assert level[i, j] == pytest.approx(np.nanmean(block), rel=1e-6)
            else:
                assert np.isnan(level[i, j])


def test_pyramid_tiles_fit_the_budget_and_zoomed_regions_are_full_resolution():
    image = np.random.default_rng(0).random((2048, 1536)).astype(np.float32)
    pyramid = Pyramid(image)
    whole = pyramid.tile(0, 2048, 0, 1536, budget=512)
    assert max(whole.data.shape) <= 512 and whole.step == 4
    assert (whole.y0, whole.y1, whole.x0, whole.x1) == (0, 2048, 0, 1536)
    np.testing.assert_allclose(whole.data[0, 0], image[:4, :4].mean(), rtol=1e-6)
    zoom = pyramid.tile(100.5, 400, 200, 500.2, budget=512)
    assert zoom.step == 1
    np.testing.assert_array_equal(zoom.data, image[zoom.y0 : zoom.y1, zoom.x0 : zoom.x1])
    assert (zoom.y0, zoom.x0) == (100, 200) and zoom.y1 >= 400 and zoom.x1 >= 500
    off = pyramid.tile(5000, 6000, 0, 10, budget=512)  # panned away: the whole image
    assert (off.y0, off.y1) == (0, 2048)
    with pytest.raises(ValueError, match="2-D"):
        Pyramid(np.zeros(5))


# -- throttle --------------------------------------------------------------------------
def test_throttle_sends_the_newest_value_at_most_max_rate():
    sent, done = [], threading.Event()

    def send(value):
        sent.append((time.perf_counter(), value))
        if value == 199:
            done.set()

    throttle = Throttle(send, max_rate=20)
    for i in range(200):
        throttle.submit(i)
        time.sleep(0.002)
    assert done.wait(2), "the newest value was never sent"
    gaps = np.diff([t for t, _ in sent])
    assert len(sent) < 30 and (gaps >= 0.045).all()
    assert sent[-1][1] == 199


def test_throttle_drop_and_errors():
    errors = []
    throttle = Throttle(lambda v: 1 / 0, max_rate=1000, on_error=errors.append)
    throttle.submit(1)
    assert isinstance(errors[0], ZeroDivisionError)
    got = []
    slow = Throttle(got.append, max_rate=2)
    slow.submit("first")
    slow.submit("stale")
    slow.drop()
    time.sleep(0.7)
    assert got == ["first"]
    with pytest.raises(ValueError, match="max_rate"):
        Throttle(print, max_rate=0)


def test_throttle_submit_from_inside_send_does_not_deadlock():
    """A view's send changes its zoom, which submits again; when the send outlasts the
    interval (a loaded machine) that submit re-entered the send lock in the same thread."""
    got = []

    def send(value):
        got.append(value)
        if value == "first":
            time.sleep(0.02)  # longer than the 1 ms interval
            throttle.submit("from inside")

    throttle = Throttle(send, max_rate=1000)
    caller = threading.Thread(target=throttle.submit, args=("first",), daemon=True)
    caller.start()
    caller.join(5)
    assert not caller.is_alive(), "submit from inside send deadlocked"
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == ["first", "from inside"]


# -- views ----------------------------------------------------------------------------
def test_as_image_and_log_display():
    assert as_image(np.arange(5)).shape == (1, 5)
    assert as_image(np.zeros((2, 3, 4))).shape == (6, 4)
    values = display_values(np.array([[-1.0, 0.0, np.e - 1, np.nan]]), log=True)
    np.testing.assert_allclose(values[0, :3], [0.0, 0.0, 1.0])
    assert np.isnan(values[0, 3])


def test_image_view_sends_binary_tiles_and_keeps_the_aspect_ratio():
    view = ImageView(budget=64, max_rate=1000)
    image = np.random.default_rng(1).random((200, 100)).astype(np.float32)
    image[:10] = np.nan
    view.set_image(image)
    view._throttle.flush()
    assert view.mark.image.dtype == np.float32 and max(view.mark.image.shape) <= 64
    assert tuple(view.mark.y) == (0.0, 200.0) and tuple(view.mark.x) == (0.0, 100.0)
    assert view.figure.min_aspect_ratio == view.figure.max_aspect_ratio
    margin = view.figure.fig_margin
    area_w = float(view.figure.layout.width[:-2]) - margin["left"] - margin["right"]
    area_h = float(view.figure.layout.height[:-2]) - margin["top"] - margin["bottom"]
    assert area_w / area_h == pytest.approx(0.5, abs=0.02)
    lo, hi = view.limits
    assert np.nanpercentile(image, 0.4) <= lo < hi <= np.nanpercentile(image, 99.6)
    # zooming in (the browser moves the scales) sends the full-resolution region
    with view.x_scale.hold_sync(), view.y_scale.hold_sync():
        view.x_scale.min, view.x_scale.max = 10.0, 40.0
        view.y_scale.min, view.y_scale.max = 60.0, 20.0
    view._throttle.flush()
    np.testing.assert_array_equal(view.mark.image, image[20:60, 10:40])
    view.set_limits(0.2, 0.3)
    assert view.limits == (0.2, 0.3)
    with pytest.raises(ValueError, match="vmin < vmax"):
        view.set_limits(0.3, np.nan)


def test_image_view_pick_and_roi_events():
    view = ImageView(max_rate=1000)
    view.set_image(np.zeros((10, 20)))
    picks, rois = [], []
    view.on_pick(lambda r, c: picks.append((r, c)))
    view.on_roi(lambda *box: rois.append(box))
    view._on_mouse(None, {"event": "click", "domain": {"x": 12.7, "y": 3.2}}, [])
    view._on_mouse(None, {"event": "click", "domain": {"x": 25.0, "y": 3.0}}, [])  # outside
    assert picks == [(3, 12)] and list(view.marker.x) == [12.5]  # pixel centre
    view.mode.value = "roi"
    assert view.figure.interaction is view._brush
    view._brush.selected_x, view._brush.selected_y = np.array([2.2, 5.9]), np.array([1.0, 3.6])
    view._on_brush({"new": False})
    assert rois == [(1, 4, 2, 6)]  # pixel (r, c) spans [r, r+1) x [c, c+1): centres inside are rows 1..3, columns 2..5


# -- choices --------------------------------------------------------------------------
def test_estimate_beam_finds_the_disk():
    yy, xx = np.indices((64, 80))
    frame = np.where((yy - 30.0) ** 2 + (xx - 45.0) ** 2 <= 8.0**2, 1000.0, 5.0)
    frame[0, 0] = 1e6  # a hot pixel must not move the estimate
    beam = choices.estimate_beam(frame)
    assert beam.cy == pytest.approx(30, abs=0.3) and beam.cx == pytest.approx(45, abs=0.3)
    assert beam.radius == pytest.approx(8, abs=0.5)
    flat = choices.estimate_beam(np.ones((32, 48)))
    assert (flat.cy, flat.cx, flat.radius) == (15.5, 23.5, 4.0)
    ring = beam.annulus((64, 80))
    assert ring.r_inner > beam.radius and ring.r_outer <= 30


def test_build_analysis_and_result_keys():
    from stem_explorer.results import ResultArray, Results

    beam = choices.Beam(20.0, 21.0, 5.0)
    with pytest.raises(choices.NeedsMask):
        choices.build_analysis(choices.Choice("vd"), None, beam)
    com = choices.build_analysis(choices.Choice("com", params={"scan_rotation": 12.0}), Disk(19, 22, 9), beam)
    assert (com.center, com.radius, com.scan_rotation) == ((19, 22), 9, 12.0)
    scan = ("scan_y", "scan_x")
    results = Results({f"com/{n}": ResultArray(n, np.zeros((2, 3)), scan) for n in ("shift_y", "magnitude", "curl")})
    assert choices.result_key(choices.Choice("com", component="curl"), com, results) == "com/curl"
    assert choices.result_key(choices.Choice("com"), com, results) == "com/magnitude"  # CoM's preferred one
    whole = choices.build_analysis(choices.Choice("com"), Ring(1, 2, 3, 4), beam)
    assert whole.radius is None and whole.center == (20.0, 21.0)
    with pytest.raises(StemExplorerError, match="scan_rotation must be a finite number from -360 to 360"):
        choices.build_analysis(choices.Choice("com", params={"scan_rotation": float("nan")}), None, beam)
    radial = choices.build_analysis(choices.Choice("radial", params={"n_bins": 8}), Ring(10, 11, 3, 4), beam)
    assert radial.n_bins == 8 and radial.center == (10, 11)
    assert choices.build_analysis(choices.Choice("radial", params={"n_bins": 8}), None, beam, point=(7, 8)).center == (7, 8)
    profile = Results({"radial/profile": ResultArray("profile", np.arange(24.0).reshape(2, 3, 4), scan + ("radius",)),
                       "radial/ring_pixels": ResultArray("ring_pixels", np.ones(4), ("radius",))})
    assert choices.scan_images(profile, "radial") == ["profile"]
    assert choices.result_key(choices.Choice("radial"), radial, profile) == "radial/profile"
    assert choices.extra_length(profile, "radial/profile") == 4
    shown = choices.navigation_image(choices.Choice("radial", index=2), profile, "radial/profile")
    np.testing.assert_array_equal(shown, np.arange(24.0).reshape(2, 3, 4)[..., 2])
    adf = choices.build_analysis(choices.Choice("adf"), Ring(1, 2, 3, 4), beam)
    assert adf.name == "adf" and adf.masks == {"image": Ring(1, 2, 3, 4)}
    with pytest.raises(StemExplorerError, match="unknown analysis 'nope'"):
        choices.build_analysis(choices.Choice("nope"), None, beam)


def test_the_selector_and_controls_come_from_the_declarations():
    from stem_explorer.widgets import controls

    keys = [key for _, key in choices.selector()]
    assert keys[:2] == ["vd", "adf"]
    assert {"com", "radial", "fem", "std", "sum", "mean", "max"} <= set(keys)
    assert "pick" not in keys and "roi" not in keys  # from clicks on the navigation view
    com = controls.controls_for(choices.analysis_class("com"))
    assert list(com) == ["scan_rotation", "flip_y"]  # centre and radius come from the detector view
    rotation = com["scan_rotation"]
    assert (rotation.min, rotation.max, rotation.value, rotation.description) == (-360, 360, 0.0, "scan rotation (degrees)")
    radial = controls.controls_for(choices.analysis_class("radial"))
    assert list(radial) == ["n_bins"] and (radial["n_bins"].value, radial["n_bins"].min, radial["n_bins"].max) == (16, 1, 4096)


# -- export ---------------------------------------------------------------------------
def test_colorize_and_png(tmp_path):
    lut = colormap_lut("gray")
    assert lut.shape == (256, 3) and tuple(lut[0]) == (0, 0, 0) and tuple(lut[-1]) == (255, 255, 255)
    rgba = colorize(np.array([[0.0, 1.0, np.nan]]), 0.0, 1.0, "viridis")
    assert tuple(rgba[0, 0, :3]) == (0x44, 0x01, 0x54) and rgba[0, 2, 3] == 0
    path = save_png(tmp_path / "v.png", np.random.rand(8, 9), 0, 1, "magma")
    from PIL import Image

    assert Image.open(path).size == (9, 8)
    old = os.umask(0o022)
    try:  # shared with colleagues like any file the user writes (mkstemp gave 0o600)
        assert stat.S_IMODE(os.stat(save_png(tmp_path / "w.png", np.ones((2, 2)), 0, 1, "gray")).st_mode) == 0o644
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.png", "w.png"]
    with pytest.raises(ValueError, match="unknown colour map"):
        colormap_lut("jet")


# -- the Explorer on a real cluster ------------------------------------------------------------
@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = make_sample(tmp_path_factory.mktemp("explorer") / "s.h5", nav_shape=(12, 20), sig_shape=(40, 36))
    with h5py.File(path) as f:
        data = f["data/frames"][()].astype(np.float64)
    return path, data


@pytest.fixture(scope="module")
def explorer(sample, tmp_path_factory):
    e = Explorer(str(sample[0]), n_workers=2, export_dir=str(tmp_path_factory.mktemp("exports")))
    e.wait(120)
    yield e
    e.close()


@pytest.mark.cluster
def test_explorer_opens_with_the_bright_field_image(explorer, sample):
    _, data = sample
    assert explorer.error is None
    # the status line: the job's throughput and what its workers used
    assert re.search(r"done: [\d.]+ GB/s, [\d.]+ s, [\d.]+ CPU s on [12] workers, peak \d+ MiB per worker",
                     explorer.status.value)
    np.testing.assert_array_equal(explorer.detector_image(), data.sum(axis=(0, 1)))
    (disk,) = explorer.editor.shapes
    assert disk["kind"] == "disk"
    reference = np.einsum("abyx,yx->ab", data, rasterize(explorer.editor.mask(), data.shape[2:]))
    np.testing.assert_allclose(explorer.results["vd/image"].data, reference, rtol=1e-6)
    np.testing.assert_allclose(explorer.navigation_image(), reference, rtol=1e-6)


@pytest.mark.cluster
def test_explorer_mask_changes_pick_roi_and_analyses(explorer, sample):
    _, data = sample
    explorer.analysis.value = "vd"
    explorer.editor.shapes = [
        {"kind": "rectangle", "y0": 3, "x0": 4, "height": 10, "width": 30, "op": "add"},
        {"kind": "disk", "cy": 8, "cx": 10, "radius": 3, "op": "subtract"},
    ]
    explorer.wait(60)
    reference = np.einsum("abyx,yx->ab", data, rasterize(explorer.editor.mask(), data.shape[2:]))
    np.testing.assert_allclose(explorer.results["vd/image"].data, reference, rtol=1e-6)
    explorer._pick(7, 13)
    explorer.wait(60)
    np.testing.assert_array_equal(explorer.detector_image(), data[7, 13])
    frame_bytes = explorer.session.dataset.frame_bytes
    assert explorer._detector_job.stats.bytes_done == frame_bytes  # a click reads its frame only
    explorer._roi(2, 5, 3, 9)
    explorer.wait(60)
    np.testing.assert_array_equal(explorer.detector_image(), data[2:5, 3:9].sum(axis=(0, 1)))
    assert explorer._detector_job.stats.bytes_done == 3 * 6 * frame_bytes
    for kind, key in [("com", "com/magnitude"), ("radial", "radial/profile"), ("fem", "fem/normalized_variance")]:
        explorer.analysis.value = kind
        explorer.wait(60)
        assert explorer.error is None and key in explorer.results
    explorer.analysis.value = "std"
    explorer.wait(60)
    np.testing.assert_allclose(explorer.detector_image(), data.reshape(-1, *data.shape[2:]).std(axis=0), rtol=1e-5)
    explorer.analysis.value = "vd"
    explorer.wait(60)
    assert "session.compute(VirtualDetector(" in explorer.code()
    h5 = explorer.export_hdf5()
    with h5py.File(h5) as f:
        assert "provenance" in f.attrs or any("provenance" in k for k in f.attrs)
    assert explorer.export_png().exists()
    assert len(explorer.export_tiff()) >= 1


@pytest.mark.cluster
def test_a_mask_change_shows_the_reduced_copys_preview_labelled_then_the_exact_image(explorer, sample, monkeypatch):
    from stem_explorer.engine import reduced_copy

    monkeypatch.setattr(reduced_copy, "PREVIEW_WORTH_S", 0.0)  # the sample's pass takes milliseconds
    _, data = sample
    explorer.analysis.value = "vd"
    explorer.wait(60)
    assert explorer.session.reduced_copy.usable  # left by the sum frame's pass
    statuses, labels = [], []
    explorer.status.observe(lambda change: statuses.append(change["new"]), "value")
    explorer.nav.colour_axis.observe(lambda change: labels.append(change["new"]), "label")
    explorer.editor.shapes = [{"kind": "disk", "cy": 20, "cx": 17, "radius": 6, "op": "add"}]
    explorer.wait(60)
    assert any("preview from the reduced copy in memory (2 x 2 binned detector)" in text for text in statuses)
    assert any("(preview)" in label for label in labels) and "(preview)" not in explorer.nav.colour_axis.label
    assert "done" in explorer.status.value
    reference = np.einsum("abyx,yx->ab", data, rasterize(explorer.editor.mask(), data.shape[2:]))
    np.testing.assert_allclose(explorer.navigation_image(), reference, rtol=1e-6)


def test_the_status_line_says_why_a_preview_comes_from_the_coarse_grid():
    from stem_explorer.engine import Progress
    from stem_explorer.engine.reduced_copy import ReducedCopy, plan_copy
    from stem_explorer.widgets.usage import preview_text

    spec, reason = plan_copy((512, 640), (256, 256), np.dtype("uint16"), 2**20, 4)
    filled, exact = np.ones((4, 4), bool), np.zeros((4, 4), bool)
    grid = Progress(None, filled, 0, 4, 0, 0.1, False, preview_stride=12, preview_source="grid", exact=exact)
    text = preview_text(grid, ReducedCopy(spec, 2**20, reason))
    assert "coarse preview (one scan row and column in 12)" in text and "budget (1.0 MiB) is too small" in text
    assert preview_text(Progress(None, filled, 4, 4, 0, 0.1, True, preview_source="grid", exact=filled), None) == ""


@pytest.mark.cluster
def test_explorer_shows_hints_for_bad_masks(explorer):
    explorer.analysis.value = "vd"
    explorer.editor.shapes = [{"kind": "polygon", "vertices": [[1, 1], [5, 5]], "op": "add"}]
    assert "3" in explorer.editor.hint and explorer.editor.shapes == []
    assert "draw a mask" in explorer.status.value
    explorer.editor.shapes = [{"kind": "disk", "cy": 500, "cx": 500, "radius": 3, "op": "add"}]
    assert explorer.editor.shapes == [] and explorer.editor.hint
    explorer.editor.shapes = [{"kind": "disk", "cy": 0, "cx": 0, "radius": 6, "op": "add"}]  # partly outside: clipped
    explorer.wait(60)
    assert explorer.error is None and explorer.results is not None


def test_explorer_shows_a_data_set_that_fails_to_open(tmp_path):
    missing = tmp_path / "nope.h5"
    e = Explorer(str(missing))
    try:
        assert e.session is None
        assert "could not open the data set" in e.status.value and "nope.h5" in e.status.value
        assert "se-error" in e.status.value
    finally:
        e.close()


@pytest.mark.cluster
def test_explorer_shows_a_failure_to_draw_a_partial_result(explorer, monkeypatch):
    """A job's callback that raised does not fail the job, but the explorer says so."""
    from stem_explorer.widgets import choices

    def broken(*_args, **_kwargs):
        raise RuntimeError("the image could not be drawn")

    monkeypatch.setattr(choices, "navigation_image", broken)
    try:
        explorer.refresh()
        explorer.wait(60)
        assert "showing a partial result failed" in explorer.status.value
        assert "the image could not be drawn" in explorer.status.value
    finally:
        monkeypatch.undo()
        explorer.error = None  # the shared explorer goes on for the next tests
        explorer.refresh()
        explorer.wait(60)
    assert explorer.error is None and "done" in explorer.status.value


def test_explorer_offers_a_new_cluster_when_workers_died(explorer):
    """Not only a lost scheduler: any cluster failure (workers that keep dying) offers
    a new session."""
    explorer._handle_failure(ClusterError("3 dask workers died running the task 'x'"))
    try:
        assert "workers died" in explorer.status.value
        assert explorer.reconnect_button.layout.display != "none"
    finally:
        explorer.reconnect_button.layout.display = "none"
        explorer.error = None


@pytest.mark.cluster
def test_explorer_reports_a_lost_cluster_and_reconnects(sample):
    e = Explorer(str(sample[0]), n_workers=1)
    try:
        e.wait(120)
        e.session._cluster.close()  # the cluster goes away under the explorer
        e.session.client.close()
        e.refresh()
        e.wait(60)  # the job's watcher reports the failure
        assert "cluster went away" in e.status.value
        assert e.reconnect_button.layout.display != "none"
        e._reconnect()
        e.wait(120)
        assert e.error is None or "cluster" not in e.status.value
        assert e.results is not None and e.reconnect_button.layout.display == "none"
    finally:
        e.close()


@pytest.mark.cluster
def test_detector_colour_limits_are_adjustable(explorer):
    explorer.detector_vmin.value, explorer.detector_vmax.value = 3.0, 70.0
    assert (explorer.editor.vmin, explorer.editor.vmax) == (3.0, 70.0)
    explorer._rescale_detector()
    assert explorer.editor.vmin != 3.0 and explorer.detector_vmax.value == explorer.editor.vmax


@pytest.mark.cluster
def test_dragging_runs_one_job_at_a_time_and_the_drag_end_computes_the_final_shape(explorer, sample):
    """Shape updates at the browser's frame rate during a drag do not queue jobs: a new
    one starts only once the current one drew (or the drag ends); the final shape wins."""
    _, data = sample
    started = []
    run = explorer.session.run

    def counting_run(*args, **kwargs):
        started.append(args)
        return run(*args, **kwargs)

    explorer.session.run = counting_run
    try:
        explorer.editor.dragging = True
        explorer._nav_drawn = False  # as if the job of the drag's first update still ran
        for r in (3.0, 4.0, 5.0):
            explorer.editor.shapes = [{"kind": "disk", "cy": 8.0, "cx": 8.0, "radius": r, "op": "add"}]
        assert started == [] and explorer._drag_pending
        explorer.editor.dragging = False  # the drag ends: the final shape is computed
        explorer.wait(60)
    finally:
        explorer.session.run = run
    assert len(started) == 1
    final = Disk(8.0, 8.0, 5.0)
    reference = np.einsum("abyx,yx->ab", data, rasterize(final, data.shape[2:]))
    np.testing.assert_allclose(explorer.results["vd/image"].data, reference, rtol=1e-6)


@pytest.mark.cluster
def test_explorer_draws_partials_from_before_run_returns_but_never_a_superseded_jobs(explorer, sample):
    """A job may deliver its first partial before ``Session.run`` returns (a preview
    computed in the kernel); it is drawn. A superseded job's partial never is."""
    _, data = sample
    run = explorer.session.run
    early = []

    def run_delivering_early(*args, on_partial=None, **kwargs):
        job = run(*args, **kwargs)  # the job's own partials go nowhere ...
        progress = job.progress(timeout=60)
        on_partial(progress)  # ... but this one, before run() returns
        early.append((on_partial, progress))
        return job

    def expected(shape):
        return np.einsum("abyx,yx->ab", data, rasterize(Disk(**shape), data.shape[2:]))

    first, second = ({"cy": 8.0, "cx": 8.0, "radius": r} for r in (3.0, 6.0))
    explorer.analysis.value = "vd"
    explorer.session.run = run_delivering_early
    try:
        for shape in (first, second):
            explorer.editor.shapes = [{"kind": "disk", **shape, "op": "add"}]
            explorer.wait(60)
            np.testing.assert_allclose(explorer.navigation_image(), expected(shape), rtol=1e-6)
        stale_deliver, stale_progress = early[0]
        stale_deliver(stale_progress)  # the first job's callback, after the second started
    finally:
        explorer.session.run = run
    np.testing.assert_allclose(explorer.navigation_image(), expected(second), rtol=1e-6)


@pytest.fixture
def bright_pixels():
    """A user-defined analysis, registered for the test only."""
    from stem_explorer import analyses as an

    @an.register
    class BrightPixels(an.FrameAnalysis):
        """Pixels above a threshold inside the drawn mask, per frame."""

        label = "bright_px"
        threshold = an.Number(50.0, minimum=0, unit="counts", help="Count pixels brighter than this.")
        region = an.MaskParam(help="Where to count.")

        def process_tile(self, frames, out):
            inside = self.region.rasterize(frames.shape[1:]) > 0
            out[:, 0] = ((frames > self.threshold) & inside).sum(axis=(1, 2))

    yield BrightPixels
    an.REGISTRY.unregister("BrightPixels")


@pytest.mark.cluster
def test_a_registered_analysis_is_in_the_selector_with_its_controls_and_streams_into_the_navigation_view(explorer, sample, bright_pixels):
    _, data = sample
    e = Explorer(explorer.session)
    try:
        e.wait(60)
        assert ("BrightPixels", "bright_px") in e.analysis.options
        e.editor.shapes = [{"kind": "disk", "cy": 18.0, "cx": 17.0, "radius": 9.0, "op": "add"}]
        e.analysis.value = "bright_px"
        e.wait(60)
        inside = rasterize(Disk(18.0, 17.0, 9.0), data.shape[2:]) > 0
        np.testing.assert_array_equal(e.results["bright_px/value"].data, ((data > 50) & inside).sum(axis=(2, 3)))
        np.testing.assert_array_equal(e.navigation_image(), ((data > 50) & inside).sum(axis=(2, 3)))
        threshold = e.param_controls["bright_px"]["threshold"]
        assert threshold.description == "threshold (counts)"
        threshold.value = 120.0
        e.wait(60)
        np.testing.assert_array_equal(e.results["bright_px/value"].data, ((data > 120) & inside).sum(axis=(2, 3)))
        assert "BrightPixels(threshold=120.0, region=masks.from_dict(" in e.code()
        threshold.value = -5.0
        assert "BrightPixels threshold must be a non-negative finite number in counts, got -5.0" in e.status.value
    finally:
        e.close()


# -- the Explorer on a live source ---------------------------------------------------------------
def test_acquisition_text_says_frames_received_dropped_and_the_end():
    from stem_explorer.errors import AcquisitionError
    from stem_explorer.io.live import LiveStats
    from stem_explorer.widgets.usage import acquisition_text

    stats = LiveStats(frames_expected=4096, frames_received=120)
    assert acquisition_text("acquiring", stats) == "recording 120 of 4096 frames"
    stats.frames_dropped = 3
    assert acquisition_text("acquiring", stats) == (
        "recording 120 of 4096 frames &nbsp;·&nbsp; 3 dropped by the detector (recorded as zeros)")
    stats.frames_received, stats.frames_dropped = 4096, 0
    assert acquisition_text("complete", stats) == "acquisition complete: 4096 of 4096 frames"
    error = AcquisitionError("acquisition interrupted after 7 of 12 frames: <connection reset>")
    assert acquisition_text("interrupted", stats, error) == (
        "acquisition interrupted after 7 of 12 frames: &lt;connection reset&gt;")
    # a mask changed mid-scan on a spool: the image starts where the spool still held frames
    assert acquisition_text("complete", stats, first_frame=128) == (
        "acquisition complete: 4096 of 4096 frames &nbsp;·&nbsp; the image shows frames 128 on: the earlier "
        "ones were read and discarded before this mask (record to a folder to keep every frame)")


@pytest.mark.cluster
@pytest.mark.parametrize("written", [40, 25], ids=["complete", "interrupted"])
def test_explorer_status_line_counts_the_frames_of_a_live_source(explorer, tmp_path, written):
    """A DE movie of 40 frames written frame by frame into a watched folder (a live
    source without a network): while it is written the Explorer's acquisition line
    says "recording N of 40 frames", N growing, updated at most PROGRESS_RATE times a
    second; then "acquisition complete: 40 of 40 frames", or, when the writer stops
    after 25 frames, the interruption. A file's explorer shows no such line."""
    from live_helpers import staged_de_movie
    from stem_explorer.live import watch
    from stem_explorer.widgets.explorer import PROGRESS_RATE

    assert explorer.acquisition_status.layout.display == "none"
    frames = np.random.default_rng(4).integers(0, 100, (40, 10, 10)).astype(np.uint16)
    _movie, folder, writer = staged_de_movie(tmp_path, frames, (5, 8), delay=0.1, stop=written)  # slow enough to outlast the Explorer's start under load
    live = watch(folder, "*_movie.mrc", idle_timeout=1.5)
    shown = []
    e = Explorer(live, client=explorer.session.client)
    try:
        e.acquisition_status.observe(lambda change: shown.append((time.perf_counter(), change["new"])), names="value")
        assert writer.wait(60) == 0
        deadline = time.monotonic() + 60
        while not (shown and not shown[-1][1].startswith("recording")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        writer.stdin.close()
        e.close()
    counts = [int(re.match(r"recording (\d+) of 40 frames$", text)[1]) for _t, text in shown[:-1]]
    assert len(counts) >= 2 and counts == sorted(counts) and 0 < counts[0] < 40 and counts[-1] <= written
    times = [t for t, _text in shown[:-1]]
    assert min(np.diff(times)) >= 0.9 / PROGRESS_RATE  # throttled, though frames came every 0.1 s
    final = shown[-1][1]
    if written == 40:
        assert final == "acquisition complete: 40 of 40 frames"
    else:
        assert final.startswith("acquisition interrupted after 25 of 40 frames: no new frame for 1.5 s")
