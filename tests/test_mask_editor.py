"""Tests of the MaskEditor widget's Python side, its bundle checks, and its JS unit tests.

Reference rasters are plain numpy over the full detector grid, with the inequalities of
the coordinate convention (pixel (y, x) has its centre at the integer point (y, x)).
"""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import traitlets

from stem_explorer import masks as M
from stem_explorer.errors import MaskError, StemExplorerError, WidgetError
from stem_explorer.widgets import BundleError, MaskEditor
from stem_explorer.widgets import _bundle
from stem_explorer.widgets.limits import robust_limits
from stem_explorer.widgets.mask_editor import COLORMAPS

ROOT = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed (Node.js >= 20 runs the JS tests)")

SIG = (37, 53)  # deliberately non-square


def editor(sig_shape=SIG, **traits):
    return MaskEditor(np.zeros(sig_shape, np.float32), **traits)


def yx(sig_shape=SIG):
    yy, xx = np.mgrid[0 : sig_shape[0], 0 : sig_shape[1]]
    return yy.astype(np.float64), xx.astype(np.float64)


def ref_disk(cy, cx, r):
    yy, xx = yx()
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def ref_ring(cy, cx, ri, ro):
    yy, xx = yx()
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    return (ri**2 < d2) & (d2 <= ro**2)


def ref_rect(y0, x0, h, w):
    yy, xx = yx()
    return (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)


# --- shapes and masks

EDITABLE = [
    M.Disk(18, 26, 7.5),
    M.Ring(18, 26, 4, 9),
    M.Rectangle(3.5, 5, 10, 20),
    M.Polygon([(2, 2), (2, 30), (20, 12)]),
    M.Point(10.4, 11.6),
    M.SymmetricSpots(18, 26, 10, 2.5, 6, 15),
]


@pytest.mark.parametrize("mask", EDITABLE, ids=lambda m: m.kind)
@pytest.mark.parametrize("op", ["add", "subtract"])
def test_shape_round_trip(mask, op):
    e = editor()
    assert e.add_shape(mask, op=op) == 0
    assert e.shapes == [{**mask.to_dict(), "op": op}]
    assert e.masks() == [mask]
    assert json.loads(json.dumps(e.shapes)) == e.shapes
    assert e.mask() == (mask if op == "add" else None)
    # What the browser sends (JSON numbers, any key order) is read back the same way.
    e.shapes = [json.loads(json.dumps({"op": op, **mask.to_dict()}))]
    assert e.masks() == [mask]
    assert e.hint == ""


def test_mask_is_union_of_adds_minus_union_of_subtracts():
    e = editor()
    e.add_shape(M.Disk(18, 20, 9))
    e.add_shape({"kind": "rectangle", "y0": 25, "x0": 30, "height": 10, "width": 20, "op": "add"})
    e.add_shape(M.Ring(18, 20, 3, 5), op="subtract")
    e.add_shape(M.Rectangle(0, 40, 30, 5), op="subtract")
    expected = (ref_disk(18, 20, 9) | ref_rect(25, 30, 10, 20)) & ~(ref_ring(18, 20, 3, 5) | ref_rect(0, 40, 30, 5))
    np.testing.assert_array_equal(M.rasterize(e.mask(), SIG), expected.astype(np.float32))
    assert e.mask() == M.Difference(
        M.Union([M.Disk(18, 20, 9), M.Rectangle(25, 30, 10, 20)]),
        M.Union([M.Ring(18, 20, 3, 5), M.Rectangle(0, 40, 30, 5)]),
    )


def test_single_add_shape_is_the_mask_itself_and_no_add_shape_is_none():
    e = editor()
    assert e.mask() is None
    e.add_shape(M.Disk(5, 5, 3), op="subtract")
    assert e.mask() is None
    e.add_shape(M.Disk(10, 10, 4))
    assert e.mask() == M.Difference(M.Disk(10, 10, 4), M.Disk(5, 5, 3))
    e.clear()
    assert e.shapes == [] and e.selected == -1 and e.mask() is None


def test_shapes_partly_off_the_detector_are_kept_and_clipped():
    e = editor()
    e.add_shape(M.Disk(0, 0, 6))
    e.add_shape(M.Rectangle(30, 45, 20, 20))
    expected = ref_disk(0, 0, 6) | ref_rect(30, 45, 20, 20)
    np.testing.assert_array_equal(M.rasterize(e.mask(), SIG), expected.astype(np.float32))


REFUSED = [
    ({"kind": "polygon", "vertices": [[1, 1], [5, 5]]}, "at least 3 points"),
    ({"kind": "polygon", "vertices": [[1, 1], [5, 5], [5, 5]]}, "3 distinct"),
    ({"kind": "disk", "cy": -40, "cx": 10, "radius": 5}, "covers no pixel of the 37 x 53 detector"),
    ({"kind": "point", "y": 10, "x": 60}, "covers no pixel"),
    ({"kind": "disk", "cy": 10, "cx": 10, "radius": float("nan")}, "finite"),
    ({"kind": "disk", "cy": 10, "cx": 10, "radius": None}, "radius"),
    ({"kind": "disk", "cy": 10, "cx": 10, "radius": -2}, "radius"),
    ({"kind": "ring", "cy": 10, "cx": 10, "r_inner": 6, "r_outer": 6}, "r_inner must be smaller"),
    ({"kind": "union", "parts": [{"kind": "disk", "cy": 1, "cx": 1, "radius": 1}]}, "cannot be edited"),
    ({"kind": "disk", "cy": 10, "cx": 10, "radius": 2, "op": "multiply"}, "op must be"),
]


