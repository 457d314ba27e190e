"""The compare view in real Chromium (JupyterLab only, to keep it short): two data sets
of different scan shapes, one disk drawn with the mouse, both virtual images equal numpy."""

from __future__ import annotations

import os

import pytest

from conftest import SIG, load_json
from test_explorer_browser import KNOWN_UPSTREAM, distinct_colours, kernel_until, wait_until

from stem_explorer.browser_testing import detector_point, run_notebook, start_server
from stem_explorer.sample import make_sample

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def server(browser_env):
    """JupyterLab serving the notebooks, with two data sets for the compare notebook."""
    work = browser_env["work"] / "compare"
    work.mkdir(exist_ok=True)
    second = make_sample(work / "second.h5", nav_shape=(10, 14), sig_shape=SIG)
    env = dict(browser_env["env"], STEM_EXPLORER_COMPARE=os.pathsep.join([str(browser_env["data"]), str(second)]))
    srv = start_server("lab", browser_env["root"], work, env)
    yield srv
    srv.stop()


BOTH_EQUAL_NUMPY = """
import json, os
import h5py, numpy as np
from stem_explorer.masks import rasterize
compare.wait()
mask, state = compare.editor.mask(), {}
for path in os.environ["STEM_EXPLORER_COMPARE"].split(os.pathsep):
    with h5py.File(path) as f:
        data = f["data/frames"][()].astype(np.float64)
    reference = np.einsum("abyx,yx->ab", data, rasterize(mask, data.shape[2:]))
    name = os.path.basename(path)
    state[name] = [bool(np.allclose(compare.results[name]["vd/image"].data, reference, rtol=1e-6)),
                   bool(np.allclose(compare.images()[name], reference, rtol=1e-6))]
print(json.dumps({"equal": state, "shapes": compare.editor.shapes, "errors": [t.error for t in compare.tiles.values()]}))
"""

DRAWN = ("compare.wait(280) is not None and not compare.editor.dragging and compare.editor.mask() is not None"
         " and all(t.results is not None and t.analysis.to_dict()['masks']['image'] == compare.editor.mask().to_dict()"
         " for t in compare.tiles.values())")


def test_compare_view_in_the_browser(page, server, kernel, shots):
    run_notebook(page, server, "compare.ipynb")
    page.wait_for_selector(".se-compare", timeout=120_000)
    page.wait_for_selector(".se-mask-editor[data-image-ready='1']", timeout=300_000)
    run = kernel()
    run("compare.wait(300)", timeout=320)
    tiles = page.locator(".se-compare-view")
    assert tiles.count() == 2
    for i in range(2):
        wait_until(lambda i=i: distinct_colours(tiles.nth(i).screenshot()) > 30, 30, f"tile {i}'s image")
    shots("opened")

    run("compare.editor.clear()")
    page.click(".se-mask-editor [data-tool='disk']")
    cy, cx, radius = SIG[0] / 2 + 2, SIG[1] / 2 - 3, 8.0
    page.mouse.move(*detector_point(page, cy, cx))
    page.mouse.down()
    page.mouse.move(*detector_point(page, cy, cx + radius), steps=5)
    page.mouse.up()
    kernel_until(run, DRAWN, "both virtual images of the drawn disk", timeout=300)
    state = load_json(run(BOTH_EQUAL_NUMPY))
    (disk,) = state["shapes"]
    assert disk["kind"] == "disk" and abs(disk["cy"] - cy) < 1 and abs(disk["cx"] - cx) < 1, disk
    assert state["errors"] == [None, None], state
    assert len(state["equal"]) == 2 and all(all(v) for v in state["equal"].values()), state
    shots("disk-drawn")
    run("compare.close()")
    real_problems = [p for p in page.problems if not any(k in p for k in KNOWN_UPSTREAM)]
    assert not real_problems, real_problems
