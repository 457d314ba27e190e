"""CompareExplorer: many data sets side by side, one shared mask.

``Explorer([path1, path2, ...])`` or ``Explorer("folder/")`` returns one. Each data set
gets a tile (its virtual image, filling in live); the detector view shows the sum frame
of the data set chosen in *detector view*, and the mask drawn there applies to every
data set with that detector shape. Every change of the mask or the analysis starts a
job per data set, each cancelling that data set's previous one (newest wins, as in the
single explorer). All data sets share one cluster
(:class:`~stem_explorer.session_group.SessionGroup`).

*batch recipe* saves the current analysis as a recipe for ``stem-explorer batch``
(``{"analyses": [...], "open": {...}}``) and shows the lines that run it over the data
sets, in Python and on the command line.
"""

from __future__ import annotations

import datetime
import html
import json
import shlex
import threading
import time
from pathlib import Path
from typing import Any, Optional

import bqplot
import ipywidgets as widgets
import numpy as np

from .._atomic import atomic_write
from .._json import jsonable
from ..analyses import SumFrame
from ..errors import StemExplorerError
from .. import masks
from ..session_group import Member, SessionGroup, expand_sources
from . import choices, controls
from .choices import Choice, NeedsMask
from .job_slot import JobSlot
from .mask_editor import MaskEditor
from .path_chooser import PathChooser
from .usage import preview_text
from .views import ImageView

#: Where ``batch`` writes, in the code shown for a recipe.
BATCH_OUT = "stem_explorer_batch"
#: bqplot draws a vertical colour bar 200 px shorter than the plot area (fixed
#: offsets in its ColorAxis): tiles keep their plot area at least this high, or, for
#: scans too wide for that (line scans), show no colour bar (a negative length is a
#: browser error and no bar).
COLOUR_BAR_MIN_HEIGHT = 280
#: The largest side of a tile's image, in pixels.
MAX_TILE_SIZE = 520