@pytest.mark.parametrize("shape, reason", REFUSED, ids=[r for _, r in REFUSED])
def test_refused_shapes_are_dropped_with_a_hint(shape, reason):
    e = editor()
    good = {"kind": "disk", "cy": 18, "cx": 26, "radius": 4, "op": "add"}
    e.shapes = [good, {"op": "add", **shape}]
    assert e.shapes == [{**good, "cy": 18.0, "cx": 26.0, "radius": 4.0}]
    assert "shape 2 ignored" in e.hint and reason in e.hint
    assert e.mask() == M.Disk(18, 26, 4)
    with pytest.raises(MaskError, match=reason.split(" ")[0]):
        e.add_shape({"op": "add", **shape})
    e.shapes = [good]
    assert e.hint == ""


def test_selection_follows_the_kept_shapes():
    e = editor()
    disk = {"kind": "disk", "cy": 18, "cx": 26, "radius": 4, "op": "add"}
    outside = {"kind": "disk", "cy": -50, "cx": 26, "radius": 4, "op": "add"}
    e.selected = 2
    e.shapes = [disk, outside, disk]
    assert len(e.shapes) == 2 and e.selected == 1
    e.selected = 1
    e.shapes = [disk, outside]
    assert e.selected == -1


def test_refused_shape_from_the_browser_is_sent_back(monkeypatch):
    e = editor()
    disk = {"kind": "disk", "cy": 18.0, "cx": 26.0, "radius": 4.0, "op": "add"}
    outside = {"kind": "disk", "cy": -50, "cx": 26, "radius": 4, "op": "add"}
    e.shapes = [disk]
    sent = []
    monkeypatch.setattr(e, "send_state", lambda key=None: sent.append(key))
    for _ in range(2):  # the second time the kernel's list does not even change
        sent.clear()
        e.set_state({"shapes": [disk, outside], "dragging": False})
        assert e.shapes == [disk]
        assert "shapes" in sent
        assert "shape 2 ignored" in e.hint
    sent.clear()
    e.set_state({"shapes": [disk, {**disk, "cx": 10, "cy": 18}], "dragging": True})
    assert len(e.shapes) == 2 and e.dragging
    assert "shapes" not in sent  # accepted as sent: nothing goes back


def test_new_detector_shape_drops_shapes_outside_it():
    e = editor()
    e.add_shape(M.Disk(30, 45, 3))
    e.add_shape(M.Disk(5, 5, 3))
    e.set_image(np.ones((16, 16)))
    assert e.masks() == [M.Disk(5, 5, 3)]
    assert "covers no pixel of the 16 x 16 detector" in e.hint


def test_shapes_are_kept_without_an_image():
    e = MaskEditor()
    e.add_shape(M.Disk(500, 500, 3))
    assert e.masks() == [M.Disk(500, 500, 3)]


# --- image


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "<f4", ">f4", ">f8", "i1", "bool"])
def test_set_image_sends_little_endian_float32_of_the_image_shape(dtype):
    rng = np.random.default_rng(0)
    image = (rng.random((21, 34)) * 100).astype(dtype)
    e = MaskEditor(image)
    assert e.image_shape == [21, 34]
    assert isinstance(e.image, bytes) and len(e.image) == 21 * 34 * 4
    np.testing.assert_array_equal(np.frombuffer(e.image, "<f4").reshape(21, 34), image.astype(np.float32))


def test_set_image_accepts_views_and_rejects_what_it_cannot_show():
    e = MaskEditor()
    base = np.arange(40 * 30, dtype=np.float64).reshape(40, 30)
    e.set_image(base.T[::2])  # non-contiguous view, 15 x 40
    assert e.image_shape == [15, 40]
    np.testing.assert_array_equal(np.frombuffer(e.image, "<f4").reshape(15, 40), base.T[::2])
    for bad in (np.zeros((2, 3, 4)), np.zeros(5), np.zeros((0, 4)), np.zeros((3, 3), complex), [["a"]]):
        with pytest.raises(WidgetError, match="2-D real array"):
            e.set_image(bad)
    assert issubclass(WidgetError, StemExplorerError)


def test_default_colour_limits_ignore_outliers_and_non_finite_pixels():
    rng = np.random.default_rng(1)
    image = rng.uniform(100, 200, (64, 96)).astype(np.float32)
    image[0, :5] = 1e9
    image[1, :5] = -1e9
    image[2, :3] = [np.nan, np.inf, -np.inf]
    e = MaskEditor(image)
    assert 100 <= e.vmin < 102 and 198 < e.vmax <= 200
    e.log = True
    e.set_image(image)
    assert 100 <= e.vmin < 102 and 198 < e.vmax <= 200  # still data units
    e.set_image(image, vmin=0, vmax=1000)
    assert (e.vmin, e.vmax) == (0, 1000)
    e.set_image(image, vmax=500)
    assert 100 <= e.vmin < 102 and e.vmax == 500


