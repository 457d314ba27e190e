"""The explorer: navigation view, detector view with mask editor, controls; live results.

Widgets never touch files or dask directly: every computation goes through
:class:`stem_explorer.Session` (``session.run``), whose jobs stream partial results.
"""

from __future__ import annotations

import contextlib
import datetime
import html
import math
import threading
import time
from pathlib import Path
from typing import Any, Optional

import ipywidgets as widgets
import numpy as np

from ..analyses import PickFrame, RoiSum, StdFrame, SumFrame, guess_corrections
from ..errors import ClusterError, JobCancelledError, StemExplorerError
from .. import masks
from ..masks import Rectangle
from ..session import Session
from ..session_group import is_many
from . import choices, controls
from .calibration_panel import CalibrationPanel
from .choices import Beam, Choice, NeedsMask
from .descan_control import DescanControl
from .export import save_png
from .mask_editor import MaskEditor
from .scale import STYLES, AxisMap
from .throttle import Throttle
from .usage import acquisition_text, done_text, live_usage_text, preview_text
from .views import ImageView, as_image

#: Progress bar updates a second, at most, while a job runs.
PROGRESS_RATE = 5.0
#: Colour maps of both views: (name in the mask editor, bqplot scheme, reversed).
COLORMAPS = {"viridis": ("viridis", False), "magma": ("magma", False), "inferno": ("inferno", False), "gray": ("Greys", True)}