def tile_layout(nav_shape: tuple, size: int) -> tuple[int, bool]:
    """``(longer side, colour bar)`` of the image of a tile for a scan of ``nav_shape``
    (shown as :func:`~stem_explorer.widgets.views.as_image` shapes it)."""
    rows = int(np.prod(nav_shape[:-1], dtype=np.int64)) if len(nav_shape) > 1 else 1
    cols = int(nav_shape[-1]) if nav_shape else 1
    needed = -(-COLOUR_BAR_MIN_HEIGHT * max(rows, cols) // rows)
    if max(size, needed) <= MAX_TILE_SIZE:
        return max(size, needed), True
    return size, False


class Tile(widgets.VBox):
    """One data set of the compare view: title, live image and a message line."""

    def __init__(self, member: Member, size: int):
        self.member = member
        self.title = widgets.HTML()
        shape = tuple(member.session.dataset.nav_shape) if member.session is not None else (1, 1)
        side, colour_bar = tile_layout(shape, size)
        self.view = ImageView(member.name, size=side, css_class="se-compare-view")
        if not colour_bar:
            self.view.figure.axes = [a for a in self.view.figure.axes if not isinstance(a, bqplot.ColorAxis)]
        self.message = widgets.HTML(layout={"min_height": "20px"})
        self.navigation = JobSlot(on_error=self.show_error)
        self.sum_job = JobSlot(on_error=self.show_error)
        self.sum_frame: Optional[np.ndarray] = None
        self.beam: Optional[choices.Beam] = None
        self.results = None  # final results of the current navigation job
        self.analysis = None  # what the current navigation job computes
        self.drawn = False  # the current navigation job has drawn an image
        self.error: Optional[str] = None
        self.skipped: Optional[str] = None  # why no job runs for this tile (detector shape)
        children = [self.title, self.view, self.message] if member.session is not None else [self.title, self.message]
        super().__init__(children, layout={"border": "1px solid #ddd", "padding": "4px", "margin": "4px"})
        self.add_class("se-compare-tile")
        if member.session is None:
            self.add_class("se-compare-error")
            self.title.value = f"<b>{html.escape(member.name)}</b>"
            self.show_error(member.error, prefix="could not open")
        else:
            ds = member.session.dataset
            self.title.value = (
                f"<b>{html.escape(member.name)}</b> &nbsp; scan {tuple(ds.nav_shape)} &times; "
                f"detector {tuple(ds.sig_shape)} &nbsp; {ds.dtype}"
            )

    @property
    def session(self):
        return self.member.session

    def say(self, text: str, *, css: str = "se-status", colour: str = "#333") -> None:
        self.message.value = f'<span class="{css}" style="color:{colour}">{text}</span>'

    def show_error(self, exc, prefix: str = "error") -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        self.say(f"{prefix}: {html.escape(self.error)}", css="se-error", colour="#c62828")

    def skip(self, reason: str) -> None:
        """No job for this tile: say why, show no stale image."""
        self.navigation.cancel()
        self.skipped, self.results, self.analysis = reason, None, None
        self.view.clear()
        self.say(html.escape(reason), css="se-hint", colour="#8a6d00")

    def wait(self, deadline: float) -> bool:
        return self.sum_job.wait(deadline) and self.navigation.wait(deadline)


class CompareExplorer(widgets.VBox):
    """Several 4D-STEM data sets side by side, their virtual images computed from one
    shared mask.

    Parameters
    ----------
    sources : list or str
        Paths, arrays or data sets, or a folder of data sets
        (:func:`~stem_explorer.io.listing.list_datasets`). A source that cannot be
        opened gets a tile with the error; the others work.
    address, client, n_workers
        The one cluster all data sets share (an embedded one by default, stopped by
        :meth:`close`).
    recipe_dir : str
        Where *batch recipe* saves recipes.
    size : int
        Side of each tile's image, in pixels.
    **open_options
        Options of :func:`~stem_explorer.open_dataset`, the same for every data set
        (they go into the recipe's ``"open"``).
    """

    def __init__(
        self,
        sources: Any,
        *,
        address: Optional[str] = None,
        client=None,
        n_workers: Optional[int] = None,
        recipe_dir: str = "stem_explorer_recipes",
        size: int = 240,
        **open_options,
    ):
        self.recipe_dir = Path(recipe_dir)
        self.group: Optional[SessionGroup] = None
        self.tiles: dict[str, Tile] = {}
        self.error: Optional[str] = None
        self._size = size
        self._open_options = open_options
        self._lock = threading.Lock()  # guards the tiles dict and the drag state
        self._drag_pending = False
        threading.Thread(target=masks.prepare_validation, name="stem-explorer-validator", daemon=True).start()
        self._build_widgets()
        super().__init__(children=[self.status, widgets.HBox([self.grid, self.detector_box]), self.controls])
        self.add_class("se-compare")
        try:
            self.group = SessionGroup(address=address, client=client, n_workers=n_workers, **open_options)
            for source in expand_sources(sources):
                self.add(source)
        except Exception as exc:  # the cluster did not start, or a folder cannot be listed
            self._show_error(exc, prefix="could not start")

    # -- public API ------------------------------------------------------------------------
    def add(self, source) -> Tile:
        """Open ``source`` (a path, array or data set) on the shared cluster and add its tile."""
        if self.group is None:
            raise StemExplorerError(f"cannot add {source!r}: the cluster did not start (see the status line); make a new view")
        member = self.group.add(source)
        tile = Tile(member, self._size)
        with self._lock:
            self.tiles[member.name] = tile
        self.grid.children = [*self.grid.children, tile]
        if member.session is not None:
            tile.view.on_pick(lambda row, col, tile=tile: self._select(tile.member.name))
            self._list_choices()
            tile.say("computing the sum frame ...")
            tile.sum_job.start(tile.session, SumFrame(), lambda _: None, lambda job, results: self._on_sum(tile, results))
        return tile

    @property
    def selected(self) -> Optional[Tile]:
        """The tile whose sum frame the detector view shows (the mask's detector)."""
        return self.tiles.get(self.detector_choice.value)

    @property
    def choice(self) -> Choice:
        """The analysis settings of the controls."""
        return Choice(kind=self.analysis.value,
                      params={name: c.value for name, c in self._controls(self.analysis.value).items()})

    @property
    def results(self) -> dict:
        """``{name: Results}`` of the finished navigation jobs (None while one runs or is skipped)."""
        return {name: tile.results for name, tile in self.tiles.items() if tile.session is not None}

    def images(self) -> dict:
        """``{name: image}`` shown in the tiles (NaN where not computed yet; None when none)."""
        return {name: tile.view.image for name, tile in self.tiles.items() if tile.session is not None}

    def detector_image(self) -> Optional[np.ndarray]:
        """The sum frame shown in the detector view."""
        tile = self.selected
        return None if tile is None else tile.sum_frame

    def refresh(self) -> None:
        """Recompute every data set with the current mask and settings."""
        self._start_all()

    def wait(self, timeout: float = 60.0) -> dict:
        """Block until every tile's jobs (and the jobs they start) are finished and
        shown; returns :attr:`results`."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self._jobs()
            for tile in list(self.tiles.values()):
                if not tile.wait(deadline):
                    raise TimeoutError(f"the compare view's jobs did not finish within {timeout} s")
            if jobs == self._jobs():
                return self.results

    def recipe(self) -> dict:
        """The batch recipe of the current analysis: ``{"analyses": [...], "open": {...}}``."""
        analysis = self._current_analysis()
        return {"analyses": [analysis.to_dict()], "open": jsonable(self._open_options)}

    def save_recipe(self, path=None) -> Path:
        """Write :meth:`recipe` as JSON (atomically), show the lines that run it; returns the path."""
        recipe = self.recipe()
        if path is None:
            self.recipe_dir.mkdir(parents=True, exist_ok=True)
            path = self.recipe_dir / f"recipe-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
        path = Path(path)
        with atomic_write(path) as tmp:
            Path(tmp).write_text(json.dumps(recipe, indent=2) + "\n")
        self.code_box.value = self.recipe_code(path)
        self.code_box.layout.display = None
        self.recipe_label.value = f"saved {html.escape(str(path))}"
        return path

    def recipe_code(self, recipe_path) -> str:
        """Python and command-line lines that run the current analysis over the data sets
        that take the mask (``stem_explorer.batch``, ``stem-explorer batch``)."""
        analysis = self._current_analysis()
        inputs, left_out = self._batch_inputs()
        open_options = self.recipe()["open"]
        options = f", open_options={open_options!r}" if open_options else ""
        lines = [
            "import stem_explorer as se",
            choices.import_line(type(analysis)),
            "from stem_explorer import masks",
            "",
            f"inputs = {inputs!r}",
            *[f"# left out: {note}" for note in left_out],
            f"se.batch(inputs, [{analysis.code()}], {BATCH_OUT!r}{options})",
            "",
            "# or on the command line:",
            "# " + shlex.join(["stem-explorer", "batch", *inputs, "--recipe", str(recipe_path), "-o", BATCH_OUT]),
        ]
        return "\n".join(lines)

    def close(self) -> None:
        """Cancel the jobs; stop the cluster if the view started it."""
        for tile in self.tiles.values():
            tile.navigation.cancel()
            tile.sum_job.cancel()
        if self.group is not None:
            self.group.close()
        super().close()

    # -- layout ----------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.status = widgets.HTML(layout={"min_height": "22px"})
        self.grid = widgets.Box(layout={"display": "flex", "flex_flow": "row wrap", "width": "62%", "align_items": "flex-start"})
        self.editor = MaskEditor(size=360)
        self.editor.log = True
        self.editor.observe(self._on_shapes, names="shapes")
        self.editor.observe(self._on_dragging, names="dragging")
        self.detector_choice = widgets.Dropdown(options=[], description="detector view", style={"description_width": "initial"})
        self.detector_choice.observe(lambda _: self._on_select(), names="value")
        self.detector_box = widgets.VBox([self.detector_choice, self.editor])

        self.analysis = widgets.Dropdown(options=_scan_analyses(), value="vd", description="analysis")
        self.analysis.observe(lambda _: self._on_settings(), names="value")
        self.param_controls: dict = {}
        self.params_box = widgets.HBox()
        self.chooser = PathChooser()
        self.chooser.on_add(lambda path: self._guard(self.add, path))
        self.recipe_button = widgets.Button(description="batch recipe", icon="list", tooltip="save the masks and analysis as a batch recipe")
        self.recipe_button.on_click(lambda _: self._guard(self.save_recipe))
        self.recipe_label = widgets.HTML()
        self.code_box = widgets.Textarea(layout={"width": "100%", "height": "180px", "display": "none"})
        self.controls = widgets.VBox([
            widgets.HBox([self.analysis, self.params_box]),
            widgets.HBox([self.recipe_button, self.recipe_label]),
            self.code_box,
            widgets.Accordion([self.chooser], titles=("add data sets",)),
        ])

    def _controls(self, kind: str) -> dict:
        if kind not in self.param_controls:
            made = controls.controls_for(choices.analysis_class(kind))
            for control in made.values():
                control.observe(lambda _: self._start_all(), names="value")
            self.param_controls[kind] = made
        return self.param_controls[kind]

    # -- jobs ------------------------------------------------------------------------------
    def _jobs(self) -> list:
        return [(t.sum_job.job, t.navigation.job) for t in list(self.tiles.values())]

    def _on_sum(self, tile: Tile, results) -> None:
        tile.sum_frame = np.asarray(results["sum/frame"].data)
        tile.beam = choices.estimate_beam(tile.sum_frame)
        tile.say("")
        if tile is not self.selected:
            self._start(tile)
            return
        # the mask's detector is known now: the tiles that waited for it start too
        self._show_detector(tile)
        if self.editor.shapes:
            self._start_all()
        else:
            self.editor.shapes = [dict(tile.beam.disk().to_dict(), op="add")]  # starts the jobs

    def _list_choices(self) -> None:
        """Offer every opened data set in *detector view*, keeping the choice (new
        options would reset a Dropdown to the first one, and recompute every tile)."""
        names = [name for name, t in self.tiles.items() if t.session is not None]
        current = self.detector_choice.value
        self._listing = True
        try:
            self.detector_choice.options = names
            self.detector_choice.value = current if current in names else names[0]
        finally:
            self._listing = False

    _listing = False

    def _on_select(self) -> None:
        if self._listing:
            return
        tile = self.selected
        if tile is not None and tile.sum_frame is not None:
            self._show_detector(tile)
            self._start_all()

    def _select(self, name: str) -> None:
        self.detector_choice.value = name

    def _show_detector(self, tile: Tile) -> None:
        self.editor.set_image(tile.sum_frame)

    def _on_settings(self) -> None:
        self.params_box.children = list(self._controls(self.analysis.value).values())
        self._start_all()

    def _on_shapes(self, _change) -> None:
        with self._lock:
            # while a shape is dragged, one round of jobs at a time (as in the single
            # explorer): the next starts once every tile drew, or the drag ends
            busy = self.editor.dragging and any(t.navigation.job is not None and not t.drawn for t in self.tiles.values())
            self._drag_pending = busy
        if not busy:
            self._start_all()

    def _on_dragging(self, change) -> None:
        if change["new"]:
            return
        with self._lock:
            pending, self._drag_pending = self._drag_pending, False
        if pending:
            self._start_all()

    def _start_all(self) -> None:
        for tile in list(self.tiles.values()):
            self._start(tile)

    def _start(self, tile: Tile) -> None:
        """Start (superseding) the tile's navigation job for the current mask and settings."""
        reference = self.selected
        if tile.session is None or tile.sum_frame is None or reference is None or reference.sum_frame is None:
            return
        sig, ref_sig = tuple(tile.session.dataset.sig_shape), tuple(reference.session.dataset.sig_shape)
        if sig != ref_sig:
            tile.skip(f"the shared mask cannot apply: this detector is {sig[0]}x{sig[1]}, the mask is drawn on "
                      f"{reference.member.name}'s {ref_sig[0]}x{ref_sig[1]}; choose it in 'detector view' to draw on it")
            return
        try:
            analysis = choices.build_analysis(self.choice, self.editor.mask(), tile.beam, choices.drawn_point(self.editor.shapes))
        except NeedsMask as exc:
            tile.skip(str(exc))
            return
        except (StemExplorerError, ValueError) as exc:
            tile.navigation.cancel()
            tile.show_error(exc)
            return
        tile.skipped, tile.results, tile.analysis, tile.drawn, tile.error = None, None, analysis, False, None
        tile.say("computing ...")
        tile.navigation.start(tile.session, analysis,
                              lambda progress: self._on_partial(tile, analysis, progress),
                              lambda job, results: self._on_done(tile, job, results))

    def _on_partial(self, tile: Tile, analysis, progress) -> None:
        key = choices.result_key(self.choice, analysis, progress.results)
        if key is not None:
            tile.view.set_image(choices.navigation_image(self.choice, progress.results, key, progress))
        if not progress.final:  # the final snapshot's message is the job's summary
            preview = preview_text(progress, tile.session.reduced_copy)
            tile.say(f"computing: {preview}" if preview else "computing ...")
        with self._lock:
            tile.drawn = True
            start = self._drag_pending and all(t.drawn or t.navigation.job is None for t in self.tiles.values())
            if start:
                self._drag_pending = False
        if start:  # the shape moved on while these jobs ran: follow it
            threading.Thread(target=self._start_all, name="stem-explorer-drag", daemon=True).start()

    def _on_done(self, tile: Tile, job, results) -> None:
        if tile.navigation.is_current(job):
            tile.results = results
            stats = job.stats
            tile.say(f"done: {stats.gbps:.2f} GB/s, {stats.elapsed:.2f} s")

    # -- recipes ---------------------------------------------------------------------------
    def _current_analysis(self):
        reference = self.selected
        if reference is None or reference.analysis is None:
            raise StemExplorerError("no analysis yet: open a data set and draw a mask on the detector first")
        return reference.analysis

    def _batch_inputs(self) -> tuple[list, list]:
        """The paths of the data sets the mask applies to, and notes on those left out."""
        inputs, left_out = [], []
        for name, tile in self.tiles.items():
            path = tile.member.path
            if tile.session is None:
                left_out.append(f"{name} (could not be opened)")
            elif tile.skipped:
                left_out.append(f"{name} ({tile.skipped.split(':')[0]})")
            elif path is None:
                left_out.append(f"{name} (an array in memory: save it to a file to run a batch)")
            else:
                inputs.append(path)
        return inputs, left_out

    # -- status ----------------------------------------------------------------------------
    def _guard(self, action, *args) -> None:
        try:
            action(*args)
        except Exception as exc:
            self._show_error(exc)

    def _show_error(self, exc: BaseException, prefix: str = "error") -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        self.status.value = f'<span class="se-error" style="color:#c62828">{prefix}: {html.escape(self.error)}</span>'


def _scan_analyses() -> list:
    """The selector's entries whose results are images over the scan (frames over the
    detector have no tile to go to)."""
    return [(title, key) for title, key in choices.selector()
            if choices.analysis_class(key).result_space != "detector"]

