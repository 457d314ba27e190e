"""The Explorer's descan control: estimate the descan error from the data, apply, undo."""

from __future__ import annotations

import html
import threading
from typing import Callable, Optional

import ipywidgets as widgets

from ..analyses import CenterOfMass, Descan
from ..errors import StemExplorerError

#: The centre of mass counts pixels within this many beam radii of the beam's centre:
#: the bright-field disk stays inside while it wanders by half its radius.
SUPPORT_RADII = 1.5


class DescanControl(widgets.HBox):
    """Estimate, apply and undo a descan correction of a session's runs.

    *estimate* runs the centre of mass of the bright-field disk (``support()``: the
    beam's ``(cy, cx, radius)``, or None before it is known) over the whole scan and
    fits a plane to it (:meth:`~stem_explorer.analyses.Descan.estimate`, zero at the
    scan's mean, so masks drawn on the sum frame stay where they are drawn), then
    applies it; the toggle applies or undoes it (``session.descan``). ``on_change``
    runs after each change, ``on_error`` gets what went wrong.
    """

    def __init__(self, on_change: Callable[[], None], on_error: Callable[[BaseException], None]):
        self.estimate_button = widgets.Button(
            description="estimate descan", icon="crosshairs", layout={"width": "150px"},
            tooltip="fit a plane to the bright-field disk's centre of mass over the scan")
        self.apply_toggle = widgets.ToggleButton(
            value=False, description="descan on", disabled=True, layout={"width": "110px"},
            tooltip="move every mask with the measured descan shift (off: undo)")
        self.label = widgets.HTML()
        super().__init__([self.estimate_button, self.apply_toggle, self.label])
        self._on_change, self._on_error = on_change, on_error
        self.session = None
        self.support: Callable[[], Optional[tuple]] = lambda: None
        #: the last estimate (None before one)
        self.estimated: Optional[Descan] = None
        self._thread: Optional[threading.Thread] = None
        self.estimate_button.on_click(lambda _: self.estimate())
        self.apply_toggle.observe(lambda change: self._apply(change["new"]), names="value")

    def attach(self, session, support: Callable[[], Optional[tuple]]) -> None:
        """Control ``session``'s descan; ``support()`` gives the beam (see the class)."""
        self.session, self.support = session, support
        self.apply_toggle.value = session.descan is not None

    def estimate(self) -> None:
        """Start measuring the descan (in a thread; :meth:`wait` waits for it)."""
        beam = self.support()
        if self.session is None or beam is None:
            self.label.value = "the beam is not found yet: wait for the sum frame"
            return
        cy, cx, radius = beam
        analysis = CenterOfMass(center=(cy, cx), radius=SUPPORT_RADII * radius)
        self.estimate_button.disabled = True
        self.label.value = "measuring the descan ..."
        job = self.session.run(analysis, descan=False)
        self._thread = threading.Thread(target=self._finish, args=(job,), name="stem-explorer-descan", daemon=True)
        self._thread.start()

    def wait(self, timeout: float = 60.0) -> Optional[Descan]:
        """Wait for a running estimate; returns the estimate."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the descan estimate did not finish within {timeout} s")
        return self.estimated

    def _finish(self, job) -> None:
        try:
            self.estimated = Descan.estimate(job.result(), fit="plane")
        except StemExplorerError as exc:  # too few positions with intensity, a cancelled job
            self.label.value = html.escape(f"no estimate: {exc}")
            return
        except Exception as exc:  # the cluster: shown in the explorer, not only in the log
            self.label.value = "no estimate"
            self._on_error(exc)
            return
        finally:
            self.estimate_button.disabled = False
        self.label.value = html.escape(_summary(self.estimated, self.session.dataset.nav_shape))
        self.apply_toggle.disabled = False
        if self.apply_toggle.value:
            self._apply(True)  # a new estimate replaces the one applied
        else:
            self.apply_toggle.value = True

    def _apply(self, on: bool) -> None:
        if self.session is None:
            return
        self.session.descan = self.estimated if on else None
        self._on_change()


def _summary(descan: Descan, nav_shape) -> str:
    """The estimate in a few words: the largest shift over the scan."""
    shifts = descan.shifts_for(nav_shape)
    reach = abs(shifts).max(axis=0)
    return f"descan up to {reach[0]:.1f} px (y), {reach[1]:.1f} px (x) across the scan"