class Explorer(widgets.VBox):
    """Interactive 4D-STEM explorer for Jupyter.

    ``Explorer(source)`` takes a path (opened with ``open_options``), a numpy/dask
    array, a :class:`~stem_explorer.io.DataSet` or a :class:`~stem_explorer.Session`.
    Without a session one is started (embedded LocalCluster unless ``address`` or
    ``client`` is given, or ``cluster="gateway"``: a cluster of ``n_workers`` from the
    site's dask-gateway, see :class:`~stem_explorer.Session`) and closed by :meth:`close`.
    A list of sources, or a folder of data sets, gives a
    :class:`~stem_explorer.widgets.CompareExplorer` instead.

    Draw masks in the detector view; the navigation view fills in live as partitions
    finish. Click the navigation view to see that frame, drag a rectangle in ROI mode
    to see the summed pattern of the region. Both views show the data set's
    calibration as axes or a scale bar; the "calibration" panel edits it
    (:meth:`set_calibration`), and the centre of mass's "guess rotation" button sets its
    scan rotation and flip from the field (:meth:`guess_scan_rotation`).
    """

    def __new__(cls, source: Any = None, *args, **kwargs):
        # several data sets (a list, a folder of data sets): the compare view
        if is_many(source):
            from .compare import CompareExplorer

            return CompareExplorer(source, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        source: Any,
        *,
        address: Optional[str] = None,
        client=None,
        cluster: Optional[str] = None,
        n_workers: Optional[int] = None,
        export_dir: str = "stem_explorer_exports",
        size: int = 400,
        **open_options,
    ):
        self._source = source
        self._open_options = open_options
        self._cluster_options = {"address": address, "client": client, "cluster": cluster, "n_workers": n_workers}
        self.export_dir = Path(export_dir)
        self.session: Optional[Session] = None
        self.results = None  # final results of the navigation analysis
        self.beam: Optional[Beam] = None
        self.error: Optional[str] = None
        # guards the job slots and the drag state; job callbacks may take it, because a
        # job never waits for its callbacks (cancel() returns at once, callbacks run
        # outside the job's lock). Reentrant: a partial result may be delivered while
        # its own start still holds it (in the starting thread, before run() returns)
        self._lock = threading.RLock()
        # the editor's shapes are validated as mask dicts: load the validator meanwhile
        threading.Thread(target=masks.prepare_validation, name="stem-explorer-validator", daemon=True).start()
        self._nav_job = None
        self._detector_job = None
        self._runs: dict = {}  # job slot -> token of the latest start (see _replace_job)
        self._analysis = None
        self._nav_title = ""  # the running navigation analysis, for the status line
        self._key: Optional[str] = None
        self._last_results = None
        self._last_progress = None
        self._nav_drawn = False  # the current navigation job has drawn an image
        self._drag_pending = False  # shapes changed during a drag while a job ran
        self._detector_first = False
        self._detector_raw: Optional[np.ndarray] = None
        self._handled: dict = {}  # id(job) -> Event set once its outcome is shown

        self._build_widgets(size)
        super().__init__(children=[self.header, widgets.HBox([self.nav_box, self.detector_box]), self.controls])
        self.add_class("se-explorer")
        self._open()

    # -- public API ------------------------------------------------------------------------
    @property
    def choice(self) -> Choice:
        """The analysis settings of the controls."""
        return Choice(
            kind=self.analysis.value,
            params={name: control.value for name, control in self._controls(self.analysis.value).items()},
            component=self.component.value,
            index=int(self.component_index.value),
        )

    def navigation_image(self) -> Optional[np.ndarray]:
        """The image in the navigation view (NaN where not computed yet)."""
        return self.nav.image

    def detector_image(self) -> Optional[np.ndarray]:
        """The image in the detector view (sum, picked frame, ROI sum or std frame)."""
        return self._detector_raw

    def code(self) -> str:
        """Notebook lines reproducing the current navigation result with the public API."""
        if self._analysis is None or self._key is None:
            return "# nothing computed yet: draw a mask on the detector"
        return choices.analysis_code(self._analysis, self._key, self._source_code())

    def refresh(self) -> None:
        """Recompute the navigation view with the current settings (supersedes the running job)."""
        self._start_navigation()

    def wait(self, timeout: float = 60.0):
        """Block until the navigation and detector jobs (and what they start) are
        finished and shown; returns the navigation results."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                jobs = (self._nav_job, self._detector_job)
                events = [self._handled.get(id(job)) if job is not None else None for job in jobs]
            for handled in events:
                if handled is not None and not handled.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"the explorer's jobs did not finish within {timeout} s")
            with self._lock:
                if jobs == (self._nav_job, self._detector_job):
                    return self.results

    def set_calibration(self, parts) -> None:
        """Override parts of the data set's calibration (a dict as
        ``open_dataset(calibration=...)`` takes it, or a
        :class:`~stem_explorer.io.calibration.Calibration`; source ``"user"``) and
        recompute: the views, results and exports use it from then on. Raises
        :class:`~stem_explorer.errors.CalibrationError` for a value it refuses."""
        dataset = self.session.dataset
        dataset.calibration = dataset.calibration.override(parts)
        self._show_calibration()
        self._start_navigation()

    def guess_scan_rotation(self):
        """Set the centre of mass's ``scan_rotation`` and ``flip_y`` controls to
        :func:`~stem_explorer.analyses.guess_corrections` of its finished results (this
        recomputes it) and return the guess. Raises
        :class:`~stem_explorer.errors.AnalysisError` when there are none, or when the
        field does not tell the rotation."""
        guess = guess_corrections(self._final_results())
        controls = self._controls("com")
        controls["flip_y"].value = guess.flip_y
        controls["scan_rotation"].value = guess.scan_rotation
        self.guess_label.value = html.escape(
            f"applied: {guess.scan_rotation:.1f}\u00b0{', flipped' if guess.flip_y else ''} (quality {guess.quality:.3f})"
        )
        self.guess_label.tooltip = str(guess)
        return guess

    def show_in_itk(self):
        """Open the navigation result in itkwidgets (optional dependency)."""
        from .itk import itk_view

        if self.nav.image is None:
            raise StemExplorerError("nothing to show yet: wait for a result")
        return itk_view(self.nav.image)

    def close(self) -> None:
        """Cancel running jobs, stop the session (and its cluster, if the explorer made it)."""
        if self.session is not None and hasattr(self.session.dataset, "remove_listener"):
            self.session.dataset.remove_listener(self._on_acquisition)
        for job in (self._nav_job, self._detector_job):
            if job is not None:
                job.cancel()
        if self.session is not None and not isinstance(self._source, Session):
            self.session.close()
        super().close()

    # -- layout --------------------------------------------------------------------------
    def _build_widgets(self, size: int) -> None:
        self.title = widgets.HTML()
        self.status = widgets.HTML(layout={"min_height": "22px"})
        self.dashboard = widgets.HTML()
        self.reconnect_button = widgets.Button(description="reconnect", icon="plug", button_style="warning",
                                               layout={"display": "none"})
        self.reconnect_button.on_click(lambda _: self._reconnect())
        self.calibration_note = widgets.HTML()
        # a live source's frames received so far (hidden for files)
        self.acquisition_status = widgets.HTML(layout={"display": "none"})
        self.header = widgets.VBox([widgets.HBox([self.title, self.dashboard]), self.calibration_note,
                                    widgets.HBox([self.status, self.reconnect_button]), self.acquisition_status])

        self.nav = ImageView("navigation", size=size, css_class="se-nav-view")
        self.nav.on_pick(self._pick)
        self.nav.on_roi(self._roi)
        self.nav_box = widgets.VBox([self.nav], layout={"margin": "0 12px 0 0"})

        self.editor = MaskEditor()
        self.editor.observe(self._on_shapes, names="shapes")
        self.editor.observe(self._on_dragging, names="dragging")
        self.detector_source = widgets.ToggleButtons(
            options=[("sum", "sum"), ("frame", "frame"), ("ROI", "roi"), ("std", "std")], value="sum",
            tooltips=["sum of all frames", "frame picked in the navigation view", "sum over the ROI drawn in the navigation view", "standard deviation frame"],
            style={"button_width": "62px"},
        )
        self.detector_source.observe(self._on_detector_source, names="value")
        self.editor.log = True
        self.editor.observe(lambda _: self._rescale_detector(), names="log")
        self.detector_label = widgets.HTML()
        self.detector_vmin = widgets.FloatText(description="min", layout={"width": "140px"}, style={"description_width": "30px"})
        self.detector_vmax = widgets.FloatText(description="max", layout={"width": "140px"}, style={"description_width": "30px"})
        widgets.link((self.editor, "vmin"), (self.detector_vmin, "value"))
        widgets.link((self.editor, "vmax"), (self.detector_vmax, "value"))
        detector_auto = widgets.Button(description="auto", tooltip="robust limits (0.5-99.5 percentile)", layout={"width": "60px"})
        detector_auto.on_click(lambda _: self._rescale_detector())
        self.detector_box = widgets.VBox([
            self.editor, self.detector_source,
            widgets.HBox([self.detector_vmin, self.detector_vmax, detector_auto]), self.detector_label,
        ])

        # the selector and each analysis's controls come from the registry's declarations
        self.analysis = widgets.Dropdown(options=choices.selector(), value="vd", description="analysis")
        self.analysis.observe(lambda _: self._on_settings(), names="value")
        self.param_controls: dict = {}  # selector key -> {parameter name: control}
        self.params_box = widgets.HBox()
        # which result of the analysis is shown, and where along an axis beyond the scan
        self.component = widgets.Dropdown(options=[], description="show", layout={"display": "none"})
        self.component_index = widgets.IntSlider(value=0, min=0, max=0, description="index", layout={"display": "none"})
        for w in (self.component, self.component_index):
            w.observe(lambda _: self._redraw_navigation(), names="value")

        self.colormap = widgets.Dropdown(options=list(COLORMAPS), value="viridis", description="colormap")
        self.colormap.observe(lambda c: self._set_colormap(c["new"]), names="value")
        self.nav_log = widgets.Checkbox(value=False, description="log", indent=False, layout={"width": "60px"})
        self.nav_log.observe(lambda c: self.nav.set_display(log=c["new"]), names="value")
        self.vmin = widgets.FloatText(description="min", layout={"width": "150px"})
        self.vmax = widgets.FloatText(description="max", layout={"width": "150px"})
        self.limits_auto = widgets.Button(description="auto", tooltip="robust limits (0.5-99.5 percentile)", layout={"width": "60px"})
        self.limits_auto.on_click(lambda _: self.nav.set_limits())
        for w in (self.vmin, self.vmax):
            w.observe(lambda _: self._on_limits(), names="value")
        self.nav.color_scale.observe(self._show_limits, names=["min", "max"])

        self.scale_style = widgets.ToggleButtons(
            options=list(STYLES), value="axes", style={"button_width": "84px"},
            tooltips=["calibrated ticks along the axes", "a scale bar instead of the axes"],
        )
        self.scale_style.observe(lambda c: self._set_scale_style(c["new"]), names="value")
        self.guess_button = widgets.Button(description="guess rotation", icon="compass", layout={"width": "140px"},
                                           tooltip="scan rotation and flip with the least curl (guess_corrections)")
        self.guess_button.on_click(lambda _: self._guard(self.guess_scan_rotation, "guess failed"))
        self.guess_label = widgets.HTML()
        self.guess_box = widgets.HBox([self.guess_button, self.guess_label], layout={"display": "none"})
        self.calibration_panel = CalibrationPanel(self._apply_calibration, self._point_distance)
        self.calibration_box = widgets.Accordion([self.calibration_panel], titles=("calibration",), selected_index=None)

        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout={"width": "220px"})
        self.progress_label = widgets.HTML()
        self.export_buttons = []
        for label, action in (("HDF5", self.export_hdf5), ("TIFF", self.export_tiff), ("PNG", self.export_png)):
            button = widgets.Button(description=label, icon="download", layout={"width": "80px"})
            button.on_click(lambda _, action=action: self._guard(action))
            self.export_buttons.append(button)
        self.copy_button = widgets.Button(description="copy code", icon="code", layout={"width": "110px"})
        self.code_box = widgets.Textarea(layout={"width": "100%", "height": "120px", "display": "none"})
        self.copy_button.on_click(lambda _: self._show_code())
        self.export_label = widgets.HTML()
        self.descan_control = DescanControl(on_change=self._start_navigation, on_error=self._show_error)
        self.controls = widgets.VBox(
            [
                widgets.HBox([self.analysis, self.params_box, self.guess_box, self.component, self.component_index]),
                widgets.HBox([self.colormap, self.nav_log, self.vmin, self.vmax, self.limits_auto, self.scale_style]),
                widgets.HBox([self.progress, self.progress_label]),
                widgets.HBox([*self.export_buttons, self.copy_button, self.export_label]),
                self.descan_control,
                self.code_box,
                self.calibration_box,
            ]
        )
        self._detector_throttle = Throttle(self._send_detector_image, max_rate=15, on_error=self._show_error)
        self._progress_throttle = Throttle(self._send_progress, max_rate=PROGRESS_RATE, on_error=self._show_error)
        self._acquisition_throttle = Throttle(self._send_acquisition, max_rate=PROGRESS_RATE, on_error=self._show_error)

    # -- opening and the cluster ---------------------------------------------------------
    def _open(self) -> None:
        try:
            if isinstance(self._source, Session):
                self.session = self._source
            else:
                self.session = Session(self._source, **self._cluster_options_set(), **self._open_options)
        except Exception as exc:  # shown in the widget, not only in the log
            self._show_error(exc, prefix="could not open the data set")
            return
        self.descan_control.attach(self.session, self._beam_support)
        ds = self.session.dataset
        self.title.value = (
            f"<b>{html.escape(Path(ds.path).name if ds.path else ds.format)}</b> &nbsp; scan {tuple(ds.nav_shape)}"
            f" &times; detector {tuple(ds.sig_shape)} &nbsp; {ds.dtype} &nbsp; {ds.nbytes / 2**30:.2f} GiB"
        )
        link = self.session.dashboard_link
        self.dashboard.value = f'&nbsp; <a href="{html.escape(link)}" target="_blank">dask dashboard</a>' if link else ""
        self._show_calibration()
        self._follow_acquisition(ds)
        self._set_status("computing the sum frame ...")
        self._start_detector(SumFrame(), first=True)

    def _beam_support(self) -> Optional[tuple]:
        """``(cy, cx, radius)`` of the direct beam, once the sum frame has shown it."""
        return None if self.beam is None else (self.beam.cy, self.beam.cx, self.beam.radius)

    def _cluster_options_set(self) -> dict:
        return {k: v for k, v in self._cluster_options.items() if v is not None}

    def _reconnect(self) -> None:
        self.reconnect_button.layout.display = "none"
        old = self.session
        if old is not None and not isinstance(self._source, Session):
            try:
                old.close()
            except Exception:
                pass
        if isinstance(self._source, Session):
            self._source = self._source.dataset
        self._open()

    def _cluster_lost(self) -> bool:
        client = getattr(self.session, "client", None)
        return client is None or client.status not in ("running", "connecting")

    # -- jobs ----------------------------------------------------------------------------
    def _on_shapes(self, _change) -> None:
        if not self._uses_detector_view():
            return
        with self._lock:
            # while a shape is dragged, one job at a time: a new one starts when the
            # current one has drawn its first image (or the drag ends), so updates at
            # the browser's frame rate never queue up jobs in front of the last one
            busy = self.editor.dragging and self._nav_job is not None and not self._nav_drawn
            self._drag_pending = busy
        if not busy:
            self._start_navigation()

    def _on_dragging(self, change) -> None:
        if change["new"]:
            return
        with self._lock:
            pending, self._drag_pending = self._drag_pending, False
        if pending:  # the drag ended while a job ran: compute the final shape
            self._start_navigation()

    def _uses_detector_view(self) -> bool:
        """Whether the selected analysis takes a mask or a point from the detector view."""
        cls = choices.analysis_class(self.analysis.value)
        return any(p.kind in choices.FROM_DETECTOR for p in cls.parameters())

    def _controls(self, kind: str) -> dict:
        """The parameter controls of a selector entry, made on first use."""
        if kind not in self.param_controls:
            made = controls.controls_for(choices.analysis_class(kind))
            for control in made.values():
                control.observe(lambda _: self._start_navigation(), names="value")
            self.param_controls[kind] = made
        return self.param_controls[kind]

    def _on_settings(self) -> None:
        kind = self.analysis.value
        self.params_box.children = list(self._controls(kind).values())
        self.guess_box.layout.display = None if kind == "com" else "none"
        with self._syncing_components():
            self.component.options = []
        if kind == "adf" and self.beam is not None and not self._has_ring():
            self.editor.shapes = [dict(self.beam.annulus(self.session.dataset.sig_shape).to_dict(), op="add")]
            return  # the shapes observer starts the job
        self._start_navigation()

    def _has_ring(self) -> bool:
        return any(s.get("kind") == "ring" for s in self.editor.shapes)

    def _start_navigation(self) -> None:
        if self.session is None or self.beam is None:
            return
        choice = self.choice
        try:
            analysis = choices.build_analysis(choice, self.editor.mask(), self.beam, choices.drawn_point(self.editor.shapes))
        except NeedsMask as exc:
            self._set_status(str(exc), hint=True)
            return
        except (StemExplorerError, ValueError) as exc:
            self._show_error(exc)
            return
        title = dict((key, title) for title, key in self.analysis.options)[choice.kind]
        if analysis.result_space == "detector":  # a frame: the detector view shows it
            self.detector_label.value = html.escape(title)
            self._set_detector_source(choice.kind)
            self._start_detector(analysis)
            return
        # before the job starts: a failure, which its watcher reports, must replace it
        self._nav_title = html.escape(title)
        self._set_status(f"computing {self._nav_title} ...")
        with self._lock:
            self._analysis, self._key = analysis, None
            self._nav_drawn = False
            self._replace_job("_nav_job", analysis, self._on_nav_partial, self._on_nav_done)

    def _on_nav_partial(self, progress) -> None:
        self._last_results, self._last_progress = progress.results, progress
        self._redraw_navigation()
        self._show_progress(progress)
        if not progress.final:  # the final snapshot's status is the job's summary
            preview = preview_text(progress, self.session.reduced_copy)
            self._set_status(f"computing {self._nav_title}: {preview}" if preview else f"computing {self._nav_title} ...")
        with self._lock:
            self._nav_drawn, pending, self._drag_pending = True, self._drag_pending, False
        if pending:  # the shape moved on while this job ran: follow it
            threading.Thread(target=self._start_navigation, name="stem-explorer-drag", daemon=True).start()

    def _redraw_navigation(self) -> None:
        results, analysis = self._last_results, self._analysis
        if results is None or analysis is None or self._components_syncing:
            return
        choice = self.choice
        key = choices.result_key(choice, analysis, results)
        if key is None:
            return
        self._key = key
        self._show_components(results, analysis, key)
        preview = self._last_progress is not None and self._last_progress.is_preview
        self._label_navigation(results[key], key.split("/", 1)[1] + (" (preview)" if preview else ""))
        self.nav.set_image(choices.navigation_image(choice, results, key, self._last_progress))

    def _show_components(self, results, analysis, key: str) -> None:
        """The "show" selector lists the analysis's scan images (when it has several);
        the index slider spans a result's axis beyond the scan (when it has one)."""
        names = choices.scan_images(results, choices.label_of(analysis))
        with self._syncing_components():
            if tuple(self.component.options) != tuple(names):
                self.component.options = names
            self.component.value = key.split("/", 1)[1]
            length = choices.extra_length(results, key)
            self.component_index.max = max(0, length - 1)
            dims = results[key].dims
            self.component_index.description = dims[-1] if length > 1 else "index"
        self.component.layout.display = None if len(names) > 1 else "none"
        self.component_index.layout.display = None if length > 1 else "none"

    _components_syncing = False

    @contextlib.contextmanager
    def _syncing_components(self):
        """The component controls change without redrawing (their observers would)."""
        self._components_syncing = True
        try:
            yield
        finally:
            self._components_syncing = False

    def _on_nav_done(self, job, results) -> None:
        if job is self._nav_job:
            self.results = results
            self._set_status(done_text(job.stats))

    def _start_detector(self, analysis, first: bool = False) -> None:
        with self._lock:
            self._detector_first = first
            self._replace_job("_detector_job", analysis, self._on_detector_partial, self._on_detector_done)

    def _replace_job(self, slot: str, analysis, on_partial, on_done):
        """Cancel the job in ``slot`` and start ``analysis`` there (caller holds the lock);
        None when it could not start (the failure is shown)."""
        previous = getattr(self, slot)
        if previous is not None:
            previous.cancel()  # delivers nothing more once this returns
        # only the latest start's partials are shown (never a superseded job's over a
        # newer result), including those that arrive before run() returns (a preview
        # computed in this process)
        self._runs[slot] = run = object()

        def deliver(progress) -> None:
            if self._runs.get(slot) is run:
                on_partial(progress)

        try:
            job = self.session.run(analysis, on_partial=deliver)
        except Exception as exc:
            setattr(self, slot, None)
            self._handle_failure(exc)
            return None
        setattr(self, slot, job)
        self._watch_in_thread(job, on_done)
        return job

    def _on_detector_partial(self, progress) -> None:
        key = next(iter(progress.results))
        self.editor.value_unit = progress.results[key].attrs.get("units") or ""
        self._detector_throttle.submit(np.asarray(progress.results[key].data))
        if not self._detector_first:
            self._show_progress(progress)
        elif self.beam is None and self._acquiring() and progress.filled.any():
            # a scan still being recorded: its sum frame is final only when the scan
            # ends, but every frame shows the beam, so place it from the frames so far
            # and let the navigation job follow the acquisition
            self._place_beam(progress.results["sum/frame"].data)

    def _acquiring(self) -> bool:
        """Whether the data set is a live acquisition that has not ended."""
        return getattr(self.session.dataset, "ended", True) is False

    def _place_beam(self, sum_frame) -> None:
        """Estimate the beam from a sum frame; draw a disk on it unless the user has
        drawn shapes (their job starts instead)."""
        self.beam = choices.estimate_beam(sum_frame)
        if not self.editor.shapes:
            self.editor.shapes = [dict(self.beam.disk().to_dict(), op="add")]  # starts the job
        else:
            self._start_navigation()

    def _send_detector_image(self, frame: np.ndarray) -> None:
        self._detector_raw = frame[0] if frame.ndim == 3 else frame
        self.editor.set_image(self._detector_raw)

    def _on_detector_done(self, job, results) -> None:
        if job is not self._detector_job:
            return
        self._detector_throttle.flush()
        if self._detector_first:
            self._detector_first = False
            if self.beam is None:  # not placed during a live acquisition
                self._place_beam(results["sum/frame"].data)

    def _watch_in_thread(self, job, on_done) -> None:
        self._handled = {k: v for k, v in self._handled.items() if not v.is_set()}
        self._handled[id(job)] = handled = threading.Event()
        threading.Thread(target=self._watch, args=(job, on_done, handled), daemon=True).start()

    def _watch(self, job, on_done, handled: threading.Event) -> None:
        try:
            results = job.result()
        except JobCancelledError:
            return
        except Exception as exc:
            if job in (self._nav_job, self._detector_job):
                self._handle_failure(exc)
            return
        else:
            try:
                on_done(job, results)
                if job.callback_errors:  # the job went on; what it showed may be stale
                    self._show_error(job.callback_errors[0], prefix="showing a partial result failed")
            except Exception as exc:
                self._show_error(exc)
        finally:
            handled.set()

    def _handle_failure(self, exc: BaseException) -> None:
        """Show a job's failure; offer a new session when the cluster is at fault."""
        lost = self._cluster_lost()
        if lost:
            self._set_status(f"the cluster went away ({type(exc).__name__}: {html.escape(str(exc))}); reconnect to start a new one", error=True)
        else:
            self._show_error(exc)
        if lost or isinstance(exc, ClusterError):  # say, workers died: a new cluster may do
            self.reconnect_button.layout.display = None

    # -- detector view sources -------------------------------------------------------------
    def _on_detector_source(self, change) -> None:
        source = change["new"]
        if self.session is None:
            return
        if source == "sum":
            self._start_detector(SumFrame())
        elif source == "std":
            self._start_detector(StdFrame())
        # "frame" and "roi" wait for a click / rectangle on the navigation view

    def _pick(self, row: int, col: int) -> None:
        if self.session is None:
            return
        position = self._scan_position(row, col)
        self.detector_label.value = f"frame at scan position {position}"
        self._set_detector_source("frame")
        self._start_detector(PickFrame(position))

    def _roi(self, r0: int, r1: int, c0: int, c1: int) -> None:
        if self.session is None:
            return
        nav_shape = self.session.dataset.nav_shape
        if len(nav_shape) == 2:
            roi = Rectangle(r0, c0, r1 - r0, c1 - c0)
        else:
            flat = np.zeros(as_image(np.zeros(nav_shape)).shape, bool)
            flat[r0:r1, c0:c1] = True
            roi = flat.reshape(nav_shape)
        self.detector_label.value = f"sum over scan rows {r0}..{r1 - 1}, columns {c0}..{c1 - 1}"
        self._set_detector_source("roi")
        self._start_detector(RoiSum(roi))

    def _set_detector_source(self, source: str) -> None:
        """Show ``source`` as the detector view's source without starting its job
        (the caller starts it); a source without a button deselects them all."""
        self.detector_source.unobserve(self._on_detector_source, names="value")
        options = [value for _, value in self.detector_source.options]
        self.detector_source.value = source if source in options else None
        self.detector_source.observe(self._on_detector_source, names="value")

    def _scan_position(self, row: int, col: int) -> tuple:
        nav_shape = self.session.dataset.nav_shape
        if len(nav_shape) == 1:
            return (col,)
        index = np.ravel_multi_index((row, col), as_image(np.empty(nav_shape, np.uint8)).shape)
        return tuple(int(i) for i in np.unravel_index(index, nav_shape))

    # -- calibration -----------------------------------------------------------------------
    def _show_calibration(self) -> None:
        """The data set's calibration in the detector view, the editor and the note
        under the title (with the warnings of a file calibration that was not used)."""
        calibration = self.session.dataset.calibration
        pixel = calibration.detector_pixel
        with self.editor.hold_sync():
            self.editor.pixel_size = list(pixel.values) if pixel is not None else []
            self.editor.pixel_unit = pixel.unit if pixel is not None else ""
        self.calibration_panel.show(calibration)
        parts = [
            f"{label} {' x '.join(f'{v:.4g}' for v in part.values)} {part.unit} ({part.source})"
            for label, part in (("scan step", calibration.scan_step), ("detector pixel", pixel))
            if part is not None
        ]
        text = "calibration: " + ("; ".join(parts) if parts else "none (pixels)")
        warnings = "".join(f"<br>warning: {html.escape(w)}" for w in calibration.warnings)
        colour = "#8a6d00" if warnings else "#555"
        self.calibration_note.value = f'<small class="se-calibration-note" style="color:{colour}">{html.escape(text)}{warnings}</small>'

    def _apply_calibration(self, calibration) -> None:
        try:
            self.set_calibration(calibration)
        except StemExplorerError as exc:
            self._show_error(exc, prefix="calibration refused")

    def _point_distance(self) -> float:
        """Pixels between the last two points drawn on the detector (0 without two)."""
        points = [s for s in self.editor.shapes if s.get("kind") == "point"]
        if len(points) < 2:
            return 0.0
        a, b = points[-2:]
        return math.hypot(a["y"] - b["y"], a["x"] - b["x"])

    def _label_navigation(self, array, name: str) -> None:
        """The navigation view's axes from the result's scan coordinates, its colour bar
        from the result's name and unit."""
        if tuple(array.dims[:2]) == choices.SCAN_DIMS[:2]:
            self.nav.set_axes(AxisMap.of(array, "scan_y"), AxisMap.of(array, "scan_x"))
        else:
            self.nav.set_axes()
        self.nav.set_value_unit(name, array.attrs.get("units"))

    def _set_scale_style(self, style: str) -> None:
        self.nav.set_style(style)
        self.editor.scale_style = style

    # -- display settings ----------------------------------------------------------------
    def _set_colormap(self, name: str) -> None:
        scheme, reverse = COLORMAPS[name]
        self.nav.color_scale.reverse = reverse
        self.nav.set_display(colormap=scheme)
        self.editor.colormap = name

    def _rescale_detector(self) -> None:
        """Robust colour limits for the new linear/log display of the detector view."""
        if self._detector_raw is not None:
            self.editor.set_image(self._detector_raw)

    def _on_limits(self) -> None:
        if self._showing_limits:
            return
        try:
            self.nav.set_limits(self.vmin.value, self.vmax.value)
        except ValueError as exc:
            self._set_status(str(exc), hint=True)

    _showing_limits = False

    def _show_limits(self, _change) -> None:
        self._showing_limits = True
        try:
            self.vmin.value, self.vmax.value = (float(f"{v:.4g}") for v in self.nav.limits)
        finally:
            self._showing_limits = False

    # -- status ----------------------------------------------------------------------------
    def _show_progress(self, progress) -> None:
        """Show a job's progress: at most :data:`PROGRESS_RATE` updates a second (each
        is two widget messages and a layout in the browser, competing with the
        images), the final one at once."""
        self._progress_throttle.submit(progress)
        if progress.final:
            self._progress_throttle.flush()

    def _send_progress(self, progress) -> None:
        self.progress.value = progress.fraction
        job = next((j for j in (self._nav_job, self._detector_job) if j is not None and j.id == progress.job_id), None)
        self.progress_label.value = (
            f"{progress.fraction:5.0%} &nbsp; {progress.gbps:.2f} GB/s &nbsp; {progress.elapsed:.2f} s"
            + live_usage_text(job)
        )

    def _follow_acquisition(self, ds) -> None:
        """Show a live source's acquisition in :attr:`acquisition_status` as frames
        arrive, and its end."""
        if not hasattr(ds, "add_listener"):  # a file: nothing arrives
            return
        self.acquisition_status.layout.display = None
        ds.remove_listener(self._on_acquisition)  # reconnecting opens the same data set again
        ds.add_listener(self._on_acquisition)
        self._on_acquisition()

    def _on_acquisition(self) -> None:
        """A live source's frames arrived or it ended (in its feeder's thread): at most
        :data:`PROGRESS_RATE` updates a second, the end at once."""
        self._acquisition_throttle.submit(None)
        if self.session.dataset.ended:
            self._acquisition_throttle.flush()

    def _send_acquisition(self, _value) -> None:
        ds = self.session.dataset
        state, error = ds.state, ds.error
        first = getattr(self._nav_job, "first_frame", 0)  # a live job's; 0 for a file's
        self.acquisition_status.value = acquisition_text(state, ds.stats(), error, first)

    def _set_status(self, text: str, *, hint: bool = False, error: bool = False) -> None:
        css = "se-error" if error else "se-hint" if hint else "se-status"
        colour = "#c62828" if error else "#8a6d00" if hint else "#333"
        self.status.value = f'<span class="{css}" style="color:{colour}">{text}</span>'

    def _show_error(self, exc: BaseException, prefix: str = "error") -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        self._set_status(f"{prefix}: {html.escape(self.error)}", error=True)

    def _guard(self, action, prefix: str = "export failed") -> None:
        try:
            action()
        except Exception as exc:
            self._show_error(exc, prefix=prefix)

    # -- export ----------------------------------------------------------------------------
    def _export_path(self, suffix: str) -> Path:
        self.export_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return self.export_dir / f"{self.choice.kind}-{stamp}{suffix}"

    def _final_results(self):
        if self.results is None:
            raise StemExplorerError("no finished result to export yet; wait for the job to finish")
        return self.results

    def export_hdf5(self, path=None) -> Path:
        """Save the navigation results with provenance (HDF5); returns the path."""
        written = self._final_results().save(path or self._export_path(".h5"))
        self.export_label.value = f"saved {html.escape(str(written))}"
        return written

    def export_tiff(self, folder=None) -> list:
        """One TIFF per result array; returns the paths."""
        paths = self._final_results().to_tiff(folder or self._export_path(""))
        self.export_label.value = f"saved {len(paths)} TIFF files in {html.escape(str(Path(paths[0]).parent))}"
        return paths

    def export_png(self, path=None) -> Path:
        """The navigation view as shown (colour map, limits, log) as a PNG; returns the path."""
        if self.nav.displayed is None:
            raise StemExplorerError("nothing shown yet")
        vmin, vmax = self.nav.limits
        written = save_png(path or self._export_path(".png"), self.nav.displayed, vmin, vmax, self.colormap.value)
        self.export_label.value = f"saved {html.escape(str(written))}"
        return written

    def _show_code(self) -> None:
        self.code_box.value = self.code()
        self.code_box.layout.display = None

    def _source_code(self) -> str:
        ds = self.session.dataset
        if isinstance(self._source, (str, Path)):
            options = "".join(f", {k}={v!r}" for k, v in self._open_options.items())
            return f"{str(self._source)!r}{options}"
        if ds.path:
            return f"{ds.path!r}, format={ds.format!r}"
        return "data  # the array you passed to Explorer"
