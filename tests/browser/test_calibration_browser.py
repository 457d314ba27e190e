"""A calibrated data set in the explorer notebook, in real Chromium (JupyterLab only, to
keep it short): the navigation view has calibrated axes and, toggled, a scale bar;
hovering reads out nanometres; the centre of mass's "guess rotation" button sets its
scan rotation and flip to those the frames were made with.

The data set is an EMD 1.0 file (``dim<i>`` datasets with units, as py4DSTEM writes)
whose frames hold one spot each, displaced by a potential's gradient turned into
detector axes by a known rotation and flip.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import load_json

from stem_explorer.analyses.com_conventions import unorient
from stem_explorer.browser_testing import run_notebook, start_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_calibrated_views import write_emd  # noqa: E402
from test_corrections import atom_field, same_angle, spot_frames  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.cluster]

TRUTH = (-110.0, True)
STEP_NM, PIXEL_MRAD = 0.3, 0.5


def write_calibrated(path: Path) -> Path:
    frames = spot_frames(*unorient(*atom_field(shape=(16, 18), scale=1.5), *TRUTH)).astype(np.float32)
    return write_emd(path, frames, (STEP_NM, "nm"), (PIXEL_MRAD, "mrad"))


@pytest.fixture(scope="module")
def server(browser_env):
    """JupyterLab serving the explorer notebook on the calibrated file."""
    data = write_calibrated(browser_env["work"] / "calibrated.h5")
    srv = start_server("lab", browser_env["root"], browser_env["work"], dict(browser_env["env"], STEM_EXPLORER_DATA=str(data)))
    yield srv
    srv.stop()


NAV_TEXTS = """() => [...document.querySelectorAll('.se-nav-view svg text')]
  .filter(t => t.getBoundingClientRect().width > 0 && getComputedStyle(t).visibility !== 'hidden'
               && !t.closest('[visibility=hidden], [style*="visibility: hidden"], [display=none]'))
  .map(t => t.textContent)"""


def test_calibrated_axes_scale_bar_and_the_rotation_guess(page, server, kernel, shots):
    from test_explorer_browser import kernel_until, wait_until

    run_notebook(page, server)
    page.wait_for_selector(".se-explorer", timeout=120_000)
    page.wait_for_selector(".se-mask-editor[data-image-ready='1']", timeout=120_000)
    run = kernel()
    run("explorer.wait()")
    texts = wait_until(lambda: (lambda t: t if "x (nm)" in t and "y (nm)" in t else None)(page.evaluate(NAV_TEXTS)),
                       30, "calibrated axis labels")
    ticks = [float(t.replace("\u2212", "-")) for t in texts if t.replace("\u2212", "-").replace(".", "").lstrip("-").isdigit()]
    assert any(0 < v < 16 * STEP_NM and v != int(v) for v in ticks), texts  # nanometres, not pixel indices
    assert "calibration: scan step 0.3 x 0.3 nm (file)" in page.locator(".se-explorer").inner_text()
    shots("calibrated-axes")

    box = page.locator(".se-nav-view .plotarea_events").bounding_box()
    page.mouse.move(box["x"] + box["width"] * (5.5 / 18), box["y"] + box["height"] * (2.5 / 16))
    wait_until(lambda: "x 1.5 nm" in page.locator(".se-hover").inner_text(), 15, "the hover readout in nm")
    assert "y 0.6 nm" in page.locator(".se-hover").inner_text()

    page.get_by_role("button", name="scale bar", exact=True).click()
    shown = wait_until(lambda: (lambda t: t if any(s.endswith(" nm") for s in t) and "x (nm)" not in t else None)(
        page.evaluate(NAV_TEXTS)), 30, "a scale bar instead of the axes")
    (bar,) = [s for s in shown if s.endswith(" nm")]
    assert float(bar.split()[0]) in (0.5, 1.0, 2.0), shown  # a round length, at most 0.3 of 5.4 nm
    kernel_until(run, "explorer.editor.scale_style == 'scale bar'", "the detector view's scale bar")
    shots("scale-bar")

    # a disk that holds every spot: the centre of mass counts its pixels
    run("explorer.editor.shapes = [{'kind': 'disk', 'cy': 7.0, 'cx': 7.0, 'radius': 6.0, 'op': 'add'}]\n"
        "explorer.analysis.value = 'com'\nexplorer.wait(300)", timeout=320)
    page.get_by_role("button", name="guess rotation").click()
    kernel_until(run, "explorer._controls('com')['flip_y'].value", "the guess to reach the controls")
    run("explorer.wait()")
    state = load_json(run(
        "import json\n"
        "c = explorer._controls('com')\n"
        "print(json.dumps({'rotation': c['scan_rotation'].value, 'flip': c['flip_y'].value, 'error': explorer.error,"
        " 'ran': explorer.results.provenance['analyses'][0]}))"
    ))
    assert state["error"] is None, state
    assert same_angle(state["rotation"], TRUTH[0]) and state["flip"] is TRUTH[1], state
    assert same_angle(state["ran"]["scan_rotation"], TRUTH[0]) and state["ran"]["flip_y"] is True, state
    shots("rotation-guessed")
    run("explorer.close()")