def test_robust_limits_in_the_log_domain_and_degenerate_images():
    image = np.concatenate([np.full(990, 10.0), np.full(10, 1e6), [-5.0]])
    lo, hi = robust_limits(image, log=True)
    assert lo == pytest.approx(10) and hi < 1e6
    assert robust_limits(np.full((4, 4), np.nan)) == (0.0, 1.0)
    lo, hi = robust_limits(np.full((4, 4), 7.0))
    assert lo == 7 and hi > lo


def test_traits_have_the_documented_defaults_and_choices():
    e = MaskEditor()
    assert (e.tool, e.op, e.selected, e.dragging, e.hint, e.size) == ("select", "add", -1, False, "", 420)
    assert e.colormap == "viridis" and set(COLORMAPS) >= {"viridis", "magma", "inferno", "gray"}
    for tool in ("select", "disk", "ring", "rectangle", "polygon", "point", "spots"):
        e.tool = tool
    with pytest.raises(traitlets.TraitError):
        e.tool = "lasso"
    assert e.trait_metadata("image", "sync") and e.trait_metadata("shapes", "sync")


# --- the bundle


def _fake_static(tmp_path, info):
    static = tmp_path / "static"
    static.mkdir()
    shutil.copy(_bundle.STATIC_DIR / "mask_editor.js", static / "mask_editor.js")
    (static / "build-info.json").write_text(json.dumps(info))
    return static


def test_missing_bundle_raises_on_construction_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(_bundle, "STATIC_DIR", tmp_path / "static")
    with pytest.raises(BundleError, match=r"not built .*bash scripts/setup.sh.*npm run build"):
        MaskEditor()
    assert issubclass(BundleError, StemExplorerError)


def test_stale_bundle_raises_in_a_source_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(_bundle, "STATIC_DIR", _fake_static(tmp_path, {"inputs_sha256": "0" * 64}))
    with pytest.raises(BundleError, match=r"stale.*npm run build"):
        MaskEditor()


def test_installed_package_without_sources_trusts_its_bundle(tmp_path, monkeypatch):
    monkeypatch.setattr(_bundle, "STATIC_DIR", _fake_static(tmp_path, {"inputs_sha256": "0" * 64}))
    monkeypatch.setattr(_bundle, "REPO_ROOT", tmp_path / "site-packages")
    assert "render" in MaskEditor()._esm


def test_the_built_bundle_matches_its_sources():
    info = json.loads((_bundle.STATIC_DIR / "build-info.json").read_text())
    assert info["inputs_sha256"] == _bundle.inputs_digest(_bundle.REPO_ROOT), "run `npm run build`"


@needs_node
def test_python_and_node_compute_the_same_digest(tmp_path):
    src = tmp_path / "js" / "src"
    (src / "sub dir").mkdir(parents=True)
    (src / "a.js").write_text("export const a = 1;\n")
    (src / "sub dir" / "b\u00e9.js").write_bytes(b"\x00\x01 binary")
    (src / "Z.js").write_text("")
    (src / ".swp").write_text("editor litter")
    (tmp_path / "stem_explorer" / "widgets").mkdir(parents=True)
    (tmp_path / "stem_explorer" / "widgets" / "colormaps.json").write_text("{}")
    script = (
        f"import {{ inputsDigest }} from {json.dumps((ROOT / 'js' / 'digest.mjs').as_uri())};"
        f"console.log(inputsDigest({json.dumps(str(tmp_path))}));"
    )
    out = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _bundle.inputs_digest(tmp_path)
    before = _bundle.inputs_digest(tmp_path)
    (src / ".swp").write_text("more litter")
    assert _bundle.inputs_digest(tmp_path) == before
    (src / "Z.js").write_text(" ")
    assert _bundle.inputs_digest(tmp_path) != before


@needs_node
def test_bundle_is_an_esm_module_exporting_render_without_touching_the_dom():
    bundle = _bundle.esm_path("mask_editor.js").as_uri()
    script = (
        f"const m = await import({json.dumps(bundle)});"
        "console.log(JSON.stringify({keys: Object.keys(m.default), render: typeof m.default.render}));"
    )
    out = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"keys": ["render"], "render": "function"}


@needs_node
def test_js_colormaps_are_the_python_ones():
    script = (
        f"const m = await import({json.dumps((ROOT / 'js' / 'src' / 'colormaps.js').as_uri())});"
        "console.log(JSON.stringify(m.COLORMAP_NAMES));"
    )
    out = subprocess.run([NODE, "--input-type=module", "--no-warnings", "-e", script], capture_output=True, text=True, check=True)
    assert tuple(json.loads(out.stdout)) == COLORMAPS


@needs_node
def test_js_unit_tests():
    out = subprocess.run([NODE, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
